// Differential oracle: evaluates transformations/operators with Debian's libmodsecurity 3.0.9.
// stdin lines: "T <name> <hexinput>" | "U <name> <hexinput>" (with unicode map tx) | "O <name> <hexparam> <hexinput>"
#include <iostream>
#include <string>
#include <sstream>
#include "modsecurity/modsecurity.h"
#include "modsecurity/rules_set.h"
#include "modsecurity/transaction.h"
#include "src/actions/transformations/transformation.h"
#include "src/operators/operator.h"

extern "C" int libinjection_sqli(const char *s, size_t slen, char fingerprint[]);
extern "C" int libinjection_xss(const char *s, size_t slen);

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
    std::string conf = std::string("SecUnicodeMapFile ") + (argc > 1 ? argv[1] : "/tmp/msc/unicode.mapping") + " 20127\n";
    if (rules->load(conf.c_str()) < 0) { std::cerr << rules->getParserError() << std::endl; return 1; }
    modsecurity::Transaction *tx = new modsecurity::Transaction(ms, rules, nullptr);
    std::string line;
    modsecurity::operators::Operator *current = nullptr;
    while (std::getline(std::cin, line)) {
        std::istringstream ss(line);
        std::string kind, name, a, b;
        ss >> kind >> name >> a >> b;
        if (a == "-") a = "";
        if (b == "-") b = "";
        try {
            if (kind == "P") {
                // P <op> <hex param>: compile an operator for the I lines that follow.
                delete current;
                current = modsecurity::operators::Operator::instantiate(name, unhex(a));
                std::string err;
                std::cout << (current->init("oracle", &err) ? "ok" : "E " + err) << "\n";
            } else if (kind == "I") {
                std::string in = unhex(name == "-" ? "" : name);
                std::cout << (current && current->evaluate(nullptr, nullptr, in, nullptr) ? 1 : 0) << "\n";
            } else if (kind == "S") {
                std::string in = unhex(name == "-" ? "" : name);
                char fp[8] = {0};
                int r = libinjection_sqli(in.c_str(), in.size(), fp);
                std::cout << r << " " << (r ? fp : "-") << "\n";
            } else if (kind == "X") {
                std::string in = unhex(name == "-" ? "" : name);
                std::cout << libinjection_xss(in.c_str(), in.size()) << "\n";
            } else if (kind == "T" || kind == "U") {
                auto *t = modsecurity::actions::transformations::Transformation::instantiate("t:" + name);
                std::string r = t->evaluate(unhex(a), kind == "U" ? tx : nullptr);
                std::cout << (r.empty() ? "-" : tohex(r)) << "\n";
                delete t;
            } else {
                auto *op = modsecurity::operators::Operator::instantiate(name, unhex(a));
                std::string err;
                if (!op->init("/tmp/oracle/x", &err)) { std::cout << "E " << err << "\n"; delete op; continue; }
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
