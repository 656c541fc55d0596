/// @file losses.hpp
/// Router losses with their analytic gradients with respect to the router logits:
/// Switch/GShard load balancing (Megatron, HF Mixtral and DeepSpeed normalisations; micro-batch,
/// sequence and global batch), router z-loss, Shazeer/Tutel importance + load loss; and the
/// aux-loss-free expert-bias update (DeepSeek-V3, Megatron).
///
/// Every loss returns its value (double) and, when `grad` is not empty, writes
/// d(loss)/d(logits) (T x E, the logits' type) into it. Scores are recomputed from the logits
/// with the router's score functions (float32 for float logits, float64 for double); sums over
/// tokens run in double in token order, so values do not depend on the arch.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "arch.hpp"
#include "config.hpp"
#include "detail/barrier.hpp"
#include "router.hpp"
#include "scoring.hpp"
#include "tensor.hpp"

namespace moe {

/// Which peer's normalisation of the Switch/GShard load-balancing loss.
enum class aux_loss_variant {
    megatron,    ///< E / (k T^2) * sum_e P_e n_e, n_e over all k slots (Megatron-Core, DeepSeek-V3 f_i P_i)
    hf_mixtral,  ///< E / T^2 * sum_e P_e n_e: HF load_balancing_loss_func, k times Megatron's
    deepspeed    ///< E / T^2 * sum_e P_e n1_e, n1 = first-choice counts only (DeepSpeed top1/top2gating)
};

[[nodiscard]] inline const char* to_string(aux_loss_variant v) noexcept {
    switch (v) {
        case aux_loss_variant::megatron: return "megatron";
        case aux_loss_variant::hf_mixtral: return "hf_mixtral";
        case aux_loss_variant::deepspeed: return "deepspeed";
    }
    return "?";
}

/// Settings of the load-balancing losses.
struct aux_loss_config {
    aux_loss_variant variant = aux_loss_variant::megatron;
    /// softmax (P = full softmax), sigmoid (P = sigmoid / (sum + 1e-20)) or sqrtsoftplus
    /// (P = sqrt(softplus) / (sum + 1e-20)), as Megatron's compute_routing_scores_for_aux_loss.
    score_function score = score_function::softmax;
    /// k of the Megatron normalisation; 0 = the mean routed slots of the tokens routed at all
    /// (the routing's top_k when every slot is used; the mean k under dynamic k).
    std::size_t top_k = 0;
    double coeff = 1.0;
    /// AdaMoE: the last `num_null_experts` columns are null experts. Their counts are replaced by
    /// their mean, so the loss balances real experts against the null pool without asking the
    /// identical null experts to balance among themselves.
    std::size_t num_null_experts = 0;

    void validate(std::size_t num_experts) const {
        if (num_null_experts >= num_experts)
            MOE_THROW("moe.losses.null_experts", "num_null_experts=", num_null_experts,
                      " leaves no real expert among num_experts=", num_experts);
        if (!std::isfinite(coeff)) MOE_THROW("moe.losses.coeff", "coeff=", coeff, " must be finite");
    }
};

/// Per-expert statistics of a batch that the Switch loss is formed from; they add up across
/// micro-batches and ranks.
struct aux_loss_terms {
    std::vector<double> prob_sum;  ///< sum over valid tokens of P(t, e)
    std::vector<double> counts;    ///< slots routed to e (variant's rule), before any drop
    double tokens = 0;             ///< valid tokens
    double slots = 0;              ///< routed slots of the valid tokens (all slots, any variant)
    double routed_tokens = 0;      ///< valid tokens with at least one routed slot
    std::size_t top_k = 0;         ///< fixed k of the Megatron normalisation, 0 = slots / tokens

    aux_loss_terms() = default;
    explicit aux_loss_terms(std::size_t num_experts) : prob_sum(num_experts, 0.0), counts(num_experts, 0.0) {}

