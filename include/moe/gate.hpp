/// @file gate.hpp
/// The gate linear: logits = x W^T (+ b), x (T x H) and W (E x H) row-major.
/// - `gate` / `gate_into` on plain weights: Eigen's GEMM; bf16 / f16 inputs are widened to
///   float first (as HF and Megatron do for the router).
/// - `pack_gate` once at load, then `gate_into` on the packed weights: moe's register-blocked
///   FMA kernel, float32, on the caller's executor, bit-identical on every arch (each logit is
///   one sequential fused multiply-add chain over h).
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "arch.hpp"
#include "config.hpp"
#include "detail/lane_math.hpp"
#include "executor.hpp"
#include "routing.hpp"
#include "tensor.hpp"

namespace moe {

/// Computes logits (T x E, compute_t<T>) = x (T x H) * W^T (W: E x H) + bias (E, optional),
/// writing into caller-owned `logits`. Throws [moe.gate.shape] on mismatched shapes.
template <class T>
void gate_into(matrix_view<compute_t<T>> logits, matrix_view<const T> x, matrix_view<const T> w,
               vector_view<compute_t<T>> bias = {}) {
    using C = compute_t<T>;
    if (x.cols != w.cols)
        MOE_THROW("moe.gate.shape", "x has hidden size ", x.cols, " but the gate weight has ", w.cols);
    if (logits.rows != x.rows || logits.cols != w.rows)
        MOE_THROW("moe.gate.shape", "logits are ", logits.rows, " x ", logits.cols, ", expected ", x.rows, " x ", w.rows);
    if (!bias.empty() && bias.size != w.rows)
        MOE_THROW("moe.gate.shape", "gate bias has ", bias.size, " entries, expected num_experts=", w.rows);
    if (logits.empty()) return;
    using RowMajor = Eigen::Matrix<C, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Stride = Eigen::OuterStride<>;
    Eigen::Map<RowMajor, 0, Stride> L(logits.data, logits.rows, logits.cols, Stride(logits.stride));
    if (x.cols == 0) {
        L.setZero();
    } else if constexpr (std::is_same<T, C>::value) {
        Eigen::Map<const RowMajor, 0, Stride> X(x.data, x.rows, x.cols, Stride(x.stride));
        Eigen::Map<const RowMajor, 0, Stride> W(w.data, w.rows, w.cols, Stride(w.stride));
        L.noalias() = X * W.transpose();
    } else {
        using Src = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        Eigen::Map<const Src, 0, Stride> X(x.data, x.rows, x.cols, Stride(x.stride));
        Eigen::Map<const Src, 0, Stride> W(w.data, w.rows, w.cols, Stride(w.stride));
        const RowMajor Xf = X.template cast<C>();
        const RowMajor Wf = W.template cast<C>();
        L.noalias() = Xf * Wf.transpose();
    }
    if (!bias.empty()) {
        for (std::size_t t = 0; t < logits.rows; ++t)
            for (std::size_t e = 0; e < logits.cols; ++e) logits(t, e) += bias[e];
    }
}

/// Returns logits = x W^T (+ bias) as a new matrix.
template <class T>
[[nodiscard]] matrix<compute_t<T>> gate(matrix_view<const T> x, matrix_view<const T> w, vector_view<compute_t<T>> bias = {}) {
    matrix<compute_t<T>> logits(x.rows, w.rows);
    gate_into<T>(logits.view(), x, w, bias);
    return logits;
}

/// Gate weights packed for moe's kernel: experts in panels of `panel` columns, each panel
/// stored h-major (`hidden` rows of `panel` floats), the last panel zero-padded.
struct packed_gate {
    std::size_t num_experts = 0;
    std::size_t hidden = 0;
    std::size_t panel = 0;
    std::vector<float> data;

