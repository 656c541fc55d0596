/// @file router.hpp
/// logits (T x E) -> routing: score function, selection-only bias, group-limited top-k,
/// pre/post-softmax top-k, renormalisation and scaling, with each peer's semantics reachable
/// through `router_config` (and named in presets.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "arch.hpp"
#include "config.hpp"
#include "detail/topk.hpp"
#include "detail/unroll.hpp"
#include "executor.hpp"
#include "routing.hpp"
#include "scoring.hpp"
#include "tensor.hpp"

namespace moe {

/// How the k selected weights are renormalised (before the scaling factor).
enum class renormalize {
    none,     ///< keep the scores as they are (Megatron pre-softmax, Switch, Qwen2-MoE default)
    sum,      ///< w / sum(w) (HF Mixtral, Qwen2-MoE norm_topk_prob, vLLM)
    sum_eps,  ///< w / (sum(w) + eps), eps = 1e-20 in Megatron and HF DeepSeek-V3
    clamp     ///< w / max(sum(w), eps), eps = 6.103515625e-5 (2^-14) in llama.cpp
};

[[nodiscard]] inline const char* to_string(renormalize r) noexcept {
    switch (r) {
        case renormalize::none: return "none";
        case renormalize::sum: return "sum";
        case renormalize::sum_eps: return "sum_eps";
        case renormalize::clamp: return "clamp";
    }
    return "?";
}

/// Parses "none", "sum", "sum_eps" or "clamp"; throws [moe.config.renormalize].
[[nodiscard]] inline renormalize parse_renormalize(const std::string& s) {
    for (auto r : {renormalize::none, renormalize::sum, renormalize::sum_eps, renormalize::clamp})
        if (s == to_string(r)) return r;
    MOE_THROW("moe.config.renormalize", "unknown renormalisation '", s, "' (expected none, sum, sum_eps or clamp)");
}

/// What the experts of groups that were not chosen get before the final top-k.
enum class group_mask {
    neg_inf,  ///< -inf: never chosen (Megatron, vLLM, llama.cpp)
    zero      ///< 0.0: chosen when every remaining key is negative (HF DeepSeek-V3)
};

/// Everything that decides a routing. Plain data with defaults; presets.hpp names the
/// configurations of the systems moe reproduces.
struct router_config {
    score_function score = score_function::softmax;
    std::size_t top_k = 2;
    /// softmax only: true = top-k on softmax over all experts (weights are those probabilities);
    /// false = top-k on the logits, then softmax over the k chosen logits. Ignored for sigmoid
    /// and sqrtsoftplus, which always select on scores.
    bool pre_softmax = true;
    /// sigmoid / sqrtsoftplus only: select the top-k on the logits (+ bias) instead of on the
    /// scores; the weights are still the chosen experts' scores (Llama-4: `torch.topk` of the
    /// router logits, then sigmoid of the chosen). It differs from selecting on scores where
    /// the score saturates (sigmoid(17) == sigmoid(18) == 1 in float32). Softmax: use
    /// pre_softmax = false.
    bool select_on_logits = false;
    renormalize renorm = renormalize::none;
    /// eps of renormalize::sum_eps / renormalize::clamp.
    float renorm_eps = 0.0f;
    /// Multiplies the final weights (after renormalisation); DeepSeek-V3's routed_scaling_factor.
    float scaling_factor = 1.0f;
    /// Group-limited top-k (DeepSeek-V3): experts form `num_groups` equal contiguous groups, each
    /// scored by the sum of its `group_score_top_m` best selection keys (1 = the max); the
    /// `group_top_k` best groups stay, the others are masked per `mask`. 0 = off.
    std::size_t num_groups = 0;
    std::size_t group_top_k = 0;
    std::size_t group_score_top_m = 2;
    group_mask mask = group_mask::neg_inf;
    /// Grouped routing: read the weights from the group-masked scores, so an expert of a
    /// dropped group (chosen when k outruns the kept groups, or on a tie with the 0.0 mask)
    /// weighs 0 (HF DeepSeek-V2 `MoEGate` takes topk of the masked `tmp_scores`); false: its
    /// score (HF DeepSeek-V3 gathers the unmasked scores).
    bool weights_from_masked = false;
    /// Keep the full T x E score matrix in the result (the losses need it).
    bool keep_scores = false;

    [[nodiscard]] bool grouped() const noexcept { return num_groups > 0; }

