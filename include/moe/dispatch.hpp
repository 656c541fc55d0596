/// @file dispatch.hpp
/// The dispatch plan (which row of the expert-major buffer each routed slot occupies), and the
/// two data movements around the experts: gather (permute token rows into that buffer) and
/// combine (weighted sum of each token's expert outputs back into token order).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "arch.hpp"
#include "config.hpp"
#include "detail/lane_math.hpp"
#include "executor.hpp"
#include "routing.hpp"
#include "tensor.hpp"

namespace moe {

/// Expert-major row order: expert e owns rows [offsets[e], offsets[e + 1]); inside an expert,
/// tokens keep their order. With `block` > 1 each expert's rows are rounded up to a multiple
/// of `block` (MegaBlocks blocks, vLLM moe_align_block_size) and the extra rows are padding.
struct dispatch_plan {
    std::size_t num_tokens = 0;
    std::size_t num_experts = 0;
    std::size_t top_k = 0;
    std::size_t block = 1;
    std::vector<std::int32_t> counts;     ///< E: routed rows per expert (padding excluded)
    std::vector<std::int32_t> offsets;    ///< E + 1: row ranges, padding included
    std::vector<std::int32_t> row_token;  ///< rows: the token of each row, -1 for padding
    std::vector<std::int32_t> row_slot;   ///< rows: that token's slot, -1 for padding
    std::vector<std::int32_t> slot_row;   ///< T x k: the row of (token, slot), -1 for an empty slot

    [[nodiscard]] std::size_t num_rows() const noexcept { return offsets.empty() ? 0 : static_cast<std::size_t>(offsets.back()); }
    /// Padding rows / all rows (0 without padding).
    [[nodiscard]] double padding_fraction() const noexcept {
        std::size_t routed = 0;
        for (std::int32_t c : counts) routed += static_cast<std::size_t>(c);
        return num_rows() ? 1.0 - static_cast<double>(routed) / static_cast<double>(num_rows()) : 0.0;
    }
};

/// The rows per expert of pad-to-capacity: min(capacity, T), as Megatron pads
/// (`moe_pad_expert_input_to_capacity`): an expert never receives more than one slot per token,
/// so a capacity above T pads each expert to T rows (T=20, E=8, k=2, cf=8: 160 rows, not 320).
[[nodiscard]] inline std::size_t padded_rows_per_expert(std::size_t capacity, std::size_t num_tokens) noexcept {
    return capacity < num_tokens ? capacity : num_tokens;
}

/// Builds the plan for `r` into `plan`, reusing its memory. `rows_per_expert` > 0 pads every
/// expert to exactly that many rows (pad-to-capacity: pass
/// padded_rows_per_expert(capacity_report::capacity, T)), then
/// to a multiple of `block`. Throws [moe.dispatch.index] for an expert index outside [-1, E),
/// [moe.dispatch.duplicate] for a token with two slots on one expert, [moe.dispatch.block]
/// for block = 0, [moe.dispatch.capacity] when an expert has more rows than rows_per_expert.
template <class W>
void make_plan_into(dispatch_plan& plan, const routing<W>& r, std::size_t block = 1, std::size_t rows_per_expert = 0) {
    if (block == 0) MOE_THROW("moe.dispatch.block", "block size must be at least 1");
    const std::size_t T = r.num_tokens, E = r.num_experts, k = r.top_k;
    plan.num_tokens = T;
    plan.num_experts = E;
    plan.top_k = k;
    plan.block = block;
    plan.counts.assign(E, 0);
    for (std::size_t t = 0; t < T; ++t) {
        for (std::size_t s = 0; s < k; ++s) {
            const std::int32_t e = r.index(t, s);
            if (e < -1 || e >= static_cast<std::int32_t>(E))
                MOE_THROW("moe.dispatch.index", "token ", t, ", slot ", s, " names expert ", e, " (num_experts=", E, ")");
            if (e < 0) continue;
            for (std::size_t s2 = 0; s2 < s; ++s2)
                if (r.index(t, s2) == e)
                    MOE_THROW("moe.dispatch.duplicate", "token ", t, " has slots ", s2, " and ", s, " on expert ", e);
            ++plan.counts[static_cast<std::size_t>(e)];
        }
    }
    plan.offsets.assign(E + 1, 0);
    for (std::size_t e = 0; e < E; ++e) {
        std::size_t c = static_cast<std::size_t>(plan.counts[e]);
        if (rows_per_expert > 0) {
            if (c > rows_per_expert)
                MOE_THROW("moe.dispatch.capacity", "expert ", e, " has ", c, " routed slots, more than rows_per_expert=",
                          rows_per_expert, " (apply the capacity first)");
            c = rows_per_expert;
        }
        const std::size_t padded = (c + block - 1) / block * block;
        plan.offsets[e + 1] = plan.offsets[e] + static_cast<std::int32_t>(padded);
    }
    const std::size_t rows = plan.num_rows();
    plan.row_token.assign(rows, -1);
    plan.row_slot.assign(rows, -1);
    plan.slot_row.assign(T * k, -1);
    std::vector<std::int32_t> cursor(plan.offsets.begin(), plan.offsets.end() - 1);
    for (std::size_t t = 0; t < T; ++t) {
        for (std::size_t s = 0; s < k; ++s) {
            const std::int32_t e = r.index(t, s);
            if (e < 0) continue;
            const std::int32_t row = cursor[static_cast<std::size_t>(e)]++;
            plan.row_token[static_cast<std::size_t>(row)] = static_cast<std::int32_t>(t);
            plan.row_slot[static_cast<std::size_t>(row)] = static_cast<std::int32_t>(s);
            plan.slot_row[t * k + s] = row;
        }
    }
}

/// Returns the plan for `r` (see make_plan_into).
template <class W>
[[nodiscard]] dispatch_plan make_plan(const routing<W>& r, std::size_t block = 1, std::size_t rows_per_expert = 0) {
    dispatch_plan p;
    make_plan_into(p, r, block, rows_per_expert);
    return p;
}

namespace detail {

/// Copies `bytes` from src to dst with non-temporal stores where the arch has them (no
/// read-for-ownership of destination lines: what memcpy does for large copies).
template <class Arch>
inline void stream_copy(void* dst, const void* src, std::size_t bytes) noexcept {
    auto* d = static_cast<char*>(dst);
    const auto* s = static_cast<const char*>(src);
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) {
        const std::size_t head = std::min(bytes, (64 - reinterpret_cast<std::uintptr_t>(d) % 64) % 64);
        std::memcpy(d, s, head);
        std::size_t i = head;
        for (; i + 64 <= bytes; i += 64)
            _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i), _mm512_loadu_si512(reinterpret_cast<const void*>(s + i)));
        std::memcpy(d + i, s + i, bytes - i);
        return;
    }
