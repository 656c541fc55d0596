/// @file kernels/formats/iq4_nl.hpp
/// GGUF IQ4_NL: blocks of 32 values along K with one fp16 scale, 18 bytes (`{ fp16 d;
/// uint8 qs[16]; }`, q4_0's nibble order: qs[j] holds element j (low nibble) and j + 16 (high
/// nibble)); a nibble is not a value but an index into ggml's non-linear table
/// `kvalues_iq4nl` (16 int8 values from -127 to 113): w = d * kvalues_iq4nl[q]. Packed as
/// 4-bit indices; the kernel looks the int8 values up in registers (`vpshufb`) and runs the
/// exact integer dot. Activations: int8 per block of 32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

namespace detail {
/// ggml's kvalues_iq4nl: the values of IQ4_NL's and IQ4_XS's 16 codes.
inline constexpr std::int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
/// The same + 128, the unsigned operand of `vpdpbusd` (the offset is taken back with sums).
inline constexpr std::uint8_t iq4nl_codes[16] = {1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241};
/// The index of the table value nearest v, the lower index on ties (v finite or infinite).
inline unsigned iq4nl_nearest(float v) noexcept {
    if (!(v > -127.0f)) return 0;
    if (v >= 113.0f) return 15;
    unsigned best = 0;
    float err = std::fabs(v - static_cast<float>(iq4nl_values[0]));
    for (unsigned i = 1; i < 16; ++i) {
        const float e = std::fabs(v - static_cast<float>(iq4nl_values[i]));
        if (e < err) {
            err = e;
            best = i;
        }
    }
    return best;
}
/// One block of 32 4-bit codes that index a 16-entry int8 table (stored + 128 in `codes16`):
/// acc += (dw * d_a) * (sum (v + 128) a - 128 sum a). iq4_nl's step and mxfp4:dot's.
template <class L, std::size_t M>
MOE_ALWAYS_INLINE void lut32_step(const std::uint8_t* sb, const std::uint8_t* codes16, const typename L::F& dw, const std::int32_t* aq,
                                  const float* ad, const std::int32_t* as, std::size_t mr, typename L::F* acc) noexcept {
    typename L::I isum[M];
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::splat(as + i); });  // -offset x sum a
    dot4_lut<L, M>(sb, 0, 8, L::table16(codes16), aq, mr, isum);
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { acc[i] = L::fma(L::mul(dw, L::bcast(ad[i])), L::cvt(isum[i]), acc[i]); });
}
}  // namespace detail

struct iq4_nl {
    static constexpr const char* name = "iq4_nl";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 20;
    static constexpr bool integer = true;
    /// Codes carry +128; the activation sums come pre-scaled by -128 (detail::sum_offset).
    static constexpr std::int32_t sum_offset = 128;
    static constexpr unsigned bits = 4;
    static constexpr std::size_t block = 32, block_bytes = 18;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 2 * panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b)
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(at(v, r, b))), r, b);
    }
    /// Round-to-nearest reference quantizer (ours; ggml's also searches for a better scale):
    /// d = fp16(max / -127) (max: the value of largest magnitude, the first on ties), each
    /// value the table index nearest x / d (ties to the lower index; index 8, value 1, when d = 0).
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        return detail::quantize_blocks(name, block, block_bytes, w, n, k, p, [](const float* x, std::uint8_t* out) {
            const std::uint16_t dh = detail::float_to_fp16(detail::signed_absmax(x, block) / -127.0f);
            const float d = detail::fp16_to_float(dh);
            detail::store_u16(out, dh);
            auto index = [d](float v) { return d != 0.0f ? detail::iq4nl_nearest(v / d) : 8u; };
            for (std::size_t j = 0; j < block / 2; ++j)
                out[2 + j] = static_cast<std::uint8_t>(index(x[j]) | (index(x[j + 16]) << 4));
        });
    }
    /// ggml's dequantize_row_iq4_nl: y = d * kvalues_iq4nl[q].
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p));
                float* y = out + r * v.cols + b * block;
                std::uint8_t q[block];
                detail::split_nibbles(p + 2, q);
                for (std::size_t j = 0; j < block; ++j) y[j] = d * static_cast<float>(detail::iq4nl_values[q[j]]);
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p, 2);
        detail::split_nibbles(p + 2, codes);
    }
    /// acc += (d_w * d_a) * (sum (v + 128) a - 128 sum a) for one block (v: the table values).
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        detail::lut32_step<L, M>(sb, detail::iq4nl_codes, L::fp16x16(sb + detail::code_bytes(bits, block)), aq, ad, as, mr, acc);
    }
};

}  // namespace moe::kernels::formats