    /// Throws moe::error for settings that cannot route `num_experts` experts.
    void validate(std::size_t num_experts) const {
        if (num_experts == 0) MOE_THROW("moe.router.num_experts", "num_experts=0: logits need at least one column");
        if (top_k == 0) MOE_THROW("moe.router.top_k", "k=0: at least one expert per token is required");
        if (top_k > num_experts)
            MOE_THROW("moe.router.top_k", "k=", top_k, " exceeds num_experts=", num_experts);
        if (!(std::isfinite(renorm_eps) && renorm_eps >= 0.0f))
            MOE_THROW("moe.router.renorm_eps", "renorm_eps=", renorm_eps, " must be finite and >= 0");
        if (renorm == renormalize::clamp && !(renorm_eps > 0.0f))
            MOE_THROW("moe.router.renorm_eps", "renormalize::clamp needs renorm_eps > 0, got ", renorm_eps);
        if (select_on_logits && score == score_function::softmax)
            MOE_THROW("moe.router.select_on_logits", "select_on_logits is for sigmoid / sqrtsoftplus scores; softmax selects on logits with pre_softmax=false");
        if (!std::isfinite(scaling_factor))
            MOE_THROW("moe.router.scaling_factor", "scaling_factor=", scaling_factor, " must be finite");
        if (num_groups == 0) {
            if (group_top_k != 0)
                MOE_THROW("moe.router.groups", "group_top_k=", group_top_k, " given without num_groups");
            return;
        }
        if (num_experts % num_groups != 0)
            MOE_THROW("moe.router.groups", "num_experts=", num_experts, " is not divisible by num_groups=", num_groups);
        if (group_top_k == 0 || group_top_k > num_groups)
            MOE_THROW("moe.router.groups", "group_top_k=", group_top_k, " must be in [1, num_groups=", num_groups, "]");
        const std::size_t per_group = num_experts / num_groups;
        if (group_score_top_m > per_group)
            MOE_THROW("moe.router.groups", "group_score_top_m=", group_score_top_m,
                      " must be in [0, experts per group=", per_group, "]");
        // Under the 0.0 mask the masked experts stay selectable (score 0.0), as in HF
        // DeepSeek-V3 and SGLang; under -inf they would be chosen with no probability.
        if (mask == group_mask::neg_inf && top_k > group_top_k * per_group)
            MOE_THROW("moe.router.groups", "k=", top_k, " is unreachable: group_top_k=", group_top_k, " groups of ",
                      per_group, " experts hold only ", group_top_k * per_group);
    }

