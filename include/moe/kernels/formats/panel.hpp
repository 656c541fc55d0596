/// @file kernels/formats/panel.hpp
/// The packed panel shared by the integer formats, and the integer dot products over it.
///
/// A panel is 16 weight rows (the kernel's output columns; missing rows are zero). Along K it
/// is cut into the format's super-blocks of `SB` values (its activation-scale block); each
/// super-block is its codes followed by its scales (format-defined, 16 columns at a time):
/// - 8-bit codes: SB/4 units of 64 bytes; byte 4n + j of unit u is column n at k = 4u + j.
/// - 4-bit codes: SB/8 units; byte 4n + j of unit u holds k = 8u + j (low nibble) and
///   k = 8u + 4 + j (high nibble), so one load gives two `vpdpbusd` operands.
/// - 6-bit codes: the low 4 bits as 4-bit codes, then SB/16 units of high bits; byte 4n + j
///   of unit v holds bits 4-5 of k = 16v + 4s + j at bit 2s.
/// - 2-bit codes: SB/16 units; byte 4n + j of unit u holds k = 16u + 4s + j at bits 2s, 2s + 1.
/// - 3-bit codes: the low 2 bits as 2-bit codes, then SB/32 units of high bits; byte 4n + j of
///   unit w holds bit 2 of k = 32w + 4s + j at bit s.
/// Codes are unsigned (a format's signed values carry its offset: q8_0 + 128, q4_0 + 8, ...),
/// the `vpdpbusd` operand order; the offset is taken back exactly with activation sums.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common.hpp"

