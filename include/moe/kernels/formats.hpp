/// @file kernels/formats.hpp
/// The registry of weight formats: one type list (`weight_formats`) from which the run-time
/// names, their parsing, `visit_format` and the GGUF type ids all come.
///
/// Float formats (f32, f16, bf16) run through `expert_ffn` with `float`, `Eigen::half` or
/// `Eigen::bfloat16` weights (bf16 widened exactly, float activations); the quantized formats
/// and `bf16:dot` (bf16 weights and activations, the native `vdpbf16ps` dot) are traits types
/// in `formats/` that run through `quant_expert_ffn`.
///
/// Adding a format: its header in formats/ (a traits struct with `name`, and as it applies
/// `syntax` / `parse_params` / `params_string` for parameters in its name, `gguf_type` for the
/// ggml type whose blocks it reads), its include and one entry in `weight_formats` below.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "../config.hpp"
#include "formats/bf16_dot.hpp"
#include "formats/common.hpp"
#include "formats/fp8.hpp"
#include "formats/int4.hpp"
#include "formats/int8.hpp"
#include "formats/iq4_nl.hpp"
#include "formats/iq4_xs.hpp"
#include "formats/mixed.hpp"
#include "formats/mxfp4.hpp"
#include "formats/mxfp4_dot.hpp"
#include "formats/q2_k.hpp"
#include "formats/q3_k.hpp"
#include "formats/q4_0.hpp"
#include "formats/q4_1.hpp"
#include "formats/q4_k.hpp"
#include "formats/q5_0.hpp"
#include "formats/q5_1.hpp"
#include "formats/q5_k.hpp"
#include "formats/q6_k.hpp"
#include "formats/q8_0.hpp"

namespace moe::kernels::formats {

/// The weights per block of a format's rows (a row's length K must be a multiple of it):
/// `Fmt::block`, or 1 for formats without a fixed block (floats, int8, fp8; int4's group is a
/// run-time parameter, checked when it quantizes).
template <class Fmt, class = void>
struct block_of : std::integral_constant<std::size_t, 1> {};
template <class Fmt>
struct block_of<Fmt, std::void_t<decltype(Fmt::block)>> : std::integral_constant<std::size_t, Fmt::block> {};
template <class Fmt>
inline constexpr std::size_t block_of_v = block_of<Fmt>::value;

/// The format llama.cpp's quantizer stores a tensor in when its rows are not a multiple of the
/// 256-weight super-block of the k-quants and IQ4_XS (llama_tensor_get_type's fallback: the
/// F = 1408 down projections of DeepSeek-V2-Lite, for one): Q2_K, Q3_K and IQ4_XS take IQ4_NL,
/// Q4_K takes Q5_0, Q5_K takes Q5_1, Q6_K takes Q8_0. Every other format is its own fallback.
template <class Fmt>
struct gguf_fallback {
    using type = Fmt;
};
template <>
struct gguf_fallback<q2_k> {
    using type = iq4_nl;
};
template <>
struct gguf_fallback<q3_k> {
    using type = iq4_nl;
};
template <>
struct gguf_fallback<iq4_xs> {
    using type = iq4_nl;
};
template <>
struct gguf_fallback<q4_k> {
    using type = q5_0;
};
template <>
struct gguf_fallback<q5_k> {
    using type = q5_1;
};
template <>
struct gguf_fallback<q6_k> {
    using type = q8_0;
};
template <class Fmt>
using gguf_fallback_t = typename gguf_fallback<Fmt>::type;

}  // namespace moe::kernels::formats