    friend bool operator==(const router_config& a, const router_config& b) noexcept {
        return a.score == b.score && a.top_k == b.top_k && a.pre_softmax == b.pre_softmax &&
               a.select_on_logits == b.select_on_logits && a.renorm == b.renorm &&
               a.renorm_eps == b.renorm_eps && a.scaling_factor == b.scaling_factor && a.num_groups == b.num_groups &&
               a.group_top_k == b.group_top_k && a.group_score_top_m == b.group_score_top_m && a.mask == b.mask &&
               a.weights_from_masked == b.weights_from_masked &&
               a.keep_scores == b.keep_scores;
    }
    friend bool operator!=(const router_config& a, const router_config& b) noexcept { return !(a == b); }
};

namespace detail {

/// Per-tile scratch sizes (values of type C, and int32 indices).
inline std::size_t router_scratch_values(std::size_t num_experts, std::size_t num_groups) noexcept {
    return 5 * num_experts + 2 * num_groups;
}
inline std::size_t router_scratch_ints(std::size_t num_experts, std::size_t num_groups) noexcept {
    return num_experts + num_groups;
}

/// Validity of one token's logits: 0, 1 + the first NaN / +inf expert, or std::size_t(-1)
/// when a softmax row has no finite logit.
template <class Arch, class C>
[[nodiscard]] std::size_t row_status(const router_config& cfg, const C* x, std::size_t E) noexcept {
    if (const std::size_t bad = first_bad_value<Arch>(x, E)) return bad;
    if (cfg.score == score_function::softmax) {
        for (std::size_t e = 0; e < E; ++e)
            if (x[e] > -std::numeric_limits<C>::infinity()) return 0;
        return static_cast<std::size_t>(-1);
    }
    return 0;
}

/// Divides a token's k weights by their sum per `mode` (none / sum / sum + eps / max(sum, eps));
/// a zero denominator leaves them as they are. Shared by the router and the capacity stage.
template <class C>
void renormalize_weights(renormalize mode, float eps, C* w, std::size_t k) noexcept {
    if (mode == renormalize::none || k == 0) return;
    C sum = w[0];
    for (std::size_t s = 1; s < k; ++s) sum = sum + w[s];
    C den = sum;
    if (mode == renormalize::sum_eps) den = sum + C(eps);
    if (mode == renormalize::clamp) den = std::max(sum, C(eps));
    if (den != C(0))
        for (std::size_t s = 0; s < k; ++s) w[s] = w[s] / den;
}

/// A token's weights from its chosen experts `idx` (shared by every routing path, so they
/// agree bit for bit): `logit_at(e)` and `score_at(e)` read the token's logit / score.
template <class C, class LogitAt, class ScoreAt>
void finish_weights(const router_config& cfg, LogitAt logit_at, ScoreAt score_at, const std::int32_t* idx,
                    C* w) noexcept {
    const std::size_t k = cfg.top_k;
    if (cfg.score == score_function::softmax && !cfg.pre_softmax) {
        C mx = logit_at(idx[0]);
        for (std::size_t s = 1; s < k; ++s) mx = logit_at(idx[s]) > mx ? logit_at(idx[s]) : mx;
        if (mx == -std::numeric_limits<C>::infinity()) {
            // Every chosen logit is -inf (possible only when the 0.0 group mask picks masked
            // experts): no probability mass, so zero weights rather than torch's NaN.
            for (std::size_t s = 0; s < k; ++s) w[s] = C(0);
            return;
        }
        C sum = 0;
        for (std::size_t s = 0; s < k; ++s) {
            C e;
            if constexpr (std::is_same<C, float>::value) {
                e = exp_nonpos<scalar>(logit_at(idx[s]) - mx);
            } else {
                e = std::exp(logit_at(idx[s]) - mx);
            }
            w[s] = e;
            sum = sum + e;
        }
        for (std::size_t s = 0; s < k; ++s) w[s] = w[s] / sum;
    } else {
        for (std::size_t s = 0; s < k; ++s) w[s] = score_at(idx[s]);
    }
    renormalize_weights(cfg.renorm, cfg.renorm_eps, w, k);
    if (cfg.scaling_factor != 1.0f)
        for (std::size_t s = 0; s < k; ++s) w[s] = w[s] * C(cfg.scaling_factor);
}

/// Route one token. Returns 0, or 1 + the first bad expert (NaN / +inf), or
/// std::size_t(-1) when a softmax row has no finite logit.
/// Scratch: `vals` holds router_scratch_values(E, G) values, `ints` router_scratch_ints(E, G).
template <class Arch, class C>
std::size_t route_row(const router_config& cfg, const C* x, std::size_t E, const C* bias, std::int32_t* idx, C* w,
                      C* scores_out, C* vals, std::int32_t* ints) noexcept {
    if (const std::size_t bad = row_status<Arch>(cfg, x, E)) return bad;
    const std::size_t k = cfg.top_k, G = cfg.num_groups;
    const bool softmax = cfg.score == score_function::softmax;
    const bool post = softmax && !cfg.pre_softmax;
    C* sc = scores_out ? scores_out : vals;
    C* keys = vals + E;
    C* masked = vals + 2 * E;
    C* mval = vals + 3 * E;
    C* gscore = vals + 4 * E;
    C* gval = gscore + G;
    std::int32_t* midx = ints;
    std::int32_t* gidx = ints + E;

    if (!post || scores_out) score_row<Arch>(cfg.score, x, sc, E);

    const C* base = post || cfg.select_on_logits ? x : sc;
    const C* key = base;
    if (bias) {
        std::size_t e = 0;
        if constexpr (std::is_same<C, float>::value && has_simd_path_v<Arch>) {
            using O = lane_ops<Arch>;
            for (; e + O::width <= E; e += O::width) O::store(keys + e, O::load(base + e) + O::load(bias + e));
        }
        for (; e < E; ++e) keys[e] = base[e] + bias[e];
        key = keys;
    }

    if (cfg.grouped()) {
        const std::size_t S = E / G, m = cfg.group_score_top_m;
        for (std::size_t g = 0; g < G; ++g) {
            // Sum of the group's m best keys, added from the largest down (torch.topk(...).sum());
            // m = 0 (Megatron with k < group_topk) sums nothing: every group scores 0.
            if (m == 0) {
                gscore[g] = C(0);
                continue;
            }
            top_k_desc<Arch>(key + g * S, S, m, midx, mval);
            C s = mval[0];
            for (std::size_t j = 1; j < m; ++j) s = s + mval[j];
            // +inf and -inf keys sum to NaN: such a group ranks first, as torch.topk ranks NaN
            // (taken as +inf, so it ties with a +inf group and the lower index wins).
            gscore[g] = s != s ? std::numeric_limits<C>::infinity() : s;
        }
        top_k_desc<Arch>(gscore, G, cfg.group_top_k, gidx, gval);
        const C fill = cfg.mask == group_mask::zero ? C(0) : -std::numeric_limits<C>::infinity();
        std::fill(masked, masked + E, fill);
        for (std::size_t j = 0; j < cfg.group_top_k; ++j) {
            const std::size_t g = static_cast<std::size_t>(gidx[j]);
            std::copy(key + g * S, key + (g + 1) * S, masked + g * S);
        }
        key = masked;
    }

    top_k_desc<Arch>(key, E, k, idx, w);

    if (cfg.grouped() && cfg.weights_from_masked) {
        const std::size_t S = E / G;
        finish_weights<C>(
            cfg, [x](std::int32_t e) { return x[e]; },
            [sc, gidx, S, &cfg](std::int32_t e) {
                const auto g = static_cast<std::int32_t>(static_cast<std::size_t>(e) / S);
                for (std::size_t j = 0; j < cfg.group_top_k; ++j)
                    if (gidx[j] == g) return sc[e];
                return C(0);
            },
            idx, w);
        return 0;
    }
    finish_weights<C>(cfg, [x](std::int32_t e) { return x[e]; }, [sc](std::int32_t e) { return sc[e]; }, idx, w);
    return 0;
}

// ---- The tile path: W tokens at once, one per SIMD lane ------------------------------------
//
// Logits are transposed so that vector e holds expert e's logit for W tokens. Every per-lane
// operation is the row path's operation in the row path's order (the softmax sums use the same
// 16 interleaved partials and tree), and selection is a compare-exchange insertion network with
// exact comparisons: results are bit-identical to route_row, with no data-dependent branches.

/// xT[e * W + l] = row l's value e, for W rows x0 + l * stride: W x W blocks transposed in
/// registers (shuffles; gathers are slow on CPUs with the GDS microcode mitigation).
template <class Arch>
void transpose_in(const float* x0, std::size_t stride, std::size_t E, float* xT) noexcept {
    constexpr std::size_t W = lane_ops<Arch>::width;
    std::size_t e0 = 0;
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) {
        for (; e0 + 16 <= E; e0 += 16) {
            __m512 r[16], t[16], u[16];
            for (std::size_t l = 0; l < 16; ++l) r[l] = _mm512_loadu_ps(x0 + l * stride + e0);
            for (std::size_t i = 0; i < 16; i += 2) {
                t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
            }
            // u[4g + c], 128-bit lane k = column 4k + c of rows 4g .. 4g + 3
            for (std::size_t g = 0; g < 4; ++g) {
                u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
                u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
                u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
                u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
            }
            for (std::size_t c = 0; c < 4; ++c) {
                const __m512 v = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);   // lanes 0, 2
                const __m512 w = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);   // lanes 1, 3
                const __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
                const __m512 w2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
                _mm512_storeu_ps(xT + (e0 + c) * 16, _mm512_shuffle_f32x4(v, v2, 0x88));
                _mm512_storeu_ps(xT + (e0 + 4 + c) * 16, _mm512_shuffle_f32x4(w, w2, 0x88));
                _mm512_storeu_ps(xT + (e0 + 8 + c) * 16, _mm512_shuffle_f32x4(v, v2, 0xDD));
                _mm512_storeu_ps(xT + (e0 + 12 + c) * 16, _mm512_shuffle_f32x4(w, w2, 0xDD));
            }
        }
    } else
