/// @file rng.hpp
/// moe's random numbers, in one place: the SplitMix64 finaliser, a sequential stream over it
/// (`splitmix64`: synthetic logits, random drop priorities, simulators) and a counter-based
/// generator (`counter_rng`: router noise, drawn in any order on any thread). Both give the
/// same numbers on every platform for the same seed.
#pragma once

#include <cmath>
#include <cstdint>

#include "detail/barrier.hpp"

namespace moe {

namespace detail {
/// The SplitMix64 output function (Steele, Lea and Flood 2014).
[[nodiscard]] constexpr std::uint64_t splitmix_mix(std::uint64_t z) noexcept {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
inline constexpr std::uint64_t golden_gamma = 0x9E3779B97F4A7C15ull;
/// 53 random bits as a double in the open interval (0, 1).
[[nodiscard]] constexpr double open_unit(std::uint64_t bits) noexcept {
    return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53;
}
/// Box-Muller from two uniforms.
[[nodiscard]] inline double box_muller(double u, double v) noexcept {
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
}
}  // namespace detail

/// splitmix64: a small, fast, well-mixed sequential generator.
struct splitmix64 {
    std::uint64_t state;
    explicit splitmix64(std::uint64_t seed) noexcept : state(seed) {}
    std::uint64_t next() noexcept { return detail::splitmix_mix(state += detail::golden_gamma); }
    /// Uniform in (0, 1).
    double uniform() noexcept { return detail::open_unit(next()); }
    double normal() noexcept {
        const double u = uniform(), v = uniform();
        return detail::box_muller(u, v);
    }
    /// Gamma(a, 1) (Marsaglia and Tsang; boosted for a < 1).
    double gamma(double a) noexcept {
        if (a < 1.0) return gamma(a + 1.0) * std::pow(uniform(), 1.0 / a);
        const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
        for (;;) {
            double x, v;
            do {
                x = normal();
                v = 1.0 + detail::barrier(c * x);  // never contracted: the same draws on every arch
            } while (v <= 0.0);
            v = v * v * v;
            const double u = uniform();
            if (std::log(u) < detail::barrier(0.5 * x * x) + detail::barrier(d * (1.0 - v + std::log(v)))) return d * v;
        }
    }
};

/// Counter-based generator: 64 random bits for (seed, counter, stream) from two rounds of the
/// SplitMix64 finaliser. Stateless, so draws can be taken in any order on any thread.
struct counter_rng {
    std::uint64_t seed = 0;

    [[nodiscard]] static constexpr std::uint64_t mix(std::uint64_t z) noexcept { return detail::splitmix_mix(z); }
    [[nodiscard]] constexpr std::uint64_t bits(std::uint64_t counter, std::uint64_t stream = 0) const noexcept {
        return mix(mix(seed + detail::golden_gamma * (counter + 1)) ^ (0xD1B54A32D192ED03ull * (stream + 1)));
    }
    /// Uniform in the open interval (0, 1), 53 bits.
    [[nodiscard]] constexpr double uniform(std::uint64_t counter, std::uint64_t stream = 0) const noexcept {
        return detail::open_unit(bits(counter, stream));
    }
    /// Standard normal (Box-Muller on streams 0 and 1 of the counter).
    [[nodiscard]] double normal(std::uint64_t counter) const noexcept {
        return detail::box_muller(uniform(counter, 0), uniform(counter, 1));
    }
    /// Gumbel(0, 1): -log(-log(U)).
    [[nodiscard]] double gumbel(std::uint64_t counter) const noexcept { return -std::log(-std::log(uniform(counter))); }
};

}  // namespace moe
