/// @file analysis/synthetic.hpp
/// Seeded synthetic router logits with a controllable expert popularity skew, for demos,
/// tests and policy benchmarks when no real model's logits are at hand.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../rng.hpp"
#include "../tensor.hpp"

namespace moe {

/// How popular experts are a priori: logits are log(popularity_e) + N(0, 1) noise per token.
struct skew {
    enum class kind { uniform, zipf, dirichlet };
    kind type = kind::uniform;
    double param = 0.0;  ///< zipf exponent S (p_e ~ 1/(e+1)^S), or Dirichlet concentration A

    /// Parses "uniform", "zipf:S" (S >= 0) or "dirichlet:A" (A > 0); throws [moe.synthetic.skew].
    [[nodiscard]] static skew parse(const std::string& s) {
        skew k;
        const auto colon = s.find(':');
        const std::string name = s.substr(0, colon);
        double v = 0.0;
        if (colon != std::string::npos) {
            // strtod, not std::stod: no exceptions, so the header builds with -fno-exceptions.
            const std::string num = s.substr(colon + 1);
            char* end = nullptr;
            v = std::strtod(num.c_str(), &end);
            if (num.empty() || end != num.c_str() + num.size())
                MOE_THROW("moe.synthetic.skew", "cannot read the parameter of '", s, "'");
        }
        if (name == "uniform" && colon == std::string::npos) return k;
        if (name == "zipf" && colon != std::string::npos && v >= 0.0 && std::isfinite(v)) {
            k.type = kind::zipf;
            k.param = v;
            return k;
        }
        if (name == "dirichlet" && colon != std::string::npos && v > 0.0 && std::isfinite(v)) {
            k.type = kind::dirichlet;
            k.param = v;
            return k;
        }
        MOE_THROW("moe.synthetic.skew", "unknown skew '", s, "' (expected uniform, zipf:S with S >= 0 or dirichlet:A with A > 0)");
    }
};

/// `tokens` x `experts` float logits: log(popularity) + standard normal noise, seeded.
[[nodiscard]] inline matrix<float> synthetic_logits(std::size_t tokens, std::size_t experts, const skew& s,
                                                   std::uint64_t seed) {
    if (experts == 0) MOE_THROW("moe.synthetic.shape", "experts=0: at least one expert is required");
    splitmix64 rng(seed);
    std::vector<double> prior(experts, 0.0);
    if (s.type == skew::kind::zipf) {
        for (std::size_t e = 0; e < experts; ++e) prior[e] = -s.param * std::log(static_cast<double>(e + 1));
    } else if (s.type == skew::kind::dirichlet) {
        double sum = 0.0;
        for (std::size_t e = 0; e < experts; ++e) sum += (prior[e] = rng.gamma(s.param));
        for (std::size_t e = 0; e < experts; ++e) prior[e] = std::max(std::log(prior[e] / sum), -30.0);
    }
    matrix<float> m(tokens, experts);
    for (std::size_t t = 0; t < tokens; ++t)
        for (std::size_t e = 0; e < experts; ++e) m(t, e) = static_cast<float>(prior[e] + rng.normal());
    return m;
}

}  // namespace moe