#endif
#if XSIMD_WITH_AVX
        if constexpr (W == 8) {
        for (; e0 + 8 <= E; e0 += 8) {
            __m256 r[8], t[8], u[8];
            for (std::size_t l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(x0 + l * stride + e0);
            for (std::size_t i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
            }
            for (std::size_t g = 0; g < 2; ++g) {
                u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
                u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
                u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
                u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
            }
            for (std::size_t c = 0; c < 4; ++c) {
                _mm256_storeu_ps(xT + (e0 + c) * 8, _mm256_permute2f128_ps(u[c], u[4 + c], 0x20));
                _mm256_storeu_ps(xT + (e0 + 4 + c) * 8, _mm256_permute2f128_ps(u[c], u[4 + c], 0x31));
            }
        }
    } else
#endif
    {
    }
    for (; e0 < E; ++e0)
        for (std::size_t l = 0; l < W; ++l) xT[e0 * W + l] = x0[l * stride + e0];
}

/// Scratch floats a tile needs (W = SIMD width).
/// The last E * W are a widened copy of bf16 / f16 rows (unused by route_tile itself).
inline std::size_t tile_scratch_values(std::size_t E, std::size_t W) noexcept { return (7 * E + 8) * W; }

/// Slot-major (k x W) selections to token-major outputs: idx_out[l * k + j], w_out[l * k + j].
template <class Arch>
void write_slots(const float* top, const float* topi, std::size_t k, std::int32_t* idx_out, float* w_out) noexcept {
    using O = lane_ops<Arch>;
    constexpr std::size_t W = O::width;
    alignas(64) std::int32_t ib[W];
    for (std::size_t j = 0; j < k; ++j) {
        xsimd::batch<std::int32_t, Arch> iv;
#if XSIMD_WITH_AVX512F
        if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value)
            iv = _mm512_mask_cvttps_epi32(_mm512_setzero_si512(), 0xFFFF, O::load(topi + j * W));
        else
#endif
            iv = xsimd::to_int(O::load(topi + j * W));
        iv.store_aligned(ib);
        for (std::size_t l = 0; l < W; ++l) {
            idx_out[l * k + j] = ib[l];
            w_out[l * k + j] = top[j * W + l];
        }
    }
}

