/// @file models/recipe.hpp
/// What a model family's recipe (models/families/<name>.hpp) is made of. Light: the block's
/// spec and weights, no file readers, so presets.hpp and `moe-route` see every family's router
/// recipe without the checkpoint readers (models/family.hpp adds those).
///
/// A family is a struct deriving from `recipe_defaults` with
/// - `preset_names` and `preset(name)`: its router recipes by name (each also a function of
///   `moe::presets` defined in the family's header);
/// - `hf_types`: the config.json `model_type` values it loads;
/// - `template <class Src> load_hf(const Src&, loaded_block&)`: its spec (router recipe,
///   structure) and weights from an HF checkpoint (`Src` is models/family.hpp's `hf_source`);
///   it returns true where it validated the block itself (a partial load the generic check
///   would refuse), false to have the loader check it;
/// - `hf_experts`: where its routed experts live one module each (`module` null where they are
///   stored fused), read by its loader and by `pack_hf_experts`;
/// - `gguf_archs`: the GGUF `general.architecture` values it loads (may be empty), with
///   `gguf_norm_default(arch)` / `gguf_gating_default(arch)` for the keys older files lack and,
///   optionally, `gguf_router(src, k, block_spec&)` (the routing recipe and structure instead of
///   the generic keys) and `gguf_extras(src, loaded_block&)` (expert tensors beyond the generic
///   ones), `src` being family.hpp's `gguf_source`; `gguf_group_keys` where the HF model routes
///   with group limits that older GGUF files lack.
/// models/families.hpp lists the families; the loaders, presets, the CLI and Python iterate it.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <utility>

#include "../block.hpp"

namespace moe::models {

/// A block as loaded: its spec and float32 weights.
struct loaded_block {
    block_spec spec;
    block_weights weights;
};

/// Routed experts stored one module each, under the layer's prefix:
/// `<module>.{e}.<gate|up|down>.weight`; `module` null where a family stores them fused.
struct expert_names {
    const char* module = nullptr;
    const char* gate = nullptr;
    const char* up = nullptr;
    const char* down = nullptr;
    /// The tensor of expert e's projection m (0 gate, 1 up, 2 down) in layer L:
    /// "model.layers.{L}.{module}.{e}.{proj}.weight" (module non-null).
    [[nodiscard]] std::string weight(std::size_t L, std::size_t e, int m) const {
        return "model.layers." + std::to_string(L) + "." + module + "." + std::to_string(e) + "." + (m == 0 ? gate : m == 1 ? up : down) +
               ".weight";
    }
};

/// What most families share; a family overrides what differs.
struct recipe_defaults {
    static constexpr std::array<const char*, 0> preset_names = {};
    static constexpr std::array<const char*, 0> gguf_archs = {};
    static constexpr expert_names hf_experts = {"mlp.experts", "gate_proj", "up_proj", "down_proj"};
    /// The config.json key of the hidden size.
    static constexpr const char* hf_hidden_key = "hidden_size";
    /// The HF model routes with group limits that llama.cpp stores as `expert_group_count` /
    /// `expert_group_used_count`: a file without them gets a [moe.models.legacy] warning.
    static constexpr bool gguf_group_keys = false;
    static bool gguf_norm_default(const std::string&) { return false; }
    static unsigned gguf_gating_default(const std::string&) { return 1; }
};

/// Router recipes several families share, named by what they do: top-k of the logits, then a
/// softmax over the k chosen (GPT-OSS, Granite-MoE).
[[nodiscard]] inline router_config softmax_of_top_k_logits(std::size_t top_k) {
    router_config c;
    c.score = score_function::softmax;
    c.top_k = top_k;
    c.pre_softmax = false;
    c.renorm = renormalize::none;
    return c;
}

/// A config value the recipe needs ([moe.models.config] when absent), and one with a fallback,
/// from a source (hf_source or gguf_source).
template <class T, class Src>
[[nodiscard]] T need(const Src& src, const char* key) {
    return src.template need<T>(key);
}
template <class T, class Src>
[[nodiscard]] T value(const Src& src, const char* key, T fallback) {
    return src.template get<T>(key, std::move(fallback));
}

/// A list of model families (models/families.hpp).
template <class... F>
struct family_list {};

namespace detail {
/// "a, b, c": every name of `pick(F)` over the families, in order.
template <class Pick, class... F>
std::string family_names(Pick pick, family_list<F...>) {
    std::string all;
    auto add = [&](const auto& names) {
        for (const char* n : names) all += (all.empty() ? "" : ", ") + std::string(n);
    };
    (add(pick(static_cast<F*>(nullptr))), ...);
    return all;
}
}  // namespace detail

}  // namespace moe::models
