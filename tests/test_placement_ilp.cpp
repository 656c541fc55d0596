// The exact (GLPK) affinity placement against brute force on tiny cases, and the heuristic
// against both: never above the optimum, never below the contiguous placement.
#include <functional>

#include <moe/placement_ilp.hpp>
#include <moe/analysis/trace.hpp>

#include "test_support.hpp"

namespace {

/// The best co-located total over every balanced placement of every layer (layer 0's expert 0
/// on device 0, as devices are interchangeable).
double brute_force(const std::vector<moe::matrix<double>>& c, std::size_t L, std::size_t E, std::size_t D) {
    std::vector<std::vector<std::int32_t>> layer_options;
    std::vector<std::int32_t> a(E, 0);
    const std::size_t per = E / D;
    std::function<void(std::size_t)> gen = [&](std::size_t e) {
        if (e == E) {
            std::vector<std::size_t> fill(D, 0);
            for (auto d : a) ++fill[static_cast<std::size_t>(d)];
            for (auto f : fill)
                if (f != per) return;
            layer_options.push_back(a);
            return;
        }
        for (std::size_t d = 0; d < D; ++d) {
            a[e] = static_cast<std::int32_t>(d);
            gen(e + 1);
        }
    };
    gen(0);
    double best = -1;
    moe::layered_placement p{L, E, D, std::vector<std::int32_t>(L * E)};
    std::function<void(std::size_t)> go = [&](std::size_t l) {
        if (l == L) {
            best = std::max(best, moe::colocated_transitions(c, p));
            return;
        }
        for (const auto& o : layer_options) {
            if (l == 0 && o[0] != 0) continue;
            std::copy(o.begin(), o.end(), p.device.begin() + static_cast<std::ptrdiff_t>(l * E));
            go(l + 1);
        }
    };
    go(0);
    return best;
}

}  // namespace

TEST_CASE("placement: the ILP finds the brute-force optimum, the heuristic stays between", "[placement][ilp]") {
    for (std::uint64_t seed = 1; seed <= 6; ++seed) {
        const std::size_t L = 3, E = seed % 2 ? 4 : 6, D = 2;
        const auto tr = moe::synthetic_trace(L, 60, E, 2, 1.5, {}, seed);
        const auto c = moe::transition_counts(tr);
        const double best = brute_force(c, L, E, D);
        const auto ilp = moe::ilp_affinity_placement(c, L, E, D);
        CAPTURE(seed, E);
        CHECK(ilp.objective == Approx(best));
        const double heuristic = moe::colocated_transitions(c, moe::affinity_placement(c, L, E, D));
        CHECK(heuristic <= best + 1e-9);
        CHECK(heuristic >= moe::colocated_transitions(c, moe::contiguous_layers(L, E, D)));
        // Every layer balanced.
        for (std::size_t l = 0; l < L; ++l) {
            std::vector<std::size_t> fill(D, 0);
            for (std::size_t e = 0; e < E; ++e) ++fill[static_cast<std::size_t>(ilp.placement.at(l, e))];
            CHECK(fill == std::vector<std::size_t>(D, E / D));
        }
    }
}