/// Routes W consecutive float rows starting at `x0` (row stride `stride`); outputs as
/// route_row, row-major. Returns false, having written nothing meaningful, when some row holds
/// NaN / +inf (or, for softmax, no finite value): the caller then finds it with row_status.
template <class Arch>
[[nodiscard]] bool route_tile(const router_config& cfg, const float* x0, std::size_t stride, std::size_t E, const float* bias,
                std::int32_t* idx_out, float* w_out, float* scores_out, float* buf) noexcept {
    using O = lane_ops<Arch>;
    using V = typename O::V;
    constexpr std::size_t W = O::width;
    constexpr std::size_t NA = canonical_lanes;  // one accumulator vector per canonical partial
    const std::size_t k = cfg.top_k;
    const bool softmax = cfg.score == score_function::softmax;
    const bool post = softmax && !cfg.pre_softmax;
    float* xT = buf;
    float* scT = xT + E * W;
    float* keyT = scT + E * W;
    float* maskT = keyT + E * W;
    float* top = maskT + E * W;
    float* topi = top + E * W;
    transpose_in<Arch>(x0, stride, E, xT);
    {
        typename V::batch_bool_type bad(false), finite(false);
        const V inf = O::splat(std::numeric_limits<float>::infinity());  // finite: v > -inf
        for (std::size_t e = 0; e < E; ++e) {
            const V v = O::load(xT + e * W);
            bad = bad || O::bad_lanes(v);
            finite = finite || (v > -inf);
        }
        if (xsimd::any(bad) || (softmax && !xsimd::all(finite))) return false;
    }

    if (!post || scores_out) {
        switch (cfg.score) {
            case score_function::softmax: {
                // Four independent chains; max is exact, so the grouping changes nothing (a
                // +0 / -0 choice gives the same x - max and exp).
                V m4[4] = {O::load(xT), O::load(xT), O::load(xT), O::load(xT)};
                for (std::size_t e = 1; e < E; ++e) m4[e % 4] = O::max(m4[e % 4], O::load(xT + e * W));
                const V m = O::max(O::max(m4[0], m4[1]), O::max(m4[2], m4[3]));
                V acc[NA];
                for (std::size_t a = 0; a < NA; ++a) acc[a] = O::splat(0.0f);
                for (std::size_t e0 = 0; e0 < E; e0 += NA) {
                    // Unrolled so that accumulator a is a compile-time index (kept in a register).
                    unroll<NA>([&](auto a_) {
                        constexpr std::size_t a = decltype(a_)::value;
                        if (e0 + a < E) {
                            const V ex = exp_nonpos<Arch>(O::load(xT + (e0 + a) * W) - m);
                            O::store(scT + (e0 + a) * W, ex);
                            acc[a] = acc[a] + ex;
                        }
                    });
                }
                for (std::size_t h = NA / 2; h >= 1; h /= 2)
                    for (std::size_t j = 0; j < h; ++j) acc[j] = acc[j] + acc[j + h];
                const V inv = O::div(O::splat(1.0f), acc[0]);
                for (std::size_t e = 0; e < E; ++e) O::store(scT + e * W, O::load(scT + e * W) * inv);
                break;
            }
            case score_function::sigmoid:
                for (std::size_t e = 0; e < E; ++e) O::store(scT + e * W, sigmoid<Arch>(O::load(xT + e * W)));
                break;
            case score_function::sqrtsoftplus:
                for (std::size_t e = 0; e < E; ++e) O::store(scT + e * W, sqrt_softplus<Arch>(O::load(xT + e * W)));
                break;
        }
    }

    const float* key = post || cfg.select_on_logits ? xT : scT;
    if (bias) {
        for (std::size_t e = 0; e < E; ++e) O::store(keyT + e * W, O::load(key + e * W) + O::splat(bias[e]));
        key = keyT;
    }

    if (cfg.grouped()) {
        const std::size_t G = cfg.num_groups, S = E / G, m = cfg.group_score_top_m, gk = cfg.group_top_k;
        // Group scores live in maskT: it is written only after the kept groups are chosen. (They
        // once sat at the end of topi, which the per-group and group selections write: with one
        // expert per group the two overlapped and expert 0's group scored its neighbour's index.)
        float* gscore = maskT;
        for (std::size_t g = 0; g < G; ++g) {
            if (m == 0) {  // Megatron with k < group_topk: the sum of no scores
                O::store(gscore + g * W, O::splat(0.0f));
                continue;
            }
            topk_lanes<Arch>(key + g * S * W, S, 1, m, top, topi);
            V sum = O::load(top);
            for (std::size_t j = 1; j < m; ++j) sum = sum + O::load(top + j * W);
            O::store(gscore + g * W, xsimd::select(!(sum == sum), O::splat(std::numeric_limits<float>::infinity()), sum));
        }
        topk_lanes<Arch>(gscore, G, 1, gk, top, topi);
        const V fill = O::splat(cfg.mask == group_mask::zero ? 0.0f : -std::numeric_limits<float>::infinity());
        for (std::size_t g = 0; g < G; ++g) {
            const V gv = O::splat(static_cast<float>(g));
            auto kept = O::load(topi) == gv;
            for (std::size_t j = 1; j < gk; ++j) kept = kept || (O::load(topi + j * W) == gv);
            for (std::size_t e = g * S; e < (g + 1) * S; ++e)
                O::store(maskT + e * W, xsimd::select(kept, O::load(key + e * W), fill));
        }
        key = maskT;
    }

    topk_lanes<Arch>(key, E, 1, k, top, topi);

    if (!bias && !cfg.grouped() && !cfg.select_on_logits) {
        // The selected keys are the weight sources themselves (logits for post-softmax, scores
        // otherwise): finish_weights' operations, lane-wise, in the same order.
        const V zero = O::splat(0.0f);
        if (post) {
            V mx = O::load(top);
            for (std::size_t j = 1; j < k; ++j) mx = O::select_gt(O::load(top + j * W), mx, O::load(top + j * W), mx);
            V sum = zero;
            for (std::size_t j = 0; j < k; ++j) {
                const V e = exp_nonpos<Arch>(O::load(top + j * W) - mx);
                O::store(top + j * W, e);
                sum = sum + e;
            }
            for (std::size_t j = 0; j < k; ++j) O::store(top + j * W, O::div(O::load(top + j * W), sum));
        }
        if (cfg.renorm != renormalize::none) {
            V sum = O::load(top);
            for (std::size_t j = 1; j < k; ++j) sum = sum + O::load(top + j * W);
            V den = sum;
            const V eps = O::splat(cfg.renorm_eps);
            if (cfg.renorm == renormalize::sum_eps) den = sum + eps;
            if (cfg.renorm == renormalize::clamp) den = xsimd::select(sum < eps, eps, sum);
            const auto nonzero = den != zero;
            for (std::size_t j = 0; j < k; ++j) {
                const V w = O::load(top + j * W);
                O::store(top + j * W, xsimd::select(nonzero, O::div(w, den), w));
            }
        }
        if (cfg.scaling_factor != 1.0f)
            for (std::size_t j = 0; j < k; ++j) O::store(top + j * W, O::load(top + j * W) * O::splat(cfg.scaling_factor));
        write_slots<Arch>(top, topi, k, idx_out, w_out);
        if (scores_out)
            for (std::size_t l = 0; l < W; ++l)
                for (std::size_t e = 0; e < E; ++e) scores_out[l * E + e] = scT[e * W + l];
        return true;
    }

    for (std::size_t l = 0; l < W; ++l) {
        std::int32_t* idx = idx_out + l * k;
        for (std::size_t j = 0; j < k; ++j) idx[j] = static_cast<std::int32_t>(topi[j * W + l]);
        finish_weights<float>(
            cfg, [xT, l](std::int32_t e) { return xT[static_cast<std::size_t>(e) * W + l]; },
            [scT, l](std::int32_t e) { return scT[static_cast<std::size_t>(e) * W + l]; }, idx, w_out + l * k);
        if (scores_out)
            for (std::size_t e = 0; e < E; ++e) scores_out[l * E + e] = scT[e * W + l];
    }
    return true;
}

