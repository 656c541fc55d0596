/// @file kernels/quant_ffn.hpp
/// Grouped SwiGLU experts with quantized weights, over a dispatch plan (the same contract as
/// `expert_ffn`): y_row = (silu(x W1^T) * (x W3^T)) W2^T for every row of the plan.
///
/// The weight format `Fmt` is a traits type from `kernels/formats/` (q8_0, q4_0, q4_k, q6_k,
/// int8, int4, fp8, mxfp4, bf16_dot), or `formats::mixed<Up, Down>` for gate / up in one format
/// and down in another (GGUF's Q4_K_M). Weights are packed once into 16-column panels that keep the
/// format's own bytes (plus at most a few percent of alignment and unpacked sub-scales):
/// an up panel holds 8 rows of W1 then the same 8 rows of W3 (K = H), a down panel 16 rows of
/// W2 (K = F).
///
/// Integer formats (`Fmt::integer`): activations are quantized to int8 on the fly, per row and
/// per the format's activation block (q8_0 / q4_0: 32; q4_k / q6_k: 256 as ggml's q8_K; int4:
/// its group; int8: the whole row), with d = amax / 127 and q = round-half-even(x / d). Each
/// block's dot product is exact in int32 (`vpdpbusd` on AVX-512 VNNI, a plain loop in the
/// reference), and the scales apply in float in a fixed order per output element, so results
/// are bit-identical across archs, executors and thread counts. `bf16_dot` runs the same
/// pipeline with activations rounded to bf16 pairs and the `vdpbf16ps` dot (emulated step by
/// step by the portable lanes; its order is stated in formats/bf16_dot.hpp).
/// Weight-only formats (fp8, mxfp4): weights are dequantized (in registers at decode, through
/// L1 for larger row blocks) and multiplied with fp32 FMAs in k order, exactly as `expert_ffn`
/// does with float weights, so the output equals `expert_ffn` on the dequantized weights, bit
/// for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../arch.hpp"
#include "../config.hpp"
#include "../detail/lane_math.hpp"
#include "../dispatch.hpp"
#include "../executor.hpp"
#include "../tensor.hpp"
#include "formats/bf16_dot.hpp"
#include "formats/common.hpp"
#include "formats/lanes.hpp"
#include "formats/mixed.hpp"
#include "formats/panel.hpp"
#include "expert_ffn.hpp"  // ffn_workspace, shared with the float kernel
#include "pack.hpp"

namespace moe::kernels {

/// Experts packed in format `Fmt` (arch-independent bytes). Build with `pack_quant_experts`.
template <class Fmt>
class packed_quant_experts {
public:
    using format = Fmt;
    using up_format = formats::up_format_t<Fmt>;      ///< gate and up
    using down_format = formats::down_format_t<Fmt>;  ///< down
    static constexpr std::size_t cols = formats::panel_cols;

    packed_quant_experts() = default;
    packed_quant_experts(std::size_t e, std::size_t h, std::size_t f, const formats::format_params& p, const pack_options& o)
        : E_(e), H_(h), F_(f), params_(p) {
        up_bytes_ = (panel_bytes<up_format>(H_) + 63) / 64 * 64;
        down_bytes_ = (panel_bytes<down_format>(F_) + 63) / 64 * 64;
        const std::size_t n = E_ * expert_bytes();
        const std::size_t align = std::size_t(2) << 20;
        bytes_ = (n + align - 1) / align * align;
        void* mem = bytes_ ? std::aligned_alloc(align, bytes_) : nullptr;
        if (bytes_ && !mem) MOE_THROW("moe.kernels.alloc", "cannot allocate ", bytes_, " bytes of packed weights");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (mem && o.huge_pages) ::madvise(mem, bytes_, MADV_HUGEPAGE);
#else
        static_cast<void>(o);
#endif
        data_.reset(static_cast<std::uint8_t*>(mem));
        if (mem) std::memset(mem, 0, bytes_);
    }

