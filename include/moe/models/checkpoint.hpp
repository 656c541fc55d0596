/// @file models/checkpoint.hpp
/// A model checkpoint of either kind moe reads: a Hugging Face folder (config.json +
/// *.safetensors) or a llama.cpp `.gguf` file, chosen by the path. It lists the model's MoE
/// layers and loads any one of them as a `loaded_block` (spec + float weights).
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gguf.hpp"
#include "hf.hpp"

namespace moe::models {

class checkpoint {
public:
    /// Opens `path`: a `.gguf` file, or otherwise an HF folder. Throws the readers' errors.
    explicit checkpoint(const std::string& path) {
        const std::string ext = ".gguf";
        if (path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0)
            gguf_ = std::make_unique<io::gguf_file>(path);
        else
            hf_ = std::make_unique<io::safetensors_checkpoint>(path);
    }

    /// Layer L's block; `experts` false loads the router (and structure) only, cheaply.
    /// Throws [moe.models.layer] for a dense layer. Warnings go to the sink once each per
    /// checkpoint (see `set_warnings`).
    [[nodiscard]] loaded_block load(std::size_t L, bool experts = true) const {
        if (hf_) return load_block(*hf_, L, experts, experts);
        return load_block(*gguf_, L, experts, experts, sink());
    }

    /// Layer L's block with all but its routed experts (router, shared expert, expert biases),
    /// for experts packed in their stored format by `pack_experts`.
    [[nodiscard]] loaded_block load_without_experts(std::size_t L) const {
        if (hf_) return load_block(*hf_, L, false, true);
        return load_block(*gguf_, L, false, true, sink());
    }

    /// The weight format in which layer L's routed experts are stored and that `pack_experts`
    /// reads without a float copy ("q4_k", "q8_0", "fp8", "mxfp4", ...), or "" (float experts,
    /// formats mixed within the layer, or a type moe dequantizes).
    [[nodiscard]] std::string expert_format(std::size_t L) const {
        return hf_ ? hf_expert_format(*hf_, L) : gguf_expert_format(*gguf_, L);
    }

    /// Layer L's routed experts packed in format W from the checkpoint's bytes (`expert_format`
    /// names the one that applies); [moe.models.format] otherwise. `ids` (non-empty): only those
    /// experts, in that order (the others' bytes are not read); [moe.models.load] for one
    /// outside the layer.
    template <class W>
    [[nodiscard]] kernels::packed_quant_experts<W> pack_experts(std::size_t L, const kernels::pack_options& o = {},
                                                                const std::vector<std::int32_t>& ids = {}) const {
        if (gguf_) {
            if constexpr (kernels::gguf_packable_v<W>) return pack_gguf_experts<W>(*gguf_, L, o, ids);
        } else {
            if constexpr (std::is_same<W, kernels::formats::fp8>::value || std::is_same<W, kernels::formats::mxfp4>::value)
                return pack_hf_experts<W>(*hf_, L, o, ids);
        }
        MOE_THROW("moe.models.format", gguf_ ? gguf_->path() : hf_->dir(), ": moe does not read ", W::name, " experts from ",
                  gguf_ ? "a GGUF file" : "a Hugging Face checkpoint", " in place");
    }

