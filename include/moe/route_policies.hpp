/// @file route_policies.hpp
/// Selection policies beyond fixed top-k, each producing the same `routing` value (index -1
/// marks an unused slot), so capacity, dispatch, metrics and losses take them unchanged:
///
/// - `route_top_p`: dynamic k by cumulative probability (Huang et al. 2024, "Harder Tasks Need
///   More Experts"), with min / max k.
/// - `strip_null_experts`: AdaMoE null experts; route over E + N columns, then the slots that
///   went to a null expert become empty (zero compute).
/// - `route_expert_choice`: each expert takes its top-C tokens (Zhou et al. 2022).
/// - `sinkhorn` / `route_sinkhorn`: Megatron's balanced assignment.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "arch.hpp"
#include "config.hpp"
#include "router.hpp"
#include "scoring.hpp"
#include "tensor.hpp"

namespace moe {

namespace detail {

/// Validates logits for a softmax-style policy: finite or -inf, and one finite value per row.
template <class T>
void check_policy_logits(matrix_view<const T> logits, const char* id, bool need_finite) {
    for (std::size_t t = 0; t < logits.rows; ++t) {
        bool finite = false;
        for (std::size_t e = 0; e < logits.cols; ++e) {
            const double v = static_cast<double>(static_cast<compute_t<T>>(logits(t, e)));
            if (v != v || v == std::numeric_limits<double>::infinity())
                MOE_THROW(id, "logits row ", t, ", expert ", e, " is ", v != v ? "nan" : "+inf",
                          ": only finite values and -inf are accepted");
            finite = finite || v > -std::numeric_limits<double>::infinity();
        }
        if (need_finite && !finite) MOE_THROW(id, "logits row ", t, " has no finite value");
    }
}

template <class Arch, class T>
void scores_of_row(score_function f, matrix_view<const T> logits, std::size_t t, compute_t<T>* row, compute_t<T>* out) {
    using C = compute_t<T>;
    const std::size_t E = logits.cols;
    for (std::size_t e = 0; e < E; ++e) row[e] = static_cast<C>(logits(t, e));
    score_row<Arch>(f, row, out, E);
}

}  // namespace detail

/// Dynamic k by cumulative probability.
struct top_p_config {
    /// Keep the fewest best experts whose scores sum to at least p (then clamp to [min_k, max_k]).
    double p = 0.5;
    std::size_t min_k = 1;
    std::size_t max_k = 0;  ///< 0 = num_experts
    score_function score = score_function::softmax;
    renormalize renorm = renormalize::none;  ///< the paper keeps the probabilities as they are
    float renorm_eps = 0.0f;
    float scaling_factor = 1.0f;
    bool keep_scores = false;

    void validate(std::size_t num_experts) const {
        if (num_experts == 0) MOE_THROW("moe.selection.top_p", "num_experts=0: logits need at least one column");
        if (!(p > 0.0 && p <= 1.0)) MOE_THROW("moe.selection.top_p", "p=", p, " must be in (0, 1]");
        const std::size_t mk = max_k ? max_k : num_experts;
        if (mk > num_experts) MOE_THROW("moe.selection.top_p", "max_k=", max_k, " exceeds num_experts=", num_experts);
        if (min_k == 0 || min_k > mk)
            MOE_THROW("moe.selection.top_p", "min_k=", min_k, " must be in [1, max_k=", mk, "]");
        if (renorm == renormalize::clamp && !(renorm_eps > 0.0f))
            MOE_THROW("moe.selection.top_p", "renormalize::clamp needs renorm_eps > 0");
    }
};

/// Routes each token to the fewest best experts (descending score, ties to the lower index)
/// whose cumulative score, summed in that order in the compute type, reaches p; at least
/// min_k and at most max_k of them. The routing has max_k slots; unused ones are -1.
template <class Arch = default_arch, class L, class T = detail::element_t<L>>
[[nodiscard]] routing<compute_t<T>> route_top_p(const L& logits_in, const top_p_config& cfg) {
    const matrix_view<const T> logits = detail::const_view(logits_in);
    using C = compute_t<T>;
    const std::size_t T_ = logits.rows, E = logits.cols;
    cfg.validate(E);
    detail::check_policy_logits(logits, "moe.selection.logits", cfg.score == score_function::softmax);
    const std::size_t K = cfg.max_k ? cfg.max_k : E;
    routing<C> r(T_, E, K, cfg.keep_scores);
    std::vector<C> row(E), sc(E);
    std::vector<std::int32_t> order(E);
    for (std::size_t t = 0; t < T_; ++t) {
        detail::scores_of_row<Arch>(cfg.score, logits, t, row.data(), sc.data());
        if (cfg.keep_scores) std::copy(sc.begin(), sc.end(), r.scores.begin() + static_cast<std::ptrdiff_t>(t * E));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return sc[a] > sc[b]; });
        C cum = C(0);
        std::size_t n = 0;
        while (n < K && (n < cfg.min_k || cum < static_cast<C>(cfg.p))) {
            cum = cum + sc[static_cast<std::size_t>(order[n])];
            ++n;
        }
        C* w = r.weights.data() + t * K;
        for (std::size_t s = 0; s < n; ++s) {
            r.indices[t * K + s] = order[s];
            w[s] = sc[static_cast<std::size_t>(order[s])];
        }
        detail::renormalize_weights(cfg.renorm, cfg.renorm_eps, w, n);
        for (std::size_t s = 0; s < n; ++s) w[s] = w[s] * static_cast<C>(cfg.scaling_factor);
    }
    return r;
}