    aux_loss_terms& operator+=(const aux_loss_terms& o) {
        if (o.prob_sum.size() != prob_sum.size())
            MOE_THROW("moe.losses.shape", "cannot add loss terms of ", o.prob_sum.size(), " experts to ", prob_sum.size());
        for (std::size_t e = 0; e < prob_sum.size(); ++e) {
            prob_sum[e] += o.prob_sum[e];
            counts[e] += o.counts[e];
        }
        tokens += o.tokens;
        slots += o.slots;
        routed_tokens += o.routed_tokens;
        if (top_k == 0) top_k = o.top_k;
        return *this;
    }
};

namespace detail {

template <class T>
void check_loss_inputs(matrix_view<const T> logits, vector_view<std::uint8_t> valid, matrix_view<T> grad,
                       bool need_finite_row) {
    const std::size_t T_ = logits.rows, E = logits.cols;
    if (E == 0) MOE_THROW("moe.losses.shape", "logits have no expert column");
    if (!valid.empty() && valid.size != T_)
        MOE_THROW("moe.losses.mask", "mask has ", valid.size, " entries, expected num_tokens=", T_);
    if (!grad.empty() && (grad.rows != T_ || grad.cols != E))
        MOE_THROW("moe.losses.grad", "grad is ", grad.rows, " x ", grad.cols, ", expected ", T_, " x ", E);
    for (std::size_t t = 0; t < T_; ++t) {
        const T* r = logits.row(t);
        bool finite = false;
        for (std::size_t e = 0; e < E; ++e) {
            const T v = r[e];
            if (v != v || v == std::numeric_limits<T>::infinity())
                MOE_THROW("moe.losses.logits", "logits row ", t, ", expert ", e, " is ", v != v ? "nan" : "+inf",
                          ": only finite values and -inf are accepted");
            finite = finite || v > -std::numeric_limits<T>::infinity();
        }
        if (need_finite_row && !finite && (valid.empty() || valid[t]))
            MOE_THROW("moe.losses.logits", "logits row ", t, " has no finite value: softmax is undefined");
    }
}

/// P(t, .) of the load-balancing loss: softmax, or s / (sum + 1e-20) with s the sigmoid or
/// sqrt(softplus) of the logits (Megatron).
template <class Arch, class C>
void loss_probs(score_function f, const C* x, C* p, std::size_t E) noexcept {
    score_row<Arch>(f, x, p, E);
    if (f == score_function::softmax) return;
    C sum = C(0);
    for (std::size_t e = 0; e < E; ++e) sum += p[e];
    const C den = sum + C(1e-20);
    for (std::size_t e = 0; e < E; ++e) p[e] = p[e] / den;
}

/// Backpropagates g = dL/dP(t, .) through loss_probs into dL/dx (written to out, which may
/// alias p; p holds P(t, .)).
template <class Arch, class C>
void loss_probs_backward(score_function f, const C* x, const C* p, const C* g, C* out, std::size_t E) noexcept {
    C dot = C(0);
    for (std::size_t e = 0; e < E; ++e) dot += barrier(g[e] * p[e]);  // never contracted (detail/barrier.hpp)
    if (f == score_function::softmax) {
        for (std::size_t e = 0; e < E; ++e) out[e] = p[e] * (g[e] - dot);
        return;
    }
    // q = s / (S + eps): dL/dx_j = s'(x_j) / (S + eps) * (g_j - sum_e g_e q_e), with
    // s' = s (1 - s) for the sigmoid and sigmoid(x) / (2 s) for s = sqrt(softplus(x)) (0 where
    // softplus underflows to 0: the limit e^(x/2) / 2 is below float's range there).
    C S = C(0);
    if (f == score_function::sigmoid) {
        for (std::size_t e = 0; e < E; ++e) S += (out[e] = C(1) / (C(1) + std::exp(-x[e])));  // p is no longer needed
        const C den = S + C(1e-20);
        for (std::size_t e = 0; e < E; ++e) out[e] = out[e] * (C(1) - out[e]) / den * (g[e] - dot);
        return;
    }
    score_row<Arch>(score_function::sqrtsoftplus, x, out, E);  // s, then s' in place
    for (std::size_t e = 0; e < E; ++e) S += out[e];
    const C den = S + C(1e-20);
    for (std::size_t e = 0; e < E; ++e) {
        const C s = out[e];
        const C ds = s > C(0) ? C(1) / (C(1) + std::exp(-x[e])) / (C(2) * s) : C(0);
        out[e] = ds / den * (g[e] - dot);
    }
}

/// Counts of the variant from a routing (slot 0 only for deepspeed; -1 slots ignored) into
/// `terms`, with the routed slots of every variant.
template <class W>
void add_counts(const routing<W>& r, aux_loss_variant v, vector_view<std::uint8_t> valid, std::size_t t0,
                std::size_t t1, aux_loss_terms& terms) {
    const std::size_t counted = v == aux_loss_variant::deepspeed ? std::min<std::size_t>(1, r.top_k) : r.top_k;
    for (std::size_t t = t0; t < t1; ++t) {
        if (!valid.empty() && !valid[t]) continue;
        bool any = false;
        for (std::size_t s = 0; s < r.top_k; ++s) {
            const std::int32_t e = r.index(t, s);
            if (e < 0) continue;
            any = true;
            terms.slots += 1.0;
            if (s < counted) terms.counts[static_cast<std::size_t>(e)] += 1.0;
        }
        terms.routed_tokens += any ? 1.0 : 0.0;
    }
}

inline std::vector<double> effective_counts(const aux_loss_config& cfg, const std::vector<double>& counts) {
    std::vector<double> n = counts;
    const std::size_t E = n.size(), N = cfg.num_null_experts;
    if (N > 0) {
        double sum = 0.0;
        for (std::size_t e = E - N; e < E; ++e) sum += n[e];
        for (std::size_t e = E - N; e < E; ++e) n[e] = sum / static_cast<double>(N);
    }
    return n;
}

/// The factor c of L = c * sum_e P_e n_e.
inline double aux_loss_factor(const aux_loss_config& cfg, std::size_t E, const aux_loss_terms& terms) {
    const double tokens = terms.tokens;
    if (tokens <= 0) return 0.0;
    const double k = terms.top_k ? static_cast<double>(terms.top_k)
                                 : (terms.routed_tokens > 0 ? terms.slots / terms.routed_tokens : 0.0);
    if (cfg.variant == aux_loss_variant::megatron && !(k > 0)) return 0.0;
    const double kn = cfg.variant == aux_loss_variant::megatron ? k : 1.0;
    return cfg.coeff * static_cast<double>(E) / (kn * tokens * tokens);
}

/// Writes dL/dlogits = backprop of dL/dP(t, e) = c * n_e for rows [t0, t1) (masked rows: 0).
template <class Arch, class T>
void aux_loss_backward(const aux_loss_config& cfg, matrix_view<const T> logits, vector_view<std::uint8_t> valid,
                       std::size_t t0, std::size_t t1, const std::vector<double>& n, double c, matrix_view<T> grad) {
    const std::size_t E = logits.cols;
    std::vector<T> g(E), p(E);
    for (std::size_t e = 0; e < E; ++e) g[e] = static_cast<T>(c * n[e]);
    for (std::size_t t = t0; t < t1; ++t) {
        T* out = grad.row(t);
        if (!valid.empty() && !valid[t]) {
            for (std::size_t e = 0; e < E; ++e) out[e] = T(0);
            continue;
        }
        loss_probs<Arch>(cfg.score, logits.row(t), p.data(), E);
        loss_probs_backward<Arch>(cfg.score, logits.row(t), p.data(), g.data(), out, E);
    }
}

}  // namespace detail

/// The terms (P sums, counts, valid tokens) of rows [t0, t1) of a batch. `r` is the routing
/// whose counts the loss uses: the top-k before any capacity drop.
template <class Arch = default_arch, class L, class W>
[[nodiscard]] aux_loss_terms aux_loss_statistics(const L& logits_in, const routing<W>& r, const aux_loss_config& cfg,
                                                 vector_view<std::uint8_t> valid = {}) {
    using T = detail::element_t<L>;
    const matrix_view<const T> logits = detail::const_view(logits_in);
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "moe: loss logits are float or double");
    const std::size_t T_ = logits.rows, E = logits.cols;
    cfg.validate(E);
    detail::check_loss_inputs<T>(logits, valid, {}, cfg.score == score_function::softmax);
    if (r.num_tokens != T_ || r.num_experts != E)
        MOE_THROW("moe.losses.routing", "routing is ", r.num_tokens, " tokens x ", r.num_experts, " experts; logits are ", T_,
                  " x ", E);
    aux_loss_terms terms(E);
    terms.top_k = cfg.top_k;
    std::vector<T> p(E);
    for (std::size_t t = 0; t < T_; ++t) {
        if (!valid.empty() && !valid[t]) continue;
        detail::loss_probs<Arch>(cfg.score, logits.row(t), p.data(), E);
        for (std::size_t e = 0; e < E; ++e) terms.prob_sum[e] += static_cast<double>(p[e]);
        terms.tokens += 1.0;
    }
    detail::add_counts(r, cfg.variant, valid, 0, T_, terms);
    return terms;
}