    [[nodiscard]] std::size_t num_experts() const noexcept { return E_; }
    [[nodiscard]] std::size_t hidden() const noexcept { return H_; }
    [[nodiscard]] std::size_t ffn() const noexcept { return F_; }
    [[nodiscard]] const formats::format_params& params() const noexcept { return params_; }
    [[nodiscard]] std::size_t up_panels() const noexcept { return (F_ + cols / 2 - 1) / (cols / 2); }
    [[nodiscard]] std::size_t down_panels() const noexcept { return (H_ + cols - 1) / cols; }
    [[nodiscard]] std::size_t up_panel_bytes() const noexcept { return up_bytes_; }
    [[nodiscard]] std::size_t down_panel_bytes() const noexcept { return down_bytes_; }
    /// Bytes of one expert's packed weights (what a decode step streams per active expert).
    [[nodiscard]] std::size_t expert_bytes() const noexcept { return expert_up_bytes() + expert_down_bytes(); }
    /// Of those, the up panels' bytes (W1 and W3 interleaved, the up format) and the down panels'.
    [[nodiscard]] std::size_t expert_up_bytes() const noexcept { return up_panels() * up_bytes_; }
    [[nodiscard]] std::size_t expert_down_bytes() const noexcept { return down_panels() * down_bytes_; }
    [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }
    [[nodiscard]] std::uint8_t* up(std::size_t e, std::size_t p) noexcept { return data_.get() + e * expert_bytes() + p * up_bytes_; }
    [[nodiscard]] const std::uint8_t* up(std::size_t e, std::size_t p) const noexcept {
        return data_.get() + e * expert_bytes() + p * up_bytes_;
    }
    [[nodiscard]] std::uint8_t* down(std::size_t e, std::size_t p) noexcept {
        return data_.get() + e * expert_bytes() + up_panels() * up_bytes_ + p * down_bytes_;
    }
    [[nodiscard]] const std::uint8_t* down(std::size_t e, std::size_t p) const noexcept {
        return data_.get() + e * expert_bytes() + up_panels() * up_bytes_ + p * down_bytes_;
    }
    /// A copy holding experts `ids` only, in that order (an expert set keeps some of a file's
    /// experts in its format and requantizes the others). Throws [moe.kernels.experts] for an
    /// id outside [0, E).
    [[nodiscard]] packed_quant_experts subset(const std::vector<std::int32_t>& ids, const pack_options& o = {}) const {
        packed_quant_experts s(ids.size(), H_, F_, params_, o);
        for (std::size_t j = 0; j < ids.size(); ++j) {
            if (ids[j] < 0 || static_cast<std::size_t>(ids[j]) >= E_)
                MOE_THROW("moe.kernels.experts", "expert ", ids[j], " outside [0, ", E_, ")");
            std::memcpy(s.data_.get() + j * expert_bytes(), data_.get() + static_cast<std::size_t>(ids[j]) * expert_bytes(),
                        expert_bytes());
        }
        return s;
    }
    /// Bytes of one panel in format P with reduction length k, before 64-byte rounding.
    template <class P = up_format>
    [[nodiscard]] std::size_t panel_bytes(std::size_t k) const noexcept {
        if constexpr (P::integer) {
            const std::size_t sb = P::act_block(k, params_);
            return k / sb * (formats::detail::code_bytes(P::bits, sb) + P::scale_bytes(params_));
        } else {
            return P::panel_bytes(k, params_);
        }
    }

private:
    std::size_t E_ = 0, H_ = 0, F_ = 0, up_bytes_ = 0, down_bytes_ = 0, bytes_ = 0;
    formats::format_params params_;
    std::unique_ptr<std::uint8_t, detail::aligned_free> data_;
};

namespace detail {

template <class Fmt>
void pack_panel(const formats::quant_view& v, const std::size_t* rows, std::uint8_t* dst) {
    if constexpr (Fmt::integer && !formats::detail::bf16_act_v<Fmt>) formats::detail::pack_int_panel<Fmt>(v, rows, dst);
    else Fmt::pack_panel(v, rows, dst);
}

/// Shape and parameters (no byte is read), then, with `bytes`, the format's validation.
template <class Fmt>
void check_view(const char* what, std::size_t e, const formats::quant_view& v, std::size_t rows, std::size_t cols,
                const formats::format_params& p, bool bytes = true) {
    if (v.rows != rows || v.cols != cols)
        MOE_THROW("moe.kernels.shape", what, " of expert ", e, " is ", v.rows, " x ", v.cols, ", expected ", rows, " x ", cols);
    if (v.params.group != p.group || v.params.zero_points != p.zero_points)
        MOE_THROW("moe.kernels.format", what, " of expert ", e, ": format parameters differ between tensors");
    if (bytes) Fmt::validate(v);
}

/// Packs expert e of `pw` from its views: gate row f at row f * step of w1 and up row f at
/// row f * step + (step - 1) of w3 (step 1: separate tensors; 2: one interleaved tensor). The
/// views' shapes and bytes must have been checked (check_view).
template <class Fmt>
void pack_expert(packed_quant_experts<Fmt>& pw, std::size_t e, const formats::quant_view& w1, const formats::quant_view& w3,
                 const formats::quant_view& w2, std::size_t step) {
    using Up = formats::up_format_t<Fmt>;
    using Down = formats::down_format_t<Fmt>;
    constexpr std::size_t C = formats::panel_cols, half = C / 2;
    std::size_t rows[C];
    std::vector<std::uint8_t> tmp(pw.up_panel_bytes());
    for (std::size_t pn = 0; pn < pw.up_panels(); ++pn) {
        // Columns 0..7 of the panel are W1 rows, 8..15 the same W3 rows: pack each half
        // from its tensor, the other half marked missing.
        auto row = [&](std::size_t f, std::size_t off) { return f * step + off; };  // >= rows: a zero column
        for (std::size_t j = 0; j < C; ++j) rows[j] = j < half ? row(pn * half + j, 0) : SIZE_MAX;
        detail::pack_panel<Up>(w1, rows, pw.up(e, pn));
        for (std::size_t j = 0; j < C; ++j) rows[j] = j >= half ? row(pn * half + j - half, step - 1) : SIZE_MAX;
        std::fill(tmp.begin(), tmp.end(), std::uint8_t(0));
        detail::pack_panel<Up>(w3, rows, tmp.data());
        // Merge: the W3 half's bytes are where the W1 pass left zeros, byte for byte
        // (codes, scales and sub-scales of a missing column are all zero).
        std::uint8_t* dst = pw.up(e, pn);
        for (std::size_t b = 0; b < tmp.size(); ++b) dst[b] = static_cast<std::uint8_t>(dst[b] | tmp[b]);
    }
    for (std::size_t pn = 0; pn < pw.down_panels(); ++pn) {
        for (std::size_t j = 0; j < C; ++j) rows[j] = pn * C + j;
        detail::pack_panel<Down>(w2, rows, pw.down(e, pn));
    }
}

/// pack_quant_experts with the rows of pack_expert's `step`. Shapes are checked for all experts
/// first; each expert's bytes are validated just before it is packed, and `done(e)` runs once
/// expert e is packed (the loaders drop its source pages there, so a mapped file's bytes and
/// the packed copy are not both resident).
template <class Fmt, class Done = void (*)(std::size_t)>
packed_quant_experts<Fmt> pack_quant_experts_rows(const formats::quant_view* w1, const formats::quant_view* w3,
                                                  const formats::quant_view* w2, std::size_t num_experts, std::size_t hidden,
                                                  std::size_t ffn, const pack_options& o, std::size_t step,
                                                  Done&& done = [](std::size_t) {}) {
    if (num_experts == 0 || hidden == 0 || ffn == 0)
        MOE_THROW("moe.kernels.shape", "experts=", num_experts, ", hidden=", hidden, ", ffn=", ffn, ": every dimension must be >= 1");
    using Up = formats::up_format_t<Fmt>;
    using Down = formats::down_format_t<Fmt>;
    const formats::format_params p = w1[0].params;
    auto check = [&](std::size_t e, bool bytes) {
        detail::check_view<Up>(step == 1 ? "w1" : "w13", e, w1[e], step * ffn, hidden, p, bytes);
        if (step == 1) detail::check_view<Up>("w3", e, w3[e], ffn, hidden, p, bytes);
        detail::check_view<Down>("w2", e, w2[e], hidden, ffn, p, bytes);
    };
    for (std::size_t e = 0; e < num_experts; ++e) check(e, false);
    packed_quant_experts<Fmt> pw(num_experts, hidden, ffn, p, o);
    for (std::size_t e = 0; e < num_experts; ++e) {
        check(e, true);
        pack_expert(pw, e, w1[e], w3[e], w2[e], step);
        done(e);
    }
    return pw;
}
}  // namespace detail

/// Packs the experts' weights from their source bytes: w1[e], w3[e] are F x H, w2[e] is H x F
/// (PyTorch / GGUF layout), one view per expert. Checks every tensor's shape first, then
/// validates each expert's bytes before packing it: [moe.kernels.shape] for wrong shapes, [moe.kernels.format] for a K the format cannot
/// block, byte buffers of the wrong length or non-finite scales.
/// `done(e)`, if given, runs once expert e is packed (e.g. to release its source bytes).
template <class Fmt, class Done = void (*)(std::size_t)>
[[nodiscard]] packed_quant_experts<Fmt> pack_quant_experts(const formats::quant_view* w1, const formats::quant_view* w3,
                                                           const formats::quant_view* w2, std::size_t num_experts,
                                                           std::size_t hidden, std::size_t ffn, const pack_options& o = {},
                                                           Done&& done = [](std::size_t) {}) {
    return detail::pack_quant_experts_rows<Fmt>(w1, w3, w2, num_experts, hidden, ffn, o, 1, std::forward<Done>(done));
}

/// The same from gate and up rows stored interleaved in one tensor per expert (GPT-OSS's
/// `gate_up_proj`): w13[e] is 2F x H, gate row f = its row 2f, up row f = its row 2f + 1;
/// packed without a copy of the de-interleaved bytes.
template <class Fmt, class Done = void (*)(std::size_t)>
[[nodiscard]] packed_quant_experts<Fmt> pack_quant_experts_interleaved(const formats::quant_view* w13, const formats::quant_view* w2,
                                                                       std::size_t num_experts, std::size_t hidden, std::size_t ffn,
                                                                       const pack_options& o = {}, Done&& done = [](std::size_t) {}) {
    return detail::pack_quant_experts_rows<Fmt>(w13, w13, w2, num_experts, hidden, ffn, o, 2, std::forward<Done>(done));
}

/// Quantizes float expert weights (w1, w3: E x F x H; w2: E x H x F) with the format's
/// reference quantizer: {w1, w3, w2}, each one quant_matrix per expert.
template <class Fmt>
struct quantized_experts {
    std::vector<formats::quant_matrix> w1, w3, w2;
};
template <class Fmt>
[[nodiscard]] quantized_experts<Fmt> quantize_experts(const float* w1, const float* w3, const float* w2, std::size_t num_experts,
                                                      std::size_t hidden, std::size_t ffn, const formats::format_params& p = {}) {
    quantized_experts<Fmt> q;
    for (std::size_t e = 0; e < num_experts; ++e) {
        q.w1.push_back(formats::up_format_t<Fmt>::quantize(w1 + e * ffn * hidden, ffn, hidden, p));
        q.w3.push_back(formats::up_format_t<Fmt>::quantize(w3 + e * ffn * hidden, ffn, hidden, p));
        q.w2.push_back(formats::down_format_t<Fmt>::quantize(w2 + e * hidden * ffn, hidden, ffn, p));
    }
    return q;
}
template <class Fmt>
[[nodiscard]] packed_quant_experts<Fmt> pack_quant_experts(const quantized_experts<Fmt>& q, std::size_t hidden, std::size_t ffn,
                                                           const pack_options& o = {}) {
    std::vector<formats::quant_view> v1, v3, v2;
    for (std::size_t e = 0; e < q.w1.size(); ++e) {
        v1.push_back(formats::view_of(q.w1[e]));
        v3.push_back(formats::view_of(q.w3[e]));
        v2.push_back(formats::view_of(q.w2[e]));
    }
    return pack_quant_experts<Fmt>(v1.data(), v3.data(), v2.data(), q.w1.size(), hidden, ffn, o);
}

namespace detail {

inline constexpr std::size_t qmr = 8;  ///< rows per row block of the quantized kernels (every arch)
inline constexpr std::size_t qchunk_blocks = 32;  ///< row blocks per tile (256 rows)
inline constexpr std::size_t wo_kc = 512;  ///< weight-only formats: K block dequantized into L1 (32 KiB)
inline constexpr std::size_t wo_tile_rows = qchunk_blocks * qmr;
/// Weight-only formats at decode: the float accumulator chains a row block may keep in registers
/// (M rows x P panels): L::wo_chains where the lanes name it (AVX-512: 16 of its 32 registers),
/// else 8 (16 ymm / 32 q registers also hold the decoded weights, scales and constants).
template <class L, class = void>
struct wo_chains : std::integral_constant<std::size_t, 8> {};
template <class L>
struct wo_chains<L, std::void_t<decltype(L::wo_chains)>> : std::integral_constant<std::size_t, L::wo_chains> {};
/// Panels decoded at once for M rows: half the chains for one row (8 independent FMA chains on
/// AVX-512, 4 elsewhere, to hide the FMA latency), else the most of 4, 2, 1 with M x P <=
/// chains. Hot in L1 on Zen 5 (AVX-512), mxfp4: 0.19 ns per FMA at 5 rows x 2 panels (0.25 with
/// 1), 8 rows alike with 1 or 2 panels.
template <class L, std::size_t M>
inline constexpr std::size_t wo_panels =
    M == 1 ? wo_chains<L>::value / 2 : (M * 4 <= wo_chains<L>::value ? 4 : (M * 2 <= wo_chains<L>::value ? 2 : 1));

/// Per-tile float scratch on the stack of the thread running the tile.
template <std::size_t N>
struct qscratch {
    alignas(64) float v[N];
};

/// Operand sizes of one row block for reduction length K (integer formats): `quads` 32-bit
/// units per row (4 int8 activations, or 2 bf16 for bf16_dot), scales per activation block,
/// sums per sum block.
template <class Fmt>
struct int_operand {
    static constexpr std::size_t per_unit = formats::detail::bf16_act_v<Fmt> ? 2 : 4;
    /// What the row's code sums are multiplied by when stored (formats::detail::sum_offset).
    static constexpr std::int32_t sum_mul = formats::detail::sum_offset<Fmt>::value ? -formats::detail::sum_offset<Fmt>::value : 1;
    std::size_t K, sb, sum, quads, nsb, nsum;
    formats::format_params params;
    int_operand(std::size_t k, const formats::format_params& p)
        : K(k), sb(Fmt::act_block(k, p)), sum(Fmt::sum_block(k, p)), quads(k / per_unit), nsb(k / sb), nsum(k / sum),
          params(p) {}
    [[nodiscard]] std::size_t bytes() const noexcept { return (quads + nsb + nsum) * qmr * 4; }
};

/// Quantizes one row x[0, K) into slot i of a row block's operand: quads aq[(k/4) * qmr + i],
/// scales ad[b * qmr + i] (per activation block), sums as[g * qmr + i] (per sum block) times
/// sum_mul (int_operand::sum_mul). Non-finite input makes the block's scale NaN (the output
/// becomes NaN, never a silent value).
template <class L>
void quantize_row(const float* x, std::size_t K, std::size_t sb, std::size_t sum, std::size_t i, std::int32_t* aq, float* ad,
                  std::int32_t* as, std::int32_t sum_mul) noexcept {
    std::uint8_t* bytes = reinterpret_cast<std::uint8_t*>(aq);
    bool vector_sums = false;  // the AVX-512 path sums whole 16-value chunks as it writes them
#if defined(MOE_HAVE_AVX512_QLANES)
    [[maybe_unused]] __m512i vsum = _mm512_setzero_si512();
    if constexpr (std::is_same_v<L, formats::avx512_qlanes>) vector_sums = sb % 16 == 0 && sum % 16 == 0;
#endif
    for (std::size_t b0 = 0; b0 < K; b0 += sb) {
        float amax = 0.0f;
        bool bad = false;
        std::size_t k = b0;
#if defined(MOE_HAVE_AVX512_QLANES)
        if constexpr (std::is_same_v<L, formats::avx512_qlanes>) {
            __m512 m = _mm512_setzero_ps();
            __mmask16 nonfinite = 0;
            for (; k + 16 <= b0 + sb; k += 16) {
                const __m512 v = _mm512_loadu_ps(x + k);
                m = _mm512_max_ps(m, _mm512_abs_ps(v));
                nonfinite |= _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(INFINITY), _CMP_NLT_UQ);
            }
            amax = _mm512_reduce_max_ps(m);
            bad = nonfinite != 0;
        }
#endif
        for (; k < b0 + sb; ++k) {
            const float a = std::fabs(x[k]);
            bad = bad || !(a < INFINITY);
            amax = a > amax ? a : amax;
        }
        const float d = bad ? NAN : amax / 127.0f;
        const float id = d > 0.0f ? 1.0f / d : 0.0f;
        ad[(b0 / sb) * qmr + i] = d;
        k = b0;
#if defined(MOE_HAVE_AVX512_QLANES)
        if constexpr (std::is_same_v<L, formats::avx512_qlanes>) {
            const __m512 vid = _mm512_set1_ps(id);
            for (; k + 16 <= b0 + sb; k += 16) {
                __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vid));  // half to even
                q = _mm512_max_epi32(_mm512_min_epi32(q, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
                alignas(16) std::int8_t t[16];
                _mm_store_si128(reinterpret_cast<__m128i*>(t), _mm512_cvtepi32_epi8(q));
                for (std::size_t u = 0; u < 4; ++u) std::memcpy(bytes + (((k + 4 * u) / 4) * qmr + i) * 4, t + 4 * u, 4);
                if (vector_sums) {
                    vsum = _mm512_add_epi32(vsum, q);
                    if ((k + 16) % sum == 0) {
                        as[(k / sum) * qmr + i] = sum_mul * _mm512_reduce_add_epi32(vsum);
                        vsum = _mm512_setzero_si512();
                    }
                }
            }
        }
#endif
        for (; k < b0 + sb; ++k) {
            float q = formats::detail::round_even(formats::detail::barrier(x[k] * id));
            q = q != q ? -127.0f : std::min(127.0f, std::max(-127.0f, q));  // NaN lanes: as cvtps + clamp
            bytes[((k / 4) * qmr + i) * 4 + k % 4] = static_cast<std::uint8_t>(static_cast<std::int8_t>(q));
        }
    }
    // Sums of the codes per sum block (exact integers).
    for (std::size_t g0 = 0; g0 < K && !vector_sums; g0 += sum) {
        std::int32_t s = 0;
        for (std::size_t k = g0; k < g0 + sum; ++k) s += static_cast<std::int8_t>(bytes[((k / 4) * qmr + i) * 4 + k % 4]);
        as[(g0 / sum) * qmr + i] = sum_mul * s;
    }
}

/// Rounds one row x[0, K) to bf16 pairs (`vcvtneps2bf16`) into slot i of a row block's operand:
/// aq[(k/2) * qmr + i] holds k (low half) and k + 1 (high half).
inline void bf16_row(const float* x, std::size_t K, std::size_t i, std::int32_t* aq) noexcept {
    for (std::size_t u = 0; u < K / 2; ++u) {
        const std::uint32_t lo = formats::detail::float_to_bf16_ne(x[2 * u]), hi = formats::detail::float_to_bf16_ne(x[2 * u + 1]);
        aq[u * qmr + i] = static_cast<std::int32_t>(lo | (hi << 16));
    }
}

template <class Fmt, class L, std::size_t M>
MOE_ALWAYS_INLINE void int_micro(const std::uint8_t* panel, std::size_t sb_bytes, const int_operand<Fmt>& op,
                                 const std::int32_t* aq, const float* ad, const std::int32_t* as, typename L::F* acc) noexcept {
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { acc[i] = L::fzero(); });
    const std::size_t qps = op.sb / int_operand<Fmt>::per_unit, sps = op.sb / op.sum;
    for (std::size_t s = 0; s < op.nsb; ++s) {
        // Fetch a super-block ahead (at least 2 KiB): at decode the weights stream from memory,
        // and this keeps more of them in flight than the hardware prefetcher does; at prefill it
        // hits L1/L2. The whole super-block where it is at most 4 KiB (the k-quants' 2.3-3.4 KiB:
        // 1 KiB of it left q6_k / q5_k decode at half the bandwidth); 1 KiB of a longer one
        // (int8, int4: more would cost their prefill, and their long rows stream well as is).
        const std::size_t span = sb_bytes <= 4096 ? sb_bytes : 1024;
        const std::uint8_t* ahead = panel + s * sb_bytes + std::max<std::size_t>(2048, span);
        for (std::size_t off = 0; off < span; off += 64) __builtin_prefetch(ahead + off, 0, 3);
        Fmt::template step<L, M>(panel + s * sb_bytes, aq + s * qps * qmr, ad + s * qmr, as + s * sps * qmr, qmr, op.sb, op.params,
                                 acc);
    }
}