namespace moe::kernels {

/// A list of weight format types.
template <class... F>
struct format_list {
    static constexpr std::size_t size = sizeof...(F);
};

/// Every weight format, in the order names and --help list them; the mixed ones last (gate /
/// up in one format, down in another, as GGUF's mixed types store them: Q4_K_M).
using weight_formats = format_list<float, Eigen::half, Eigen::bfloat16, formats::bf16_dot, formats::q8_0, formats::q4_0, formats::q4_1, formats::q5_0, formats::q5_1, formats::q2_k,
                                   formats::q3_k, formats::q4_k, formats::q5_k, formats::q6_k, formats::iq4_nl, formats::iq4_xs, formats::int8, formats::int4,
                                   formats::fp8, formats::mxfp4, formats::mxfp4_dot, formats::mixed<formats::q4_k, formats::q6_k>,
                                   formats::mixed<formats::q5_k, formats::q6_k>, formats::mixed<formats::q2_k, formats::q3_k>,
                                   formats::mixed<formats::q3_k, formats::q4_k>, formats::mixed<formats::q3_k, formats::q5_k>,
                                   formats::mixed<formats::q4_k, formats::q5_0>, formats::mixed<formats::q4_k, formats::q8_0>,
                                   formats::mixed<formats::q5_k, formats::q5_1>, formats::mixed<formats::q5_k, formats::q8_0>>;

}  // namespace moe::kernels

// Helpers in moe::detail (not kernels::detail: declaring that namespace here would hide
// moe::detail names from the kernel headers included after this one).
namespace moe::detail {
template <class W, class = void>
struct has_syntax : std::false_type {};
template <class W>
struct has_syntax<W, std::void_t<decltype(W::syntax)>> : std::true_type {};
template <class W, class = void>
struct has_gguf_type : std::false_type {};
template <class W>
struct has_gguf_type<W, std::void_t<decltype(W::gguf_type)>> : std::true_type {};
template <class W, class = void>
struct has_gguf_decoder : std::false_type {};
template <class W>
struct has_gguf_decoder<W, std::void_t<decltype(&W::dequantize_ggml)>> : std::true_type {};
}  // namespace moe::detail

namespace moe::kernels {

/// What the registry knows of a format: its run-time `name`, the `syntax` help shows, whether
/// its name takes parameters, and the ggml type id it reads (-1: none).
template <class W>
struct format_traits {
    static constexpr const char* name = W::name;
    static constexpr const char* syntax = [] {
        if constexpr (moe::detail::has_syntax<W>::value) return W::syntax;
        else return W::name;
    }();
    static constexpr bool has_params = moe::detail::has_syntax<W>::value;
    static constexpr int gguf_type = [] {
        if constexpr (moe::detail::has_gguf_type<W>::value) return W::gguf_type;
        else return -1;
    }();
    /// GGUF's blocks are the format's own `data` bytes (packed in place); otherwise the format
    /// decodes GGUF's layout with `dequantize_ggml`.
    static constexpr bool gguf_in_place = gguf_type >= 0 && !moe::detail::has_gguf_decoder<W>::value;
};
template <class Up, class Down>
struct format_traits<formats::mixed<Up, Down>> {
    using W = formats::mixed<Up, Down>;
    static constexpr const char *name = W::name, *syntax = W::name;
    static constexpr bool has_params = false, gguf_in_place = false;
    static constexpr int gguf_type = -1;
};
/// Whether `pack_gguf_experts<W>` reads a layer in W in place: W's gate / up and down formats
/// both are ggml types' blocks.
template <class W>
inline constexpr bool gguf_packable_v = format_traits<formats::up_format_t<W>>::gguf_in_place &&
                                         format_traits<formats::down_format_t<W>>::gguf_in_place;
template <>
struct format_traits<float> {
    static constexpr const char *name = "f32", *syntax = "f32";
    static constexpr bool has_params = false, gguf_in_place = false;
    static constexpr int gguf_type = 0;
};
template <>
struct format_traits<Eigen::half> {
    static constexpr const char *name = "f16", *syntax = "f16";
    static constexpr bool has_params = false, gguf_in_place = false;
    static constexpr int gguf_type = 1;
};
template <>
struct format_traits<Eigen::bfloat16> {
    static constexpr const char *name = "bf16", *syntax = "bf16";
    static constexpr bool has_params = false, gguf_in_place = false;
    static constexpr int gguf_type = 30;
};

/// Calls `f(tag)` for every format of the list (by default `weight_formats`), in order (tag: a
/// value of the type).
template <class Fn, class... F>
void for_each_format(Fn&& f, format_list<F...>) {
    (f(F{}), ...);
}
template <class Fn>
void for_each_format(Fn&& f) {
    for_each_format(std::forward<Fn>(f), weight_formats{});
}

}  // namespace moe::kernels