#endif
#if XSIMD_WITH_AVX
    if constexpr (lane_ops<Arch>::width == 8) {
        const std::size_t head = std::min(bytes, (32 - reinterpret_cast<std::uintptr_t>(d) % 32) % 32);
        std::memcpy(d, s, head);
        std::size_t i = head;
        for (; i + 32 <= bytes; i += 32)
            _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
        std::memcpy(d + i, s + i, bytes - i);
        return;
    }
#endif
    std::memcpy(d, s, bytes);
}

/// Destinations above this size are written with non-temporal stores: they cannot stay in
/// cache for the expert kernel anyway. Smaller ones use normal stores and stay warm.
inline constexpr std::size_t gather_stream_bytes = std::size_t(16) << 20;

}  // namespace detail

/// A block-padded plan in vLLM's `moe_align_block_size` encoding, for engines whose fused-MoE
/// kernels expect it: slot ids (token * k + slot) expert by expert, each expert padded with the
/// sentinel T * k to a multiple of the block; the expert of each block; the padded length.
struct vllm_block_layout {
    std::vector<std::int32_t> sorted_token_ids;  ///< num_tokens_post_pad entries
    std::vector<std::int32_t> expert_ids;        ///< num_tokens_post_pad / block entries
    std::int32_t num_tokens_post_pad = 0;
};

/// Converts a plan built with block size B into vLLM's layout (see vllm_block_layout).
[[nodiscard]] inline vllm_block_layout to_vllm_layout(const dispatch_plan& p) {
    vllm_block_layout v;
    const std::int32_t sentinel = static_cast<std::int32_t>(p.num_tokens * p.top_k);
    v.num_tokens_post_pad = static_cast<std::int32_t>(p.num_rows());
    v.sorted_token_ids.resize(p.num_rows());
    for (std::size_t i = 0; i < p.num_rows(); ++i)
        v.sorted_token_ids[i] = p.row_token[i] < 0 ? sentinel
                                                   : p.row_token[i] * static_cast<std::int32_t>(p.top_k) + p.row_slot[i];
    for (std::size_t e = 0; e < p.num_experts; ++e)
        for (std::int32_t b = p.offsets[e]; b < p.offsets[e + 1]; b += static_cast<std::int32_t>(p.block))
            v.expert_ids.push_back(static_cast<std::int32_t>(e));
    return v;
}

