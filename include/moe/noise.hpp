/// @file noise.hpp
/// Seeded router noise from a counter-based generator: each element's draw is a pure function
/// of (seed, row, column), so the result never depends on thread count or tile order.
///
/// - `apply_jitter`: multiplicative input jitter x * U(1 - eps, 1 + eps) (Switch, HF, Megatron
///   input_jitter), applied to the router's input before the gate.
/// - `add_gumbel_noise`: l + Gumbel(0, 1) (DeepSpeed top-1 "RSample"): select on the noisy
///   logits, then take the weights from the clean ones with `rescore`.
/// - `add_normal_noise`: l + N(0, 1) * stddev (Tutel gate_noise: stddev = gate_noise / E).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "executor.hpp"
#include "rng.hpp"
#include "router.hpp"
#include "scoring.hpp"
#include "tensor.hpp"

namespace moe {

namespace detail {

template <class T, class F, class Executor>
void for_each_element(matrix_view<T> m, Executor&& exec, F f) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "moe: noise applies to float or double");
    const std::size_t rows = m.rows, cols = m.cols;
    exec(rows, [=](std::size_t t) {
        T* r = m.row(t);
        for (std::size_t e = 0; e < cols; ++e) r[e] = f(r[e], static_cast<std::uint64_t>(t) * cols + e);
    });
}

}  // namespace detail

/// x *= U(1 - eps, 1 + eps) elementwise; eps in [0, 1) ([moe.noise.jitter] otherwise).
template <class T, class Executor = serial_executor>
void apply_jitter(matrix_view<T> x, double eps, std::uint64_t seed, Executor&& exec = {}) {
    if (!(eps >= 0.0 && eps < 1.0)) MOE_THROW("moe.noise.jitter", "jitter eps=", eps, " must be in [0, 1)");
    const counter_rng rng{seed};
    detail::for_each_element(x, exec, [=](T v, std::uint64_t i) {
        return static_cast<T>(static_cast<double>(v) * (1.0 - eps + detail::barrier(2.0 * eps * rng.uniform(i))));
    });
}

/// logits += Gumbel(0, 1) elementwise.
template <class T, class Executor = serial_executor>
void add_gumbel_noise(matrix_view<T> logits, std::uint64_t seed, Executor&& exec = {}) {
    const counter_rng rng{seed};
    detail::for_each_element(logits, exec,
                             [=](T v, std::uint64_t i) { return static_cast<T>(static_cast<double>(v) + rng.gumbel(i)); });
}

/// logits += N(0, 1) * stddev elementwise; stddev finite and >= 0 ([moe.noise.normal]).
template <class T, class Executor = serial_executor>
void add_normal_noise(matrix_view<T> logits, double stddev, std::uint64_t seed, Executor&& exec = {}) {
    if (!(stddev >= 0.0) || !std::isfinite(stddev))
        MOE_THROW("moe.noise.normal", "noise stddev=", stddev, " must be finite and >= 0");
    const counter_rng rng{seed};
    detail::for_each_element(logits, exec, [=](T v, std::uint64_t i) {
        return static_cast<T>(static_cast<double>(v) + detail::barrier(stddev * rng.normal(i)));
    });
}

/// Replaces the weights of `r` by the clean logits' scores at the chosen indices, then
/// renormalises and scales per `cfg` (DeepSpeed RSample: select on logits + Gumbel, weigh by
/// softmax(logits)). Empty slots stay empty.
template <class Arch = default_arch, class L, class T = detail::element_t<L>>
void rescore(routing<compute_t<T>>& r, const L& clean_in, const router_config& cfg) {
    const matrix_view<const T> clean_logits = detail::const_view(clean_in);
    using C = compute_t<T>;
    const std::size_t T_ = clean_logits.rows, E = clean_logits.cols;
    if (r.num_tokens != T_ || r.num_experts != E)
        MOE_THROW("moe.noise.rescore", "routing is ", r.num_tokens, " x ", r.num_experts, ", logits ", T_, " x ", E);
    std::vector<C> row(E), sc(E);
    for (std::size_t t = 0; t < T_; ++t) {
        bool finite = false;
        for (std::size_t e = 0; e < E; ++e) {
            row[e] = static_cast<C>(clean_logits(t, e));
            if (row[e] != row[e] || row[e] == std::numeric_limits<C>::infinity())
                MOE_THROW("moe.noise.rescore", "clean logits row ", t, ", expert ", e, " is not finite or -inf");
            finite = finite || row[e] > -std::numeric_limits<C>::infinity();
        }
        if (!finite && cfg.score == score_function::softmax)
            MOE_THROW("moe.noise.rescore", "clean logits row ", t, " has no finite value");
        detail::score_row<Arch>(cfg.score, row.data(), sc.data(), E);
        C* w = r.weights.data() + t * r.top_k;
        for (std::size_t s = 0; s < r.top_k; ++s) {
            const std::int32_t i = r.index(t, s);
            w[s] = i >= 0 ? sc[static_cast<std::size_t>(i)] : C(0);
        }
        detail::renormalize_weights(cfg.renorm, cfg.renorm_eps, w, r.top_k);
        for (std::size_t s = 0; s < r.top_k; ++s) w[s] = w[s] * static_cast<C>(cfg.scaling_factor);
    }
}

}  // namespace moe