/// acc[i] = c_in[i] (or 0) + sum over k in [0, kn) of a[k][i] * w[k][:], one FMA chain per lane.
template <class L, std::size_t M>
MOE_ALWAYS_INLINE void float_micro(std::size_t kn, const float* a, const float* w, typename L::F* acc) noexcept {
    typename L::F r[M];  // in locals: L::F may alias the float loads (see formats' fma_panels)
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { r[i] = acc[i]; });
    for (std::size_t k = 0; k < kn; ++k) {
        const typename L::F wk = L::load(w + k * formats::panel_cols);
        moe::detail::unroll<M>([&](auto Ic) MOE_LAMBDA_INLINE {  // a loop index kept r[] in memory at -O2
            constexpr std::size_t i = decltype(Ic)::value;
            r[i] = L::fma(L::bcast(a[k * qmr + i]), wk, r[i]);
        });
    }
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { acc[i] = r[i]; });
}

/// SwiGLU of an up-panel result: lanes 0..7 are W1 (gate) outputs, 8..15 the matching W3 (up)
/// outputs; out[j] = silu(gate_j) * up_j with moe's arch-independent sigmoid.
template <class Arch, class L>
MOE_ALWAYS_INLINE void swiglu16(const typename L::F& acc, float* out8) noexcept {
#if defined(MOE_HAVE_AVX512_QLANES)
    if constexpr (std::is_same_v<L, formats::avx512_qlanes>) {
        using V = xsimd::batch<float, Arch>;
        const V g(acc);
        const V act = g * moe::detail::sigmoid<Arch>(g);
        const __m512 up = _mm512_shuffle_f32x4(acc, acc, 0xEE);  // lanes 8..15 down to 0..7
        _mm256_storeu_ps(out8, _mm512_castps512_ps256(_mm512_mul_ps(static_cast<__m512>(act), up)));
        return;
    }
#endif
    float v[16];
    L::store(v, acc);
    for (std::size_t j = 0; j < 8; ++j) out8[j] = (v[j] * moe::detail::sigmoid<moe::scalar>(v[j])) * v[8 + j];
}

