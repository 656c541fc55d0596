/// @file kernels/formats/int4.hpp
/// int4 weights in groups of G along K (G = 32 or 128 as GPTQ / AWQ ship them; any multiple
/// of 8) with one fp16 scale per group, symmetric or with 4-bit zero points:
/// - `data`: N x K/2 bytes, element 2i in the low nibble of byte i and 2i + 1 in the high
///   nibble, as unsigned codes u (symmetric: u = q + 8);
/// - `scales`: N x K/G fp16 scales, followed (zero points) by N x K/G uint8 zero points z.
/// w = s * (u - z), z = 8 when symmetric. (GPTQ's int32-packed `qweight` / `qzeros` unpack to
/// this row-major nibble layout in a loader.) Activations: int8 per group.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct int4 {
    static constexpr const char* name = "int4";
    static constexpr const char* syntax = "int4:G[:zp]";  ///< its run-time name carries the group

    /// The parameters of "int4:<rest>": the group G (a positive multiple of 8) and ":zp" for zero
    /// points. Throws [moe.kernels.format].
    static format_params parse_params(std::string rest) {
        format_params p;
        if (rest.size() > 3 && rest.compare(rest.size() - 3, 3, ":zp") == 0) {
            p.zero_points = true;
            rest.resize(rest.size() - 3);
        }
        bool ok = !rest.empty() && rest.size() <= 6;
        for (char c : rest) ok = ok && c >= '0' && c <= '9';
        std::size_t g = 0;
        if (ok) g = static_cast<std::size_t>(std::stoul(rest));
        if (!ok || g < 8 || g % 8 != 0)
            MOE_THROW("moe.kernels.format", "int4 group '", rest, "' must be a positive multiple of 8 (e.g. int4:32, int4:128)");
        p.group = g;
        return p;
    }
    /// ":G" or ":G:zp", the inverse of parse_params.
    static std::string params_string(const format_params& p) {
        return ":" + std::to_string(p.group) + (p.zero_points ? ":zp" : "");
    }
    static constexpr bool integer = true;
    static constexpr unsigned bits = 4;

    static std::size_t k_block(const format_params& p) noexcept { return p.group; }
    static std::size_t act_block(std::size_t, const format_params& p) noexcept { return p.group; }
    static std::size_t sum_block(std::size_t, const format_params& p) noexcept { return p.group; }
    static std::size_t scale_bytes(const format_params& p) noexcept { return (p.zero_points ? 3 : 2) * panel_cols; }

    static void check_group(std::size_t k, const format_params& p) {
        if (p.group < 8 || p.group % 8 != 0 || p.group > 65536)
            MOE_THROW("moe.kernels.format", name, ": group ", p.group, " must be a positive multiple of 8 (e.g. 32 or 128), at most 65536");
        detail::check_k(name, k, p.group);
    }
    static std::size_t groups(const quant_view& v) noexcept { return v.cols / v.params.group; }
    static float scale(const quant_view& v, std::size_t r, std::size_t g) noexcept {
        return detail::fp16_to_float(detail::load_u16(v.scales + 2 * (r * groups(v) + g)));
    }
    static unsigned zero(const quant_view& v, std::size_t r, std::size_t g) noexcept {
        return v.params.zero_points ? v.scales[2 * v.rows * groups(v) + r * groups(v) + g] : 8u;
    }
    static unsigned code(const quant_view& v, std::size_t r, std::size_t j) noexcept {
        const std::uint8_t b = v.data[r * (v.cols / 2) + j / 2];
        return (j & 1) ? b >> 4 : b & 15u;
    }
    static void validate(const quant_view& v) {
        check_group(v.cols, v.params);
        const std::size_t ng = v.rows * (v.cols / v.params.group);
        detail::check_bytes(name, v, v.rows * v.cols / 2, ng * (v.params.zero_points ? 3 : 2));
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t g = 0; g < groups(v); ++g) {
                detail::check_scale(name, scale(v, r, g), r, g);
                if (zero(v, r, g) > 15)
                    MOE_THROW("moe.kernels.format", name, ": zero point of row ", r, ", group ", g, " is ", zero(v, r, g),
                              " (not 4-bit)");
            }
    }
    /// Symmetric: s = fp16(amax / 7), q = clamp(round(x / s), -8, 7). Zero points (AWQ's
    /// rule): s = fp16(max(max - min, 1e-5) / 15) over the group's min <= 0 <= max,
    /// z = clamp(round(-min / s), 0, 15), u = clamp(round(x / s) + z, 0, 15). Half to even.
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p) {
        check_group(k, p);
        detail::check_finite(name, w, n, k);
        const std::size_t G = p.group, ng = k / G;
        quant_matrix m{n, k, p, std::vector<std::uint8_t>(n * k / 2), std::vector<std::uint8_t>(n * ng * (p.zero_points ? 3 : 2))};
        using detail::round_even;
        for (std::size_t r = 0; r < n; ++r)
            for (std::size_t g = 0; g < ng; ++g) {
                const float* x = w + r * k + g * G;
                float mn = 0.0f, mx = 0.0f, amax = 0.0f;
                for (std::size_t j = 0; j < G; ++j) {
                    mn = std::min(mn, x[j]);
                    mx = std::max(mx, x[j]);
                    amax = std::max(amax, std::fabs(x[j]));
                }
                const std::uint16_t sh = detail::float_to_fp16(p.zero_points ? std::max(mx - mn, 1e-5f) / 15.0f : amax / 7.0f);
                const float s = detail::fp16_to_float(sh);
                detail::store_u16(m.scales.data() + 2 * (r * ng + g), sh);
                unsigned z = 8;
                if (p.zero_points) {
                    z = s > 0.0f ? static_cast<unsigned>(std::min(15.0f, std::max(0.0f, round_even(-mn / s)))) : 0u;
                    m.scales[2 * n * ng + r * ng + g] = static_cast<std::uint8_t>(z);
                }
                for (std::size_t j = 0; j < G; ++j) {
                    float u = s > 0.0f ? round_even(x[j] / s) : 0.0f;
                    u = p.zero_points ? std::min(15.0f, std::max(0.0f, u + static_cast<float>(z)))
                                      : std::min(7.0f, std::max(-8.0f, u)) + 8.0f;
                    const std::size_t e = g * G + j;
                    std::uint8_t& b = m.data[r * (k / 2) + e / 2];
                    b = static_cast<std::uint8_t>(b | (static_cast<unsigned>(u) << ((e & 1) * 4)));
                }
            }
        return m;
    }
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t j = 0; j < v.cols; ++j) {
                const std::size_t g = j / v.params.group;
                out[r * v.cols + j] =
                    scale(v, r, g) * static_cast<float>(static_cast<int>(code(v, r, j)) - static_cast<int>(zero(v, r, g)));
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t g, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        std::memcpy(scales + 2 * col, v.scales + 2 * (r * groups(v) + g), 2);
        if (v.params.zero_points) scales[2 * panel_cols + col] = static_cast<std::uint8_t>(zero(v, r, g));
        for (std::size_t j = 0; j < v.params.group; ++j) codes[j] = static_cast<std::uint8_t>(code(v, r, g * v.params.group + j));
    }
    /// acc += (s_w * d_a) * (sum u a - z sum a) for one group (z = 8 when symmetric).
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t sbk, const format_params& p,
                                       typename L::F* acc) noexcept {
        typename L::I isum[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::zero(); });
        detail::dot4<L, M>(sb, 0, sbk / 4, aq, mr, isum);
        const std::uint8_t* s = sb + detail::code_bytes(bits, sbk);
        const typename L::F sw = L::fp16x16(s);
        if (p.zero_points) {
            const typename L::I z = L::u8x16(s + 2 * panel_cols);
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                acc[i] = L::fma(L::mul(sw, L::bcast(ad[i])), L::cvt(L::add(isum[i], L::mul_scalar(z, -as[i]))), acc[i]);
            });
        } else {
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                acc[i] = L::fma(L::mul(sw, L::bcast(ad[i])), L::cvt(L::sub(isum[i], 8 * as[i])), acc[i]);
            });
        }
    }
};

}  // namespace moe::kernels::formats