/// The routing whose counts Megatron's aux loss uses (`compute_routing_scores_for_aux_loss`):
/// the plain top-k of the loss scores (softmax, or sigmoid / sqrt-softplus over their sum), ungrouped and
/// without the selection bias, whatever the router's groups and bias do to the real routing.
/// Pass it as `r` to the load-balancing losses for Megatron's definition; pass the router's
/// own routing (before any drop) for the "counts of the actual routing" definition.
template <class Arch = default_arch, class T>
[[nodiscard]] routing<compute_t<T>> aux_loss_routing(matrix_view<const T> logits, std::size_t top_k,
                                                     score_function score = score_function::softmax) {
    router_config c;
    c.score = score;
    c.top_k = top_k;
    c.pre_softmax = true;
    c.renorm = renormalize::none;
    return route<Arch>(logits, c);
}

/// The loss value from accumulated terms: c * sum_e P_e n_e.
[[nodiscard]] inline double aux_loss_value(const aux_loss_terms& terms, const aux_loss_config& cfg) {
    const std::size_t E = terms.prob_sum.size();
    const std::vector<double> n = detail::effective_counts(cfg, terms.counts);
    double s = 0.0;
    for (std::size_t e = 0; e < E; ++e) s += detail::barrier(terms.prob_sum[e] * n[e]);
    return detail::aux_loss_factor(cfg, E, terms) * s;
}

