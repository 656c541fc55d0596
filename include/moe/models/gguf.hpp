/// @file models/gguf.hpp
/// Load the MoE block of layer L from a llama.cpp GGUF file (io/gguf.hpp): the recipe from the
/// `{arch}.expert_*` metadata, the tensors by llama.cpp's names (`blk.{L}.ffn_gate_inp.weight`,
/// stacked `ffn_{gate,up,down}_exps.weight`, `exp_probs_b.bias`, `ffn_*_shexp.weight`,
/// `ffn_gate_inp_shexp.weight`, GPT-OSS's `*.bias`), dequantized to float32 (F32, F16, BF16 and
/// every ggml type a format of the registry reads: kernels/formats.hpp, `gguf_type`), or, with
/// `pack_gguf_experts<Fmt>`, packed straight from the file's blocks when all three expert
/// tensors are in format Fmt.
///
/// Routing follows llama.cpp's `build_moe_ffn`: the weight normalisation divides by the sum
/// clamped at 2^-14 (`presets::llama_cpp_norm`), then multiplies by `expert_weights_scale`.
#pragma once

#include <cctype>
#include <functional>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../io/gguf.hpp"
#include "../kernels/formats.hpp"
#include "../kernels/quant_ffn.hpp"
#include "../presets.hpp"
#include "../block.hpp"
#include "families.hpp"
#include "family.hpp"
#include "hf.hpp"

