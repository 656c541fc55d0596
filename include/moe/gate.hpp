/// @file gate.hpp
/// The gate linear: logits = x W^T (+ b), x (T x H) and W (E x H) row-major, through Eigen's
/// GEMM. bf16 / f16 inputs are widened to float first (as HF and Megatron do for the router).
#pragma once

#include <type_traits>

#include <Eigen/Core>

#include "config.hpp"
#include "router.hpp"
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

/// Overload for owning matrices.
template <class T>
[[nodiscard]] matrix<compute_t<T>> gate(const matrix<T>& x, const matrix<T>& w, vector_view<compute_t<T>> bias = {}) {
    return gate<T>(x.view(), w.view(), bias);
}

}  // namespace moe
