/// @file models/checkpoint.hpp
/// A model checkpoint of either kind moe reads: a Hugging Face folder (config.json +
/// *.safetensors) or a llama.cpp `.gguf` file, chosen by the path. It lists the model's MoE
/// layers and loads any one of them as a `loaded_block` (spec + float weights).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
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
    /// Throws [moe.models.layer] for a dense layer.
    [[nodiscard]] loaded_block load(std::size_t L, bool experts = true) const {
        return hf_ ? load_block(*hf_, L, experts, experts) : load_block(*gguf_, L, experts);
    }

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
    std::unique_ptr<io::safetensors_checkpoint> hf_;
    std::unique_ptr<io::gguf_file> gguf_;
};

}  // namespace moe::models
