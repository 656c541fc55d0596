/// @file replay.hpp
/// Routing replay: route with a selection given from outside (a routing recorded at rollout by
/// an inference engine, forced by a debugger, or cut by expert reduction) instead of the one the
/// router would compute. The weights are either given too, or recomputed from this router's
/// scores at the given experts exactly as the router computes them (`detail::finish_weights`,
/// the function every routing path shares), so replaying a routing this router made reproduces
/// its weights bit for bit. Megatron-Core's router replay does the same: the recorded top-k
/// indices, the probabilities gathered from the training forward's scores.
///
/// What replay does not redo: the selection-only bias and the group limits (both only choose
/// experts, and the experts are given); `weights_from_masked` is ignored for the same reason
/// (a replayed expert weighs its score).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "arch.hpp"
#include "config.hpp"
#include "executor.hpp"
#include "router.hpp"
#include "routing.hpp"
#include "scoring.hpp"
#include "tensor.hpp"

namespace moe {

namespace detail {

/// A token's weights for the experts `idx` (k slots, -1 = empty) from its logits `x` (E values,
/// already checked with row_status): the non-empty slots, in their order, are weighed as the
/// router weighs a top-k of that many experts; empty slots weigh 0. Scratch: `sc` (E values)
/// holds the scores, `cidx` / `cw` (k values) the compacted slots.
template <class Arch, class C>
void reweight_row(const router_config& cfg, const C* x, std::size_t E, const std::int32_t* idx, std::size_t k, C* w, C* sc,
                  std::int32_t* cidx, C* cw, C* scores_out) noexcept {
    const bool post = cfg.score == score_function::softmax && !cfg.pre_softmax;
    C* s = scores_out ? scores_out : sc;
    if (!post || scores_out) score_row<Arch>(cfg.score, x, s, E);
    std::size_t n = 0;
    for (std::size_t j = 0; j < k; ++j)
        if (idx[j] >= 0) cidx[n++] = idx[j];
    for (std::size_t j = 0; j < k; ++j) w[j] = C(0);
    if (n == 0) return;
    router_config c = cfg;
    c.top_k = n;
    finish_weights<C>(c, [x](std::int32_t e) { return x[e]; }, [s](std::int32_t e) { return s[e]; }, cidx, cw);
    std::size_t m = 0;
    for (std::size_t j = 0; j < k; ++j)
        if (idx[j] >= 0) w[j] = cw[m++];
}

/// Checks a replayed selection: T x k indices in [-1, E), no expert twice in a token; weights
/// (when given) of the same shape and finite.
template <class C>
void check_replay(matrix_view<const std::int32_t> indices, matrix_view<const C> weights, std::size_t T, std::size_t E,
                  std::size_t k) {
    if (indices.rows != T || indices.cols != k)
        MOE_THROW("moe.replay.shape", "replayed indices are ", indices.rows, " x ", indices.cols, ", expected tokens x k = ", T,
                  " x ", k);
    if (weights.data && (weights.rows != T || weights.cols != k))
        MOE_THROW("moe.replay.shape", "replayed weights are ", weights.rows, " x ", weights.cols, ", expected tokens x k = ", T,
                  " x ", k);
    for (std::size_t t = 0; t < T; ++t) {
        const std::int32_t* r = indices.row(t);
        for (std::size_t j = 0; j < k; ++j) {
            if (r[j] < -1 || r[j] >= static_cast<std::int64_t>(E))
                MOE_THROW("moe.replay.index", "token ", t, ", slot ", j, " holds expert ", r[j], ", outside [-1, ", E, ")");
            for (std::size_t i = 0; i < j; ++i)
                if (r[j] >= 0 && r[i] == r[j])
                    MOE_THROW("moe.replay.index", "token ", t, " lists expert ", r[j], " twice (slots ", i, " and ", j, ")");
            if (weights.data && !std::isfinite(static_cast<double>(weights(t, j))))
                MOE_THROW("moe.replay.weights", "token ", t, ", slot ", j, " has weight ", describe(weights(t, j)),
                          ": replayed weights must be finite");
        }
    }
}

}  // namespace detail

/// Caller-owned scratch of replay_into: grows to the largest shape seen, then allocates nothing.
template <class C = float>
struct replay_workspace {
    std::vector<C> values;
    std::vector<std::int32_t> ints;
};

/// Recomputes, in place, the weights of `r`'s slots (and its scores, where cfg.keep_scores)
/// from `logits` as replay_into does; `weights` false: the scores only. The experts stay.
/// Throws [moe.router.logits] for a NaN / +inf row (or a softmax row without a finite value).
template <class Arch = default_arch, class T, class Executor = serial_executor>
void reweigh(routing<compute_t<T>>& r, matrix_view<const T> logits, const router_config& cfg, replay_workspace<compute_t<T>>& ws,
             Executor&& exec = {}, bool weights = true) {
    using C = compute_t<T>;
    using A = std::conditional_t<std::is_same<C, float>::value, Arch, scalar>;
    const std::size_t T_ = logits.rows, E = logits.cols, k = r.top_k;
    if (r.num_tokens != T_ || r.num_experts != E || r.scores.size() != (cfg.keep_scores ? T_ * E : 0))
        MOE_THROW("moe.router.output", "routing is shaped for ", r.num_tokens, " tokens x ", r.num_experts, " experts, the logits are ",
                  T_, " x ", E);
    if (T_ == 0) return;
    constexpr std::size_t chunk = 64;
    const std::size_t n_chunks = (T_ + chunk - 1) / chunk, per = 3 * E + 2 * k;
    if (ws.values.size() < n_chunks * per) ws.values.resize(n_chunks * per);
    if (ws.ints.size() < n_chunks * k) ws.ints.resize(n_chunks * k);
    // Every row is checked first, in order, so that the error names the first bad row.
    for (std::size_t t = 0; t < T_; ++t) {
        const T* x = logits.row(t);
        C* row = ws.values.data();
        for (std::size_t e = 0; e < E; ++e) row[e] = static_cast<C>(x[e]);
        const std::size_t bad = detail::row_status<A>(cfg, static_cast<const C*>(row), E);
        if (bad == static_cast<std::size_t>(-1)) MOE_THROW("moe.router.logits", "logits row ", t, " has no finite value: softmax is undefined");
        if (bad != 0)
            MOE_THROW("moe.router.logits", "logits row ", t, ", expert ", bad - 1, " is ", detail::describe(x[bad - 1]),
                      ": only finite values and -inf (a masked expert) are accepted");
    }
    C* base = ws.values.data();
    std::int32_t* ib = ws.ints.data();
    exec(n_chunks, [&, base, ib](std::size_t c) {
        C* row = base + c * per;
        C* sc = row + E;
        C* cw = sc + 2 * E;
        C* w = cw + k;
        for (std::size_t t = c * chunk; t < std::min(T_, (c + 1) * chunk); ++t) {
            const T* x = logits.row(t);
            for (std::size_t e = 0; e < E; ++e) row[e] = static_cast<C>(x[e]);
            C* keep = cfg.keep_scores ? r.scores.data() + t * E : nullptr;
            detail::reweight_row<A>(cfg, static_cast<const C*>(row), E, r.indices.data() + t * k, k, w, sc, ib + c * k, cw, keep);
            if (weights) std::copy(w, w + k, r.weights.data() + t * k);
        }
    });
}

/// Routes `logits` (T x E) to the experts `indices` (T x k, k = cfg.top_k; -1 = an empty slot)
/// into `out` (shaped as route_into's: T x k, scores as cfg.keep_scores). `weights` (T x k, or an
/// empty view) are copied; when empty, each token's weights are recomputed from its scores at
/// the given experts, as the router weighs its own top-k (renormalisation and scaling included,
/// over the non-empty slots). `ws` is reused across calls.
/// Throws [moe.replay.shape], [moe.replay.index], [moe.replay.weights], the router's config
/// errors and [moe.router.logits] (where weights are recomputed from a NaN / +inf row).
template <class Arch = default_arch, class T, class Executor = serial_executor>
void replay_into(routing<compute_t<T>>& out, matrix_view<const T> logits, const router_config& cfg,
                 matrix_view<const std::int32_t> indices, matrix_view<const compute_t<T>> weights, replay_workspace<compute_t<T>>& ws,
                 Executor&& exec = {}) {
    static_assert(detail::is_logit_type_v<T>, "moe::replay: logits must be float, double, Eigen::bfloat16 or Eigen::half");
    const std::size_t T_ = logits.rows, E = logits.cols, k = cfg.top_k;
    cfg.validate(E);
    detail::check_replay(indices, weights, T_, E, k);
    if (out.num_tokens != T_ || out.num_experts != E || out.top_k != k || out.indices.size() != T_ * k ||
        out.weights.size() != T_ * k || out.scores.size() != (cfg.keep_scores ? T_ * E : 0))
        MOE_THROW("moe.router.output", "output routing is shaped for ", out.num_tokens, " tokens x ", out.num_experts,
                  " experts, k=", out.top_k, "; the call needs ", T_, " x ", E, ", k=", k);
    for (std::size_t t = 0; t < T_; ++t) std::copy(indices.row(t), indices.row(t) + k, out.indices.data() + t * k);
    if (weights.data)
        for (std::size_t t = 0; t < T_; ++t) std::copy(weights.row(t), weights.row(t) + k, out.weights.data() + t * k);
    if (!weights.data || cfg.keep_scores) reweigh<Arch>(out, logits, cfg, ws, exec, /*weights=*/!weights.data);
}

/// Returns the routing of `logits` replayed at `indices` (see replay_into); `weights` empty:
/// recomputed from the scores.
template <class Arch = default_arch, class T, class Executor = serial_executor>
[[nodiscard]] routing<compute_t<T>> replay(matrix_view<const T> logits, const router_config& cfg,
                                           matrix_view<const std::int32_t> indices,
                                           matrix_view<const compute_t<T>> weights = {}, Executor&& exec = {}) {
    cfg.validate(logits.cols);
    routing<compute_t<T>> r(logits.rows, logits.cols, cfg.top_k, cfg.keep_scores);
    replay_workspace<compute_t<T>> ws;
    replay_into<Arch>(r, logits, cfg, indices, weights, ws, exec);
    return r;
}

/// Overload for an owning matrix.
template <class Arch = default_arch, class T, class Executor = serial_executor>
[[nodiscard]] routing<compute_t<T>> replay(const matrix<T>& logits, const router_config& cfg, matrix_view<const std::int32_t> indices,
                                           matrix_view<const compute_t<T>> weights = {}, Executor&& exec = {}) {
    return replay<Arch>(logits.view(), cfg, indices, weights, exec);
}

/// The indices of `r` as a T x k view (to replay a routing, or the layer of a trace).
template <class W>
[[nodiscard]] matrix_view<const std::int32_t> indices_view(const routing<W>& r) noexcept {
    return {r.indices.data(), r.num_tokens, r.top_k};
}

/// The weights of `r` as a T x k view.
template <class W>
[[nodiscard]] matrix_view<const W> weights_view(const routing<W>& r) noexcept {
    return {r.weights.data(), r.num_tokens, r.top_k};
}

}  // namespace moe
