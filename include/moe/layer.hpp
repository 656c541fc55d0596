/// @file layer.hpp
/// A sparse MoE block with the semantics of HF `MixtralSparseMoeBlock`, written as an inference
/// engine would: router linear (H -> E) and the SwiGLU experts packed once at construction,
/// scratch reused across calls (no allocation per call once the largest batch was seen, except
/// in the optional capacity stage), threads from the caller's executor.
///
///     logits = x Wr^T;  routing = route(logits, router_config);  [capacity / reroute / fill-in]
///     y[t] = sum over t's slots s of weight(t, s) * SwiGLU_{expert(t, s)}(x[t])
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

#include "capacity.hpp"
#include "dispatch.hpp"
#include "executor.hpp"
#include "gate.hpp"
#include "kernels/expert_ffn.hpp"
#include "kernels/formats.hpp"
#include "kernels/quant_ffn.hpp"
#include "presets.hpp"
#include "router.hpp"
#include "tensor.hpp"

namespace moe {

/// What the layer does besides routing: capacity-aware inference switches (all off: dropless).
struct layer_options {
    router_config router = presets::mixtral();
    bool capacity = false;  ///< apply `drop` (capacity, policy, reroute) after routing
    drop_config drop;
    bool fill_in = false;   ///< Rectify-Router fill-in after the drop (needs capacity)
    kernels::pack_options packing;
    kernels::formats::format_params format;  ///< quantized weights: int4's group and zero points
};

namespace detail {
/// The packed experts and their kernel for weight type W: float types run `expert_ffn`, format
/// types (kernels::formats::q4_k, ...) run `quant_expert_ffn` and take float (or quantized) weights.
template <class Arch, class W, bool Float = kernels::is_weight_type_v<W>>
struct block_experts {
    using packed = kernels::packed_experts<Arch, W>;
    using source = W;
    static packed pack(const W* w1, const W* w3, const W* w2, std::size_t E, std::size_t H, std::size_t F,
                       const layer_options& o) {
        return kernels::pack_experts<Arch>(w1, w3, w2, E, H, F, o.packing);
    }
};
template <class Arch, class W>
struct block_experts<Arch, W, false> {
    using packed = kernels::packed_quant_experts<W>;
    using source = float;
    static packed pack(const float* w1, const float* w3, const float* w2, std::size_t E, std::size_t H, std::size_t F,
                       const layer_options& o) {
        return kernels::pack_quant_experts<W>(kernels::quantize_experts<W>(w1, w3, w2, E, H, F, o.format), H, F, o.packing);
    }
};
}  // namespace detail

/// The sparse MoE block. @tparam W expert weight format: float, Eigen::bfloat16, Eigen::half,
/// or a quantized format of kernels/formats/ (kernels::formats::q4_k, int8, mxfp4, ...).
template <class Arch = default_arch, class W = float>
class sparse_moe_block {
    using experts_t = detail::block_experts<Arch, W>;

public:
    using source_type = typename experts_t::source;  ///< W for float formats, float for quantized ones
    using packed_type = typename experts_t::packed;

    /// router_w: E x H (row-major); w1, w3: E x F x H; w2: E x H x F (PyTorch / HF layout).
    /// Quantized formats take float weights and quantize them with the format's reference
    /// quantizer (`o.format` gives int4's group).
    sparse_moe_block(matrix_view<const float> router_w, const source_type* w1, const source_type* w3,
                     const source_type* w2, std::size_t ffn, const layer_options& o = {})
        : sparse_moe_block(router_w, experts_t::pack(w1, w3, w2, router_w.rows, router_w.cols, ffn, o), o) {}

    /// Quantized formats: from weights already in the format (e.g. a checkpoint's bytes).
    template <class Q = W, class = std::enable_if_t<!kernels::is_weight_type_v<Q>>>
    sparse_moe_block(matrix_view<const float> router_w, const kernels::quantized_experts<Q>& q, std::size_t ffn,
                     const layer_options& o = {})
        : sparse_moe_block(router_w, kernels::pack_quant_experts<Q>(q, router_w.cols, ffn, o.packing), o) {}

    /// From packed experts (E and H must match the router).
    sparse_moe_block(matrix_view<const float> router_w, packed_type experts, const layer_options& o)
        : opt_(o), E_(router_w.rows), H_(router_w.cols), F_(experts.ffn()), gate_(pack_gate<Arch>(router_w)),
          experts_(std::move(experts)) {
        if (experts_.num_experts() != E_ || experts_.hidden() != H_)
            MOE_THROW("moe.layer.shape", "router is ", E_, " x ", H_, ", experts ", experts_.num_experts(), " x hidden ",
                      experts_.hidden());
        opt_.router.validate(E_);
        if (opt_.router.keep_scores == false &&
            (opt_.capacity && (opt_.drop.reroute || opt_.fill_in || opt_.drop.policy == drop_policy::score ||
                               opt_.drop.policy == drop_policy::batch_prioritized)))
            opt_.router.keep_scores = true;
        if (opt_.fill_in && !opt_.capacity)
            MOE_THROW("moe.layer.options", "fill_in needs capacity: set layer_options::capacity");
    }

