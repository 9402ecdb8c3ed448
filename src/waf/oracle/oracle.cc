// Reference outputs from libmodsecurity 3.0.9 for cong's transformation and operator tests.
//
// Reads lines from stdin and answers one line each (hex, "-" for empty):
//   T <name> <hex input>                 transformation without a transaction
//   U <name> <hex input>                 transformation with the code page 20127 map loaded
//   O <name> <hex param> <hex input>     operator: 1 or 0 (E <error> when init fails)
// Build (needs libmodsecurity-dev, libpcre2-dev and the ModSecurity v3.0.9 source tree for its
// internal headers):
//   g++ -std=c++17 -DWITH_PCRE2 -DPCRE2_CODE_UNIT_WIDTH=8 -I$SRC -I$SRC/headers \
//       -o oracle oracle.cc -lmodsecurity
// Run: ./oracle [path to ModSecurity's unicode.mapping]
#include <iostream>
#include <string>
#include <sstream>
#include "modsecurity/modsecurity.h"
#include "modsecurity/rules_set.h"
#include "modsecurity/transaction.h"
#include "src/actions/transformations/transformation.h"
#include "src/operators/operator.h"

static std::string unhex(const std::string &h) {
    std::string out;
    for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back((char)std::stoi(h.substr(i, 2), nullptr, 16));
    return out;
}
static std::string tohex(const std::string &s) {
    static const char *d = "0123456789abcdef";
    std::string o;
    for (unsigned char c : s) { o.push_back(d[c >> 4]); o.push_back(d[c & 15]); }
    return o;
}
int main(int argc, char **argv) {
    modsecurity::ModSecurity *ms = new modsecurity::ModSecurity();
    modsecurity::RulesSet *rules = new modsecurity::RulesSet();
    std::string conf = std::string("SecUnicodeMapFile ") + (argc > 1 ? argv[1] : "unicode.mapping") + " 20127\n";
    if (rules->load(conf.c_str()) < 0) { std::cerr << rules->getParserError() << std::endl; return 1; }
    modsecurity::Transaction *tx = new modsecurity::Transaction(ms, rules, nullptr);
    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream ss(line);
        std::string kind, name, a, b;
        ss >> kind >> name >> a >> b;
        if (a == "-") a = "";
        if (b == "-") b = "";
        try {
            if (kind == "T" || kind == "U") {
                auto *t = modsecurity::actions::transformations::Transformation::instantiate("t:" + name);
                std::string r = t->evaluate(unhex(a), kind == "U" ? tx : nullptr);
                std::cout << (r.empty() ? "-" : tohex(r)) << "\n";
                delete t;
            } else {
                auto *op = modsecurity::operators::Operator::instantiate(name, unhex(a));
                std::string err;
                if (!op->init("oracle", &err)) { std::cout << "E " << err << "\n"; delete op; continue; }
                bool r = op->evaluate(nullptr, nullptr, unhex(b), nullptr);
                std::cout << (r ? 1 : 0) << "\n";
                delete op;
            }
        } catch (std::exception &e) {
            std::cout << "X " << e.what() << "\n";
        }
        std::cout.flush();
    }
    return 0;
}