    [[nodiscard]] std::size_t num_panels() const noexcept { return panel ? (num_experts + panel - 1) / panel : 0; }
    [[nodiscard]] const float* panel_data(std::size_t p) const noexcept { return data.data() + p * hidden * panel; }
};

namespace detail {

/// Panel width for `Arch`: two vectors when there are more experts than one vector holds.
template <class Arch>
constexpr std::size_t gate_panel(std::size_t num_experts) noexcept {
    constexpr std::size_t W = lane_ops<Arch>::width;
    return W == 1 ? 1 : (num_experts > W ? 2 * W : W);
}

/// rows x ncols logits of one token block against one panel: acc[r][v] += x[r][h] * panel[h][v],
/// h ascending, one fused multiply-add per step.
template <class Arch, std::size_t MR, std::size_t NV>
void gate_block(const float* x, std::size_t xs, std::size_t H, const float* panel, float* out, std::size_t os,
                std::size_t ncols) noexcept {
    using O = lane_ops<Arch>;
    using V = typename O::V;
    constexpr std::size_t W = O::width, P = NV * W;
    V acc[MR][NV];
    for (std::size_t r = 0; r < MR; ++r)
        for (std::size_t v = 0; v < NV; ++v) acc[r][v] = O::splat(0.0f);
    for (std::size_t h = 0; h < H; ++h) {
        V b[NV];
        for (std::size_t v = 0; v < NV; ++v) b[v] = O::load(panel + h * P + v * W);
        for (std::size_t r = 0; r < MR; ++r) {
            const V a = O::splat(x[r * xs + h]);
            for (std::size_t v = 0; v < NV; ++v) acc[r][v] = O::fmadd(a, b[v], acc[r][v]);
        }
    }
    for (std::size_t r = 0; r < MR; ++r) {
        if (ncols == P) {
            for (std::size_t v = 0; v < NV; ++v) O::store(out + r * os + v * W, acc[r][v]);
        } else {
            alignas(64) float tmp[P];
            for (std::size_t v = 0; v < NV; ++v) O::store(tmp + v * W, acc[r][v]);
            std::copy(tmp, tmp + ncols, out + r * os);
        }
    }
}

/// Logits of `rows` tokens against every panel. A block of MR token rows stays in L1 while
/// all panels stream past it.
template <class Arch, std::size_t NV>
void gate_rows(const float* x, std::size_t xs, std::size_t rows, const packed_gate& w, float* out,
               std::size_t os) noexcept {
    constexpr std::size_t W = lane_ops<Arch>::width;
    constexpr std::size_t MR = W == 16 ? 8 : W == 8 ? 6 : 4;  // accumulators fill the register file
    const std::size_t H = w.hidden, E = w.num_experts;
    auto all_panels = [&](auto mr, std::size_t r) {
        for (std::size_t p = 0; p < w.num_panels(); ++p)
            gate_block<Arch, decltype(mr)::value, NV>(x + r * xs, xs, H, w.panel_data(p), out + r * os + p * w.panel,
                                                     os, std::min(w.panel, E - p * w.panel));
    };
    std::size_t r = 0;
    for (; r + MR <= rows; r += MR) all_panels(std::integral_constant<std::size_t, MR>{}, r);
    for (; r < rows; ++r) all_panels(std::integral_constant<std::size_t, 1>{}, r);
}

}  // namespace detail

/// Packs gate weights W (E x H, row-major) for `gate_into(logits, x, packed, ...)`: do it once
/// when the model is loaded. The layout depends on `Arch` (its SIMD width).
template <class Arch = default_arch>
[[nodiscard]] packed_gate pack_gate(matrix_view<const float> w) {
    packed_gate p;
    p.num_experts = w.rows;
    p.hidden = w.cols;
    p.panel = detail::gate_panel<Arch>(w.rows);
    p.data.assign(p.num_panels() * p.hidden * p.panel, 0.0f);
    for (std::size_t e = 0; e < w.rows; ++e) {
        float* dst = p.data.data() + (e / p.panel) * p.hidden * p.panel + e % p.panel;
        for (std::size_t h = 0; h < w.cols; ++h) dst[h * p.panel] = w(e, h);
    }
    return p;
}

/// logits (T x E) = x (T x H) * W^T + bias, with W packed by pack_gate<Arch>. Token blocks of
/// 64 run on `exec`; allocates nothing. Throws [moe.gate.shape] on mismatched shapes.
template <class Arch = default_arch, class Executor = serial_executor>
void gate_into(matrix_view<float> logits, matrix_view<const float> x, const packed_gate& w,
               vector_view<float> bias = {}, Executor&& exec = {}) {
    if (w.panel != detail::gate_panel<Arch>(w.num_experts))
        MOE_THROW("moe.gate.packing", "weights were packed for panels of ", w.panel, ", ", Arch::name(),
                  " uses ", detail::gate_panel<Arch>(w.num_experts), ": pack with pack_gate<Arch>");
    if (x.cols != w.hidden)
        MOE_THROW("moe.gate.shape", "x has hidden size ", x.cols, " but the gate weight has ", w.hidden);
    if (logits.rows != x.rows || logits.cols != w.num_experts)
        MOE_THROW("moe.gate.shape", "logits are ", logits.rows, " x ", logits.cols, ", expected ", x.rows, " x ",
                  w.num_experts);
    if (!bias.empty() && bias.size != w.num_experts)
        MOE_THROW("moe.gate.shape", "gate bias has ", bias.size, " entries, expected num_experts=", w.num_experts);
    constexpr std::size_t block = 64;
    const std::size_t T = x.rows, E = w.num_experts;
    exec((T + block - 1) / block, [&](std::size_t b) {
        const std::size_t t0 = b * block, rows = std::min(block, T - t0);
        if (w.panel > detail::lane_ops<Arch>::width)
            detail::gate_rows<Arch, 2>(x.row(t0), x.stride, rows, w, logits.row(t0), logits.stride);
        else
            detail::gate_rows<Arch, 1>(x.row(t0), x.stride, rows, w, logits.row(t0), logits.stride);
        if (!bias.empty())
            for (std::size_t t = t0; t < t0 + rows; ++t)
                for (std::size_t e = 0; e < E; ++e) logits(t, e) += bias[e];
    });
}

/// Overload for owning matrices.
template <class T>
[[nodiscard]] matrix<compute_t<T>> gate(const matrix<T>& x, const matrix<T>& w, vector_view<compute_t<T>> bias = {}) {
    return gate<T>(x.view(), w.view(), bias);
}

}  // namespace moe
