/// @file kernels/expert_ffn.hpp
/// Grouped (block-sparse) SwiGLU experts over a dispatch plan:
///     y_row = (silu(x W1^T) * (x W3^T)) W2^T    for every row the plan gives each expert.
///
/// The plan's expert-major rows are the block-sparse structure (MegaBlocks): each expert's rows
/// are split into blocks of `mr` rows, each block multiplies only its expert's packed panels, so
/// there is neither dropping nor padding to a capacity. Three phases, each a set of independent
/// tiles handed to the caller's executor:
///   1. gather + pack: the rows' tokens are copied from x straight into the micro-kernel's
///      operand layout;
///   2. up + SwiGLU: one register-blocked micro-kernel computes matching W1 and W3 columns; the
///      epilogue applies silu(h1) * h3 in registers and writes the activations, already packed
///      as the operand of phase 3;
///   3. down: activations x W2^T into `y_rows` (plan row order), for `combine`.
/// Every output element is one fused multiply-add chain over k in order, computed by one tile,
/// so results are bit-identical for any executor, thread count and arch (moe::scalar included).
///
/// Weights: float and double compute in their own type; Eigen::half and Eigen::bfloat16 weights
/// are widened to float (exactly) and multiply float activations with float accumulation. At
/// prefill a tile widens each 16 KiB block of weights once into L1 and reuses it for all its
/// rows; at decode the micro-kernel widens as it streams, reading half the bytes of float.
/// (AVX-512 `vdpbf16ps` was measured on the development machine at half the fp32 FMA peak,
/// 87 against 173 GFLOP/s, and it would also round the activations to bf16: widening is faster
/// there and exact.)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512BF16__) || defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "../arch.hpp"
#include "../config.hpp"
#include "../detail/lane_math.hpp"
#include "../dispatch.hpp"
#include "../executor.hpp"
#include "../tensor.hpp"
#include "pack.hpp"

namespace moe::kernels {

namespace detail {

using moe::detail::lane_ops;

/// Compute type of a weight type: double for double, float otherwise.
template <class W>
using compute_t = std::conditional_t<std::is_same<W, double>::value, double, float>;
/// Operand type of packed activations.
template <class W>
using act_t = compute_t<W>;

/// Loads `width` weights of type W as float lanes.
template <class Arch, class W>
struct weight_lanes {
    using O = lane_ops<Arch>;
    using V = typename O::V;
    static MOE_ALWAYS_INLINE V load(const W* p) noexcept {
        if constexpr (std::is_same<W, float>::value) {
            return O::load(p);
        } else if constexpr (O::width == 1) {
            return static_cast<float>(*p);
        } else {
            if constexpr (std::is_same<W, Eigen::bfloat16>::value) {
                // bf16 -> float: the 16 bits become the high half of a float.
                using U = xsimd::batch<std::uint32_t, Arch>;
                alignas(64) std::uint32_t wide[O::width];
#if defined(__AVX512F__)
                if constexpr (O::width == 16)
                    return V(_mm512_castsi512_ps(
                        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16)));
#endif
#if defined(__AVX2__)
                if constexpr (O::width == 8)
                    return V(_mm256_castsi256_ps(
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16)));
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
                if constexpr (O::width == 4)
                    return V(vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p)), 16)));
#endif
                for (std::size_t i = 0; i < O::width; ++i) {
                    std::uint16_t bits;
                    std::memcpy(&bits, p + i, 2);
                    wide[i] = static_cast<std::uint32_t>(bits) << 16;
                }
                return xsimd::bitwise_cast<V>(U::load_aligned(wide));
            }
#if defined(__AVX512F__)
            if constexpr (O::width == 16)
                return V(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
#if defined(__F16C__)
            if constexpr (O::width == 8) return V(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
            if constexpr (O::width == 4 && std::is_same<W, Eigen::half>::value) return V(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p)))));
#endif
            alignas(64) float tmp[O::width];
            for (std::size_t i = 0; i < O::width; ++i) tmp[i] = static_cast<float>(p[i]);
            return O::load(tmp);
        }
    }
};

