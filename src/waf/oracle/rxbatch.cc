// rxbatch PATTERNS INPUTS: libmodsecurity 3.0.9 @rx verdicts for cong's regex tests (build like oracle.cc).
// rxbatch PATTERNS INPUTS [OPERATOR [RULE FILE]]: for each parameter (hex per line) one line of
// 0/1 per input (hex per line), or "E <error>". OPERATOR defaults to rx; file parameters
// (@pmFromFile) resolve against RULE FILE's directory.
#include <fstream>
#include <iostream>
#include <string>
#include <vector>
#include "modsecurity/modsecurity.h"
#include "src/operators/operator.h"
static std::string unhex(const std::string &h) {
    std::string out; if (h == "-") return out;
    for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back((char)std::stoi(h.substr(i, 2), nullptr, 16));
    return out;
}
int main(int argc, char **argv) {
    std::ifstream pf(argv[1]), inf(argv[2]);
    std::vector<std::string> inputs; std::string l;
    while (std::getline(inf, l)) inputs.push_back(unhex(l));
    while (std::getline(pf, l)) {
        auto *op = modsecurity::operators::Operator::instantiate(argc > 3 ? argv[3] : "rx", unhex(l));
        std::string err;
        if (!op->init(argc > 4 ? argv[4] : "x", &err)) { std::cout << "E " << err << "\n"; delete op; continue; }
        std::string row;
        for (auto &in : inputs) row.push_back(op->evaluate(nullptr, nullptr, in, nullptr) ? '1' : '0');
        std::cout << row << "\n";
        delete op;
    }
}