/// AdaMoE null experts: `r` was routed over num_real + N columns, the last N being null
/// experts (zero compute). Returns the routing over the real experts: slots that chose a null
/// expert become empty (-1, weight 0), so the token uses fewer real experts; the other
/// weights are kept as routed. Scores, when kept, are cut to the real columns.
template <class W>
[[nodiscard]] routing<W> strip_null_experts(const routing<W>& r, std::size_t num_real) {
    if (num_real == 0 || num_real > r.num_experts)
        MOE_THROW("moe.selection.null_experts", "num_real=", num_real, " must be in [1, num_experts=", r.num_experts, "]");
    routing<W> out(r.num_tokens, num_real, r.top_k, !r.scores.empty());
    for (std::size_t i = 0; i < r.indices.size(); ++i) {
        const std::int32_t e = r.indices[i];
        if (e >= 0 && static_cast<std::size_t>(e) < num_real) {
            out.indices[i] = e;
            out.weights[i] = r.weights[i];
        }
    }
    if (!r.scores.empty())
        for (std::size_t t = 0; t < r.num_tokens; ++t)
            for (std::size_t e = 0; e < num_real; ++e) out.scores[t * num_real + e] = r.score(t, e);
    return out;
}

/// Mean number of routed (non-empty) slots per token: the "experts per token" of dynamic-k
/// policies.
template <class W>
[[nodiscard]] double mean_experts_per_token(const routing<W>& r) {
    if (r.num_tokens == 0) return 0.0;
    std::size_t n = 0;
    for (std::int32_t i : r.indices) n += i >= 0;
    return static_cast<double>(n) / static_cast<double>(r.num_tokens);
}

/// Expert-choice routing.
struct expert_choice_config {
    /// Tokens per expert C; 0 = ceil(T * capacity_factor / E), at most T.
    std::size_t capacity = 0;
    /// Average experts per token (Zhou et al.'s c).
    double capacity_factor = 2.0;
    score_function score = score_function::softmax;
    bool keep_scores = false;
};