/// Switch/GShard load-balancing loss of one (micro-)batch and, if `grad` is not empty, its
/// gradient. Uniform logits give `coeff` (Megatron), `coeff * k` (hf_mixtral) or `coeff`
/// (deepspeed) for a balanced routing.
/// @param r      the routing whose counts enter (top-k before any drop; indices may be -1)
/// @param valid  optional per-token mask: 0 = padding token, neither counted nor differentiated
template <class Arch = default_arch, class L, class W>
double load_balancing_loss(const L& logits_in, const routing<W>& r, const aux_loss_config& cfg,
                           vector_view<std::uint8_t> valid = {}, matrix_view<detail::element_t<L>> grad = {}) {
    using T = detail::element_t<L>;
    const matrix_view<const T> logits = detail::const_view(logits_in);
    const aux_loss_terms terms = aux_loss_statistics<Arch>(logits, r, cfg, valid);
    detail::check_loss_inputs<T>(logits, valid, grad, false);
    if (!grad.empty()) {
        const double c = detail::aux_loss_factor(cfg, logits.cols, terms);
        detail::aux_loss_backward<Arch>(cfg, logits, valid, 0, logits.rows, detail::effective_counts(cfg, terms.counts), c,
                                        grad);
    }
    return aux_loss_value(terms, cfg);
}

