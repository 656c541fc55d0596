/// @file kernels/expert_ffn.hpp
/// Grouped (block-sparse) SwiGLU experts over a dispatch plan:
///     y_row = (silu(x W1^T) * (x W3^T)) W2^T    for every row the plan gives each expert.
///
/// The plan's expert-major rows are the block-sparse structure (MegaBlocks): each expert's rows
/// are split into blocks of `mr` rows, each block multiplies only its expert's packed panels, so
/// there is neither dropping nor padding to a capacity. Three phases, each a set of independent
/// tiles handed to the caller's executor:
///   1. gather + pack: the rows' tokens are copied from x straight into the micro-kernel's
///      operand layout (for bf16 weights, rounded to bf16 pairs);
///   2. up + SwiGLU: one register-blocked micro-kernel computes matching W1 and W3 columns; the
///      epilogue applies silu(h1) * h3 in registers and writes the activations, already packed
///      as the operand of phase 3;
///   3. down: activations x W2^T into `y_rows` (plan row order), for `combine`.
/// Every output element is one fused multiply-add chain over k in order, computed by one tile,
/// so results are bit-identical for any executor, thread count and arch (moe::scalar included).
///
/// Weights: float and double compute in their own type; Eigen::half weights are widened to
/// float; Eigen::bfloat16 weights multiply bf16-rounded activations in k-pairs with float
/// accumulation, as AVX-512 `vdpbf16ps` does (used where the translation unit is built with
/// AVX512_BF16; other archs emulate it exactly with two FMAs per pair).
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
/// Operand type of packed activations: bf16 pairs (uint32) for bf16 weights, else compute_t.
template <class W>
using act_t = std::conditional_t<std::is_same<W, Eigen::bfloat16>::value, std::uint32_t, compute_t<W>>;