/// Each expert takes the C tokens with its highest scores (ties to the lower token index);
/// a token gets 0..E experts, its slots ordered by descending weight (ties: lower expert).
/// The routing has as many slots as the busiest token needs (at least 1); weight = score.
template <class Arch = default_arch, class L, class T = detail::element_t<L>>
[[nodiscard]] routing<compute_t<T>> route_expert_choice(const L& logits_in, const expert_choice_config& cfg) {
    const matrix_view<const T> logits = detail::const_view(logits_in);
    using C = compute_t<T>;
    const std::size_t T_ = logits.rows, E = logits.cols;
    if (E == 0) MOE_THROW("moe.selection.expert_choice", "num_experts=0: logits need at least one column");
    if (!(cfg.capacity_factor > 0.0) || !std::isfinite(cfg.capacity_factor))
        MOE_THROW("moe.selection.expert_choice", "capacity_factor=", cfg.capacity_factor, " must be finite and > 0");
    detail::check_policy_logits(logits, "moe.selection.logits", cfg.score == score_function::softmax);
    std::size_t cap = cfg.capacity;
    if (cap == 0) cap = static_cast<std::size_t>(std::ceil(static_cast<double>(T_) * cfg.capacity_factor / static_cast<double>(E)));
    cap = std::min(cap, T_);
    std::vector<C> sc(T_ * E), row(E);
    for (std::size_t t = 0; t < T_; ++t) detail::scores_of_row<Arch>(cfg.score, logits, t, row.data(), sc.data() + t * E);
    std::vector<std::uint8_t> chosen(T_ * E, 0);
    std::vector<std::int32_t> tok(T_);
    for (std::size_t e = 0; e < E && cap > 0; ++e) {
        std::iota(tok.begin(), tok.end(), 0);
        std::partial_sort(tok.begin(), tok.begin() + static_cast<std::ptrdiff_t>(cap), tok.end(), [&](std::int32_t a, std::int32_t b) {
            const C va = sc[static_cast<std::size_t>(a) * E + e], vb = sc[static_cast<std::size_t>(b) * E + e];
            return va > vb || (va == vb && a < b);
        });
        for (std::size_t i = 0; i < cap; ++i) chosen[static_cast<std::size_t>(tok[i]) * E + e] = 1;
    }
    std::size_t K = 1;
    for (std::size_t t = 0; t < T_; ++t)
        K = std::max<std::size_t>(K, static_cast<std::size_t>(std::count(chosen.begin() + static_cast<std::ptrdiff_t>(t * E),
                                                                        chosen.begin() + static_cast<std::ptrdiff_t>((t + 1) * E), 1)));
    routing<C> r(T_, E, K, cfg.keep_scores);
    std::vector<std::int32_t> ex;
    for (std::size_t t = 0; t < T_; ++t) {
        ex.clear();
        for (std::size_t e = 0; e < E; ++e)
            if (chosen[t * E + e]) ex.push_back(static_cast<std::int32_t>(e));
        const C* s = sc.data() + t * E;
        std::stable_sort(ex.begin(), ex.end(), [&](std::int32_t a, std::int32_t b) { return s[a] > s[b]; });
        for (std::size_t i = 0; i < ex.size(); ++i) {
            r.indices[t * K + i] = ex[i];
            r.weights[t * K + i] = s[ex[i]];
        }
        if (cfg.keep_scores) std::copy(s, s + E, r.scores.begin() + static_cast<std::ptrdiff_t>(t * E));
    }
    return r;
}

/// What a Sinkhorn run did.
struct sinkhorn_info {
    std::size_t iterations = 0;
    bool converged = false;
};

/// Megatron's Sinkhorn normalisation of exp(cost) (T x E), in float64: alternately
/// d0 = 1 / (T * (cost d1 + eps)) and d1 = 1 / (E * (d0^T cost + eps)), eps = 1e-8, until the
/// mean |change of d1| <= tol (or max_iterations). Writes d1_e * exp(cost_te) * d0_t into out.
template <class L>
sinkhorn_info sinkhorn(const L& cost_in, matrix_view<double> out, double tol = 1e-4, std::size_t max_iterations = 10000) {
    using T = detail::element_t<L>;
    const matrix_view<const T> cost = detail::const_view(cost_in);
    const std::size_t T_ = cost.rows, E = cost.cols;
    if (out.rows != T_ || out.cols != E)
        MOE_THROW("moe.selection.sinkhorn", "output is ", out.rows, " x ", out.cols, ", expected ", T_, " x ", E);
    if (!(tol > 0.0)) MOE_THROW("moe.selection.sinkhorn", "tol=", tol, " must be > 0");
    detail::check_policy_logits(cost, "moe.selection.logits", false);
    sinkhorn_info info;
    if (T_ == 0 || E == 0) {
        info.converged = true;
        return info;
    }
    for (std::size_t t = 0; t < T_; ++t)
        for (std::size_t e = 0; e < E; ++e) out(t, e) = std::exp(static_cast<double>(cost(t, e)));
    const double eps = 1e-8;
    std::vector<double> d0(T_, 1.0), d1(E, 1.0), col(E);
    while (info.iterations < max_iterations) {
        ++info.iterations;
        for (std::size_t t = 0; t < T_; ++t) {
            double s = 0.0;
            for (std::size_t e = 0; e < E; ++e) s += d1[e] * out(t, e);
            d0[t] = (1.0 / static_cast<double>(T_)) * (1.0 / (s + eps));
        }
        std::fill(col.begin(), col.end(), 0.0);
        for (std::size_t t = 0; t < T_; ++t)
            for (std::size_t e = 0; e < E; ++e) col[e] += d0[t] * out(t, e);
        double err = 0.0;
        for (std::size_t e = 0; e < E; ++e) {
            const double d = (1.0 / static_cast<double>(E)) * (1.0 / (col[e] + eps));
            err += std::fabs(d1[e] - d);
            d1[e] = d;
        }
        if (err / static_cast<double>(E) <= tol) {
            info.converged = true;
            break;
        }
    }
    for (std::size_t t = 0; t < T_; ++t)
        for (std::size_t e = 0; e < E; ++e) out(t, e) = d1[e] * out(t, e) * d0[t];
    return info;
}