/// Sequence-level auxiliary loss (Megatron seq_aux_loss, DeepSeek-V3's complementary
/// sequence-wise loss): the Switch loss of each sequence, averaged over sequences. Rows
/// [b * seq_len, (b + 1) * seq_len) are sequence b.
template <class Arch = default_arch, class L, class W>
double sequence_load_balancing_loss(const L& logits_in, const routing<W>& r, std::size_t seq_len,
                                    const aux_loss_config& cfg, vector_view<std::uint8_t> valid = {},
                                    matrix_view<detail::element_t<L>> grad = {}) {
    using T = detail::element_t<L>;
    const matrix_view<const T> logits = detail::const_view(logits_in);
    const std::size_t T_ = logits.rows, E = logits.cols;
    if (seq_len == 0 || T_ % seq_len != 0)
        MOE_THROW("moe.losses.sequence", "seq_len=", seq_len, " does not divide num_tokens=", T_);
    cfg.validate(E);
    detail::check_loss_inputs<T>(logits, valid, grad, cfg.score == score_function::softmax);
    if (r.num_tokens != T_ || r.num_experts != E)
        MOE_THROW("moe.losses.routing", "routing is ", r.num_tokens, " tokens x ", r.num_experts, " experts; logits are ", T_,
                  " x ", E);
    const std::size_t B = T_ / seq_len;
    double total = 0.0;
    std::vector<T> p(E);
    for (std::size_t b = 0; b < B; ++b) {
        const std::size_t t0 = b * seq_len, t1 = t0 + seq_len;
        aux_loss_terms terms(E);
        terms.top_k = cfg.top_k;
        for (std::size_t t = t0; t < t1; ++t) {
            if (!valid.empty() && !valid[t]) continue;
            detail::loss_probs<Arch>(cfg.score, logits.row(t), p.data(), E);
            for (std::size_t e = 0; e < E; ++e) terms.prob_sum[e] += static_cast<double>(p[e]);
            terms.tokens += 1.0;
        }
        detail::add_counts(r, cfg.variant, valid, t0, t1, terms);
        total += aux_loss_value(terms, cfg);
        if (!grad.empty()) {
            const double c = detail::aux_loss_factor(cfg, E, terms) / static_cast<double>(B);
            detail::aux_loss_backward<Arch>(cfg, logits, valid, t0, t1, detail::effective_counts(cfg, terms.counts), c, grad);
        }
    }
    return total / static_cast<double>(B);
}

/// Global-batch load-balancing loss ("Demons in the Detail", Qwen; Megatron global aux loss):
/// counts and P sums accumulate over micro-batches (and, via `terms()` and `merge`, over
/// ranks) before the loss is formed, so the balance is asked of the global batch, not of each
/// micro-batch. With one micro-batch it equals `load_balancing_loss`.
class global_load_balancer {
public:
    explicit global_load_balancer(aux_loss_config cfg = {}) : cfg_(cfg) {}

    /// Adds a micro-batch (its logits and its routing before any drop).
    template <class Arch = default_arch, class L, class W>
    void add(const L& logits, const routing<W>& r, vector_view<std::uint8_t> valid = {}) {
        aux_loss_terms t = aux_loss_statistics<Arch>(logits, r, cfg_, valid);
        if (terms_.prob_sum.empty()) {
            terms_ = std::move(t);
        } else {
            terms_ += t;
        }
    }
    /// Adds terms gathered elsewhere (another rank's, after an allreduce, or a saved batch).
    void merge(const aux_loss_terms& t) {
        if (terms_.prob_sum.empty()) {
            terms_ = t;
        } else {
            terms_ += t;
        }
    }
    /// The global loss over everything added since the last reset.
    [[nodiscard]] double loss() const { return terms_.prob_sum.empty() ? 0.0 : aux_loss_value(terms_, cfg_); }
    /// d(global loss)/d(logits) of one added micro-batch (counts are the global ones).
    template <class Arch = default_arch, class L>
    void gradient(const L& logits_in, matrix_view<detail::element_t<L>> grad, vector_view<std::uint8_t> valid = {}) const {
        using T = detail::element_t<L>;
        const matrix_view<const T> logits = detail::const_view(logits_in);
        if (terms_.prob_sum.empty()) MOE_THROW("moe.losses.global", "gradient() before any add()");
        if (logits.cols != terms_.prob_sum.size())
            MOE_THROW("moe.losses.global", "logits have ", logits.cols, " experts, the accumulator ", terms_.prob_sum.size());
        detail::check_loss_inputs<T>(logits, valid, grad, cfg_.score == score_function::softmax);
        const double c = detail::aux_loss_factor(cfg_, logits.cols, terms_);
        detail::aux_loss_backward<Arch>(cfg_, logits, valid, 0, logits.rows, detail::effective_counts(cfg_, terms_.counts),
                                        c, grad);
    }
    void reset() noexcept { terms_ = aux_loss_terms{}; }
    [[nodiscard]] const aux_loss_terms& terms() const noexcept { return terms_; }
    [[nodiscard]] const aux_loss_config& config() const noexcept { return cfg_; }

private:
    aux_loss_config cfg_;
    aux_loss_terms terms_;
};