template <class T>
inline constexpr bool is_logit_type_v = std::is_same<T, float>::value || std::is_same<T, double>::value ||
                                        std::is_same<T, Eigen::bfloat16>::value ||
                                        std::is_same<T, Eigen::half>::value;

template <class T>
std::string describe(T v) {
    const double d = static_cast<double>(static_cast<compute_t<T>>(v));
    if (d != d) return "nan";
    return d > 0 ? "+inf" : "-inf";
}

}  // namespace detail

/// Caller-owned scratch for `route_into`, so that routing allocates nothing per call once it
/// has grown to the largest shape seen.
template <class C = float>
struct router_workspace {
    static constexpr std::size_t tile_tokens = 64;  ///< tokens per tile handed to the executor
    std::vector<C> values;
    std::vector<std::int32_t> ints;
    std::vector<std::size_t> bad;  ///< per tile: first bad row, or -1
    std::vector<C> tile_values;    ///< per tile: transposed scratch of the SIMD tile path

    [[nodiscard]] static std::size_t tiles(std::size_t num_tokens) noexcept { return (num_tokens + tile_tokens - 1) / tile_tokens; }
    [[nodiscard]] static std::size_t values_per_tile(std::size_t num_experts, std::size_t num_groups) noexcept {
        return detail::router_scratch_values(num_experts, num_groups) + num_experts;  // + a converted row
    }
    /// Grow (never shrink) to what routing `num_tokens` x `num_experts` with `cfg` needs.
    void reserve(std::size_t num_tokens, std::size_t num_experts, const router_config& cfg) {
        const std::size_t n = tiles(num_tokens);
        const std::size_t nv = n * values_per_tile(num_experts, cfg.num_groups);
        const std::size_t ni = n * detail::router_scratch_ints(num_experts, cfg.num_groups);
        if (values.size() < nv) values.resize(nv);
        if (ints.size() < ni) ints.resize(ni);
        if (bad.size() < n) bad.resize(n);
        if (has_tile_path) {
            const std::size_t nt = n * detail::tile_scratch_values(num_experts, 16);
            if (tile_values.size() < nt) tile_values.resize(nt);
        }
    }
    /// Set by route_into when the SIMD tile path is used (float logits on a SIMD arch).
    bool has_tile_path = false;
};