/// rows (num_rows x H) <- token rows of x in plan order; padding rows are zero. Row blocks run
/// on `exec`. Throws [moe.dispatch.shape] on mismatched shapes.
template <class Arch = default_arch, class T, class Executor = serial_executor>
void gather(matrix_view<T> rows, matrix_view<const detail::non_deduced_t<T>> x, const dispatch_plan& plan,
            Executor&& exec = {}) {
    if (x.rows != plan.num_tokens || rows.rows != plan.num_rows() || rows.cols != x.cols)
        MOE_THROW("moe.dispatch.shape", "gather: x is ", x.rows, " x ", x.cols, ", rows ", rows.rows, " x ", rows.cols,
                  "; the plan needs ", plan.num_tokens, " tokens and ", plan.num_rows(), " rows of ", x.cols);
    constexpr std::size_t block = 64;
    const std::size_t H = x.cols, n = plan.num_rows();
    const bool stream = n * H * sizeof(T) >= detail::gather_stream_bytes;
    exec((n + block - 1) / block, [&](std::size_t b) {
        for (std::size_t i = b * block; i < std::min(n, (b + 1) * block); ++i) {
            const std::int32_t t = plan.row_token[i];
            if (t < 0) std::fill(rows.row(i), rows.row(i) + H, T(0));
            else if (stream) detail::stream_copy<Arch>(rows.row(i), x.row(static_cast<std::size_t>(t)), H * sizeof(T));
            else std::memcpy(rows.row(i), x.row(static_cast<std::size_t>(t)), H * sizeof(T));
        }
#if XSIMD_WITH_SSE2
        if (stream) _mm_sfence();  // order the streamed rows before the executor's join
#endif
    });
}

/// y (T x H) <- for each token, the sum over its routed slots, in slot order, of
/// weight(t, s) * out[row of (t, s)], as one fused multiply-add chain per element: the result
/// does not depend on the arch or the executor. Tokens with no routed slot get zeros. Throws
/// [moe.dispatch.shape] on mismatched shapes.
template <class Arch = default_arch, class Executor = serial_executor>
void combine(matrix_view<float> y, matrix_view<const float> out, const dispatch_plan& plan, const routing<float>& r,
             Executor&& exec = {}) {
    if (y.rows != plan.num_tokens || out.rows != plan.num_rows() || out.cols != y.cols || r.num_tokens != plan.num_tokens ||
        r.top_k != plan.top_k)
        MOE_THROW("moe.dispatch.shape", "combine: y is ", y.rows, " x ", y.cols, ", expert output ", out.rows, " x ",
                  out.cols, "; the plan needs ", plan.num_tokens, " tokens and ", plan.num_rows(), " rows");
    using O = detail::lane_ops<Arch>;
    constexpr std::size_t Wd = O::width;
    constexpr std::size_t block = 16;
    const std::size_t T = plan.num_tokens, H = y.cols, k = plan.top_k;
    const bool stream = T * H * sizeof(float) >= detail::gather_stream_bytes;
    exec((T + block - 1) / block, [&](std::size_t b) {
        const float* src[64];
        float w[64];
        for (std::size_t t = b * block; t < std::min(T, (b + 1) * block); ++t) {
            float* yt = y.row(t);
            bool first = true;  // the first pass starts from 0 instead of reading y
            std::size_t s0 = 0;
            while (s0 < k) {
                std::size_t n = 0;  // routed slots of this pass, in slot order (<= 64)
                for (; s0 < k && n < 64; ++s0) {
                    const std::int32_t row = plan.slot_row[t * k + s0];
                    if (row < 0) continue;
                    src[n] = out.row(static_cast<std::size_t>(row));
                    w[n++] = r.weight(t, s0);
                }
                if (n == 0) continue;
                // Each element: y = fma(w_n, src_n, ... fma(w_0, src_0, 0)), kept in registers
                // across the slots and stored once (streamed when y is large and this is the
                // last pass).
                auto scalar_part = [&](std::size_t h0, std::size_t h1) {
                    for (std::size_t h = h0; h < h1; ++h) {
                        float a = first ? 0.0f : yt[h];
                        for (std::size_t j = 0; j < n; ++j) a = std::fma(w[j], src[j][h], a);
                        yt[h] = a;
                    }
                };
                std::size_t h = 0;
                if constexpr (Wd > 1) {
                    constexpr std::size_t vbytes = Wd * sizeof(float);
                    const bool nt = stream && s0 == k && reinterpret_cast<std::uintptr_t>(yt) % sizeof(float) == 0;
                    if (nt) {  // align the vector part for streaming stores
                        h = std::min(H, (vbytes - reinterpret_cast<std::uintptr_t>(yt) % vbytes) % vbytes / sizeof(float));
                        scalar_part(0, h);
                    }
                    for (; h + 4 * Wd <= H; h += 4 * Wd) {
                        typename O::V acc[4];
                        for (std::size_t u = 0; u < 4; ++u) acc[u] = first ? O::splat(0.0f) : O::load(yt + h + u * Wd);
                        for (std::size_t j = 0; j < n; ++j) {
                            const auto vw = O::splat(w[j]);
                            for (std::size_t u = 0; u < 4; ++u) acc[u] = O::fmadd(vw, O::load(src[j] + h + u * Wd), acc[u]);
                        }
                        for (std::size_t u = 0; u < 4; ++u) {
                            if (nt) O::stream(yt + h + u * Wd, acc[u]);
                            else O::store(yt + h + u * Wd, acc[u]);
                        }
                    }
                }
                scalar_part(h, H);
                first = false;
            }
            if (first) std::fill(yt, yt + H, 0.0f);  // no routed slot
        }
#if XSIMD_WITH_SSE2
        if (stream) _mm_sfence();
#endif
    });
}

}  // namespace moe