/// Megatron's Sinkhorn routing (training): top-k of the Sinkhorn-normalised logits (ties to the
/// lower index); weights are sigmoid(l) for k = 1, else the full softmax of l, at the chosen
/// experts.
template <class Arch = default_arch, class L, class T = detail::element_t<L>>
[[nodiscard]] routing<compute_t<T>> route_sinkhorn(const L& logits_in, std::size_t top_k, double tol = 1e-4,
                                                   sinkhorn_info* info = nullptr) {
    const matrix_view<const T> logits = detail::const_view(logits_in);
    using C = compute_t<T>;
    const std::size_t T_ = logits.rows, E = logits.cols;
    if (E == 0) MOE_THROW("moe.selection.sinkhorn", "num_experts=0: logits need at least one column");
    if (top_k == 0 || top_k > E) MOE_THROW("moe.selection.sinkhorn", "k=", top_k, " must be in [1, num_experts=", E, "]");
    detail::check_policy_logits(logits, "moe.selection.logits", true);
    matrix<double> norm(T_, E);
    const sinkhorn_info si = sinkhorn(logits, norm.view(), tol);
    if (info) *info = si;
    routing<C> r(T_, E, top_k, false);
    std::vector<double> val(top_k);
    std::vector<C> row(E), sc(E);
    const score_function f = top_k == 1 ? score_function::sigmoid : score_function::softmax;
    for (std::size_t t = 0; t < T_; ++t) {
        detail::top_k_desc<scalar>(norm.row(t), E, top_k, r.indices.data() + t * top_k, val.data());
        detail::scores_of_row<Arch>(f, logits, t, row.data(), sc.data());
        for (std::size_t s = 0; s < top_k; ++s) r.weights[t * top_k + s] = sc[static_cast<std::size_t>(r.index(t, s))];
    }
    return r;
}