/// The activation of 8 up-panel outputs with extras (biases, GPT-OSS's or DeepSeek-V4's clamped
/// SwiGLU): the same operations, in the same order, as `expert_ffn`'s epilogue, one element at a
/// time (moe's sigmoid is arch-independent), so a weight-only format's output still equals
/// `expert_ffn` on the dequantized weights bit for bit. b1, b3: this panel's biases (or null);
/// n outputs are valid.
inline void activation8(const float* v, const ffn_extras& ex, const float* b1, const float* b3, std::size_t n, float* out8) noexcept {
    const float lim = ex.limit, alpha = ex.alpha;
    for (std::size_t j = 0; j < 8; ++j) {
        const float h1 = v[j] + (b1 && j < n ? b1[j] : 0.0f), h3 = v[8 + j] + (b3 && j < n ? b3[j] : 0.0f);
        if (ex.activation == ffn_activation::swiglu) {
            out8[j] = (h1 * moe::detail::sigmoid<moe::scalar>(h1)) * h3;
            continue;
        }
        const float g = h1 > lim ? lim : h1;  // NaN stays NaN, as torch.clamp
        const float u = h3 > lim ? lim : (-lim > h3 ? -lim : h3);
        if (ex.activation == ffn_activation::swiglu_oai)
            out8[j] = (u + 1.0f) * (g * moe::detail::sigmoid<moe::scalar>(g * alpha));
        else
            out8[j] = (g * moe::detail::sigmoid<moe::scalar>(g)) * u;
    }
}