/// Router z-loss (ST-MoE): coeff * mean over valid tokens of logsumexp_e(l_te)^2.
template <class Arch = default_arch, class L>
double z_loss(const L& logits_in, double coeff = 1.0, vector_view<std::uint8_t> valid = {},
              matrix_view<detail::element_t<L>> grad = {}) {
    using T = detail::element_t<L>;
    const matrix_view<const T> logits = detail::const_view(logits_in);
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "moe: loss logits are float or double");
    detail::check_loss_inputs<T>(logits, valid, grad, true);
    const std::size_t T_ = logits.rows, E = logits.cols;
    double n = 0.0;
    for (std::size_t t = 0; t < T_; ++t) n += (valid.empty() || valid[t]) ? 1.0 : 0.0;
    const double inv = n > 0 ? 1.0 / n : 0.0;
    double sum = 0.0;
    std::vector<T> p(E);
    for (std::size_t t = 0; t < T_; ++t) {
        const T* x = logits.row(t);
        const bool on = valid.empty() || valid[t];
        if (!on) {
            if (!grad.empty())
                for (std::size_t e = 0; e < E; ++e) grad(t, e) = T(0);
            continue;
        }
        double m = -std::numeric_limits<double>::infinity();
        for (std::size_t e = 0; e < E; ++e) m = std::max(m, static_cast<double>(x[e]));
        double s = 0.0;
        for (std::size_t e = 0; e < E; ++e) s += std::exp(static_cast<double>(x[e]) - m);
        const double lse = m + std::log(s);
        sum += detail::barrier(lse * lse);
        if (!grad.empty()) {
            detail::score_row<Arch>(score_function::softmax, x, p.data(), E);
            const T f = static_cast<T>(2.0 * coeff * lse * inv);
            for (std::size_t e = 0; e < E; ++e) grad(t, e) = f * p[e];
        }
    }
    return coeff * sum * inv;
}

namespace detail {

/// cv^2 = var / (mean^2 + 1e-10) (unbiased var, as torch.var) and its gradient.
inline double cv_squared(const std::vector<double>& x, std::vector<double>& d) {
    const std::size_t n = x.size();
    double m = 0.0;
    for (double v : x) m += v;
    m /= static_cast<double>(n);
    double var = 0.0;
    for (double v : x) var += barrier((v - m) * (v - m));
    var /= static_cast<double>(n - 1);
    const double D = barrier(m * m) + 1e-10;
    d.assign(n, 0.0);
    for (std::size_t e = 0; e < n; ++e)
        d[e] = 2.0 * (x[e] - m) / (static_cast<double>(n - 1) * D) - var * 2.0 * m / (static_cast<double>(n) * D * D);
    return var / D;
}

}  // namespace detail