/// The micro-kernel for float / half / double weights: acc[M][nr] = c_in (or 0) + A(M x K) *
/// B(K x nr) over k in [k0, k1), A packed [k][mr], B a panel [k][nr], c_in rows ldc apart; `epi(acc)`
/// consumes the result. Carrying c_in between K blocks continues the same FMA chain.
template <class Arch, class W, std::size_t M, class Epi>
MOE_ALWAYS_INLINE void micro(std::size_t k0, std::size_t k1, const compute_t<W>* a, const W* b, const compute_t<W>* c_in,
                             std::size_t ldc, Epi&& epi) noexcept {
    constexpr std::size_t mr = blocking<Arch>::mr, nr = blocking<Arch>::nr;
    if constexpr (std::is_same<W, double>::value) {
        double acc[M][nr] = {};
        if (c_in)
            for (std::size_t i = 0; i < M; ++i)
                for (std::size_t j = 0; j < nr; ++j) acc[i][j] = c_in[i * ldc + j];
        for (std::size_t k = k0; k < k1; ++k)
            for (std::size_t i = 0; i < M; ++i)
                for (std::size_t j = 0; j < nr; ++j) acc[i][j] = std::fma(a[k * mr + i], b[k * nr + j], acc[i][j]);
        epi(acc);
    } else {
        using O = lane_ops<Arch>;
        using V = typename O::V;
        constexpr std::size_t w = O::width;
        V acc[M][2];
        for (std::size_t i = 0; i < M; ++i) {
            acc[i][0] = c_in ? O::load(c_in + i * ldc) : O::splat(0.0f);
            acc[i][1] = c_in ? O::load(c_in + i * ldc + w) : O::splat(0.0f);
        }
        const float* ak = a + k0 * mr;
        const W* bk = b + k0 * nr;
        for (std::size_t k = k0; k < k1; ++k, ak += mr, bk += nr) {
            // 32 k ahead: at decode the weights stream from memory and this keeps more of them
            // in flight than the hardware prefetcher does (+15-25% at T <= 16); at prefill it hits L1.
            __builtin_prefetch(bk + 32 * nr, 0, 3);
            const V b0 = weight_lanes<Arch, W>::load(bk), b1 = weight_lanes<Arch, W>::load(bk + w);
            for (std::size_t i = 0; i < M; ++i) {
                const V ai = O::splat(ak[i]);
                acc[i][0] = O::fmadd(ai, b0, acc[i][0]);
                acc[i][1] = O::fmadd(ai, b1, acc[i][1]);
            }
        }
        // Hand a copy to the epilogue: taking the address of `acc` itself would make the
        // compiler keep some accumulators in memory inside the loop.
        V res[M][2];
        for (std::size_t i = 0; i < M; ++i) res[i][0] = acc[i][0], res[i][1] = acc[i][1];
        epi(res);
    }
}

/// Prefetches slice `part` of `parts` of the `bytes` at `p` into L2: a tile spreads the next
/// weight block over its row blocks so that it arrives before it is needed.
inline void prefetch_slice(const void* p, std::size_t bytes, std::size_t part, std::size_t parts) noexcept {
    if (!bytes) return;
    const std::size_t slice = (bytes / parts + 63) / 64 * 64;
    const char* base = static_cast<const char*>(p);
    for (std::size_t off = part * slice; off < std::min(bytes, (part + 1) * slice); off += 64) __builtin_prefetch(base + off, 0, 2);
}

/// Calls run(integral_constant<M>) for M = m, 1 <= m <= Max.
template <std::size_t Max, class Run>
MOE_ALWAYS_INLINE void dispatch_rows(std::size_t m, Run&& run) noexcept {
    if constexpr (Max > 1) {
        if (m < Max) {
            dispatch_rows<Max - 1>(m, run);
            return;
        }
    }
    run(std::integral_constant<std::size_t, Max>{});
}

/// Dispatches micro-kernels on the row count of a block (1..mr).
template <class Arch, class W, class Epi>
MOE_ALWAYS_INLINE void micro_rows(std::size_t m, std::size_t k0, std::size_t k1, const act_t<W>* a, const W* b,
                                  const compute_t<W>* c_in, std::size_t ldc, Epi&& epi) noexcept {
    constexpr std::size_t mr = blocking<Arch>::mr;
    auto run = [&](auto mtag) {
        constexpr std::size_t M = decltype(mtag)::value;
        micro<Arch, W, M>(k0, k1, a, b, c_in, ldc, epi);
    };
    dispatch_rows<mr>(m, run);
}

/// Partial sums of one tile between K blocks (on the stack of the thread running the tile).
template <class C, std::size_t N>
struct tile_scratch {
    alignas(64) C v[N];
};

}  // namespace detail