template <std::size_t Max, class Run>
MOE_ALWAYS_INLINE void dispatch_m(std::size_t m, Run&& run) noexcept {
    if constexpr (Max > 1) {
        if (m < Max) {
            dispatch_m<Max - 1>(m, run);
            return;
        }
    }
    run(std::integral_constant<std::size_t, Max>{});
}

}  // namespace detail

/// Sizes of the scratch `quant_expert_ffn` needs.
struct quant_workspace_layout {
    std::size_t x_op = 0, h_op = 0, h_float = 0, x_float = 0, blocks = 0;
    [[nodiscard]] std::size_t total() const noexcept { return x_op + h_op + h_float + x_float + blocks; }
};

template <class Fmt>
[[nodiscard]] quant_workspace_layout workspace_size(const dispatch_plan& plan, const packed_quant_experts<Fmt>& pw) {
    constexpr std::size_t mr = detail::qmr;
    std::size_t blocks = 0;
    for (std::size_t e = 0; e + 1 < plan.offsets.size(); ++e)
        blocks += (static_cast<std::size_t>(plan.offsets[e + 1] - plan.offsets[e]) + mr - 1) / mr;
    auto r64 = [](std::size_t b) { return (b + 63) / 64 * 64; };
    quant_workspace_layout l;
    if constexpr (Fmt::integer) {
        l.x_op = r64(blocks * detail::int_operand<formats::up_format_t<Fmt>>(pw.hidden(), pw.params()).bytes());
        l.h_op = r64(blocks * detail::int_operand<formats::down_format_t<Fmt>>(pw.ffn(), pw.params()).bytes());
        l.h_float = r64(blocks * mr * pw.ffn() * sizeof(float));  // row-major SwiGLU output
    } else {
        l.x_float = r64(blocks * mr * pw.hidden() * sizeof(float));  // packed [k][mr]
        l.h_float = r64(blocks * mr * pw.ffn() * sizeof(float));
    }
    l.blocks = r64((plan.num_experts + 1) * sizeof(std::size_t));
    return l;
}

