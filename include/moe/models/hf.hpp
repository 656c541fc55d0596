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
/// `shared` false the shared expert.
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
            b.spec.hidden = src.need<std::size_t>("hidden_size");
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
/// /*experts=*/false).weights` (router and shared expert, no float copy of the routed
/// experts). Today: `kernels::formats::fp8` from FP8 E4M3 experts with their
/// `weight_scale_inv` (DeepSeek-V3 / R1, Kimi-K2 and GLM FP8 checkpoints), the bytes validated
/// and packed without a float copy. Throws [moe.models.format] when the experts are not
/// stored that way, and the loader's errors.
template <class Fmt>
[[nodiscard]] kernels::packed_quant_experts<Fmt> pack_hf_experts(const io::safetensors_checkpoint& ck, std::size_t L,
                                                                 const kernels::pack_options& o = {}) {
    static_assert(std::is_same<Fmt, kernels::formats::fp8>::value, "pack_hf_experts: fp8 checkpoints only, for now");
    const loaded_block b = load_block(ck, L, /*experts=*/false, /*shared=*/false);
    const block_spec& s = b.spec;
    expert_modules mods;
    bool per_module = false;
    visit_family(
        s.family, [](auto* f) { return std::remove_pointer_t<decltype(f)>::hf_types; },
        [&](auto* f) {
            using F = std::remove_pointer_t<decltype(f)>;
            if constexpr (detail::has_hf_expert_modules<F>::value) {
                mods = F::hf_expert_modules(L, s.family);
                per_module = true;
            }
        },
        registry{});
    if (!per_module)
        MOE_THROW("moe.models.format", ck.dir(), ": ", s.family, " does not store its experts one module each; pack_hf_experts reads those");
    const std::size_t E = s.num_experts, H = s.hidden, F = s.ffn;
    std::vector<kernels::formats::quant_view> v[3];
    const detail::reader rd{ck};
    for (std::size_t e = 0; e < E; ++e) {
        const std::string q = mods.prefix + std::to_string(e) + ".";
        const char* names[3] = {mods.gate.c_str(), mods.up.c_str(), mods.down.c_str()};
        for (int m = 0; m < 3; ++m) {
            const std::size_t rows = m == 2 ? H : F, cols = m == 2 ? F : H;
            const std::string n = q + names[m] + ".weight";
            const io::tensor_view t = rd.view(n, {rows, cols});
            if (t.type != io::dtype::f8_e4m3)
                MOE_THROW("moe.models.format", ck.dir(), ": tensor '", n, "' is ", io::dtype_name(t.type), ", not F8_E4M3 (fp8)");
            const io::tensor_view sc = rd.view(n + "_scale_inv", {(rows + 127) / 128, (cols + 127) / 128});
            if (sc.type != io::dtype::f32)
                MOE_THROW("moe.models.load", ck.dir(), ": tensor '", n, "_scale_inv' is ", io::dtype_name(sc.type), ", expected F32");
            v[m].push_back({rows, cols, {}, t.data, t.bytes, sc.data, sc.bytes});
        }
    }
    return kernels::pack_quant_experts<Fmt>(v[0].data(), v[1].data(), v[2].data(), E, H, F, o);
}

}  // namespace moe::models