/// Sizes of the scratch `expert_ffn` needs, from `workspace_size`.
struct ffn_workspace_layout {
    std::size_t x_pack = 0;    ///< bytes of packed input rows
    std::size_t act_pack = 0;  ///< bytes of packed activations
    std::size_t blocks = 0;    ///< bytes of the per-expert block index
    [[nodiscard]] std::size_t total() const noexcept { return x_pack + act_pack + blocks; }
};

/// Bytes of workspace `expert_ffn` needs for this plan and these packed weights.
template <class Arch, class W>
[[nodiscard]] ffn_workspace_layout workspace_size(const dispatch_plan& plan, const packed_experts<Arch, W>& pw) {
    constexpr std::size_t mr = blocking<Arch>::mr;
    using AT = detail::act_t<W>;
    std::size_t blocks = 0;
    for (std::size_t e = 0; e + 1 < plan.offsets.size(); ++e)
        blocks += (static_cast<std::size_t>(plan.offsets[e + 1] - plan.offsets[e]) + mr - 1) / mr;
    auto round64 = [](std::size_t b) { return (b + 63) / 64 * 64; };
    ffn_workspace_layout l;
    l.x_pack = round64(blocks * mr * pw.up_k() * sizeof(AT));
    l.act_pack = round64(blocks * mr * pw.down_k() * sizeof(AT));
    l.blocks = round64((plan.num_experts + 1) * sizeof(std::size_t));
    return l;
}

/// A growable, 64-byte aligned workspace owned by the caller (reserve once, reuse every call).
class ffn_workspace {
public:
    void reserve(std::size_t bytes) {
        if (bytes <= size_) return;
        buf_.assign((bytes + 63) / 64 + 1, aligned64{});
        size_ = bytes;
    }
    [[nodiscard]] void* data() noexcept { return buf_.data(); }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

private:
    struct alignas(64) aligned64 {
        unsigned char b[64];
    };
    std::vector<aligned64> buf_;
    std::size_t size_ = 0;
};

/// Tile sizes of the three phases (tunable; results do not depend on them).
struct ffn_tiling {
    std::size_t rows_per_tile = 256;              ///< rows of an expert per tile (at most 256)
    std::size_t panel_bytes_per_tile = 128u << 10;  ///< weight bytes of one tile's panels
    std::size_t l1_panel_bytes = 32u << 10;       ///< bytes of a panel's K block kept in L1
    std::size_t down_panels_per_tile = 8;          ///< down-projection panels sharing one tile
};

/// The expert activation: SwiGLU `silu(h1) * h3`; GPT-OSS's clamped variant
/// `(clamp(h3, -limit, limit) + 1) * g * sigmoid(alpha * g)` with g = min(h1, limit)
/// (HF `GptOssExperts`: alpha 1.702, limit 7); or DeepSeek-V4's clamped SwiGLU
/// `silu(min(h1, limit)) * clamp(h3, -limit, limit)` (its `Expert.forward`; the gate has no
/// lower bound).
enum class ffn_activation { swiglu, swiglu_oai, swiglu_clamp };

/// What some models add to the plain SwiGLU expert: the activation variant and per-expert
/// biases (GPT-OSS): h1 = x W1^T + b1, h3 = x W3^T + b3, y = act W2^T + b2. Biases are
/// caller-owned, row-major per expert: b1, b3 [E x F], b2 [E x H]; null = none.
struct ffn_extras {
    ffn_activation activation = ffn_activation::swiglu;
    float alpha = 1.702f, limit = 7.0f;
    const float* b1 = nullptr;
    const float* b3 = nullptr;
    const float* b2 = nullptr;
    /// The row of b1 / b3 / b2 of the plan's expert e: expert_ids[e] (nullptr: e). An expert set
    /// (kernels/expert_set.hpp) runs a group of the block's experts as experts 0..n-1 of a plan
    /// of their own, with the block's biases.
    const std::int32_t* expert_ids = nullptr;
    [[nodiscard]] bool plain() const noexcept { return activation == ffn_activation::swiglu && !b1 && !b3 && !b2; }
    [[nodiscard]] std::size_t bias_row(std::size_t e) const noexcept {
        return expert_ids ? static_cast<std::size_t>(expert_ids[e]) : e;
    }
};