/// Importance + load loss (Shazeer et al. 2017, as in Tutel's load_importance_loss):
/// (cv^2(importance) + cv^2(load)) / 2 with importance_e = sum_t softmax(l)_te and
/// load_e = sum_t Phi((softmax(l)_te - threshold_t) / (gate_noise / E)), threshold_t = the
/// noisy logit of token t's last routed expert.
/// @param noisy_logits  logits + noise the routing `r` was selected on (T x E)
/// @param r             the noisy top-k routing (each token needs at least one routed slot)
template <class Arch = default_arch, class L, class N, class W>
double importance_load_loss(const L& logits_in, const N& noisy_in, const routing<W>& r, double gate_noise,
                            matrix_view<detail::element_t<L>> grad = {}) {
    using T = detail::element_t<L>;
    const matrix_view<const T> logits = detail::const_view(logits_in);
    static_assert(std::is_same<T, detail::element_t<N>>::value, "moe: logits and noisy logits must have one type");
    const matrix_view<const T> noisy_logits = detail::const_view(noisy_in);
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "moe: loss logits are float or double");
    const std::size_t T_ = logits.rows, E = logits.cols;
    detail::check_loss_inputs<T>(logits, {}, grad, true);
    if (E < 2) MOE_THROW("moe.losses.num_experts", "importance/load loss needs at least 2 experts, got ", E);
    if (!(gate_noise > 0.0) || !std::isfinite(gate_noise))
        MOE_THROW("moe.losses.gate_noise", "gate_noise=", gate_noise, " must be finite and > 0");
    if (noisy_logits.rows != T_ || noisy_logits.cols != E)
        MOE_THROW("moe.losses.shape", "noisy_logits are ", noisy_logits.rows, " x ", noisy_logits.cols, ", expected ", T_,
                  " x ", E);
    if (r.num_tokens != T_ || r.num_experts != E)
        MOE_THROW("moe.losses.routing", "routing is ", r.num_tokens, " tokens x ", r.num_experts, " experts; logits are ", T_,
                  " x ", E);
    std::vector<std::int32_t> last(T_, -1);
    for (std::size_t t = 0; t < T_; ++t) {
        for (std::size_t s = 0; s < r.top_k; ++s)
            if (r.index(t, s) >= 0) last[t] = r.index(t, s);
        if (last[t] < 0) MOE_THROW("moe.losses.routing", "token ", t, " has no routed expert: no load threshold");
    }
    const double sigma = gate_noise / static_cast<double>(E);
    const double inv_sqrt2 = 0.7071067811865476, inv_sqrt2pi = 0.3989422804014327;
    std::vector<double> imp(E, 0.0), load(E, 0.0);
    std::vector<T> p(E);
    for (std::size_t t = 0; t < T_; ++t) {
        detail::score_row<Arch>(score_function::softmax, logits.row(t), p.data(), E);
        const double thr = static_cast<double>(noisy_logits(t, static_cast<std::size_t>(last[t])));
        for (std::size_t e = 0; e < E; ++e) {
            imp[e] += static_cast<double>(p[e]);
            load[e] += detail::barrier(0.5 * std::erfc(-(static_cast<double>(p[e]) - thr) / sigma * inv_sqrt2));
        }
    }
    std::vector<double> d_imp, d_load;
    const double value = 0.5 * (detail::cv_squared(imp, d_imp) + detail::cv_squared(load, d_load));
    if (!grad.empty()) {
        std::vector<T> g(E);
        for (std::size_t t = 0; t < T_; ++t) {
            detail::score_row<Arch>(score_function::softmax, logits.row(t), p.data(), E);
            const double thr = static_cast<double>(noisy_logits(t, static_cast<std::size_t>(last[t])));
            double d_thr = 0.0;
            for (std::size_t e = 0; e < E; ++e) {
                const double z = (static_cast<double>(p[e]) - thr) / sigma;
                const double dl = 0.5 * d_load[e] * inv_sqrt2pi * std::exp(-0.5 * z * z) / sigma;
                g[e] = static_cast<T>(detail::barrier(0.5 * d_imp[e]) + dl);
                d_thr -= dl;
            }
            T* out = grad.row(t);
            detail::loss_probs_backward<Arch>(score_function::softmax, logits.row(t), p.data(), g.data(), out, E);
            out[last[t]] += static_cast<T>(d_thr);
        }
    }
    return value;
}

/// Aux-loss-free balancing (DeepSeek-V3; Megatron get_updated_expert_bias): once per global
/// batch, b_e += rate * sign(mean(n) - n_e), in float32. The bias feeds the router's
/// selection-only bias: overloaded experts become less likely to be selected.
inline void update_expert_bias(std::vector<float>& bias, const std::vector<std::size_t>& tokens_per_expert,
                               float rate = 1e-3f) {
    if (bias.size() != tokens_per_expert.size())
        MOE_THROW("moe.losses.bias", "bias has ", bias.size(), " entries, tokens_per_expert ", tokens_per_expert.size());
    if (!(rate >= 0.0f) || !std::isfinite(rate)) MOE_THROW("moe.losses.bias", "rate=", rate, " must be finite and >= 0");
    if (bias.empty()) return;
    float total = 0.0f;
    for (std::size_t n : tokens_per_expert) total += static_cast<float>(n);
    const float mean = total / static_cast<float>(bias.size());
    for (std::size_t e = 0; e < bias.size(); ++e) {
        const float off = mean - static_cast<float>(tokens_per_expert[e]);
        bias[e] += off > 0.0f ? rate : (off < 0.0f ? -rate : 0.0f);
    }
}

}  // namespace moe