namespace moe::kernels::formats::detail {

/// Bytes of one super-block's codes for 16 columns.
inline constexpr std::size_t code_bytes(unsigned bits, std::size_t sb) noexcept { return sb * panel_cols * bits / 8; }

/// Packs one panel of an integer format: `rows[n]` is the source row of column n, or rows >=
/// v.rows for a zero column. Fmt::decode(v, row, sb, codes, scales, col) writes the SB codes of
/// that row's super-block and the column's scales.
template <class Fmt>
void pack_int_panel(const quant_view& v, const std::size_t* rows, std::uint8_t* dst) {
    const std::size_t K = v.cols, SB = Fmt::act_block(K, v.params), nsb = K / SB;
    const std::size_t cb = code_bytes(Fmt::bits, SB), sb_bytes = cb + Fmt::scale_bytes(v.params);
    std::vector<std::uint8_t> codes(panel_cols * SB);
    for (std::size_t s = 0; s < nsb; ++s) {
        std::uint8_t* out = dst + s * sb_bytes;
        for (std::size_t n = 0; n < panel_cols; ++n) {
            if (rows[n] < v.rows) {
                Fmt::decode(v, rows[n], s, codes.data() + n * SB, out + cb, n);
            } else {
                for (std::size_t k = 0; k < SB; ++k) codes[n * SB + k] = 0;  // scales were zeroed
            }
        }
        auto c = [&](std::size_t n, std::size_t k) -> unsigned { return codes[n * SB + k]; };
        if constexpr (Fmt::bits == 2 || Fmt::bits == 3) {
            for (std::size_t u = 0; u < SB / 16; ++u)
                for (std::size_t n = 0; n < panel_cols; ++n)
                    for (std::size_t j = 0; j < 4; ++j) {
                        unsigned b = 0;
                        for (unsigned s2 = 0; s2 < 4; ++s2) b |= (c(n, 16 * u + 4 * s2 + j) & 3u) << (2 * s2);
                        out[u * 64 + 4 * n + j] = static_cast<std::uint8_t>(b);
                    }
            if constexpr (Fmt::bits == 3) {
                std::uint8_t* hi = out + SB * panel_cols / 4;
                for (std::size_t w = 0; w < SB / 32; ++w)
                    for (std::size_t n = 0; n < panel_cols; ++n)
                        for (std::size_t j = 0; j < 4; ++j) {
                            unsigned b = 0;
                            for (unsigned s8 = 0; s8 < 8; ++s8) b |= ((c(n, 32 * w + 4 * s8 + j) >> 2) & 1u) << s8;
                            hi[w * 64 + 4 * n + j] = static_cast<std::uint8_t>(b);
                        }
            }
        } else if constexpr (Fmt::bits == 8) {
            for (std::size_t u = 0; u < SB / 4; ++u)
                for (std::size_t n = 0; n < panel_cols; ++n)
                    for (std::size_t j = 0; j < 4; ++j) out[u * 64 + 4 * n + j] = static_cast<std::uint8_t>(c(n, 4 * u + j));
        } else {
            for (std::size_t u = 0; u < SB / 8; ++u)
                for (std::size_t n = 0; n < panel_cols; ++n)
                    for (std::size_t j = 0; j < 4; ++j)
                        out[u * 64 + 4 * n + j] =
                            static_cast<std::uint8_t>((c(n, 8 * u + j) & 15) | ((c(n, 8 * u + 4 + j) & 15) << 4));
            if constexpr (Fmt::bits == 6) {
                std::uint8_t* hi = out + SB * panel_cols / 2;
                for (std::size_t w = 0; w < SB / 16; ++w)
                    for (std::size_t n = 0; n < panel_cols; ++n)
                        for (std::size_t j = 0; j < 4; ++j) {
                            unsigned b = 0;
                            for (unsigned s2 = 0; s2 < 4; ++s2) b |= ((c(n, 16 * w + 4 * s2 + j) >> 4) & 3u) << (2 * s2);
                            hi[w * 64 + 4 * n + j] = static_cast<std::uint8_t>(b);
                        }
            }
        }
    }
}

/// A format's code offset where its activation sums come pre-scaled (Fmt::sum_offset: the sums
/// are stored as -offset x sum a, and its dots start from them); 0, raw sums, where it names none.
template <class Fmt, class = void>
struct sum_offset : std::integral_constant<std::int32_t, 0> {};
template <class Fmt>
struct sum_offset<Fmt, std::void_t<decltype(Fmt::sum_offset)>> : std::integral_constant<std::int32_t, Fmt::sum_offset> {};

/// Rows up to which a long 8-bit dot (16 quads or more: int8's per-channel sums) runs a second
/// accumulator chain per row: L::split_rows where the lanes name it, else 4. A product's latency
/// (vpdpbusd: 5 cycles, 2 issued per cycle on Intel cores) needs about 10 independent sums in
/// flight and a row block has 8; a few rows (decode) always split. Short dots (a block of 32, a
/// k-quant sub-block) gain nothing: the out-of-order core overlaps the next block's chains, and
/// the extra add per row costs (q6_k measured 15% slower with it at T = 512 on an Intel Xeon).
/// The sums are integers, so the split changes no bit of any result.
template <class L, class = void>
struct split_rows : std::integral_constant<std::size_t, 4> {};
template <class L>
struct split_rows<L, std::void_t<decltype(L::split_rows)>> : std::integral_constant<std::size_t, L::split_rows> {};

/// isum[i] += dot of quads [q0, q0 + nq) of an 8-bit super-block with row i's activation quads.
/// `aq` points at the super-block's first quad: aq[u * mr + i].
template <class L, std::size_t M>
MOE_ALWAYS_INLINE void dot8(const std::uint8_t* codes, std::size_t q0, std::size_t nq, const std::int32_t* aq,
                            std::size_t mr, typename L::I* isum) noexcept {
    if (M <= 4 || (M <= split_rows<L>::value && nq >= 16)) {
        // Two independent chains per row hide the vpdpbusd latency (see split_rows).
        typename L::I alt[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { alt[i] = L::zero(); });
        std::size_t u = q0;
        for (; u + 2 <= q0 + nq; u += 2) {
            const typename L::B w0 = L::load_b(codes + 64 * u), w1 = L::load_b(codes + 64 * (u + 1));
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::dpbusd(isum[i], w0, aq[u * mr + i]); });
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                alt[i] = L::dpbusd(alt[i], w1, aq[(u + 1) * mr + i]);
            });
        }
        for (; u < q0 + nq; ++u) {
            const typename L::B w = L::load_b(codes + 64 * u);
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::dpbusd(isum[i], w, aq[u * mr + i]); });
        }
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::add(isum[i], alt[i]); });
    } else {
        for (std::size_t u = q0; u < q0 + nq; ++u) {
            const typename L::B w = L::load_b(codes + 64 * u);
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::dpbusd(isum[i], w, aq[u * mr + i]); });
        }
    }
}

/// The same for 4-bit codes; q0 and nq are even (a unit holds two quads).
template <class L, std::size_t M>
MOE_ALWAYS_INLINE void dot4(const std::uint8_t* codes, std::size_t q0, std::size_t nq, const std::int32_t* aq,
                            std::size_t mr, typename L::I* isum) noexcept {
    // Few rows (decode): the high nibbles run a second chain per row, hiding the vpdpbusd
    // latency (integer sums are exact: no bit changes); many rows have chains enough.
    typename L::I alt[M];
    typename L::I* const second = M <= 4 ? alt : isum;
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { alt[i] = L::zero(); });
    for (std::size_t u = q0 / 2; u < (q0 + nq) / 2; ++u) {
        const typename L::B b = L::load_b(codes + 64 * u);
        const typename L::B lo = L::lo4(b), hi = L::hi4(b);
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::dpbusd(isum[i], lo, aq[(2 * u) * mr + i]); });
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            second[i] = L::dpbusd(second[i], hi, aq[(2 * u + 1) * mr + i]);
        });
    }
    if constexpr (M <= 4)
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::add(isum[i], alt[i]); });
}