/// y_rows (plan rows x H, float) = SwiGLU expert of each row's expert applied to x[row's token].
/// Padding rows of the plan (token -1) get zeros in, and whatever the expert makes of zeros out;
/// `combine` never reads them. `workspace` must hold workspace_size(plan, pw).total() bytes,
/// 64-byte aligned. Throws [moe.kernels.shape] on mismatched shapes, [moe.kernels.workspace] on
/// a short workspace.
template <class Arch, class W, class X, class Executor = serial_executor>
void expert_ffn(matrix_view<detail::compute_t<W>> y_rows, matrix_view<const X> x, const dispatch_plan& plan,
                const packed_experts<Arch, W>& pw, void* workspace, std::size_t workspace_bytes, Executor&& exec = {},
                const ffn_tiling& tiling = {}, const ffn_extras& extras = {}) {
    using C = detail::compute_t<W>;
    using AT = detail::act_t<W>;
    static_assert(std::is_same<X, C>::value, "moe::kernels::expert_ffn: x must be float (double for double weights)");
    constexpr std::size_t mr = blocking<Arch>::mr, nr = blocking<Arch>::nr, half = nr / 2;
    const std::size_t H = pw.hidden(), F = pw.ffn(), E = pw.num_experts();
    if (plan.num_experts != E || plan.offsets.size() != E + 1)
        MOE_THROW("moe.kernels.shape", "plan has ", plan.num_experts, " experts, packed weights ", E);
    if (x.cols != H) MOE_THROW("moe.kernels.shape", "x has ", x.cols, " columns, hidden=", H);
    if (x.rows != plan.num_tokens) MOE_THROW("moe.kernels.shape", "x has ", x.rows, " rows, the plan ", plan.num_tokens, " tokens");
    if (y_rows.rows != plan.num_rows() || y_rows.cols != H)
        MOE_THROW("moe.kernels.shape", "y_rows is ", y_rows.rows, " x ", y_rows.cols, ", expected ", plan.num_rows(), " x ", H);
    const ffn_workspace_layout lay = workspace_size(plan, pw);
    if (workspace_bytes < lay.total() || (reinterpret_cast<std::uintptr_t>(workspace) & 63) != 0)
        MOE_THROW("moe.kernels.workspace", "workspace of ", workspace_bytes, " bytes (needs ", lay.total(),
                  ", 64-byte aligned)");
    unsigned char* ws = static_cast<unsigned char*>(workspace);
    AT* xpack = reinterpret_cast<AT*>(ws);
    AT* apack = reinterpret_cast<AT*>(ws + lay.x_pack);
    std::size_t* block0 = reinterpret_cast<std::size_t*>(ws + lay.x_pack + lay.act_pack);
    block0[0] = 0;
    for (std::size_t e = 0; e < E; ++e)
        block0[e + 1] = block0[e] + (static_cast<std::size_t>(plan.offsets[e + 1] - plan.offsets[e]) + mr - 1) / mr;
    const std::size_t nblocks = block0[E];
    if (nblocks == 0) return;
    const std::size_t kx = pw.up_k(), ka = pw.down_k();  // AT per row of each pack
    const bool plain = extras.plain(), oai = extras.activation == ffn_activation::swiglu_oai,
               clamped = extras.activation == ffn_activation::swiglu_clamp;
    const float lim = extras.limit, alpha = extras.alpha;

    // Phase 1: gather + pack, one tile per row block.
    exec(nblocks, [&, xpack](std::size_t blk) {
        const std::size_t e = static_cast<std::size_t>(std::upper_bound(block0, block0 + E + 1, blk) - block0) - 1;
        const std::size_t r0 = static_cast<std::size_t>(plan.offsets[e]) + (blk - block0[e]) * mr;
        const std::size_t r1 = std::min(r0 + mr, static_cast<std::size_t>(plan.offsets[e + 1]));
        AT* dst = xpack + blk * mr * kx;
        for (std::size_t i = 0; i < mr; ++i) {
            const std::int32_t tok = r0 + i < r1 ? plan.row_token[r0 + i] : -1;
            const C* src = tok >= 0 ? x.row(static_cast<std::size_t>(tok)) : nullptr;
            for (std::size_t k = 0; k < kx; ++k) dst[k * mr + i] = src ? src[k] : C(0);
        }
    });

    // Tiles of phases 2 and 3: (expert, row chunk, panel chunk), panel chunks sized for L2 and
    // innermost so that consecutive tiles share rows; each expert's tiles are contiguous.
    auto panels_per_tile = [&](std::size_t k) {
        return std::max<std::size_t>(1, tiling.panel_bytes_per_tile / (k * nr * sizeof(W)));
    };
    auto run_phase = [&](std::size_t chunk_blocks, std::size_t panels, std::size_t ppt, auto&& body) {
        std::size_t tiles = 0;
        const std::size_t pchunks = (panels + ppt - 1) / ppt;
        // Tile t -> (e, row chunk, panel chunk) by walking experts; tiles per expert vary.
        auto tiles_of = [&](std::size_t e) {
            const std::size_t b = block0[e + 1] - block0[e];
            return (b + chunk_blocks - 1) / chunk_blocks * pchunks;
        };
        for (std::size_t e = 0; e < E; ++e) tiles += tiles_of(e);
        exec(tiles, [&](std::size_t t) {
            std::size_t e = 0;
            while (t >= tiles_of(e)) t -= tiles_of(e++);
            const std::size_t rc = t / pchunks, pc = t % pchunks;
            const std::size_t b0 = block0[e] + rc * chunk_blocks, b1 = std::min(block0[e + 1], b0 + chunk_blocks);
            const std::size_t p0 = pc * ppt, p1 = std::min(panels, p0 + ppt);
            body(e, b0, b1, p0, p1);
        });
    };

    // Phases 2 and 3 walk each tile as: for each panel, for each K block, for each row block:
    // the K block of the panel (about 32 KiB) stays in L1 while the tile's row blocks stream
    // through; partial sums wait in `scratch` between K blocks and the epilogue sees full sums.
    constexpr std::size_t max_tile_blocks = 256 / mr;
    const std::size_t kc = std::max<std::size_t>(1, tiling.l1_panel_bytes / (nr * sizeof(C)));
    using scratch_t = detail::tile_scratch<C, 256 * nr>;
    // 16-bit weights: a tile with enough row blocks widens each K block once (into `wide`, in L1)
    // and runs the float micro-kernel on it; with few rows (decode) the micro-kernel widens as it
    // streams the half-size weights.
    constexpr bool widen = std::is_same<W, Eigen::half>::value || std::is_same<W, Eigen::bfloat16>::value;
    constexpr std::size_t wide_elems = widen ? 8192 : 1;
    using wide_t = detail::tile_scratch<float, wide_elems>;
    const bool can_widen = widen && kc * nr <= wide_elems;
    auto widen_block = [&](const W* b, std::size_t k0, std::size_t k1, float* wide) {
        using O = detail::lane_ops<Arch>;
        for (std::size_t i = 0; i < (k1 - k0) * nr; i += O::width)
            O::store(wide + i, detail::weight_lanes<Arch, W>::load(b + k0 * nr + i));
    };
    // One micro-kernel call on rows of `a`, weights of panel `b` for k in [k0, k1), from the
    // widened block when there is one.
    auto block_call = [&](std::size_t m, std::size_t k0, std::size_t k1, const AT* a, const W* b, const float* wide,
                          const C* c_in, std::size_t ldc, auto&& epi) {
        if constexpr (widen) {
            if (wide) {
                detail::micro_rows<Arch, float>(m, 0, k1 - k0, a + k0 * mr, wide, c_in, ldc, epi);
                return;
            }
        }
        static_cast<void>(wide);
        detail::micro_rows<Arch, W>(m, k0, k1, a, b, c_in, ldc, epi);
    };
    auto tile = [&](std::size_t e, std::size_t b0, std::size_t b1, std::size_t p0, std::size_t p1, std::size_t K,
                    const AT* pack, std::size_t kpack, auto&& panel_of, auto&& final_epi) {
        scratch_t tile_scratch;
        wide_t wide_block;
        C* scratch = tile_scratch.v;
        const bool use_wide = can_widen && b1 - b0 >= 4;
        for (std::size_t p = p0; p < p1; ++p) {
            const W* b = panel_of(e, p);
            for (std::size_t k0 = 0; k0 < K; k0 += kc) {
                const std::size_t k1 = std::min(K, k0 + kc);
                const bool first = k0 == 0, last = k1 == K;
                if (use_wide) widen_block(b, k0, k1, wide_block.v);
                // The next K block of weights (this panel's, or the next panel's first) is fetched
                // into L2 a slice per row block, so it arrives before it is needed.
                const W* next = k1 < K ? b + k1 * nr : (p + 1 < p1 ? panel_of(e, p + 1) : nullptr);
                const std::size_t next_bytes = next ? std::min(K - (k1 < K ? k1 : 0), kc) * nr * sizeof(W) : 0;
                for (std::size_t blk = b0; blk < b1; ++blk) {
                    detail::prefetch_slice(next, next_bytes, blk - b0, b1 - b0);
                    const std::size_t r0 = static_cast<std::size_t>(plan.offsets[e]) + (blk - block0[e]) * mr;
                    const std::size_t m = std::min(mr, static_cast<std::size_t>(plan.offsets[e + 1]) - r0);
                    C* part = scratch + (blk - b0) * mr * nr;
                    block_call(m, k0, k1, pack + blk * mr * kpack, b, use_wide ? wide_block.v : nullptr,
                               first ? nullptr : part, nr, [&](auto& acc) {
                                                    if (last) {
                                                        final_epi(acc, blk, r0, p);
                                                    } else {
                                                        constexpr std::size_t M = sizeof(acc) / sizeof(acc[0]);
                                                        for (std::size_t i = 0; i < M; ++i) {
                                                            if constexpr (std::is_same<W, double>::value) {
                                                                for (std::size_t j = 0; j < nr; ++j) part[i * nr + j] = acc[i][j];
                                                            } else {
                                                                using O = detail::lane_ops<Arch>;
                                                                O::store(part + i * nr, acc[i][0]);
                                                                O::store(part + i * nr + O::width, acc[i][1]);
                                                            }
                                                        }
                                                    }
                                                });
                }
            }
        }
    };
    const std::size_t rows_per_tile = std::min<std::size_t>(tiling.rows_per_tile, max_tile_blocks * mr);
    const std::size_t chunk = std::max<std::size_t>(1, rows_per_tile / mr);

    // Phase 2: up projection + SwiGLU into the packed activations.
    run_phase(chunk, pw.up_panels(), panels_per_tile(pw.up_k()), [&](std::size_t e, std::size_t b0, std::size_t b1,
                                                                     std::size_t p0, std::size_t p1) {
        tile(e, b0, b1, p0, p1, pw.up_k(), xpack, kx, [&](std::size_t ee, std::size_t p) { return pw.up(ee, p); },
             [&](auto& acc, std::size_t blk, std::size_t, std::size_t p) {
                 constexpr std::size_t M = sizeof(acc) / sizeof(acc[0]);
                 const std::size_t f0 = p * half, fn = std::min(half, F - f0);
                 AT* out = apack + blk * mr * ka;
                 // Biases of this panel's outputs, zero-padded past F.
                 alignas(64) C bias1[half] = {}, bias3[half] = {};
                 if (!plain) {
                     for (std::size_t j = 0; j < fn; ++j) {
                         bias1[j] = extras.b1 ? C(extras.b1[extras.bias_row(e) * F + f0 + j]) : C(0);
                         bias3[j] = extras.b3 ? C(extras.b3[extras.bias_row(e) * F + f0 + j]) : C(0);
                     }
                 }
                 for (std::size_t i = 0; i < M; ++i) {
                     alignas(64) C v[half];
                     if constexpr (std::is_same<W, double>::value) {
                         for (std::size_t j = 0; j < half; ++j) {
                             const double h1 = acc[i][j] + bias1[j], h3 = acc[i][half + j] + bias3[j];
                             if (oai) {
                                 const double g = h1 > lim ? lim : h1, u = h3 > lim ? lim : (-lim > h3 ? -lim : h3);
                                 v[j] = (u + 1.0) * (g / (1.0 + std::exp(-alpha * g)));
                             } else if (clamped) {
                                 const double g = h1 > lim ? lim : h1, u = h3 > lim ? lim : (-lim > h3 ? -lim : h3);
                                 v[j] = g / (1.0 + std::exp(-g)) * u;
                             } else {
                                 v[j] = h1 / (1.0 + std::exp(-h1)) * h3;
                             }
                         }
                     } else {
                         using O = detail::lane_ops<Arch>;
                         auto h1 = acc[i][0];
                         auto h3 = acc[i][1];
                         if (!plain) {
                             h1 = h1 + O::load(bias1);
                             h3 = h3 + O::load(bias3);
                         }
                         if (oai) {
                             const auto L = O::splat(lim), nL = O::splat(-lim);
                             const auto g = O::select_gt(h1, L, L, h1);  // NaN stays NaN, as torch.clamp
                             const auto u = O::select_gt(h3, L, L, O::select_gt(nL, h3, nL, h3));
                             const auto act = (u + O::splat(1.0f)) * (g * moe::detail::sigmoid<Arch>(g * O::splat(alpha)));
                             if constexpr (O::width == 1) v[0] = act;
                             else act.store_aligned(v);
                         } else if (clamped) {
                             const auto L = O::splat(lim), nL = O::splat(-lim);
                             const auto g = O::select_gt(h1, L, L, h1);
                             const auto u = O::select_gt(h3, L, L, O::select_gt(nL, h3, nL, h3));
                             const auto act = (g * moe::detail::sigmoid<Arch>(g)) * u;
                             if constexpr (O::width == 1) v[0] = act;
                             else act.store_aligned(v);
                         } else {
                             const auto act = (h1 * moe::detail::sigmoid<Arch>(h1)) * h3;
                             if constexpr (O::width == 1) v[0] = act;
                             else act.store_aligned(v);
                         }
                     }
                     for (std::size_t j = 0; j < fn; ++j) out[(f0 + j) * mr + i] = v[j];
                 }
             });
    });

    // Phase 3: down projection into y_rows. K (= F) is long, so the tile runs K blocks outermost:
    // a K slice of the tile's activations (256 rows) stays in L2 across the tile's panels, each
    // panel's K block stays in L1 across the rows, and the partial sums wait in y_rows itself.
    const std::size_t down_ppt = std::max<std::size_t>(1, tiling.down_panels_per_tile);
    run_phase(chunk, pw.down_panels(), down_ppt, [&](std::size_t e, std::size_t b0, std::size_t b1, std::size_t p0,
                                                     std::size_t p1) {
        scratch_t tile_scratch;  // partial sums of a last panel narrower than nr
        wide_t wide_block;
        const bool use_wide = can_widen && b1 - b0 >= 4;
        const std::size_t K = pw.down_k();
        for (std::size_t k0 = 0; k0 < K; k0 += kc) {
            const std::size_t k1 = std::min(K, k0 + kc);
            const bool first = k0 == 0, last = k1 == K;
            for (std::size_t p = p0; p < p1; ++p) {
                const W* b = pw.down(e, p);
                if (use_wide) widen_block(b, k0, k1, wide_block.v);
                const std::size_t h0 = p * nr, hn = std::min(nr, H - h0);
                const W* next = p + 1 < p1 ? pw.down(e, p + 1) + k0 * nr : (!last ? pw.down(e, p0) + k1 * nr : nullptr);
                const std::size_t next_bytes = next ? std::min(kc, last ? kc : K - k1) * nr * sizeof(W) : 0;
                for (std::size_t blk = b0; blk < b1; ++blk) {
                    detail::prefetch_slice(next, next_bytes, blk - b0, b1 - b0);
                    const std::size_t r0 = static_cast<std::size_t>(plan.offsets[e]) + (blk - block0[e]) * mr;
                    const std::size_t m = std::min(mr, static_cast<std::size_t>(plan.offsets[e + 1]) - r0);
                    const bool full = hn == nr;
                    C* part = full ? y_rows.row(r0) + h0 : tile_scratch.v + (blk - b0) * mr * nr;
                    const std::size_t ldc = full ? y_rows.stride : nr;
                    block_call(m, k0, k1, apack + blk * mr * ka, b, use_wide ? wide_block.v : nullptr,
                               first ? nullptr : part, ldc, [&](auto& acc) {
                                                    constexpr std::size_t M = sizeof(acc) / sizeof(acc[0]);
                                                    for (std::size_t i = 0; i < M; ++i) {
                                                        C* dst = part + i * ldc;
                                                        if constexpr (std::is_same<W, double>::value) {
                                                            for (std::size_t j = 0; j < nr; ++j) dst[j] = acc[i][j];
                                                        } else {
                                                            using O = detail::lane_ops<Arch>;
                                                            O::store(dst, acc[i][0]);
                                                            O::store(dst + O::width, acc[i][1]);
                                                        }
                                                        if (last && !full)
                                                            for (std::size_t j = 0; j < hn; ++j) y_rows(r0 + i, h0 + j) = dst[j];
                                                        if (last && extras.b2)
                                                            for (std::size_t j = 0; j < hn; ++j)
                                                                y_rows(r0 + i, h0 + j) += C(extras.b2[extras.bias_row(e) * H + h0 + j]);
                                                    }
                                                });
                }
            }
        }
    });
}

}  // namespace moe::kernels