namespace moe::detail {
constexpr std::size_t cstr_len(const char* s) {
    std::size_t n = 0;
    while (s[n]) ++n;
    return n;
}
/// "a, b, c or d" over the formats' syntax, built at compile time.
template <class L>
struct format_names;
template <class... F>
struct format_names<kernels::format_list<F...>> {
    static constexpr const char* parts[sizeof...(F)] = {kernels::format_traits<F>::syntax...};
    static constexpr std::size_t count = sizeof...(F);
    static constexpr std::size_t length() {
        std::size_t n = 0;
        for (std::size_t i = 0; i < count; ++i) n += cstr_len(parts[i]) + (i == 0 ? 0 : i + 1 == count ? 4 : 2);
        return n;
    }
    static constexpr std::array<char, length() + 1> make() {
        std::array<char, length() + 1> out{};
        std::size_t o = 0;
        for (std::size_t i = 0; i < count; ++i) {
            const char* sep = i == 0 ? "" : i + 1 == count ? " or " : ", ";
            for (std::size_t j = 0; sep[j]; ++j) out[o++] = sep[j];
            for (std::size_t j = 0; parts[i][j]; ++j) out[o++] = parts[i][j];
        }
        out[o] = '\0';
        return out;
    }
    static constexpr std::array<char, length() + 1> value = make();
};
}  // namespace moe::detail

namespace moe::kernels {

/// The names `parse_weight_format` accepts, for messages and --help.
inline constexpr const char* weight_format_names = moe::detail::format_names<weight_formats>::value.data();

/// A weight format chosen at run time.
struct weight_format {
    std::string name;                 ///< a format_traits name (weight_format_names lists them)
    formats::format_params params;    ///< int4: group (and zero points)
    /// The name `parse_weight_format` reads back ("int4:128:zp").
    [[nodiscard]] std::string to_string() const {
        std::string s = name;
        for_each_format([&](auto tag) {
            using W = decltype(tag);
            if constexpr (format_traits<W>::has_params)
                if (name == format_traits<W>::name) s += W::params_string(params);
        });
        return s;
    }
};

/// Parses "f32", "q4_k", "int4:128", "int4:32:zp", ... Throws [moe.kernels.format] otherwise.
[[nodiscard]] inline weight_format parse_weight_format(const std::string& s) {
    weight_format f;
    bool found = false;
    for_each_format([&](auto tag) {
        using W = decltype(tag);
        const std::string n = format_traits<W>::name;
        if (found) return;
        if constexpr (format_traits<W>::has_params) {
            if (s.size() > n.size() && s.compare(0, n.size() + 1, n + ":") == 0) {
                f.params = W::parse_params(s.substr(n.size() + 1));
                f.name = n;
                found = true;
            }
        } else if (s == n) {
            f.name = n;
            found = true;
        }
    });
    if (!found) MOE_THROW("moe.kernels.format", "unknown weight format '", s, "' (expected ", weight_format_names, ")");
    return f;
}

}  // namespace moe::kernels

namespace moe::detail {
template <class Fn, class F0, class... Fs>
decltype(auto) visit_in(const std::string& n, Fn&& f, kernels::format_list<F0, Fs...>) {
    if (n == kernels::format_traits<F0>::name) return f(F0{});
    if constexpr (sizeof...(Fs) == 0) {
        MOE_THROW("moe.kernels.format", "unknown weight format '", n, "' (expected ", kernels::weight_format_names, ")");
    } else {
        return visit_in(n, std::forward<Fn>(f), kernels::format_list<Fs...>{});
    }
}
}  // namespace moe::detail

namespace moe::kernels {

/// Calls `f(tag)` with `tag` a value of the format's type: float, Eigen::half, Eigen::bfloat16
/// for the float formats, formats::q8_0 ... for the quantized ones.
template <class Fn>
decltype(auto) visit_format(const weight_format& w, Fn&& f) {
    return moe::detail::visit_in(w.name, std::forward<Fn>(f), weight_formats{});
}

}  // namespace moe::kernels
