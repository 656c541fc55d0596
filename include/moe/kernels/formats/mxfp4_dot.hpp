/// @file kernels/formats/mxfp4_dot.hpp
/// MXFP4 with llama.cpp's numerics (`mxfp4:dot`): GGUF's `block_mxfp4`, 17 bytes per 32
/// values along K (`{ uint8 e; uint8 qs[16]; }`: an E8M0 scale, then q4_0's nibble order,
/// qs[j] holding element j in its low nibble and j + 16 in its high nibble), w = e2m1(q) *
/// 2^(e - 127): the values `mxfp4` holds, in ggml's bytes, so a GGUF tensor packs in place.
/// The kernel is ggml's `ggml_vec_dot_mxfp4_q8_0`: the codes looked up as the integers
/// 2 * e2m1 (`kvalues_mxfp4`: 0, 1, 2, 3, 4, 6, 8, 12 and their negatives, here + 128 for
/// `vpdpbusd`), an exact integer dot with int8 activations per block of 32, then
/// (2^(e - 128) * d_a) * sum. Unlike `mxfp4` (weight-only, float activations, equal to the
/// float kernel on the dequantized weights) its activations are quantized: the error is
/// iq4_nl's, the speed an integer format's.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.hpp"
#include "iq4_nl.hpp"
#include "mxfp4.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

namespace detail {
/// ggml's kvalues_mxfp4: the 16 codes' values 2 * e2m1(q) (code 8, E2M1's -0, is 0).
inline constexpr std::int8_t mxfp4_dot_values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
/// The same + 128, the unsigned operand of `vpdpbusd` (the offset is taken back with sums).
inline constexpr std::uint8_t mxfp4_dot_codes[16] = {128, 129, 130, 131, 132, 134, 136, 140, 128, 127, 126, 125, 124, 122, 120, 116};
}  // namespace detail

struct mxfp4_dot {
    static constexpr const char* name = "mxfp4:dot";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 39;
    static constexpr bool integer = true;
    /// Codes carry +128; the activation sums come pre-scaled by -128 (detail::sum_offset).
    static constexpr std::int32_t sum_offset = 128;
    static constexpr unsigned bits = 4;
    static constexpr std::size_t block = 32, block_bytes = 17;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t scale_bytes(const format_params&) noexcept { return panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b)
                if (*at(v, r, b) == 255)
                    MOE_THROW("moe.kernels.format", name, ": scale of row ", r, ", block ", b, " is the E8M0 NaN (255)");
    }
    /// `mxfp4`'s OCP MX rule (X = floor(log2(amax)) - 2 clamped to [-127, 127], codes e2m1(x /
    /// 2^X) to nearest even, saturating), written in ggml's block layout.
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        return detail::quantize_blocks(name, block, block_bytes, w, n, k, p, [](const float* x, std::uint8_t* out) {
            const int X = detail::mx_exponent(x, block);
            out[0] = static_cast<std::uint8_t>(X + 127);
            for (std::size_t j = 0; j < block / 2; ++j)
                out[1 + j] = static_cast<std::uint8_t>(detail::float_to_e2m1(std::ldexp(x[j], -X)) |
                                                       (detail::float_to_e2m1(std::ldexp(x[j + 16], -X)) << 4));
        });
    }
    /// ggml's dequantize_row_mxfp4: y = kvalues_mxfp4[q] * 2^(e - 128) = e2m1(q) * 2^(e - 127).
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float s = detail::e8m0_to_float(p[0]) * 0.5f;  // 2^(e - 128), exact
                float* y = out + r * v.cols + b * block;
                std::uint8_t q[block];
                detail::split_nibbles(p + 1, q);
                for (std::size_t j = 0; j < block; ++j)  // code 8 (E2M1's -0) reads +0, as in ggml
                    y[j] = static_cast<float>(detail::mxfp4_dot_values[q[j]]) * s;
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        scales[col] = p[0];
        detail::split_nibbles(p + 1, codes);
    }
    /// acc += (2^(e - 128) * d_a) * (sum (v + 128) a - 128 sum a) for one block (v = 2 e2m1(q)).
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        const typename L::F dw = L::mul(L::e8m0x16(sb + detail::code_bytes(bits, block)), L::bcast(0.5f));  // 2^(e - 128), exact
        detail::lut32_step<L, M>(sb, detail::mxfp4_dot_codes, dw, aq, ad, as, mr, acc);
    }
};

}  // namespace moe::kernels::formats