/// Hash routing (Hash Layers, Roller et al. 2021; DeepSeek-V4's hash layers as vLLM runs them
/// with `hash_indices_table` / `tid2eid`): token t's experts are row `token_ids[t]` of a fixed
/// table (V x k), in table order; the weights are the router's scores of those experts (the
/// score function of `cfg`, over all experts), renormalised and scaled as `cfg` says. Selection
/// settings of `cfg` (groups, pre_softmax, select_on_logits) do not apply. Throws
/// [moe.router.hash] for a token id outside the table, an expert outside [0, E) or a row that
/// names an expert twice, and the router's errors for bad logits.
template <class Arch = default_arch>
[[nodiscard]] routing<float> route_hash(matrix_view<const float> logits, const std::vector<std::int64_t>& token_ids,
                                        matrix_view<const std::int32_t> table, const router_config& cfg) {
    const std::size_t T = logits.rows, E = logits.cols, k = table.cols;
    if (token_ids.size() != T) MOE_THROW("moe.router.hash", token_ids.size(), " token ids for ", T, " tokens");
    if (k == 0 || k > E) MOE_THROW("moe.router.hash", "the table has ", k, " experts per token; num_experts=", E);
    router_config c = cfg;
    c.top_k = k;
    c.num_groups = 0;
    c.group_top_k = 0;
    c.pre_softmax = true;
    c.select_on_logits = false;
    c.validate(E);
    for (std::size_t v = 0; v < table.rows; ++v)
        for (std::size_t s = 0; s < k; ++s) {
            const std::int32_t e = table(v, s);
            if (e < 0 || static_cast<std::size_t>(e) >= E)
                MOE_THROW("moe.router.hash", "table row ", v, " holds expert ", e, ", outside [0, ", E, ")");
            for (std::size_t j = 0; j < s; ++j)
                if (table(v, j) == e) MOE_THROW("moe.router.hash", "table row ", v, " names expert ", e, " twice");
        }
    routing<float> r(T, E, k, cfg.keep_scores);
    std::vector<float> sc(E);
    for (std::size_t t = 0; t < T; ++t) {
        const std::int64_t id = token_ids[t];
        if (id < 0 || static_cast<std::uint64_t>(id) >= table.rows)
            MOE_THROW("moe.router.hash", "token ", t, " has id ", id, "; the table has ", table.rows, " rows");
        const float* x = logits.row(t);
        for (std::size_t e = 0; e < E; ++e)
            if (x[e] != x[e] || x[e] == HUGE_VALF) MOE_THROW("moe.router.logits", "logits row ", t, " holds ", x[e], " at expert ", e);
        detail::score_row<Arch>(c.score, x, sc.data(), E);
        std::int32_t* idx = r.indices.data() + t * k;
        for (std::size_t s = 0; s < k; ++s) idx[s] = table(static_cast<std::size_t>(id), s);
        detail::finish_weights<float>(c, [x](std::int32_t e) { return x[e]; }, [&sc](std::int32_t e) { return sc[static_cast<std::size_t>(e)]; },
                                      idx, r.weights.data() + t * k);
        if (cfg.keep_scores) std::copy(sc.begin(), sc.end(), r.scores.begin() + static_cast<std::ptrdiff_t>(t * E));
    }
    return r;
}

/// What a zero-computation expert returns (vLLM `zero_expert_type`, LongCat-Flash): nothing
/// ("zero") or its input ("identity"), at no compute.
enum class zero_expert_type { zero, identity };

/// Takes the zero-computation experts (indices >= `num_real`) out of `r` before dispatch:
/// their slots become -1 (nothing to compute) and, for `identity`, y_zero (T x H) receives
/// sum over those slots of weight * x[t] (zero elsewhere), to be added to the combined
/// output. Returns the number of slots taken out. Weights of the real experts are unchanged.
inline std::size_t split_zero_experts(routing<float>& r, std::size_t num_real, zero_expert_type type, matrix_view<const float> x,
                                      matrix_view<float> y_zero) {
    if (num_real > r.num_experts) MOE_THROW("moe.router.zero_experts", "num_real=", num_real, " exceeds num_experts=", r.num_experts);
    const bool id = type == zero_expert_type::identity;
    if (id && (x.rows != r.num_tokens || y_zero.rows != r.num_tokens || x.cols != y_zero.cols))
        MOE_THROW("moe.router.zero_experts", "x is ", x.rows, " x ", x.cols, ", y_zero ", y_zero.rows, " x ", y_zero.cols, "; routing has ",
                  r.num_tokens, " tokens");
    std::size_t n = 0;
    for (std::size_t t = 0; t < r.num_tokens; ++t) {
        float* yz = id ? y_zero.row(t) : nullptr;
        if (id) std::fill(yz, yz + y_zero.cols, 0.0f);
        for (std::size_t s = 0; s < r.top_k; ++s) {
            std::int32_t& e = r.indices[t * r.top_k + s];
            if (e < 0 || static_cast<std::size_t>(e) < num_real) continue;
            if (id) {
                const float w = r.weights[t * r.top_k + s];
                const float* xt = x.row(t);
                for (std::size_t h = 0; h < x.cols; ++h) yz[h] += w * xt[h];
            }
            e = -1;
            ++n;
        }
    }
    return n;
}

}  // namespace moe