/// Routes `logits` into a caller-owned `out` (already sized: num_tokens x top_k, scores as
/// cfg.keep_scores) using caller-owned scratch; allocates nothing once `ws` is large enough.
/// @tparam Arch     xsimd arch tag or moe::scalar; every arch gives identical indices and weights
/// @tparam T        logit type: float, double, Eigen::bfloat16, Eigen::half
/// @param bias      selection-only bias (E values) or empty: added to the selection keys, never
///                  to the weights (DeepSeek-V3 e_score_correction_bias, Megatron expert_bias)
/// @param exec      executor running the token tiles (see executor.hpp)
template <class Arch = default_arch, class T, class Executor = serial_executor>
void route_into(routing<compute_t<T>>& out, matrix_view<const T> logits, const router_config& cfg,
                vector_view<compute_t<T>> bias, router_workspace<compute_t<T>>& ws, Executor&& exec = {}) {
    static_assert(detail::is_logit_type_v<T>, "moe::route: logits must be float, double, Eigen::bfloat16 or Eigen::half");
    using C = compute_t<T>;
    using A = std::conditional_t<std::is_same<C, float>::value, Arch, scalar>;
    const std::size_t T_ = logits.rows, E = logits.cols;
    cfg.validate(E);
    if (!bias.empty() && bias.size != E)
        MOE_THROW("moe.router.bias", "bias has ", bias.size, " entries, expected num_experts=", E);
    for (std::size_t e = 0; e < bias.size; ++e)
        if (!std::isfinite(bias[e])) MOE_THROW("moe.router.bias", "bias[", e, "] is not finite");
    if (logits.stride < E && T_ > 1)
        MOE_THROW("moe.router.shape", "logits stride ", logits.stride, " is smaller than num_experts=", E);
    if (out.num_tokens != T_ || out.num_experts != E || out.top_k != cfg.top_k ||
        out.indices.size() != T_ * cfg.top_k || out.weights.size() != T_ * cfg.top_k ||
        out.scores.size() != (cfg.keep_scores ? T_ * E : 0))
        MOE_THROW("moe.router.output", "output routing is shaped for ", out.num_tokens, " tokens x ", out.num_experts,
                  " experts, k=", out.top_k, "; the call needs ", T_, " x ", E, ", k=", cfg.top_k);
    if (T_ == 0) return;
    ws.has_tile_path = std::is_same<C, float>::value && has_simd_path_v<A>;
    ws.reserve(T_, E, cfg);
    const std::size_t G = cfg.num_groups;
    const std::size_t nv = ws.values_per_tile(E, G), ni = detail::router_scratch_ints(E, G);
    const std::size_t n_tiles = ws.tiles(T_);
    const C* b = bias.empty() ? nullptr : bias.data;
    C* values = ws.values.data();
    std::int32_t* ints = ws.ints.data();
    std::size_t* bad = ws.bad.data();
    C* tile_buffer = ws.tile_values.data();
    constexpr std::size_t tile_tokens = router_workspace<C>::tile_tokens;

    exec(n_tiles, [&, values, ints, bad, b, tile_buffer](std::size_t tile) {
        static_cast<void>(tile_buffer);  // unused where the tile path is compiled out
        C* vals = values + tile * nv;
        C* row = vals + detail::router_scratch_values(E, G);
        bad[tile] = static_cast<std::size_t>(-1);
        const std::size_t t0 = tile * tile_tokens, t1 = std::min(T_, t0 + tile_tokens);
        std::size_t t = t0;
        if constexpr (std::is_same<C, float>::value && has_simd_path_v<A>) {
            constexpr std::size_t W = detail::lane_ops<A>::width;
            float* tbuf = tile_buffer + tile * detail::tile_scratch_values(E, W);
            // weights_from_masked needs the kept groups per token: the row path has them.
            for (; !cfg.weights_from_masked && t + W <= t1; t += W) {
                const float* x0 = nullptr;
                std::size_t xs = 0;
                if constexpr (std::is_same<T, float>::value) {
                    x0 = logits.row(t);
                    xs = logits.stride;
                } else {
                    // bf16 / f16: widen the W rows into a float block first.
                    float* wide = tbuf + detail::tile_scratch_values(E, W) - E * W;
                    for (std::size_t l = 0; l < W; ++l)
                        for (std::size_t e = 0; e < E; ++e) wide[l * E + e] = static_cast<float>(logits.row(t + l)[e]);
                    x0 = wide;
                    xs = E;
                }
                if (!detail::route_tile<A>(cfg, x0, xs, E, b, out.indices.data() + t * cfg.top_k,
                                           out.weights.data() + t * cfg.top_k,
                                           cfg.keep_scores ? out.scores.data() + t * E : nullptr, tbuf)) {
                    for (std::size_t l = 0; l < W; ++l) {
                        if (detail::row_status<A>(cfg, x0 + l * xs, E) != 0) {
                            bad[tile] = t + l;
                            return;
                        }
                    }
                    MOE_ASSERT(false);  // route_tile and row_status apply the same rules
                }
            }
        }
        for (; t < t1; ++t) {
            const C* x;
            if constexpr (std::is_same<T, C>::value) {
                x = logits.row(t);
            } else {
                const T* src = logits.row(t);
                for (std::size_t e = 0; e < E; ++e) row[e] = static_cast<C>(src[e]);
                x = row;
            }
            const std::size_t status = detail::route_row<A>(
                cfg, x, E, b, out.indices.data() + t * cfg.top_k, out.weights.data() + t * cfg.top_k,
                cfg.keep_scores ? out.scores.data() + t * E : nullptr, vals, ints + tile * ni);
            if (status != 0) {
                bad[tile] = t;
                return;
            }
        }
    });

    for (std::size_t tile = 0; tile < n_tiles; ++tile) {
        const std::size_t t = bad[tile];
        if (t == static_cast<std::size_t>(-1)) continue;
        const T* r = logits.row(t);
        for (std::size_t e = 0; e < E; ++e) {
            const C v = static_cast<C>(r[e]);
            if (v != v || v == std::numeric_limits<C>::infinity())
                MOE_THROW("moe.router.logits", "logits row ", t, ", expert ", e, " is ", detail::describe(r[e]),
                          ": only finite values and -inf (a masked expert) are accepted");
        }
        MOE_THROW("moe.router.logits", "logits row ", t, " has no finite value: softmax is undefined");
    }
}

