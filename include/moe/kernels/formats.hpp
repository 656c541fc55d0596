/// @file kernels/formats.hpp
/// Every weight format of the expert kernels, and the one place that maps a run-time name
/// (`"q4_k"`, `"int4:128"`, ...) to its type.
///
/// Float formats (f32, f16, bf16) run through `expert_ffn` with `float`, `Eigen::half` or
/// `Eigen::bfloat16` weights (bf16 widened exactly, float activations); the quantized formats
/// and `bf16:dot` (bf16 weights and activations, the native `vdpbf16ps` dot) are traits types
/// in `formats/` that run through `quant_expert_ffn`.
#pragma once

#include <cstddef>
#include <string>

#include <Eigen/Core>

#include "../config.hpp"
#include "formats/bf16_dot.hpp"
#include "formats/common.hpp"
#include "formats/fp8.hpp"
#include "formats/int4.hpp"
#include "formats/int8.hpp"
#include "formats/mxfp4.hpp"
#include "formats/q4_0.hpp"
#include "formats/q4_k.hpp"
#include "formats/q6_k.hpp"
#include "formats/q8_0.hpp"

namespace moe::kernels {

/// A weight format chosen at run time.
struct weight_format {
    std::string name;                 ///< f32 f16 bf16 bf16:dot q8_0 q4_0 q4_k q6_k int8 int4 fp8 mxfp4
    formats::format_params params;    ///< int4: group (and zero points)
    [[nodiscard]] std::string to_string() const {
        if (name != "int4") return name;
        return "int4:" + std::to_string(params.group) + (params.zero_points ? ":zp" : "");
    }
};

/// The names `parse_weight_format` accepts, for messages and --help.
inline constexpr const char* weight_format_names = "f32, f16, bf16, bf16:dot, q8_0, q4_0, q4_k, q6_k, int8, int4:G[:zp], fp8 or mxfp4";

/// Parses "f32", "q4_k", "int4:128", "int4:32:zp", ... Throws [moe.kernels.format] otherwise.
[[nodiscard]] inline weight_format parse_weight_format(const std::string& s) {
    weight_format f;
    if (s.rfind("int4:", 0) == 0) {
        std::string rest = s.substr(5);
        if (rest.size() > 3 && rest.compare(rest.size() - 3, 3, ":zp") == 0) {
            f.params.zero_points = true;
            rest.resize(rest.size() - 3);
        }
        std::size_t g = 0, used = 0;
        bool ok = !rest.empty() && rest.size() <= 6;
        for (char c : rest) ok = ok && c >= '0' && c <= '9';
        if (ok) g = std::stoul(rest, &used);
        if (!ok || g < 8 || g % 8 != 0)
            MOE_THROW("moe.kernels.format", "int4 group '", rest, "' must be a positive multiple of 8 (e.g. int4:32, int4:128)");
        f.name = "int4";
        f.params.group = g;
        return f;
    }
    for (const char* n : {"f32", "f16", "bf16", "bf16:dot", "q8_0", "q4_0", "q4_k", "q6_k", "int8", "fp8", "mxfp4"})
        if (s == n) {
            f.name = s;
            return f;
        }
    MOE_THROW("moe.kernels.format", "unknown weight format '", s, "' (expected ", weight_format_names, ")");
}

/// Calls `f(tag)` with `tag` a value of the format's type: float, Eigen::half, Eigen::bfloat16
/// for the float formats, formats::q8_0 ... for the quantized ones. The one switch over names.
template <class Fn>
decltype(auto) visit_format(const weight_format& w, Fn&& f) {
    const std::string& n = w.name;
    if (n == "f32") return f(float{});
    if (n == "f16") return f(Eigen::half{});
    if (n == "bf16") return f(Eigen::bfloat16{});
    if (n == "bf16:dot") return f(formats::bf16_dot{});
    if (n == "q8_0") return f(formats::q8_0{});
    if (n == "q4_0") return f(formats::q4_0{});
    if (n == "q4_k") return f(formats::q4_k{});
    if (n == "q6_k") return f(formats::q6_k{});
    if (n == "int8") return f(formats::int8{});
    if (n == "int4") return f(formats::int4{});
    if (n == "fp8") return f(formats::fp8{});
    if (n == "mxfp4") return f(formats::mxfp4{});
    MOE_THROW("moe.kernels.format", "unknown weight format '", n, "' (expected ", weight_format_names, ")");
}

}  // namespace moe::kernels
