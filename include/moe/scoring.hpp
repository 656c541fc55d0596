/// @file scoring.hpp
/// Score functions: logits (one row per token) -> scores, computed in float32 (float64 for
/// double logits), max-subtracted, and bit-identical on every arch (see detail/lane_math.hpp).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "arch.hpp"
#include "config.hpp"
#include "detail/lane_math.hpp"
#include "tensor.hpp"

namespace moe {

/// The function turning a token's logits into per-expert scores.
enum class score_function {
    softmax,      ///< exp(l_e - max) / sum: Mixtral, Qwen2-MoE, Switch, Megatron default
    sigmoid,      ///< 1 / (1 + exp(-l_e)): DeepSeek-V3, Megatron "sigmoid"
    sqrtsoftplus  ///< sqrt(log(1 + exp(l_e))): Megatron "sqrtsoftplus"
};

[[nodiscard]] inline const char* to_string(score_function f) noexcept {
    switch (f) {
        case score_function::softmax: return "softmax";
        case score_function::sigmoid: return "sigmoid";
        case score_function::sqrtsoftplus: return "sqrtsoftplus";
    }
    return "?";
}

/// Parses "softmax", "sigmoid" or "sqrtsoftplus"; throws [moe.config.score_function] otherwise.
[[nodiscard]] inline score_function parse_score_function(const std::string& s) {
    if (s == "softmax") return score_function::softmax;
    if (s == "sigmoid") return score_function::sigmoid;
    if (s == "sqrtsoftplus") return score_function::sqrtsoftplus;
    MOE_THROW("moe.config.score_function", "unknown score function '", s,
              "' (expected softmax, sigmoid or sqrtsoftplus)");
}

namespace detail {

/// Width of the canonical summation: softmax sums are accumulated in 16 interleaved partial
/// sums (element i into partial i mod 16) and then added in a fixed tree, whatever the SIMD
/// width, so the normaliser has the same bits on every arch.
inline constexpr std::size_t canonical_lanes = 16;

/// 0 when the row holds only finite values or -inf; otherwise 1 + the index of the first NaN
/// or +inf.
template <class Arch, class C>
[[nodiscard]] std::size_t first_bad_value(const C* x, std::size_t n) noexcept {
    std::size_t i = 0;
    if constexpr (std::is_same<C, float>::value && has_simd_path_v<Arch>) {
        using O = lane_ops<Arch>;
        for (; i + O::width <= n; i += O::width) {
            if (O::any_bad(O::load(x + i))) break;
        }
    }
    for (; i < n; ++i) {
        if (x[i] != x[i] || x[i] == std::numeric_limits<C>::infinity()) return i + 1;
    }
    return 0;
}

/// Softmax of a row that has at least one finite value (float32, canonical order).
template <class Arch>
void softmax_row(const float* x, float* out, std::size_t n) noexcept {
    using O = lane_ops<Arch>;
    using V = typename O::V;
    constexpr std::size_t W = O::width;
    constexpr std::size_t NA = canonical_lanes / W;
    static_assert(canonical_lanes % W == 0, "moe: SIMD width must divide 16");

    float m = -std::numeric_limits<float>::infinity();
    std::size_t i = 0;
    if constexpr (W > 1) {
        V vm = O::splat(m);
        for (; i + W <= n; i += W) vm = O::max(vm, O::load(x + i));
        alignas(64) float tmp[W];
        O::store(tmp, vm);
        for (std::size_t j = 0; j < W; ++j) m = tmp[j] > m ? tmp[j] : m;
    }
    for (; i < n; ++i) m = x[i] > m ? x[i] : m;

    const V vmax = O::splat(m);
    V acc[NA];
    for (std::size_t a = 0; a < NA; ++a) acc[a] = O::splat(0.0f);
    auto block = [&](const float* src, float* dst) {
        for (std::size_t a = 0; a < NA; ++a) {
            const V e = exp_nonpos<Arch>(O::load(src + a * W) - vmax);
            O::store(dst + a * W, e);
            acc[a] = acc[a] + e;
        }
    };
    i = 0;
    for (; i + canonical_lanes <= n; i += canonical_lanes) block(x + i, out + i);
    if (i < n) {
        alignas(64) float src[canonical_lanes];
        alignas(64) float dst[canonical_lanes];
        const std::size_t r = n - i;
        for (std::size_t j = 0; j < canonical_lanes; ++j) src[j] = j < r ? x[i + j] : -std::numeric_limits<float>::infinity();
        block(src, dst);
        std::memcpy(out + i, dst, r * sizeof(float));
    }
    alignas(64) float p[canonical_lanes];
    for (std::size_t a = 0; a < NA; ++a) O::store(p + a * W, acc[a]);
    for (std::size_t s = canonical_lanes / 2; s >= 1; s /= 2)
        for (std::size_t j = 0; j < s; ++j) p[j] = p[j] + p[j + s];
    // Normalise by one reciprocal (E multiplies instead of E divisions; <= 1.5 ulp).
    const float inv = 1.0f / p[0];

    i = 0;
    if constexpr (W > 1) {
        const V vi = O::splat(inv);
        for (; i + W <= n; i += W) O::store(out + i, O::load(out + i) * vi);
    }
    for (; i < n; ++i) out[i] = out[i] * inv;
}

/// Elementwise score function (sigmoid, sqrtsoftplus) over a row, float32.
template <class Arch, class F>
void map_row(const float* x, float* out, std::size_t n, F f) noexcept {
    using O = lane_ops<Arch>;
    constexpr std::size_t W = O::width;
    std::size_t i = 0;
    for (; i + W <= n; i += W) O::store(out + i, f(O::load(x + i)));
    if (i < n) {
        alignas(64) float src[W > 1 ? W : 1] = {};
        alignas(64) float dst[W > 1 ? W : 1];
        for (std::size_t j = 0; j < n - i; ++j) src[j] = x[i + j];
        O::store(dst, f(O::load(src)));
        for (std::size_t j = 0; j < n - i; ++j) out[i + j] = dst[j];
    }
}

/// Scores of one row in float32; the row must hold no NaN / +inf, and (softmax) at least
/// one finite value.
template <class Arch>
void score_row(score_function fn, const float* x, float* out, std::size_t n) noexcept {
    using V = typename lane_ops<Arch>::V;
    switch (fn) {
        case score_function::softmax: softmax_row<Arch>(x, out, n); break;
        case score_function::sigmoid: map_row<Arch>(x, out, n, [](V v) { return sigmoid<Arch>(v); }); break;
        case score_function::sqrtsoftplus: map_row<Arch>(x, out, n, [](V v) { return sqrt_softplus<Arch>(v); }); break;
    }
}

/// Scores of one row in float64 (the scalar path, with the C library's exp / log1p).
template <class Arch>
void score_row(score_function fn, const double* x, double* out, std::size_t n) noexcept {
    switch (fn) {
        case score_function::softmax: {
            double m = -std::numeric_limits<double>::infinity();
            for (std::size_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
            double sum = 0.0;
            for (std::size_t i = 0; i < n; ++i) sum += (out[i] = std::exp(x[i] - m));
            for (std::size_t i = 0; i < n; ++i) out[i] /= sum;
            break;
        }
        case score_function::sigmoid:
            for (std::size_t i = 0; i < n; ++i) {
                const double e = std::exp(-std::fabs(x[i]));
                out[i] = x[i] > 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
            }
            break;
        case score_function::sqrtsoftplus:
            for (std::size_t i = 0; i < n; ++i)
                out[i] = std::sqrt(x[i] > 20.0 ? x[i] : std::log1p(std::exp(x[i])));
            break;
    }
}

}  // namespace detail
}  // namespace moe