/// Routes `logits` (T x E) and returns a new routing. See route_into for the parameters.
template <class Arch = default_arch, class T, class Executor = serial_executor>
[[nodiscard]] routing<compute_t<T>> route(matrix_view<const T> logits, const router_config& cfg,
                                          vector_view<compute_t<T>> bias = {}, Executor&& exec = {}) {
    routing<compute_t<T>> out(logits.rows, logits.cols, cfg.top_k, cfg.keep_scores);
    if (logits.cols > 0 && cfg.top_k > 0) {
        router_workspace<compute_t<T>> ws;
        route_into<Arch>(out, logits, cfg, bias, ws, std::forward<Executor>(exec));
    } else {
        cfg.validate(logits.cols);
    }
    return out;
}

/// Overloads for views of mutable data.
template <class Arch = default_arch, class T, class Executor = serial_executor,
          class = std::enable_if_t<!std::is_const<T>::value>>
void route_into(routing<compute_t<T>>& out, matrix_view<T> logits, const router_config& cfg,
                vector_view<compute_t<T>> bias, router_workspace<compute_t<T>>& ws, Executor&& exec = {}) {
    route_into<Arch>(out, matrix_view<const T>(logits), cfg, bias, ws, std::forward<Executor>(exec));
}
template <class Arch = default_arch, class T, class Executor = serial_executor,
          class = std::enable_if_t<!std::is_const<T>::value>>
[[nodiscard]] routing<compute_t<T>> route(matrix_view<T> logits, const router_config& cfg,
                                          vector_view<compute_t<T>> bias = {}, Executor&& exec = {}) {
    return route<Arch>(matrix_view<const T>(logits), cfg, bias, std::forward<Executor>(exec));
}

/// Overload for an owning matrix.
template <class Arch = default_arch, class T, class Executor = serial_executor>
[[nodiscard]] routing<compute_t<T>> route(const matrix<T>& logits, const router_config& cfg,
                                          vector_view<compute_t<T>> bias = {}, Executor&& exec = {}) {
    return route<Arch>(logits.view(), cfg, bias, std::forward<Executor>(exec));
}

}  // namespace moe