    /// Layer L's routed experts as float32, one expert at a time: `read(e, w1, w3, w2)` writes
    /// expert e's gate and up (F x H each) and down (H x F), row-major, as `load(L)` holds them.
    /// Each call reads that expert's tensors only (and releases their mapped pages): from a GGUF
    /// file it dequantizes the expert's rows; from an HF folder whose family stores its experts
    /// one module each (Mixtral, Qwen, DeepSeek, ...) it reads the expert's three tensors (BF16,
    /// F16, F32 or FP8 with its scales). So converting experts one by one
    /// (`kernels::add_converted_from`) holds one expert in float32. An HF family that fuses its
    /// experts (GPT-OSS, Llama 4, DBRX, Granite) has the reader load the layer's float32 experts
    /// once (`held_bytes`).
    class expert_reader {
    public:
        void read(std::size_t e, float* w1, float* w3, float* w2) const {
            if (gguf_) return gguf_expert_floats(*gguf_, L_, e, H_, F_, w1, w3, w2);
            if (e >= E_) MOE_THROW("moe.models.load", "expert ", e, " outside [0, ", E_, ") of layer ", L_);
            if (hf_ck_) {
                const detail::reader rd{*hf_ck_};
                float* out[3] = {w1, w3, w2};
                for (int m = 0; m < 3; ++m) {
                    const std::string n = mods_.weight(L_, e, m);
                    rd.read(n, {m == 2 ? H_ : F_, m == 2 ? F_ : H_}, out[m]);
                    hf_ck_->drop_pages(hf_ck_->tensor(n));  // read: its pages need not stay
                }
                return;
            }
            const std::size_t n = F_ * H_;
            std::copy_n(hf_.weights.w1.data() + e * n, n, w1);
            std::copy_n(hf_.weights.w3.data() + e * n, n, w3);
            std::copy_n(hf_.weights.w2.data() + e * n, n, w2);
        }
        [[nodiscard]] std::size_t num_experts() const noexcept { return E_; }
        /// The bytes of float32 experts the reader holds: 0, or the layer's where an HF family
        /// fuses its experts.
        [[nodiscard]] std::size_t held_bytes() const noexcept {
            return sizeof(float) * (hf_.weights.w1.size() + hf_.weights.w3.size() + hf_.weights.w2.size());
        }

    private:
        friend class checkpoint;
        const io::gguf_file* gguf_ = nullptr;
        const io::safetensors_checkpoint* hf_ck_ = nullptr;  // experts one module each: read per call
        expert_names mods_;
        loaded_block hf_;  // fused HF experts: the layer's floats
        std::size_t L_ = 0, E_ = 0, H_ = 0, F_ = 0;
    };
    [[nodiscard]] expert_reader expert_floats(std::size_t L) const {
        expert_reader r;
        block_spec s = load_without_experts(L).spec;
        if (hf_) {
            r.mods_ = detail::hf_expert_names(s.family);
            const bool per_module = r.mods_.module && hf_->contains(r.mods_.weight(L, 0, 0));
            if (per_module) r.hf_ck_ = hf_.get();
            else s = (r.hf_ = load(L)).spec;
        }
        r.gguf_ = gguf_.get();
        r.L_ = L;
        r.E_ = s.num_experts;
        r.H_ = s.hidden;
        r.F_ = s.ffn;
        return r;
    }

    /// Where the loaders' warnings go ([moe.models.legacy] ...); none by default.
    void set_warnings(warning_sink sink) { warn_ = std::move(sink); }

    /// The model's transformer layer count (dense and MoE).
    [[nodiscard]] std::size_t num_layers() const {
        if (gguf_) {
            const std::string arch = gguf_->get_or<std::string>("general.architecture", "");
            return gguf_->get_or<std::size_t>(arch + ".block_count", 0);
        }
        const auto& c = detail::text_config(hf_->config());
        return detail::cfg_get<std::size_t>(c, "num_hidden_layers", 0);
    }

#if MOE_HAS_EXCEPTIONS
    /// The MoE layers: those `load` accepts (dense layers throw [moe.models.layer]). Needs
    /// exceptions: without them, `load` of a dense layer aborts.
    [[nodiscard]] std::vector<std::size_t> moe_layers() const {
        std::vector<std::size_t> r;
        for (std::size_t L = 0; L < num_layers(); ++L) {
            try {
                (void)load(L, /*experts=*/false);
                r.push_back(L);
            } catch (const error& e) {
                if (std::string(e.id()) != "moe.models.layer") throw;
            }
        }
        return r;
    }
#endif

    [[nodiscard]] const io::safetensors_checkpoint* hf() const noexcept { return hf_.get(); }
    [[nodiscard]] const io::gguf_file* gguf() const noexcept { return gguf_.get(); }

private:
    warning_sink sink() const {
        if (!warn_) return {};
        return [this](const std::string& m) {
            if (std::find(warned_.begin(), warned_.end(), m) != warned_.end()) return;
            warned_.push_back(m);
            warn_(m);
        };
    }

    std::unique_ptr<io::safetensors_checkpoint> hf_;
    std::unique_ptr<io::gguf_file> gguf_;
    warning_sink warn_;
    mutable std::vector<std::string> warned_;
};

}  // namespace moe::models