/// The same for 4-bit indices into a 16-entry table of codes (`tab`, from L::table16): the
/// non-linear formats (IQ4_NL, IQ4_XS), whose nibbles pick a value rather than being one.
template <class L, std::size_t M>
MOE_ALWAYS_INLINE void dot4_lut(const std::uint8_t* codes, std::size_t q0, std::size_t nq, const typename L::B& tab,
                                const std::int32_t* aq, std::size_t mr, typename L::I* isum) noexcept {
    typename L::I alt[M];
    typename L::I* const second = M <= 4 ? alt : isum;
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { alt[i] = L::zero(); });
    for (std::size_t u = q0 / 2; u < (q0 + nq) / 2; ++u) {
        const typename L::B b = L::load_b(codes + 64 * u);
        const typename L::B lo = L::lut(L::lo4(b), tab), hi = L::lut(L::hi4(b), tab);
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::dpbusd(isum[i], lo, aq[(2 * u) * mr + i]); });
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            second[i] = L::dpbusd(second[i], hi, aq[(2 * u + 1) * mr + i]);
        });
    }
    if constexpr (M <= 4)
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::add(isum[i], alt[i]); });
}

/// The same for 2-bit codes; q0 and nq are multiples of 4 (a unit holds four quads).
template <class L, std::size_t M>
MOE_ALWAYS_INLINE void dot2(const std::uint8_t* codes, std::size_t q0, std::size_t nq, const std::int32_t* aq,
                            std::size_t mr, typename L::I* isum) noexcept {
    typename L::I alt[M];
    typename L::I* const second = M <= 4 ? alt : isum;
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { alt[i] = L::zero(); });
    for (std::size_t u = q0 / 4; u < (q0 + nq) / 4; ++u) {
        const typename L::B b = L::load_b(codes + 64 * u);
        for (int s = 0; s < 4; s += 2) {
            const typename L::B c0 = L::crumb(b, s), c1 = L::crumb(b, s + 1);
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                isum[i] = L::dpbusd(isum[i], c0, aq[(4 * u + s) * mr + i]);
            });
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                second[i] = L::dpbusd(second[i], c1, aq[(4 * u + s + 1) * mr + i]);
            });
        }
    }
    if constexpr (M <= 4)
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::add(isum[i], alt[i]); });
}

/// The same for 3-bit codes of a super-block of SB values; q0 and nq are multiples of 4.
template <class L, std::size_t M>
MOE_ALWAYS_INLINE void dot3(const std::uint8_t* codes, std::size_t sb, std::size_t q0, std::size_t nq,
                            const std::int32_t* aq, std::size_t mr, typename L::I* isum) noexcept {
    const std::uint8_t* hi_bits = codes + sb * panel_cols / 4;
    typename L::I alt[M];
    typename L::I* const second = M <= 4 ? alt : isum;
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { alt[i] = L::zero(); });
    for (std::size_t u = q0 / 4; u < (q0 + nq) / 4; ++u) {
        const typename L::B b = L::load_b(codes + 64 * u), h = L::load_b(hi_bits + 64 * (u / 2));
        const int hs = static_cast<int>(4 * (u % 2));
        for (int s = 0; s < 4; s += 2) {
            const typename L::B c0 = L::with_bit2(L::crumb(b, s), h, hs + s);
            const typename L::B c1 = L::with_bit2(L::crumb(b, s + 1), h, hs + s + 1);
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                isum[i] = L::dpbusd(isum[i], c0, aq[(4 * u + s) * mr + i]);
            });
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                second[i] = L::dpbusd(second[i], c1, aq[(4 * u + s + 1) * mr + i]);
            });
        }
    }
    if constexpr (M <= 4)
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::add(isum[i], alt[i]); });
}

/// The same for 6-bit codes of a super-block of SB values; q0 and nq are multiples of 4.
template <class L, std::size_t M>
MOE_ALWAYS_INLINE void dot6(const std::uint8_t* codes, std::size_t sb, std::size_t q0, std::size_t nq,
                            const std::int32_t* aq, std::size_t mr, typename L::I* isum) noexcept {
    const std::uint8_t* hi_bits = codes + sb * panel_cols / 2;
    typename L::I alt[M];
    typename L::I* const second = M <= 4 ? alt : isum;
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { alt[i] = L::zero(); });
    for (std::size_t w = q0 / 4; w < (q0 + nq) / 4; ++w) {
        const typename L::B h = L::load_b(hi_bits + 64 * w);
        for (std::size_t half = 0; half < 2; ++half) {
            const std::size_t u = 2 * w + half;
            const typename L::B b = L::load_b(codes + 64 * u);
            const typename L::B c0 = L::with_hi2(L::lo4(b), h, static_cast<int>(2 * half));
            const typename L::B c1 = L::with_hi2(L::hi4(b), h, static_cast<int>(2 * half + 1));
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                isum[i] = L::dpbusd(isum[i], c0, aq[(2 * u) * mr + i]);
            });
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                second[i] = L::dpbusd(second[i], c1, aq[(2 * u + 1) * mr + i]);
            });
        }
    }
    if constexpr (M <= 4)
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::add(isum[i], alt[i]); });
}

}  // namespace moe::kernels::formats::detail
