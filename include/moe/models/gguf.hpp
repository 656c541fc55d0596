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
#include "hf.hpp"

namespace moe::models {

namespace detail {

/// "F32, F16, BF16, Q8_0, ... and MXFP4": the ggml types the registry's formats read.
inline std::string gguf_readable() {
    std::vector<std::string> names;
    kernels::for_each_format([&](auto tag) {
        io::ggml_type_traits tr{};
        if (kernels::format_traits<decltype(tag)>::gguf_type >= 0 &&
            io::ggml_traits(static_cast<std::uint32_t>(kernels::format_traits<decltype(tag)>::gguf_type), tr))
            names.emplace_back(tr.name);
    });
    std::string all;
    for (std::size_t i = 0; i < names.size(); ++i) all += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
    return all;
}

/// `rows` x `cols` values of a GGUF tensor starting at row `row0` (cols = ne[0]) as float.
inline void gguf_rows(const io::gguf_tensor& t, std::size_t row0, std::size_t rows, std::size_t cols, float* out) {
    namespace fm = kernels::formats;
    io::ggml_type_traits tr{};
    (void)io::ggml_traits(static_cast<std::uint32_t>(t.type), tr);  // the reader accepted the type
    const std::size_t row_bytes = cols / tr.block * tr.bytes;
    const std::uint8_t* p = t.data + row0 * row_bytes;
    const fm::quant_view v{rows, cols, {}, p, rows * row_bytes, nullptr, 0};
    switch (t.type) {
        case io::ggml_type::f32:
        case io::ggml_type::f16:
        case io::ggml_type::bf16: {
            io::tensor_view tv = t.view();
            tv.data = p;
            tv.bytes = rows * row_bytes;
            tv.shape = {rows, cols};
            io::to_float(tv, out, rows * cols);
            return;
        }
        default: break;
    }
    bool done = false;
    kernels::for_each_format([&](auto tag) {  // the formats that read a ggml type (the registry)
        using W = decltype(tag);
        using ft = kernels::format_traits<W>;
        if constexpr (!kernels::is_weight_type_v<W> && ft::gguf_type >= 0) {
            if (done || static_cast<int>(t.type) != ft::gguf_type) return;
            if constexpr (ft::gguf_in_place) {
                W::validate(v);
                W::dequantize(v, out);
            } else {
                W::dequantize_ggml(p, rows, cols, out, "tensor '" + t.name + "'");
            }
            done = true;
        }
    });
    if (!done) MOE_THROW("moe.models.load", "tensor '", t.name, "' is ", t.type_name(), "; moe reads ", gguf_readable());
}

struct gguf_reader {
    const io::gguf_file& f;
    [[nodiscard]] bool has(const std::string& n) const { return f.contains(n); }
    const io::gguf_tensor& tensor(const std::string& n, const std::vector<std::uint64_t>& ne) const {
        const io::gguf_tensor& t = f.tensor(n);
        if (t.ne != ne) {
            std::vector<std::size_t> a(t.ne.begin(), t.ne.end()), b(ne.begin(), ne.end());
            MOE_THROW("moe.models.load", f.path(), ": tensor '", n, "' has ne ", io::shape_string(a), ", expected ", io::shape_string(b));
        }
        return t;
    }
    /// The whole tensor as float, row-major with ne[0] contiguous.
    std::vector<float> read(const std::string& n, const std::vector<std::uint64_t>& ne) const {
        const io::gguf_tensor& t = tensor(n, ne);
        std::size_t numel = 1;
        for (auto d : ne) numel *= static_cast<std::size_t>(d);
        std::vector<float> v(numel);
        gguf_rows(t, 0, numel / ne[0], static_cast<std::size_t>(ne[0]), v.data());
        return v;
    }
};

}  // namespace detail

/// The architectures `load_block(gguf_file, L)` understands (general.architecture).
inline constexpr const char* gguf_archs[] = {"llama", "qwen2moe", "qwen3moe", "olmoe", "deepseek2", "gpt-oss", "llama4"};

/// Layer L's MoE block of a GGUF file, weights dequantized to float32. Throws
/// [moe.models.config] (unknown architecture, missing metadata), [moe.models.layer],
/// [moe.models.load] and the reader's [moe.io.gguf]. `experts` false reads the router only.
[[nodiscard]] inline loaded_block load_block(const io::gguf_file& f, std::size_t L, bool experts = true) {
    const std::string arch = f.get_or<std::string>("general.architecture", "");
    bool known = false;
    for (const char* a : gguf_archs) known = known || arch == a;
    if (!known) {
        std::string all;
        for (const char* a : gguf_archs) all += (all.empty() ? "" : ", ") + std::string(a);
        MOE_THROW("moe.models.config", f.path(), ": architecture '", arch, "' is not one moe loads (", all, ")");
    }
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

    const bool norm = f.get_or<bool>(key("expert_weights_norm"), arch == "llama" || arch == "qwen3moe");
    const float scale = f.get_or<float>(key("expert_weights_scale"), 1.0f);
    const std::uint32_t gating = f.get_or<std::uint32_t>(key("expert_gating_func"), arch == "llama4" ? 2u : 1u);  // 1 softmax, 2 sigmoid
    if (arch == "gpt-oss") {
        s.router = presets::gpt_oss(k);
    } else if (arch == "llama4") {
        s.router = presets::llama4(k);
        s.weight_on_input = true;
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
    }
    if (norm && arch != "gpt-oss" && arch != "llama4") s.router = presets::llama_cpp_norm(s.router);
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
    if (arch == "gpt-oss") {
        s.expert_bias = true;
        s.activation = kernels::ffn_activation::swiglu_oai;
        s.swiglu_limit = f.get_or<float>(key("swiglu_clamp"), 7.0f);
        w.b1 = rd.read(p + "ffn_gate_exps.bias", {F, E});
        w.b3 = rd.read(p + "ffn_up_exps.bias", {F, E});
        w.b2 = rd.read(p + "ffn_down_exps.bias", {H, E});
    }
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