    /// y (T x H) = the block applied to x (T x H).
    template <class Executor = serial_executor>
    void forward(matrix_view<float> y, matrix_view<const float> x, Executor&& exec = {}) {
        const std::size_t T = x.rows;
        if (x.cols != H_ || y.cols != H_ || y.rows != T)
            MOE_THROW("moe.layer.shape", "x is ", x.rows, " x ", x.cols, ", y ", y.rows, " x ", y.cols, "; hidden=", H_);
        grow(logits_, T * E_);
        const matrix_view<float> logits(logits_.data(), T, E_);
        gate_into<Arch>(logits, x, gate_, {}, exec);
        const std::size_t k = opt_.router.top_k;
        r_.num_tokens = T;  // reshape in place: the vectors keep their capacity
        r_.num_experts = E_;
        r_.top_k = k;
        r_.indices.resize(T * k);
        r_.weights.resize(T * k);
        r_.scores.resize(opt_.router.keep_scores ? T * E_ : 0);
        route_into<Arch>(r_, matrix_view<const float>(logits), opt_.router, {}, router_ws_, exec);
        report_ = capacity_report{};
        fill_ = fill_in_report{};
        if (opt_.capacity) {
            report_ = apply_capacity(r_, opt_.drop);
            if (opt_.fill_in) r_ = fill_in(r_, report_.capacity, &fill_);
        }
        make_plan_into(plan_, r_);
        grow(rows_, plan_.num_rows() * H_);
        const matrix_view<float> rows(rows_.data(), plan_.num_rows(), H_);
        ws_.reserve(kernels::workspace_size(plan_, experts_).total());
        if constexpr (kernels::is_weight_type_v<W>)
            kernels::expert_ffn(rows, x, plan_, experts_, ws_.data(), ws_.size(), exec);
        else
            kernels::quant_expert_ffn<Arch>(rows, x, plan_, experts_, ws_.data(), ws_.size(), exec);
        combine<Arch>(y, matrix_view<const float>(rows), plan_, r_, exec);
    }

    [[nodiscard]] std::size_t num_experts() const noexcept { return E_; }
    [[nodiscard]] std::size_t hidden() const noexcept { return H_; }
    [[nodiscard]] std::size_t ffn() const noexcept { return F_; }
    [[nodiscard]] const layer_options& options() const noexcept { return opt_; }
    /// What the last forward did: router logits (T x E), the final routing, the capacity stage's
    /// report, fill-in, and the dispatch plan.
    [[nodiscard]] matrix_view<const float> last_logits() const noexcept {
        return {logits_.data(), r_.num_tokens, E_};
    }
    [[nodiscard]] const routing<float>& last_routing() const noexcept { return r_; }
    [[nodiscard]] const capacity_report& last_capacity() const noexcept { return report_; }
    [[nodiscard]] const fill_in_report& last_fill_in() const noexcept { return fill_; }
    [[nodiscard]] const dispatch_plan& last_plan() const noexcept { return plan_; }
    /// FLOPs of the last forward's expert products (6 H F per routed row) and its gate (2 H E per token).
    [[nodiscard]] double last_flops() const noexcept {
        std::size_t routed = 0;
        for (auto c : plan_.counts) routed += static_cast<std::size_t>(c);
        return 6.0 * static_cast<double>(routed) * static_cast<double>(H_ * F_) +
               2.0 * static_cast<double>(r_.num_tokens * H_ * E_);
    }
    /// The packed expert weights.
    [[nodiscard]] const packed_type& packed_experts() const noexcept { return experts_; }
    /// Bytes of packed weights per expert (what a decode step streams per active expert).
    [[nodiscard]] std::size_t expert_bytes() const noexcept { return experts_.expert_bytes(); }

private:
    static void grow(std::vector<float>& v, std::size_t n) {
        if (v.size() < n) v.resize(n);
    }

    layer_options opt_;
    std::size_t E_, H_, F_;
    packed_gate gate_;
    packed_type experts_;
    router_workspace<float> router_ws_;
    std::vector<float> logits_, rows_;
    routing<float> r_;
    capacity_report report_;
    fill_in_report fill_;
    dispatch_plan plan_;
    kernels::ffn_workspace ws_;
};

}  // namespace moe