/// y_rows (plan rows x H) = the SwiGLU expert of each plan row applied to x[row's token], with
/// weights in format `Fmt`. Same contract as `expert_ffn`: padding rows get zeros in, `combine`
/// never reads them; `extras` adds biases and the clamped SwiGLU variants as `expert_ffn` does; `workspace` holds workspace_size(plan, pw).total() bytes, 64-byte aligned.
template <class Arch, class Fmt, class Executor = serial_executor>
void quant_expert_ffn(matrix_view<float> y_rows, matrix_view<const float> x, const dispatch_plan& plan,
                      const packed_quant_experts<Fmt>& pw, void* workspace, std::size_t workspace_bytes, Executor&& exec = {},
                      const ffn_extras& extras = {}) {
    using L = formats::qlanes_t<Arch>;
    using F = typename L::F;
    using Up = formats::up_format_t<Fmt>;
    using Down = formats::down_format_t<Fmt>;
    constexpr std::size_t mr = detail::qmr, C = formats::panel_cols, half = C / 2;
    const std::size_t H = pw.hidden(), FF = pw.ffn(), E = pw.num_experts();
    const bool plain = extras.plain();
    // The activation of a panel's outputs (lanes 0..7 gate, 8..15 up) of expert e into out8.
    auto activate = [&](const F& acc, std::size_t e, std::size_t f0, std::size_t fn, float* out8) {
        if (plain) {
            detail::swiglu16<Arch, L>(acc, out8);
            return;
        }
        float v[C];
        L::store(v, acc);
        detail::activation8(v, extras, extras.b1 ? extras.b1 + extras.bias_row(e) * FF + f0 : nullptr, extras.b3 ? extras.b3 + extras.bias_row(e) * FF + f0 : nullptr, fn,
                            out8);
    };
    // y[h0, h0 + hn) += b2 of expert e, after the row's sum (as expert_ffn adds it).
    auto add_b2 = [&](float* y, std::size_t e, std::size_t h0, std::size_t hn) {
        if (extras.b2)
            for (std::size_t j = 0; j < hn; ++j) y[h0 + j] += extras.b2[extras.bias_row(e) * H + h0 + j];
    };
    if (plan.num_experts != E || plan.offsets.size() != E + 1)
        MOE_THROW("moe.kernels.shape", "plan has ", plan.num_experts, " experts, packed weights ", E);
    if (x.cols != H) MOE_THROW("moe.kernels.shape", "x has ", x.cols, " columns, hidden=", H);
    if (x.rows != plan.num_tokens) MOE_THROW("moe.kernels.shape", "x has ", x.rows, " rows, the plan ", plan.num_tokens, " tokens");
    if (y_rows.rows != plan.num_rows() || y_rows.cols != H)
        MOE_THROW("moe.kernels.shape", "y_rows is ", y_rows.rows, " x ", y_rows.cols, ", expected ", plan.num_rows(), " x ", H);
    const quant_workspace_layout lay = workspace_size(plan, pw);
    if (workspace_bytes < lay.total() || (reinterpret_cast<std::uintptr_t>(workspace) & 63) != 0)
        MOE_THROW("moe.kernels.workspace", "workspace of ", workspace_bytes, " bytes (needs ", lay.total(), ", 64-byte aligned)");
    unsigned char* ws = static_cast<unsigned char*>(workspace);
    unsigned char* x_op = ws;
    unsigned char* h_op = x_op + lay.x_op;
    float* h_float = reinterpret_cast<float*>(h_op + lay.h_op);
    float* x_float = reinterpret_cast<float*>(h_op + lay.h_op + lay.h_float);
    std::size_t* block0 = reinterpret_cast<std::size_t*>(h_op + lay.h_op + lay.h_float + lay.x_float);
    block0[0] = 0;
    for (std::size_t e = 0; e < E; ++e)
        block0[e + 1] = block0[e] + (static_cast<std::size_t>(plan.offsets[e + 1] - plan.offsets[e]) + mr - 1) / mr;
    const std::size_t nblocks = block0[E];
    if (nblocks == 0) return;
    auto expert_of = [&](std::size_t blk) {
        return static_cast<std::size_t>(std::upper_bound(block0, block0 + E + 1, blk) - block0) - 1;
    };
    auto rows_of = [&](std::size_t e, std::size_t blk, std::size_t& r0) {
        r0 = static_cast<std::size_t>(plan.offsets[e]) + (blk - block0[e]) * mr;
        return std::min(mr, static_cast<std::size_t>(plan.offsets[e + 1]) - r0);
    };

    // Tiles of the two products: (expert, chunk of row blocks, chunk of panels), each expert's
    // tiles contiguous; every output element belongs to exactly one tile.
    constexpr std::size_t chunk_blocks = detail::qchunk_blocks;
    // Weight-only formats stream float activations per panel: 64-row chunks keep their slice
    // of a K block (8 x 16 KiB) in L2 across the tile's panels.
    const std::size_t chunk = Fmt::integer ? chunk_blocks : chunk_blocks / 4;
    auto run_phase = [&](std::size_t panels, std::size_t panel_bytes, auto&& body) {
        // Panels per tile: ~128 KiB of them; for the weight-only formats a multiple of 8 (their
        // decode runs 8 or 4 panels' float chains at once; a tail of 1-3 panels would run one
        // latency-bound chain each: mxfp4 decoded at half the speed).
        std::size_t ppt = std::max<std::size_t>(1, (std::size_t(128) << 10) / std::max<std::size_t>(1, panel_bytes));
        if constexpr (!Fmt::integer) ppt = std::max<std::size_t>(8, ppt - ppt % 8);
        const std::size_t pchunks = (panels + ppt - 1) / ppt;
        auto tiles_of = [&](std::size_t e) { return (block0[e + 1] - block0[e] + chunk - 1) / chunk * pchunks; };
        std::size_t tiles = 0;
        for (std::size_t e = 0; e < E; ++e) tiles += tiles_of(e);
        exec(tiles, [&](std::size_t t) {
            std::size_t e = 0;
            while (t >= tiles_of(e)) t -= tiles_of(e++);
            const std::size_t rc = t / pchunks, pc = t % pchunks;
            const std::size_t b0 = block0[e] + rc * chunk, b1 = std::min(block0[e + 1], b0 + chunk);
            body(e, b0, b1, pc * ppt, std::min(panels, (pc + 1) * ppt));
        });
    };

    if constexpr (Fmt::integer) {
        const detail::int_operand<Up> opx(H, pw.params());
        const detail::int_operand<Down> oph(FF, pw.params());
        auto operand = [&](unsigned char* base, const auto& op, std::size_t blk, const std::int32_t*& aq,
                           const float*& ad, const std::int32_t*& as) {
            unsigned char* p = base + blk * op.bytes();
            aq = reinterpret_cast<const std::int32_t*>(p);
            ad = reinterpret_cast<const float*>(p + op.quads * mr * 4);
            as = reinterpret_cast<const std::int32_t*>(p + (op.quads + op.nsb) * mr * 4);
        };
        auto quantize_block = [&](unsigned char* base, const auto& op, std::size_t blk, auto&& row_ptr) {
            unsigned char* p = base + blk * op.bytes();
            auto* aq = reinterpret_cast<std::int32_t*>(p);
            auto* ad = reinterpret_cast<float*>(p + op.quads * mr * 4);
            auto* as = reinterpret_cast<std::int32_t*>(p + (op.quads + op.nsb) * mr * 4);
            std::memset(p, 0, op.bytes());
            for (std::size_t i = 0; i < mr; ++i) {
                const float* src = row_ptr(i);
                if (!src) continue;
                if constexpr (std::decay_t<decltype(op)>::per_unit == 2) detail::bf16_row(src, op.K, i, aq);
                else detail::quantize_row<L>(src, op.K, op.sb, op.sum, i, aq, ad, as, op.sum_mul);
            }
        };
        // Phase 1: gather + quantize the rows' tokens.
        exec(nblocks, [&](std::size_t blk) {
            const std::size_t e = expert_of(blk);
            std::size_t r0;
            const std::size_t m = rows_of(e, blk, r0);
            quantize_block(x_op, opx, blk, [&](std::size_t i) -> const float* {
                const std::int32_t tok = i < m ? plan.row_token[r0 + i] : -1;
                return tok >= 0 ? x.row(static_cast<std::size_t>(tok)) : nullptr;
            });
        });
        // Phase 2: up projection + SwiGLU into h_float (row-major, F per row).
        const std::size_t up_sb = pw.template panel_bytes<Up>(H) / opx.nsb;
        run_phase(pw.up_panels(), pw.up_panel_bytes(), [&](std::size_t e, std::size_t b0, std::size_t b1, std::size_t p0,
                                                            std::size_t p1) {
            for (std::size_t p = p0; p < p1; ++p) {
                const std::uint8_t* panel = pw.up(e, p);
                const std::size_t f0 = p * half, fn = std::min(half, FF - f0);
                for (std::size_t blk = b0; blk < b1; ++blk) {
                    std::size_t r0;
                    const std::size_t m = rows_of(e, blk, r0);
                    const std::int32_t *aq, *as;
                    const float* ad;
                    operand(x_op, opx, blk, aq, ad, as);
                    detail::dispatch_m<mr>(m, [&](auto Mc) {
                        constexpr std::size_t M = decltype(Mc)::value;
                        F acc[M];
                        detail::int_micro<Up, L, M>(panel, up_sb, opx, aq, ad, as, acc);
                        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                            float out[8];
                            activate(acc[i], e, f0, fn, out);
                            std::memcpy(h_float + (blk * mr + i) * FF + f0, out, fn * sizeof(float));
                        });
                    });
                }
            }
        });
        // Phase 2b: quantize the activations (zeros in rows past the expert's count).
        exec(nblocks, [&](std::size_t blk) {
            const std::size_t e = expert_of(blk);
            std::size_t r0;
            const std::size_t m = rows_of(e, blk, r0);
            quantize_block(h_op, oph, blk, [&](std::size_t i) -> const float* { return i < m ? h_float + (blk * mr + i) * FF : nullptr; });
        });
        // Phase 3: down projection into y_rows.
        const std::size_t down_sb = pw.template panel_bytes<Down>(FF) / oph.nsb;
        run_phase(pw.down_panels(), pw.down_panel_bytes(), [&](std::size_t e, std::size_t b0, std::size_t b1, std::size_t p0,
                                                                std::size_t p1) {
            for (std::size_t p = p0; p < p1; ++p) {
                const std::uint8_t* panel = pw.down(e, p);
                const std::size_t h0 = p * C, hn = std::min(C, H - h0);
                for (std::size_t blk = b0; blk < b1; ++blk) {
                    std::size_t r0;
                    const std::size_t m = rows_of(e, blk, r0);
                    const std::int32_t *aq, *as;
                    const float* ad;
                    operand(h_op, oph, blk, aq, ad, as);
                    detail::dispatch_m<mr>(m, [&](auto Mc) {
                        constexpr std::size_t M = decltype(Mc)::value;
                        F acc[M];
                        detail::int_micro<Down, L, M>(panel, down_sb, oph, aq, ad, as, acc);
                        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                            if (hn == C) {
                                L::store(y_rows.row(r0 + i) + h0, acc[i]);
                            } else {
                                float v[C];
                                L::store(v, acc[i]);
                                std::memcpy(y_rows.row(r0 + i) + h0, v, hn * sizeof(float));
                            }
                            add_b2(y_rows.row(r0 + i), e, h0, hn);
                        });
                    });
                }
            }
        });
    } else {
        // Weight-only: float operands packed [k][mr]; weights dequantized a K block at a time.
        constexpr std::size_t kc = detail::wo_kc;
        exec(nblocks, [&](std::size_t blk) {
            const std::size_t e = expert_of(blk);
            std::size_t r0;
            const std::size_t m = rows_of(e, blk, r0);
            float* dst = x_float + blk * mr * H;
            for (std::size_t i = 0; i < mr; ++i) {
                const std::int32_t tok = i < m ? plan.row_token[r0 + i] : -1;
                const float* src = tok >= 0 ? x.row(static_cast<std::size_t>(tok)) : nullptr;
                for (std::size_t k = 0; k < H; ++k) dst[k * mr + i] = src ? src[k] : 0.0f;
            }
        });
        // One tile: for each panel, K blocks outermost (dequantized once into L1), the tile's
        // row blocks inside; partial sums wait in `part` between K blocks.
        auto tile = [&](auto fmt, std::size_t e, std::size_t b0, std::size_t b1, std::size_t p0, std::size_t p1, std::size_t K,
                        const float* a_base, auto&& panel_of, auto&& finish) {
            using PF = decltype(fmt);  // the panels' format
            detail::qscratch<detail::wo_kc * formats::panel_cols> wscratch;
            detail::qscratch<detail::wo_tile_rows * formats::panel_cols> pscratch;
            float* wbuf = wscratch.v;
            float* part = pscratch.v;
            std::size_t first_r0;
            const std::size_t first_m = rows_of(e, b0, first_r0);
            std::size_t p = p0;
            if (b1 - b0 == 1) {
                // Decode (one row block, <= 8 rows): P panels at a time (detail::wo_panels: 8 for
                // one row on AVX-512, 2 for 5-8 rows), M x P independent FMA chains, weights
                // decoded in registers (`fma_panels`); the bytes of the K range two ranges ahead (in
                // the next P panels near the end) are prefetched. Remaining panels one at a time.
                auto group = [&](auto Pc, auto Mc) {
                    constexpr std::size_t P = decltype(Pc)::value, M = decltype(Mc)::value, kq = kc / P;
                    auto ahead = [&](std::size_t pn, std::size_t kp) {
                        if (kp >= K) {
                            kp -= K;
                            pn += P;
                        }
                        if (pn < p1 && kp < K) PF::prefetch(panel_of(e, pn), K, kp, std::min(K, kp + kq));
                    };
                    F acc[M][P];
                    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                        for (std::size_t j = 0; j < P; ++j) acc[i][j] = L::fzero();
                    });
                    for (std::size_t k0 = 0; k0 < K; k0 += kq) {
                        const std::size_t k1 = std::min(K, k0 + kq);
                        const std::uint8_t* panels[P];
                        for (std::size_t j = 0; j < P; ++j) {
                            ahead(p + j, k0 + 2 * kq);
                            panels[j] = panel_of(e, p + j);
                        }
                        PF::template fma_panels<L, M, P>(panels, K, k0, k1, a_base + b0 * mr * K + k0 * mr, mr, acc);
                    }
                    for (std::size_t j = 0; j < P; ++j)
                        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                            finish(b0, first_r0, i, p + j, acc[i][j]);
                        });
                };
                detail::dispatch_m<mr>(first_m, [&](auto Mc) {
                    constexpr std::size_t P = detail::wo_panels<L, decltype(Mc)::value>;
                    for (; p + P <= p1; p += P) group(std::integral_constant<std::size_t, P>{}, Mc);
                    if constexpr (P > 1)
                        for (; p < p1; ++p) group(std::integral_constant<std::size_t, 1>{}, Mc);
                });
            }
            for (; p < p1; ++p) {
                const std::uint8_t* panel = panel_of(e, p);
                for (std::size_t k0 = 0; k0 < K; k0 += kc) {
                    const std::size_t k1 = std::min(K, k0 + kc);
                    PF::template dequant<L>(panel, K, k0, k1, wbuf);
                    for (std::size_t blk = b0; blk < b1; ++blk) {
                        std::size_t r0;
                        const std::size_t m = rows_of(e, blk, r0);
                        float* pp = part + (blk - b0) * mr * C;
                        detail::dispatch_m<mr>(m, [&](auto Mc) {
                            constexpr std::size_t M = decltype(Mc)::value;
                            F acc[M];
                            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                                acc[i] = k0 == 0 ? L::fzero() : L::load(pp + i * C);
                            });
                            detail::float_micro<L, M>(k1 - k0, a_base + blk * mr * K + k0 * mr, wbuf, acc);
                            if (k1 == K) {
                                moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { finish(blk, r0, i, p, acc[i]); });
                            } else {
                                moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { L::store(pp + i * C, acc[i]); });
                            }
                        });
                    }
                }
            }
        };
        run_phase(pw.up_panels(), pw.up_panel_bytes(), [&](std::size_t e, std::size_t b0, std::size_t b1, std::size_t p0,
                                                            std::size_t p1) {
            tile(Up{}, e, b0, b1, p0, p1, H, x_float, [&](std::size_t ee, std::size_t p) { return pw.up(ee, p); },
                 [&](std::size_t blk, std::size_t, std::size_t i, std::size_t p, const F& acc) {
                     float out[8];
                     const std::size_t f0 = p * half, fn = std::min(half, FF - f0);
                     activate(acc, e, f0, fn, out);
                     float* dst = h_float + blk * mr * FF;
                     for (std::size_t j = 0; j < fn; ++j) dst[(f0 + j) * mr + i] = out[j];
                 });
        });
        run_phase(pw.down_panels(), pw.down_panel_bytes(), [&](std::size_t e, std::size_t b0, std::size_t b1, std::size_t p0,
                                                                std::size_t p1) {
            tile(Down{}, e, b0, b1, p0, p1, FF, h_float, [&](std::size_t ee, std::size_t p) { return pw.down(ee, p); },
                 [&](std::size_t, std::size_t r0, std::size_t i, std::size_t p, const F& acc) {
                     float v[C];
                     L::store(v, acc);
                     const std::size_t h0 = p * C, hn = std::min(C, H - h0);
                     std::memcpy(y_rows.row(r0 + i) + h0, v, hn * sizeof(float));
                     add_b2(y_rows.row(r0 + i), e, h0, hn);
                 });
        });
    }
}

}  // namespace moe::kernels
