/// @file models/hf.hpp
/// Load the MoE block of layer L from a Hugging Face checkpoint folder (`config.json` + safetensors
/// shards, see io/safetensors.hpp): the family from `model_type` (the registry,
/// models/families.hpp), its router recipe and block structure from the config, its tensors by
/// the names published on the Hub, read zero-copy from the mapping and converted to float32
/// (bf16 / f16 exactly; FP8 E4M3 with its `weight_scale_inv` 128 x 128 block scales and MXFP4
/// through moe's format dequantizers). Only layer L's tensors are touched.
/// docs/models.md lists each family's recipe, source file and tensor names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../io/safetensors.hpp"
#include "../kernels/quant_ffn.hpp"
#include "families.hpp"
#include "family.hpp"

namespace moe::models {


/// Layer L's MoE block of the checkpoint. Throws [moe.models.config] (unknown family, missing
/// key), [moe.models.layer] (out of range, a dense layer), [moe.models.load] (missing tensor,
/// wrong shape, bad FP8 / MXFP4 bytes) and the readers' [moe.io.*] errors. `experts` false
/// skips the routed experts (a routing-only load, or experts packed by `pack_hf_experts`),
/// `shared` false the rest but the router (shared expert, expert biases).
[[nodiscard]] inline loaded_block load_block(const io::safetensors_checkpoint& ck, std::size_t L, bool experts = true,
                                             bool shared = true) {
    const nlohmann::json& root = ck.config();
    const std::string family = detail::cfg_get<std::string>(root, "model_type", "");
    const detail::reader rd{ck};
    const hf_source src{ck, detail::text_config(root), rd, family, L, "model.layers." + std::to_string(L) + ".", experts, shared};
    loaded_block b;
    bool checked = false;
    const bool known = visit_family(
        family, [](auto* f) { return std::remove_pointer_t<decltype(f)>::hf_types; },
        [&](auto* f) {
            b.spec.family = family;
            b.spec.hidden = src.need<std::size_t>(std::remove_pointer_t<decltype(f)>::hf_hidden_key);
            checked = std::remove_pointer_t<decltype(f)>::load_hf(src, b);
        },
        registry{});
    if (!known)
        MOE_THROW("moe.models.config", ck.dir(), ": model_type '", family, "' is not a family moe loads (", hf_family_names(), ")");
    if (!checked) {
        b.spec.validate();
        b.weights.check(b.spec, experts, shared);
    }
    return b;
}

/// Layer L's routed experts packed in format Fmt straight from the checkpoint's bytes, for
/// `moe::block<Arch, Fmt>(spec, weights, packed)` with `weights = load_block(ck, L,
/// /*experts=*/false).weights` (router, shared expert and expert biases, no float copy of the
/// routed experts). Reads, validated and packed without a float copy:
/// - `kernels::formats::fp8`: FP8 E4M3 experts stored one module each with their
///   `weight_scale_inv` (DeepSeek-V3 / R1, Kimi-K2 and GLM FP8 checkpoints);
/// - `kernels::formats::mxfp4`: experts stored fused as MXFP4 `experts.gate_up_proj_blocks` /
///   `_scales` (gate and up rows interleaved) and `experts.down_proj_blocks` / `_scales`
///   (GPT-OSS's released checkpoints); the block adds their biases and clamped SwiGLU.
/// The packed tensors' mapped pages are dropped from the resident set once packed. `ids`
/// (non-empty): only those experts, in that order (the others' bytes are not read);
/// [moe.models.load] for one outside the layer.
/// Throws [moe.models.format] when the experts are not stored that way, and the loader's errors.
namespace detail {
/// Where an HF family keeps its routed experts one module each (`module` null: fused).
inline expert_names hf_expert_names(const std::string& family) {
    expert_names mods;
    visit_family(
        family, [](auto* f) { return std::remove_pointer_t<decltype(f)>::hf_types; },
        [&](auto* f) { mods = std::remove_pointer_t<decltype(f)>::hf_experts; }, registry{});
    return mods;
}
}  // namespace detail

template <class Fmt>
[[nodiscard]] kernels::packed_quant_experts<Fmt> pack_hf_experts(const io::safetensors_checkpoint& ck, std::size_t L,
                                                                 const kernels::pack_options& o = {},
                                                                 const std::vector<std::int32_t>& ids = {}) {
    constexpr bool fp8 = std::is_same<Fmt, kernels::formats::fp8>::value, mx = std::is_same<Fmt, kernels::formats::mxfp4>::value;
    static_assert(fp8 || mx, "pack_hf_experts: fp8 and mxfp4 checkpoints");
    const loaded_block b = load_block(ck, L, /*experts=*/false, /*shared=*/false);
    const block_spec& s = b.spec;
    const std::size_t E = s.num_experts, H = s.hidden, F = s.ffn;
    std::vector<std::size_t> keep;  // the experts packed, in their order
    for (std::size_t j = 0; j < (ids.empty() ? E : ids.size()); ++j) {
        const std::size_t e = ids.empty() ? j : static_cast<std::size_t>(ids[j]);
        if (e >= E) MOE_THROW("moe.models.load", ck.dir(), ": expert ", ids[j], " outside [0, ", E, ") of layer ", L);
        keep.push_back(e);
    }
    std::vector<kernels::formats::quant_view> v[3];
    const detail::reader rd{ck};
    if constexpr (mx) {
        const std::string x = "model.layers." + std::to_string(L) + ".mlp.experts.";
        if (!ck.contains(x + "gate_up_proj_blocks"))
            MOE_THROW("moe.models.format", ck.dir(), ": ", s.family, " does not store its experts as MXFP4 '", x,
                      "gate_up_proj_blocks' / '_scales'; pack_hf_experts<mxfp4> reads those");
        auto views = [&](const std::string& n, std::size_t rows, std::size_t cols, std::vector<kernels::formats::quant_view>& out) {
            const io::tensor_view bl = rd.view(x + n + "_blocks", {E, rows, cols / 32, 16});
            const io::tensor_view sc = rd.view(x + n + "_scales", {E, rows, cols / 32});
            if (bl.type != io::dtype::u8 || sc.type != io::dtype::u8)
                MOE_THROW("moe.models.load", ck.dir(), ": '", x, n, "_blocks' / '_scales' must be U8");
            for (const std::size_t e : keep)
                out.push_back({rows, cols, {}, bl.data + e * rows * cols / 2, rows * cols / 2, sc.data + e * rows * cols / 32, rows * cols / 32});
        };
        views("gate_up_proj", 2 * F, H, v[0]);
        views("down_proj", H, F, v[2]);
        return kernels::pack_quant_experts_interleaved<Fmt>(v[0].data(), v[2].data(), keep.size(), H, F, o, [&](std::size_t e) {
            for (int m : {0, 2}) {  // packed: the checkpoint's pages need not stay resident too
                ck.drop_pages(v[m][e].data, v[m][e].data_bytes);
                ck.drop_pages(v[m][e].scales, v[m][e].scale_bytes);
            }
        });
    } else {
        const expert_names mods = detail::hf_expert_names(s.family);
        if (!mods.module)
            MOE_THROW("moe.models.format", ck.dir(), ": ", s.family, " does not store its experts one module each; pack_hf_experts reads those");
        for (const std::size_t e : keep) {
            for (int m = 0; m < 3; ++m) {
                const std::size_t rows = m == 2 ? H : F, cols = m == 2 ? F : H;
                const std::string n = mods.weight(L, e, m);
                const io::tensor_view t = rd.view(n, {rows, cols});
                if (t.type != io::dtype::f8_e4m3)
                    MOE_THROW("moe.models.format", ck.dir(), ": tensor '", n, "' is ", io::dtype_name(t.type), ", not F8_E4M3 (fp8)");
                const io::tensor_view sc = rd.view(n + "_scale_inv", {(rows + 127) / 128, (cols + 127) / 128});
                if (sc.type != io::dtype::f32)
                    MOE_THROW("moe.models.load", ck.dir(), ": tensor '", n, "_scale_inv' is ", io::dtype_name(sc.type), ", expected F32");
                v[m].push_back({rows, cols, {}, t.data, t.bytes, sc.data, sc.bytes});
            }
        }
        return kernels::pack_quant_experts<Fmt>(v[0].data(), v[1].data(), v[2].data(), keep.size(), H, F, o, [&](std::size_t e) {
            for (int m = 0; m < 3; ++m) ck.drop_pages(v[m][e].data, v[m][e].data_bytes);  // packed: the checkpoint's pages need not stay
        });
    }
}

/// The weight format in which layer L's routed experts are stored and which `pack_hf_experts`
/// reads: "fp8" (FP8 E4M3 with `weight_scale_inv`, one module per expert), "mxfp4" (fused
/// `gate_up_proj_blocks` / `_scales`), or "" (float experts, read as float32).
[[nodiscard]] inline std::string hf_expert_format(const io::safetensors_checkpoint& ck, std::size_t L) {
    const std::string x = "model.layers." + std::to_string(L) + ".mlp.experts.";
    if (ck.contains(x + "gate_up_proj_blocks")) return "mxfp4";
    const loaded_block b = load_block(ck, L, /*experts=*/false, /*shared=*/false);
    const expert_names mods = detail::hf_expert_names(b.spec.family);
    if (!mods.module) return "";
    const std::string n = mods.weight(L, 0, 0);
    return ck.contains(n) && ck.tensor(n).type == io::dtype::f8_e4m3 ? "fp8" : "";
}

}  // namespace moe::models