namespace moe::models {

/// Layer L's MoE block of a GGUF file, weights dequantized to float32. Throws
/// [moe.models.config] (unknown architecture, missing metadata), [moe.models.layer],
/// [moe.models.load] and the reader's [moe.io.gguf]. `experts` false reads the router only.
[[nodiscard]] inline loaded_block load_block(const io::gguf_file& f, std::size_t L, bool experts = true) {
    const std::string arch = f.get_or<std::string>("general.architecture", "");
    // The family's defaults for keys older files lack, and its hooks.
    bool norm_default = false;
    unsigned gating_default = 1;
    std::function<void(const gguf_source&, std::size_t, block_spec&)> route_hook;
    std::function<void(const gguf_source&, loaded_block&)> extras_hook;
    const bool known = visit_family(
        arch, [](auto* fam) { return std::remove_pointer_t<decltype(fam)>::gguf_archs; },
        [&](auto* fam) {
            using F = std::remove_pointer_t<decltype(fam)>;
            norm_default = F::gguf_norm_default(arch);
            gating_default = F::gguf_gating_default(arch);
            if constexpr (detail::has_gguf_router<F>::value)
                route_hook = &F::gguf_router;
            if constexpr (detail::has_gguf_extras<F>::value) extras_hook = &F::gguf_extras;
        },
        registry{});
    if (!known) MOE_THROW("moe.models.config", f.path(), ": architecture '", arch, "' is not one moe loads (", gguf_arch_names(), ")");
    auto key = [&](const char* k) { return arch + "." + k; };
    auto need = [&](const char* k) {
        if (!f.has(key(k))) MOE_THROW("moe.models.config", f.path(), ": no key '", key(k), "'");
        return f.get<std::uint64_t>(key(k));
    };
    const detail::gguf_reader rd{f};
    loaded_block b;
    block_spec& s = b.spec;
    block_weights& w = b.weights;
    s.family = arch;
    s.hidden = static_cast<std::size_t>(need("embedding_length"));
    s.num_experts = static_cast<std::size_t>(need("expert_count"));
    const auto k = static_cast<std::size_t>(need("expert_used_count"));
    const auto n_layers = static_cast<std::size_t>(need("block_count"));
    if (L >= n_layers) MOE_THROW("moe.models.layer", arch, ": layer ", L, " out of range (", n_layers, " layers)");
    const std::string p = "blk." + std::to_string(L) + ".";
    if (!rd.has(p + "ffn_gate_inp.weight")) MOE_THROW("moe.models.layer", arch, ": layer ", L, " is a dense layer, not an MoE block");
    const std::size_t E = s.num_experts, H = s.hidden;
    // The expert ffn: its own key, else the tensor's shape.
    const io::gguf_tensor& gate_exps = f.tensor(p + "ffn_gate_exps.weight");
    s.ffn = gate_exps.ne.size() == 3 ? static_cast<std::size_t>(gate_exps.ne[1]) : 0;
    const std::size_t F = s.ffn;

    const gguf_source src{f, arch, L, p, rd};
    const bool norm = f.get_or<bool>(key("expert_weights_norm"), norm_default);
    const float scale = f.get_or<float>(key("expert_weights_scale"), 1.0f);
    const std::uint32_t gating = f.get_or<std::uint32_t>(key("expert_gating_func"), gating_default);  // 1 softmax, 2 sigmoid
    if (route_hook) {
        route_hook(src, k, s);
    } else {
        if (gating == 2) {
            s.router.score = score_function::sigmoid;
        } else if (gating == 1) {
            s.router.score = score_function::softmax;
        } else {
            MOE_THROW("moe.models.config", f.path(), ": ", key("expert_gating_func"), " = ", gating, " (expected 1 softmax or 2 sigmoid)");
        }
        s.router.top_k = k;
        s.router.pre_softmax = true;
        const auto groups = f.get_or<std::uint32_t>(key("expert_group_count"), 0);
        const auto groups_used = f.get_or<std::uint32_t>(key("expert_group_used_count"), 0);
        if (groups > 1) {
            s.router.num_groups = groups;
            s.router.group_top_k = groups_used;
            s.router.group_score_top_m = gating == 2 ? 2 : 1;
            s.router.mask = group_mask::neg_inf;  // llama.cpp masks dropped groups with -inf
        }
        if (norm) s.router = presets::llama_cpp_norm(s.router);
    }
    s.router.scaling_factor = scale == 0.0f ? 1.0f : scale;

    w.router_w = rd.read(p + "ffn_gate_inp.weight", {H, E});
    if (rd.has(p + "ffn_gate_inp.bias")) {
        s.router_bias = true;
        w.router_b = rd.read(p + "ffn_gate_inp.bias", {E});
    }
    if (rd.has(p + "exp_probs_b.bias")) {
        s.selection_bias = true;
        w.selection_bias = rd.read(p + "exp_probs_b.bias", {E});
    }
    if (!experts) {
        s.validate();
        return b;
    }
    w.w1 = rd.read(p + "ffn_gate_exps.weight", {H, F, E});
    w.w3 = rd.read(p + "ffn_up_exps.weight", {H, F, E});
    w.w2 = rd.read(p + "ffn_down_exps.weight", {F, H, E});
    if (extras_hook) extras_hook(src, b);
    if (rd.has(p + "ffn_gate_shexp.weight")) {
        const io::gguf_tensor& sg = f.tensor(p + "ffn_gate_shexp.weight");
        s.shared_ffn = sg.ne.size() == 2 ? static_cast<std::size_t>(sg.ne[1]) : 0;
        const std::size_t Fs = s.shared_ffn;
        w.s1 = rd.read(p + "ffn_gate_shexp.weight", {H, Fs});
        w.s3 = rd.read(p + "ffn_up_shexp.weight", {H, Fs});
        w.s2 = rd.read(p + "ffn_down_shexp.weight", {Fs, H});
        if (rd.has(p + "ffn_gate_inp_shexp.weight")) {
            s.shared = shared_gate::sigmoid;
            w.s_gate = rd.read(p + "ffn_gate_inp_shexp.weight", {H});
        }
    }
    s.validate();
    w.check(s);
    return b;
}

/// Layer L's routed experts packed in format Fmt straight from the file's blocks (no float
/// copy), for a `moe::block<Arch, Fmt>(spec, weights, packed)`. Throws [moe.models.format] when
/// a tensor is not in Fmt (a Q4_K_M file mixes Q4_K and Q6_K: load those as float, or pick
/// the layer's own format with `gguf_expert_types`).
template <class Fmt>
[[nodiscard]] kernels::packed_quant_experts<Fmt> pack_gguf_experts(const io::gguf_file& f, std::size_t L, const kernels::pack_options& o = {}) {
    static_assert(kernels::format_traits<Fmt>::gguf_in_place, "Fmt's bytes are not a ggml type's blocks: load its tensors as float");
    const std::string p = "blk." + std::to_string(L) + ".";
    const io::gguf_tensor* t[3] = {&f.tensor(p + "ffn_gate_exps.weight"), &f.tensor(p + "ffn_up_exps.weight"),
                                   &f.tensor(p + "ffn_down_exps.weight")};
    for (const io::gguf_tensor* x : t) {
        if (x->ne.size() != 3) MOE_THROW("moe.models.load", f.path(), ": tensor '", x->name, "' is not a stack of experts");
        if (static_cast<int>(x->type) != kernels::format_traits<Fmt>::gguf_type) MOE_THROW("moe.models.format", f.path(), ": tensor '", x->name, "' is ", x->type_name(), ", not ", Fmt::name);
    }
    const std::size_t E = static_cast<std::size_t>(t[0]->ne[2]), H = static_cast<std::size_t>(t[0]->ne[0]),
                      F = static_cast<std::size_t>(t[0]->ne[1]);
    std::vector<kernels::formats::quant_view> v[3];
    for (int m = 0; m < 3; ++m) {
        const std::size_t rows = static_cast<std::size_t>(t[m]->ne[1]), cols = static_cast<std::size_t>(t[m]->ne[0]);
        const std::size_t per = t[m]->bytes / E;
        for (std::size_t e = 0; e < E; ++e) v[m].push_back({rows, cols, {}, t[m]->data + e * per, per, nullptr, 0});
    }
    return kernels::pack_quant_experts<Fmt>(v[0].data(), v[1].data(), v[2].data(), E, H, F, o);
}

/// The ggml types of layer L's gate, up and down expert tensors ("Q4_K", "Q6_K", ...).
[[nodiscard]] inline std::vector<std::string> gguf_expert_types(const io::gguf_file& f, std::size_t L) {
    const std::string p = "blk." + std::to_string(L) + ".";
    return {f.tensor(p + "ffn_gate_exps.weight").type_name(), f.tensor(p + "ffn_up_exps.weight").type_name(),
            f.tensor(p + "ffn_down_exps.weight").type_name()};
}

}  // namespace moe::models
