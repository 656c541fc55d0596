/// @file models/families.hpp
/// The registry of model families: one recipe header each (models/families/), one line each in
/// `registry`. The presets (`presets::by_name`), the HF and GGUF loaders, `moe-layer`,
/// `moe-route` and Python iterate it; a family's names (presets, model_type, GGUF
/// architecture) appear in its own header only. Light: recipes only, no file readers.
#pragma once

#include "families/dbrx.hpp"
#include "families/deepseek.hpp"
#include "families/dots1.hpp"
#include "families/ernie4_5_moe.hpp"
#include "families/gpt_oss.hpp"
#include "families/granite.hpp"
#include "families/hunyuan_v1_moe.hpp"
#include "families/llama4.hpp"
#include "families/longcat_flash.hpp"
#include "families/minimax_m2.hpp"
#include "families/mixtral.hpp"
#include "families/qwen3_next.hpp"
#include "families/qwen_moe.hpp"
#include "recipe.hpp"

namespace moe::models {

/// Every family, in the order names are listed.
using registry = family_list<families::mixtral, families::minimax_m2, families::qwen_moe, families::deepseek, families::dots1,
                             families::ernie4_5_moe, families::qwen3_next, families::hunyuan_v1_moe, families::longcat_flash, families::gpt_oss, families::llama4, families::granite, families::dbrx>;

/// "mixtral, minimax_m2, qwen2_moe, ...": the config.json model_type values moe loads.
[[nodiscard]] inline std::string hf_family_names() {
    return detail::family_names([](auto* f) { return std::remove_pointer_t<decltype(f)>::hf_types; }, registry{});
}
/// "llama, qwen2moe, ...": the GGUF architectures moe loads.
[[nodiscard]] inline std::string gguf_arch_names() {
    return detail::family_names([](auto* f) { return std::remove_pointer_t<decltype(f)>::gguf_archs; }, registry{});
}

/// Calls `f(family*)` (a null pointer of the family's type) for the first family whose
/// `names(family*)` contains `name`; false when none does.
template <class Names, class Fn, class... F>
bool visit_family(const std::string& name, Names names, Fn&& f, family_list<F...>) {
    bool found = false;
    auto one = [&](auto* tag) {
        if (found) return;
        for (const char* n : names(tag))
            if (name == n) {
                found = true;
                f(tag);
                return;
            }
    };
    (one(static_cast<F*>(nullptr)), ...);
    return found;
}

}  // namespace moe::models
