/// @file models/gguf.hpp
/// Load the MoE block of layer L from a llama.cpp GGUF file (io/gguf.hpp): the recipe from the
/// `{arch}.expert_*` metadata, the tensors by llama.cpp's names (`blk.{L}.ffn_gate_inp.weight`,
/// stacked `ffn_{gate,up,down}_exps.weight` or newer converters' fused `ffn_gate_up_exps.weight`, `exp_probs_b.bias`, `ffn_*_shexp.weight`,
/// `ffn_gate_inp_shexp.weight`, GPT-OSS's `*.bias`), dequantized to float32 (F32, F16, BF16 and
/// every ggml type a format of the registry reads: kernels/formats.hpp, `gguf_type`), or, with
/// `pack_gguf_experts<Fmt>`, packed straight from the file's blocks when all three expert
/// tensors are in format Fmt.
///
/// Routing follows llama.cpp's `build_moe_ffn`: the weight normalisation divides by the sum
/// clamped at 2^-14 (`presets::llama_cpp_norm`), then multiplies by `expert_weights_scale`.
#pragma once

#include <algorithm>
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

/// Where a loader reports what loads but may not do what the model's authors meant (a message
/// with a stable ID, e.g. "[moe.models.legacy] ..."). Empty: silent (the library's default).
using warning_sink = std::function<void(const std::string&)>;