[[nodiscard]] inline std::uint16_t bf16_bits(float f) noexcept {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return static_cast<std::uint16_t>((u >> 16) | 0x40);  // NaN
    u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even
    return static_cast<std::uint16_t>(u >> 16);
}
[[nodiscard]] inline float bf16_to_float(std::uint32_t bits16) noexcept {
    const std::uint32_t u = bits16 << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

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
#if defined(__AVX512F__)
            if constexpr (O::width == 16)
                return V(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
#if defined(__F16C__)
            if constexpr (O::width == 8) return V(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
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

/// The bf16 micro-kernel: k-pairs of bf16 activations (uint32) times k-pairs of bf16 weights,
/// float accumulation: acc += a_odd * b_odd, then += a_even * b_even (products are exact).
template <class Arch, std::size_t M, class Epi>
MOE_ALWAYS_INLINE void micro_bf16(std::size_t k0, std::size_t k1, const std::uint32_t* a, const Eigen::bfloat16* b,
                                  const float* c_in, std::size_t ldc, Epi&& epi) noexcept {
    constexpr std::size_t mr = blocking<Arch>::mr, nr = blocking<Arch>::nr;
    using O = lane_ops<Arch>;
    using V = typename O::V;
    constexpr std::size_t w = O::width;
    V acc[M][2];
    for (std::size_t i = 0; i < M; ++i) {
        acc[i][0] = c_in ? O::load(c_in + i * ldc) : O::splat(0.0f);
        acc[i][1] = c_in ? O::load(c_in + i * ldc + w) : O::splat(0.0f);
    }
    const std::uint32_t* ak = a + (k0 / 2) * mr;
    const std::uint16_t* bk = reinterpret_cast<const std::uint16_t*>(b) + (k0 / 2) * 2 * nr;
    for (std::size_t k = k0; k < k1; k += 2, ak += mr, bk += 2 * nr) {
        __builtin_prefetch(bk + 32 * nr, 0, 3);
        if constexpr (w == 1) {
            for (std::size_t h = 0; h < 2; ++h) {
                const float b_even = bf16_to_float(bk[2 * h]), b_odd = bf16_to_float(bk[2 * h + 1]);
                for (std::size_t i = 0; i < M; ++i) {
                    const float a_even = bf16_to_float(ak[i] & 0xFFFFu), a_odd = bf16_to_float(ak[i] >> 16);
                    acc[i][h] = std::fma(a_odd, b_odd, acc[i][h]);
                    acc[i][h] = std::fma(a_even, b_even, acc[i][h]);
                }
            }
        } else {
#if defined(__AVX512BF16__)
            if constexpr (w == 16) {
                const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bk);
                const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bk + 2 * w);
                for (std::size_t i = 0; i < M; ++i) {
                    const __m512bh ai = (__m512bh)_mm512_set1_epi32(static_cast<int>(ak[i]));
                    acc[i][0] = V(_mm512_dpbf16_ps(acc[i][0], ai, b0));
                    acc[i][1] = V(_mm512_dpbf16_ps(acc[i][1], ai, b1));
                }
                continue;
            }
#endif
            using U = xsimd::batch<std::uint32_t, Arch>;
            const U hi_mask(0xFFFF0000u);
            V be[2], bo[2];
            for (std::size_t h = 0; h < 2; ++h) {
                const U raw = U::load_unaligned(reinterpret_cast<const std::uint32_t*>(bk) + h * w);
                be[h] = xsimd::bitwise_cast<V>(raw << 16);
                bo[h] = xsimd::bitwise_cast<V>(raw & hi_mask);
            }
            for (std::size_t i = 0; i < M; ++i) {
                const V a_even = O::splat(bf16_to_float(ak[i] & 0xFFFFu)), a_odd = O::splat(bf16_to_float(ak[i] >> 16));
                for (std::size_t h = 0; h < 2; ++h) {
                    acc[i][h] = O::fmadd(a_odd, bo[h], acc[i][h]);
                    acc[i][h] = O::fmadd(a_even, be[h], acc[i][h]);
                }
            }
        }
    }
    V res[M][2];
    for (std::size_t i = 0; i < M; ++i) res[i][0] = acc[i][0], res[i][1] = acc[i][1];
    epi(res);
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
        if constexpr (std::is_same<W, Eigen::bfloat16>::value) micro_bf16<Arch, M>(k0, k1, a, b, c_in, ldc, epi);
        else micro<Arch, W, M>(k0, k1, a, b, c_in, ldc, epi);
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
    const std::size_t per = std::is_same<W, Eigen::bfloat16>::value ? 2 : 1;  // k values per AT
    std::size_t blocks = 0;
    for (std::size_t e = 0; e + 1 < plan.offsets.size(); ++e)
        blocks += (static_cast<std::size_t>(plan.offsets[e + 1] - plan.offsets[e]) + mr - 1) / mr;
    auto round64 = [](std::size_t b) { return (b + 63) / 64 * 64; };
    ffn_workspace_layout l;
    l.x_pack = round64(blocks * mr * (pw.up_k() / per) * sizeof(AT));
    l.act_pack = round64(blocks * mr * (pw.down_k() / per) * sizeof(AT));
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

/// y_rows (plan rows x H, float) = SwiGLU expert of each row's expert applied to x[row's token].
/// Padding rows of the plan (token -1) get zeros in, and whatever the expert makes of zeros out;
/// `combine` never reads them. `workspace` must hold workspace_size(plan, pw).total() bytes,
/// 64-byte aligned. Throws [moe.kernels.shape] on mismatched shapes, [moe.kernels.workspace] on
/// a short workspace.
template <class Arch, class W, class X, class Executor = serial_executor>
void expert_ffn(matrix_view<detail::compute_t<W>> y_rows, matrix_view<const X> x, const dispatch_plan& plan,
                const packed_experts<Arch, W>& pw, void* workspace, std::size_t workspace_bytes, Executor&& exec = {},
                const ffn_tiling& tiling = {}) {
    using C = detail::compute_t<W>;
    using AT = detail::act_t<W>;
    static_assert(std::is_same<X, C>::value, "moe::kernels::expert_ffn: x must be float (double for double weights)");
    constexpr std::size_t mr = blocking<Arch>::mr, nr = blocking<Arch>::nr, half = nr / 2;
    constexpr bool bf16 = std::is_same<W, Eigen::bfloat16>::value;
    constexpr std::size_t per = bf16 ? 2 : 1;
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
    const std::size_t kx = pw.up_k() / per, ka = pw.down_k() / per;  // AT per row of each pack

    // Phase 1: gather + pack, one tile per row block.
    exec(nblocks, [&, xpack, apack](std::size_t blk) {
        const std::size_t e = static_cast<std::size_t>(std::upper_bound(block0, block0 + E + 1, blk) - block0) - 1;
        const std::size_t r0 = static_cast<std::size_t>(plan.offsets[e]) + (blk - block0[e]) * mr;
        const std::size_t r1 = std::min(r0 + mr, static_cast<std::size_t>(plan.offsets[e + 1]));
        AT* dst = xpack + blk * mr * kx;
        for (std::size_t i = 0; i < mr; ++i) {
            const std::int32_t tok = r0 + i < r1 ? plan.row_token[r0 + i] : -1;
            const C* src = tok >= 0 ? x.row(static_cast<std::size_t>(tok)) : nullptr;
            if constexpr (bf16) {
                for (std::size_t k2 = 0; k2 < kx; ++k2) {
                    const std::uint32_t lo = src ? detail::bf16_bits(src[2 * k2]) : 0u;
                    const std::uint32_t hi = src && 2 * k2 + 1 < H ? detail::bf16_bits(src[2 * k2 + 1]) : 0u;
                    dst[k2 * mr + i] = lo | (hi << 16);
                }
            } else {
                for (std::size_t k = 0; k < kx; ++k) dst[k * mr + i] = src ? src[k] : C(0);
            }
            // An odd F leaves the last activation pair half-filled by phase 2: its other half is 0.
            if constexpr (bf16)
                if (F % 2) apack[blk * mr * ka + (ka - 1) * mr + i] = 0u;
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
    const std::size_t kc = std::max<std::size_t>(2, (tiling.l1_panel_bytes / (nr * sizeof(W))) / 2 * 2);
    using scratch_t = detail::tile_scratch<C, 256 * nr>;
    auto tile = [&](std::size_t e, std::size_t b0, std::size_t b1, std::size_t p0, std::size_t p1, std::size_t K,
                    const AT* pack, std::size_t kpack, auto&& panel_of, auto&& final_epi) {
        scratch_t tile_scratch;
        C* scratch = tile_scratch.v;
        for (std::size_t p = p0; p < p1; ++p) {
            const W* b = panel_of(e, p);
            for (std::size_t k0 = 0; k0 < K; k0 += kc) {
                const std::size_t k1 = std::min(K, k0 + kc);
                const bool first = k0 == 0, last = k1 == K;
                // The next K block of weights (this panel's, or the next panel's first) is fetched
                // into L2 a slice per row block, so it arrives before it is needed.
                const W* next = k1 < K ? b + (k1 / per) * per * nr : (p + 1 < p1 ? panel_of(e, p + 1) : nullptr);
                const std::size_t next_bytes = next ? std::min(K - (k1 < K ? k1 : 0), kc) * nr * sizeof(W) : 0;
                const std::size_t slice = (next_bytes / (b1 - b0) + 63) / 64 * 64;
                for (std::size_t blk = b0; blk < b1; ++blk) {
                    if (next_bytes) {
                        const char* pf = reinterpret_cast<const char*>(next) + (blk - b0) * slice;
                        const char* pf_end = reinterpret_cast<const char*>(next) + next_bytes;
                        for (std::size_t off = 0; off < slice && pf + off < pf_end; off += 64) __builtin_prefetch(pf + off, 0, 2);
                    }
                    const std::size_t r0 = static_cast<std::size_t>(plan.offsets[e]) + (blk - block0[e]) * mr;
                    const std::size_t m = std::min(mr, static_cast<std::size_t>(plan.offsets[e + 1]) - r0);
                    C* part = scratch + (blk - b0) * mr * nr;
                    detail::micro_rows<Arch, W>(m, k0, k1, pack + blk * mr * kpack, b, first ? nullptr : part, nr,
                                                [&](auto& acc) {
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
                 for (std::size_t i = 0; i < M; ++i) {
                     alignas(64) C v[half];
                     if constexpr (std::is_same<W, double>::value) {
                         for (std::size_t j = 0; j < half; ++j) {
                             const double h1 = acc[i][j], h3 = acc[i][half + j];
                             v[j] = h1 / (1.0 + std::exp(-h1)) * h3;
                         }
                     } else {
                         using O = detail::lane_ops<Arch>;
                         const auto h1 = acc[i][0];
                         const auto act = (h1 * moe::detail::sigmoid<Arch>(h1)) * acc[i][1];
                         if constexpr (O::width == 1) v[0] = act;
                         else act.store_aligned(v);
                     }
                     for (std::size_t j = 0; j < fn; ++j) {
                         const std::size_t f = f0 + j;
                         if constexpr (bf16) {
                             std::uint16_t* o16 = reinterpret_cast<std::uint16_t*>(out + (f / 2) * mr + i);
                             o16[f % 2] = detail::bf16_bits(v[j]);
                         } else {
                             out[f * mr + i] = v[j];
                         }
                     }
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
        const std::size_t K = pw.down_k();
        for (std::size_t k0 = 0; k0 < K; k0 += kc) {
            const std::size_t k1 = std::min(K, k0 + kc);
            const bool first = k0 == 0, last = k1 == K;
            for (std::size_t p = p0; p < p1; ++p) {
                const W* b = pw.down(e, p);
                const std::size_t h0 = p * nr, hn = std::min(nr, H - h0);
                const W* next = p + 1 < p1 ? pw.down(e, p + 1) + (k0 / per) * per * nr : (!last ? pw.down(e, p0) + (k1 / per) * per * nr : nullptr);
                const std::size_t next_bytes = next ? std::min(kc, last ? kc : K - k1) * nr * sizeof(W) : 0;
                const std::size_t slice = (next_bytes / (b1 - b0) + 63) / 64 * 64;
                for (std::size_t blk = b0; blk < b1; ++blk) {
                    if (next_bytes) {
                        const char* pf = reinterpret_cast<const char*>(next) + (blk - b0) * slice;
                        const char* pf_end = reinterpret_cast<const char*>(next) + next_bytes;
                        for (std::size_t off = 0; off < slice && pf + off < pf_end; off += 64) __builtin_prefetch(pf + off, 0, 2);
                    }
                    const std::size_t r0 = static_cast<std::size_t>(plan.offsets[e]) + (blk - block0[e]) * mr;
                    const std::size_t m = std::min(mr, static_cast<std::size_t>(plan.offsets[e + 1]) - r0);
                    const bool full = hn == nr;
                    C* part = full ? y_rows.row(r0) + h0 : tile_scratch.v + (blk - b0) * mr * nr;
                    const std::size_t ldc = full ? y_rows.stride : nr;
                    detail::micro_rows<Arch, W>(m, k0, k1, apack + blk * mr * ka, b, first ? nullptr : part, ldc,
                                                [&](auto& acc) {
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
                                                    }
                                                });
                }
            }
        }
    });
}

}  // namespace moe::kernels