/// Layer L's MoE block of a GGUF file, weights dequantized to float32. Throws
/// [moe.models.config] (unknown architecture, missing metadata), [moe.models.layer],
/// [moe.models.load] and the reader's [moe.io.gguf]. `experts` false reads the router only.
/// `warn` hears of files that load but route unlike the HF model: a DeepSeek file converted
/// before llama.cpp wrote the group keys routes without group limits, as llama.cpp does.
/// `rest` (the 5-argument form) false skips everything but the router and the routed experts:
/// `load_block(f, L, false, true, warn)` reads the router, the shared expert and the experts'
/// biases, for routed experts packed by `pack_gguf_experts`.
[[nodiscard]] inline loaded_block load_block(const io::gguf_file& f, std::size_t L, bool experts, bool rest, const warning_sink& warn);
[[nodiscard]] inline loaded_block load_block(const io::gguf_file& f, std::size_t L, bool experts = true, const warning_sink& warn = {}) {
    return load_block(f, L, experts, experts, warn);
}
inline loaded_block load_block(const io::gguf_file& f, std::size_t L, bool experts, bool rest, const warning_sink& warn) {
    const std::string arch = f.get_or<std::string>("general.architecture", "");
    // The family's defaults for keys older files lack, and its hooks.
    bool norm_default = false, group_keys = false;
    unsigned gating_default = 1;
    std::function<void(const gguf_source&, std::size_t, block_spec&)> route_hook;
    std::function<void(const gguf_source&, loaded_block&)> extras_hook;
    const bool known = visit_family(
        arch, [](auto* fam) { return std::remove_pointer_t<decltype(fam)>::gguf_archs; },
        [&](auto* fam) {
            using F = std::remove_pointer_t<decltype(fam)>;
            norm_default = F::gguf_norm_default(arch);
            gating_default = F::gguf_gating_default(arch);
            group_keys = F::gguf_group_keys;
            if constexpr (detail::has_gguf_router<F>::value)
                route_hook = [](const gguf_source& src, std::size_t k, block_spec& s) { F::gguf_router(src, k, s); };
            if constexpr (detail::has_gguf_extras<F>::value)
                extras_hook = [](const gguf_source& src, loaded_block& b) { F::gguf_extras(src, b); };
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
    // Newer converters fuse gate and up per expert (ffn_gate_up_exps [H, 2F, E]).
    const bool fused = rd.has(p + "ffn_gate_up_exps.weight");
    const io::gguf_tensor& gate_exps = f.tensor(p + (fused ? "ffn_gate_up_exps.weight" : "ffn_gate_exps.weight"));
    s.ffn = gate_exps.ne.size() == 3 ? static_cast<std::size_t>(gate_exps.ne[1]) / (fused ? 2 : 1) : 0;
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
        if (group_keys && warn && !f.has(key("expert_group_count")))
            warn("[moe.models.legacy] " + f.path() + ": no " + key("expert_group_count") + " / expert_group_used_count (converted " +
                 "before llama.cpp wrote them): routing without group limits, as llama.cpp does; the HF model keeps each " +
                 "token's experts in topk_group of n_group groups (DeepSeek-V3 / R1: 4 of 8), so some tokens route differently");
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
    if (!experts && !rest) {
        s.validate();
        return b;
    }
    if (!experts) {
        // The routed experts are packed elsewhere: only their shape, for the spec.
        const io::gguf_tensor& d = f.tensor(p + "ffn_down_exps.weight");
        if (d.ne.size() != 3 || static_cast<std::size_t>(d.ne[0]) != F || static_cast<std::size_t>(d.ne[1]) != H ||
            static_cast<std::size_t>(d.ne[2]) != E)
            MOE_THROW("moe.models.load", f.path(), ": tensor '", d.name, "' is not [", F, ", ", H, ", ", E, "]");
    } else if (fused) {
        const std::vector<float> gu = rd.read(p + "ffn_gate_up_exps.weight", {H, 2 * F, E});  // gate = first F rows
        w.w1.resize(E * F * H);
        w.w3.resize(E * F * H);
        for (std::size_t e = 0; e < E; ++e) {
            std::copy_n(gu.begin() + static_cast<std::ptrdiff_t>(e * 2 * F * H), F * H, w.w1.begin() + static_cast<std::ptrdiff_t>(e * F * H));
            std::copy_n(gu.begin() + static_cast<std::ptrdiff_t>((e * 2 + 1) * F * H), F * H, w.w3.begin() + static_cast<std::ptrdiff_t>(e * F * H));
        }
    } else {
        w.w1 = rd.read(p + "ffn_gate_exps.weight", {H, F, E});
        w.w3 = rd.read(p + "ffn_up_exps.weight", {H, F, E});
    }
    if (experts) w.w2 = rd.read(p + "ffn_down_exps.weight", {F, H, E});
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
    w.check(s, experts);
    return b;
}

/// Layer L's routed experts packed in format Fmt straight from the file's blocks (no float
/// copy), for a `moe::block<Arch, Fmt>(spec, weights, packed)`. The tensors' mapped pages are
/// dropped from the resident set once packed, so the layer costs its packed bytes, not twice. Throws [moe.models.format] when
/// a tensor is not in Fmt (a Q4_K_M file mixes Q4_K and Q6_K: load those as float, or pick
/// the layer's own format with `gguf_expert_types`). `ids` (non-empty): only those experts, in
/// that order (the others' bytes are not read); [moe.models.load] for one outside the layer.
template <class Fmt>
[[nodiscard]] kernels::packed_quant_experts<Fmt> pack_gguf_experts(const io::gguf_file& f, std::size_t L, const kernels::pack_options& o = {},
                                                                   const std::vector<std::int32_t>& ids = {}) {
    static_assert(kernels::gguf_packable_v<Fmt>, "Fmt's bytes are not a ggml type's blocks: load its tensors as float");
    using Up = kernels::formats::up_format_t<Fmt>;
    using Down = kernels::formats::down_format_t<Fmt>;
    const std::string p = "blk." + std::to_string(L) + ".";
    const bool fused = f.contains(p + "ffn_gate_up_exps.weight");
    const io::gguf_tensor* t[3] = {&f.tensor(p + (fused ? "ffn_gate_up_exps.weight" : "ffn_gate_exps.weight")),
                                   &f.tensor(p + (fused ? "ffn_gate_up_exps.weight" : "ffn_up_exps.weight")),
                                   &f.tensor(p + "ffn_down_exps.weight")};
    for (int m = 0; m < 3; ++m) {
        const io::gguf_tensor* x = t[m];
        if (x->ne.size() != 3) MOE_THROW("moe.models.load", f.path(), ": tensor '", x->name, "' is not a stack of experts");
        const int want = m < 2 ? kernels::format_traits<Up>::gguf_type : kernels::format_traits<Down>::gguf_type;
        if (static_cast<int>(x->type) != want)
            MOE_THROW("moe.models.format", f.path(), ": tensor '", x->name, "' is ", x->type_name(), ", not ", m < 2 ? Up::name : Down::name);
    }
    const std::size_t E = static_cast<std::size_t>(t[0]->ne[2]), H = static_cast<std::size_t>(t[0]->ne[0]),
                      F = static_cast<std::size_t>(t[0]->ne[1]) / (fused ? 2 : 1);
    if (fused && t[0]->ne[1] != 2 * F) MOE_THROW("moe.models.load", f.path(), ": tensor '", t[0]->name, "' has an odd gate+up row count ", t[0]->ne[1]);
    if (t[2]->ne[0] != F || t[2]->ne[1] != H || t[2]->ne[2] != E)
        MOE_THROW("moe.models.load", f.path(), ": tensor '", t[2]->name, "' is not [", F, ", ", H, ", ", E, "]");
    std::vector<kernels::formats::quant_view> v[3];
    for (int m = 0; m < 3; ++m) {
        const std::size_t rows = m == 2 ? H : F, cols = m == 2 ? F : H;
        const std::size_t per = t[m]->bytes / E;
        // Fused: each expert's gate rows, then its up rows (build_moe_ffn's two views).
        const std::size_t part = fused && m < 2 ? per / 2 : per, skip = fused && m == 1 ? part : 0;
        for (std::size_t j = 0; j < (ids.empty() ? E : ids.size()); ++j) {
            const std::size_t e = ids.empty() ? j : static_cast<std::size_t>(ids[j]);
            if (e >= E) MOE_THROW("moe.models.load", f.path(), ": expert ", ids[j], " outside [0, ", E, ") of layer ", L);
            v[m].push_back({rows, cols, {}, t[m]->data + e * per + skip, part, nullptr, 0});
        }
    }
    // Each expert's source pages leave the resident set once it is packed: file and packed
    // copy are never both resident.
    return kernels::pack_quant_experts<Fmt>(v[0].data(), v[1].data(), v[2].data(), v[0].size(), H, F, o, [&](std::size_t e) {
        for (int m = 0; m < 3; ++m) f.drop_pages(v[m][e].data, v[m][e].data_bytes);
    });
}

/// Expert e of layer L's routed experts as float32 (w1, w3: F x H; w2: H x F, row-major),
/// dequantized from that expert's own rows of the expert tensors, whose mapped pages then leave
/// the resident set: a conversion that reads the experts one by one holds one expert in float32
/// (`checkpoint::expert_floats`). H and F are the layer's (`load_block(f, L, false, true)`'s
/// spec). Throws [moe.models.load] where a tensor's shape differs or e is not an expert of L.
inline void gguf_expert_floats(const io::gguf_file& f, std::size_t L, std::size_t e, std::size_t H, std::size_t F, float* w1,
                               float* w3, float* w2) {
    const std::string p = "blk." + std::to_string(L) + ".";
    const detail::gguf_reader rd{f};
    const io::gguf_tensor& down = f.tensor(p + "ffn_down_exps.weight");
    const std::size_t E = down.ne.size() == 3 ? static_cast<std::size_t>(down.ne[2]) : 0;
    if (e >= E) MOE_THROW("moe.models.load", f.path(), ": expert ", e, " outside [0, ", E, ") of layer ", L);
    auto rows = [&](const io::gguf_tensor& t, std::size_t row0, std::size_t n, std::size_t cols, float* out) {
        detail::gguf_rows(t, row0, n, cols, out);
        io::ggml_type_traits tr{};
        (void)io::ggml_traits(static_cast<std::uint32_t>(t.type), tr);  // the reader accepted the type
        const std::size_t row_bytes = cols / tr.block * tr.bytes;
        f.drop_pages(t.data + row0 * row_bytes, n * row_bytes);
    };
    if (f.contains(p + "ffn_gate_up_exps.weight")) {  // fused: each expert's gate rows, then its up rows
        const io::gguf_tensor& gu = rd.tensor(p + "ffn_gate_up_exps.weight", {H, 2 * F, E});
        rows(gu, e * 2 * F, F, H, w1);
        rows(gu, e * 2 * F + F, F, H, w3);
    } else {
        rows(rd.tensor(p + "ffn_gate_exps.weight", {H, F, E}), e * F, F, H, w1);
        rows(rd.tensor(p + "ffn_up_exps.weight", {H, F, E}), e * F, F, H, w3);
    }
    rows(rd.tensor(p + "ffn_down_exps.weight", {F, H, E}), e * H, H, F, w2);
}

/// The weight format (a `kernels::weight_formats` name) in which layer L's routed experts are
/// stored and which `pack_gguf_experts` reads in place: "q4_k", "q8_0", ..., or a mixed one
/// ("q4_k+q6_k": Q4_K_M's Q4_K gate / up and Q6_K down); "" where gate and up differ in type,
/// the pair is not a registry format, or a type is one moe dequantizes (F32, F16, BF16, MXFP4).
[[nodiscard]] inline std::string gguf_expert_format(const io::gguf_file& f, std::size_t L) {
    const std::string p = "blk." + std::to_string(L) + ".";
    const bool fused = f.contains(p + "ffn_gate_up_exps.weight");
    const int t0 = static_cast<int>(f.tensor(p + (fused ? "ffn_gate_up_exps.weight" : "ffn_gate_exps.weight")).type);
    const int t2 = static_cast<int>(f.tensor(p + "ffn_down_exps.weight").type);
    if (!fused && static_cast<int>(f.tensor(p + "ffn_up_exps.weight").type) != t0) return "";
    std::string r;
    kernels::for_each_format([&](auto tag) {
        using W = decltype(tag);
        if constexpr (kernels::gguf_packable_v<W>)
            if (kernels::format_traits<kernels::formats::up_format_t<W>>::gguf_type == t0 &&
                kernels::format_traits<kernels::formats::down_format_t<W>>::gguf_type == t2)
                r = kernels::format_traits<W>::name;
    });
    return r;
}

/// The ggml types of layer L's gate, up and down expert tensors ("Q4_K", "Q6_K", ...).
[[nodiscard]] inline std::vector<std::string> gguf_expert_types(const io::gguf_file& f, std::size_t L) {
    const std::string p = "blk." + std::to_string(L) + ".";
    if (f.contains(p + "ffn_gate_up_exps.weight")) {
        const std::string gu = f.tensor(p + "ffn_gate_up_exps.weight").type_name();
        return {gu, gu, f.tensor(p + "ffn_down_exps.weight").type_name()};
    }
    return {f.tensor(p + "ffn_gate_exps.weight").type_name(), f.tensor(p + "ffn_up_exps.weight").type_name(),
            f.tensor(p + "ffn_down_exps.weight").type_name()};
}

}  // namespace moe::models
