// Model families: tiny HF checkpoints written by tests/gen_models_golden.py, loaded through
// moe's safetensors reader and run as moe::block, against torch statements of each family's
// HF block (routing exact, outputs within float tolerance); loader errors verbatim.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>

#include <moe/models/gguf.hpp>
#include <moe/models/hf.hpp>

#include "test_support.hpp"

using moe_test::error_of;

namespace {

const std::string models_dir = std::string(MOE_TEST_DATA_DIR) + "/models/";

/// Runs layer 1 of the checkpoint `name` and compares with its goldens.
template <class W = float>
void check_family(const std::string& name, const std::string& family, double rel_tol = 2e-5) {
    INFO("checkpoint " << name);
    const moe::io::safetensors_checkpoint ck(models_dir + name);
    const moe::models::loaded_block b = moe::models::load_block(ck, 1);
    CHECK(b.spec.family == family);
    const auto x = moe::io::read_npy_matrix<float>(models_dir + name + "/x.npy");
    const auto y_ref = moe::io::read_npy_matrix<float>(models_dir + name + "/y.npy");
    const auto logits_ref = moe::io::read_npy_matrix<float>(models_dir + name + "/logits.npy");
    const auto idx_ref = moe::io::read_npy_matrix<std::int32_t>(models_dir + name + "/indices.npy");
    moe::block<moe::default_arch, W> block(b.spec, b.weights);
    moe::matrix<float> y(x.rows, x.cols);
    block.forward(y.view(), x.view());
    const auto logits = block.last_logits();
    for (std::size_t t = 0; t < x.rows; ++t)
        for (std::size_t e = 0; e < logits.cols; ++e) REQUIRE(std::fabs(logits(t, e) - logits_ref(t, e)) <= 1e-5f * (1 + std::fabs(logits_ref(t, e))));
    const auto& r = block.last_routing();
    REQUIRE(r.top_k == idx_ref.cols);
    for (std::size_t t = 0; t < x.rows; ++t)
        for (std::size_t s = 0; s < r.top_k; ++s) {
            CAPTURE(t, s);
            REQUIRE(r.index(t, s) == idx_ref(t, s));
        }
    double ymax = 0, worst = 0;
    for (float v : y_ref.values) ymax = std::max(ymax, std::fabs(static_cast<double>(v)));
    REQUIRE(ymax > 0.1);  // the goldens are not trivially small
    for (std::size_t i = 0; i < y.values.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(y.values[i]) - y_ref.values[i]));
    CAPTURE(worst, ymax);
    CHECK(worst <= rel_tol * ymax);
    // The same bits on another executor (threads in reverse order).
    moe::matrix<float> y2(x.rows, x.cols);
    block.forward(y2.view(), x.view(), moe_test::reversed_threads_executor{3});
    CHECK(y2.values == y.values);
}

}  // namespace

TEST_CASE("models: each family's block from its HF checkpoint matches torch", "[models][golden]") {
    check_family("mixtral", "mixtral");
    check_family("minimax_m2", "minimax_m2");
    check_family("qwen2_moe", "qwen2_moe");
    check_family("qwen3_moe", "qwen3_moe");
    check_family("olmoe", "olmoe");
    check_family("deepseek_v2", "deepseek_v2");
    check_family("deepseek_v3", "deepseek_v3");
    check_family("deepseek_v3_fp8", "deepseek_v3");
    check_family("glm4_moe", "glm4_moe");
    check_family("dots1", "dots1");
    check_family("ernie4_5_moe", "ernie4_5_moe");
    check_family("qwen3_next", "qwen3_next");
    check_family("hunyuan_v1_moe", "hunyuan_v1_moe");
    check_family("longcat_flash", "longcat_flash");
    {  // the golden routes slots to LongCat's identity experts (ids 8..11), so they are exercised
        const auto idx = moe::io::read_npy_matrix<std::int32_t>(models_dir + "longcat_flash/indices.npy");
        CHECK(std::count_if(idx.values.begin(), idx.values.end(), [](std::int32_t e) { return e >= 8; }) >= 4);
    }
    check_family("gpt_oss", "gpt_oss");
    check_family("gpt_oss_mxfp4", "gpt_oss");
    check_family("llama4", "llama4");
    check_family("granitemoeshared", "granitemoeshared");
}

TEST_CASE("models: bf16 checkpoints run as bf16 experts, bit-exact conversion", "[models]") {
    // The stored values are bf16, so bf16 experts hold exactly the checkpoint's weights.
    check_family<Eigen::bfloat16>("mixtral_bf16", "mixtral");
    check_family<float>("mixtral_bf16", "mixtral");
}

TEST_CASE("models: quantized experts from a checkpoint's float weights", "[models]") {
    // int8 experts (the reference quantizer on the loaded weights): same routing, and the
    // output near the float block (the int8 activations and weights, ~1% relative).
    const moe::io::safetensors_checkpoint ck(models_dir + "qwen3_moe");
    const auto b = moe::models::load_block(ck, 1);
    const auto x = moe::io::read_npy_matrix<float>(models_dir + "qwen3_moe/x.npy");
    const auto y_ref = moe::io::read_npy_matrix<float>(models_dir + "qwen3_moe/y.npy");
    moe::block<moe::default_arch, moe::kernels::formats::int8> block(b.spec, b.weights);
    moe::matrix<float> y(x.rows, x.cols);
    block.forward(y.view(), x.view());
    double num = 0, den = 0;
    for (std::size_t i = 0; i < y.values.size(); ++i) {
        num += std::pow(y.values[i] - y_ref.values[i], 2);
        den += std::pow(y_ref.values[i], 2);
    }
    CHECK(std::sqrt(num / den) < 0.02);
    CHECK(std::sqrt(num / den) > 1e-5);  // it is quantized
    // GPT-OSS's biased, clamped experts need float weights.
    const moe::io::safetensors_checkpoint g(models_dir + "gpt_oss");
    const auto gb = moe::models::load_block(g, 1);
    CHECK(error_of([&] { moe::block<moe::default_arch, moe::kernels::formats::q8_0> q(gb.spec, gb.weights); }) ==
          "[moe.models.format] gpt_oss: quantized experts (q8_0) run plain SwiGLU only; use float, bf16 or f16 weights for biased or "
          "clamped experts");
}

TEST_CASE("models: loader errors name the checkpoint and the fault", "[models]") {
    const moe::io::safetensors_checkpoint ds(models_dir + "deepseek_v3");
    CHECK(error_of([&] { (void)moe::models::load_block(ds, 0); }) == "[moe.models.layer] deepseek_v3: layer 0 is a dense layer, not an MoE block");
    CHECK(error_of([&] { (void)moe::models::load_block(ds, 2); }) == "[moe.models.layer] deepseek_v3: layer 2 out of range (2 layers)");
    const moe::io::safetensors_checkpoint mx(models_dir + "mixtral");
    CHECK(moe::models::load_block(mx, 0).weights.router_w != moe::models::load_block(mx, 1).weights.router_w);

    // A copy with a broken config / a missing tensor / a wrong shape.
    namespace fs = std::filesystem;
    const std::string dir = std::string(MOE_TEST_TMP_DIR) + "/moe_models_bad";
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy_file(models_dir + "mixtral/model.safetensors", dir + "/model.safetensors");
    auto with_config = [&](const std::string& cfg) {
        std::ofstream(dir + "/config.json") << cfg;
        return error_of([&] {
            const moe::io::safetensors_checkpoint c(dir);
            (void)moe::models::load_block(c, 1);
        });
    };
    CHECK(with_config(R"({"model_type": "bert", "hidden_size": 32})") ==
          "[moe.models.config] " + dir +
              ": model_type 'bert' is not a family moe loads (mixtral, minimax_m2, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, "
              "deepseek_v3, kimi_k2, glm4_moe, dots1, ernie4_5_moe, qwen3_next, hunyuan_v1_moe, longcat_flash, gpt_oss, llama4, llama4_text, granitemoe, granitemoeshared)");
    CHECK(with_config(R"({"model_type": "mixtral", "hidden_size": 32, "intermediate_size": 16, "num_experts_per_tok": 2})") ==
          "[moe.models.config] config.json has no 'num_local_experts'");
    CHECK(with_config(R"({"model_type": "mixtral", "hidden_size": "32"})") ==
          "[moe.models.config] config.json: 'hidden_size' is \"32\", not the kind expected");
    CHECK(with_config(R"({"model_type": "mixtral", "hidden_size": 32, "intermediate_size": 16, "num_local_experts": 9,
                          "num_experts_per_tok": 2})") ==
          "[moe.models.load] " + dir + ": tensor 'model.layers.1.block_sparse_moe.gate.weight' is [8, 32], expected [9, 32]");
    CHECK(with_config(R"({"model_type": "mixtral", "hidden_size": 32, "intermediate_size": 16, "num_local_experts": 8,
                          "num_experts_per_tok": 9})") == "[moe.router.top_k] k=9 exceeds num_experts=8");
    CHECK(with_config(R"({"model_type": "minimax_m2", "hidden_size": 32, "intermediate_size": 16, "num_local_experts": 8,
                          "num_experts_per_tok": 2})") ==
          "[moe.io.safetensors] " + dir + ": no tensor 'model.layers.1.block_sparse_moe.e_score_correction_bias'");
}

TEST_CASE("models: the same bits on every arch (biased, clamped, input-weighted, shared experts)", "[models][arch]") {
    for (const char* name : {"gpt_oss", "llama4", "qwen2_moe", "deepseek_v3"}) {
        INFO("checkpoint " << name);
        const moe::io::safetensors_checkpoint ck(models_dir + name);
        const auto b = moe::models::load_block(ck, 1);
        const auto x = moe::io::read_npy_matrix<float>(models_dir + name + "/x.npy");
        auto run = [&](auto arch) {
            using A = decltype(arch);
            moe::block<A, float> block(b.spec, b.weights);
            moe::matrix<float> y(x.rows, x.cols);
            block.forward(y.view(), x.view());
            return y.values;
        };
        const auto ref = run(moe::scalar{});
        std::apply([&](auto... a) { (void)std::initializer_list<int>{([&] {
                                        if (moe_test::arch_runs_here<decltype(a)>()) CHECK(run(a) == ref);
                                    }(), 0)...}; },
                   moe_test::archs{});
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF: the same blocks under llama.cpp's names and metadata.

namespace {

moe::matrix<float> run_block(const moe::models::loaded_block& b, const moe::matrix<float>& x, moe::routing<float>* r = nullptr) {
    moe::block<> block(b.spec, b.weights);
    moe::matrix<float> y(x.rows, x.cols);
    block.forward(y.view(), x.view());
    if (r) *r = block.last_routing();
    return y;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double w = 0;
    for (std::size_t i = 0; i < a.size(); ++i) w = std::max(w, std::fabs(static_cast<double>(a[i]) - b[i]));
    return w;
}

}  // namespace

TEST_CASE("models: GGUF blocks (llama.cpp names and expert metadata) match the HF goldens", "[models][gguf]") {
    for (const char* name : {"mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss", "dots1", "ernie4_5_moe", "qwen3_next", "hunyuan_v1_moe"}) {
        INFO("checkpoint " << name);
        const moe::io::gguf_file f(models_dir + name + "/model.gguf");
        auto b = moe::models::load_block(f, 1);
        if (std::string(name) == "deepseek_v3" || std::string(name) == "dots1") {
            // llama.cpp masks dropped groups with -inf and clamps the weight sum; HF masks with
            // 0.0 (a masked expert beats a kept one whose biased score is negative) and adds
            // 1e-20. The loader follows llama.cpp; HF's recipe reproduces the HF golden.
            CHECK(b.spec.router.mask == moe::group_mask::neg_inf);
            CHECK(b.spec.router.renorm == moe::renormalize::clamp);
            b.spec.router = moe::presets::deepseek_v3(4, 4, 2, 2.5f, true);
        }
        const auto x = moe::io::read_npy_matrix<float>(models_dir + name + "/x.npy");
        const auto y_ref = moe::io::read_npy_matrix<float>(models_dir + name + "/y.npy");
        const auto idx_ref = moe::io::read_npy_matrix<std::int32_t>(models_dir + name + "/indices.npy");
        moe::routing<float> r;
        const auto y = run_block(b, x, &r);
        for (std::size_t t = 0; t < x.rows; ++t)
            for (std::size_t s = 0; s < r.top_k; ++s) REQUIRE(r.index(t, s) == idx_ref(t, s));
        double ymax = 0;
        for (float v : y_ref.values) ymax = std::max(ymax, std::fabs(static_cast<double>(v)));
        CHECK(max_abs_diff(y.values, y_ref.values) <= 2e-5 * ymax);
        // The HF and GGUF loads of the same weights give the same spec'd block.
        const moe::io::safetensors_checkpoint ck(models_dir + name);
        const auto hb = moe::models::load_block(ck, 1);
        CHECK(b.weights.w1 == hb.weights.w1);
        CHECK(b.weights.w2 == hb.weights.w2);
        CHECK(b.spec.shared_ffn == hb.spec.shared_ffn);
    }
    const moe::io::gguf_file mx(models_dir + "mixtral/model.gguf");
    CHECK(error_of([&] { (void)moe::models::load_block(mx, 0); }) == "[moe.models.layer] llama: layer 0 is a dense layer, not an MoE block");
    CHECK(error_of([&] { (void)moe::models::load_block(mx, 2); }) == "[moe.models.layer] llama: layer 2 out of range (2 layers)");
    const moe::io::gguf_file tiny(std::string(MOE_TEST_DATA_DIR) + "/io/tiny.gguf");
    CHECK(error_of([&] { (void)moe::models::load_block(tiny, 0); }) ==
          "[moe.models.config] " + std::string(MOE_TEST_DATA_DIR) +
              "/io/tiny.gguf: architecture 'mixtral' is not one moe loads (llama, qwen2moe, qwen3moe, olmoe, deepseek2, dots1, ernie4_5-moe, qwen3next, hunyuan-moe, gpt-oss, llama4)");
}

TEST_CASE("models: GGUF Q8_0 experts, dequantized or packed from the file's blocks", "[models][gguf]") {
    const std::string d = models_dir + "mixtral_q8_0/";
    const moe::io::gguf_file f(d + "model.gguf");
    const auto b = moe::models::load_block(f, 0);
    CHECK(moe::models::gguf_expert_types(f, 0) == std::vector<std::string>{"Q8_0", "Q8_0", "Q8_0"});
    // ggml's Q8_0 dequantization, by numpy from the published block layout.
    CHECK(b.weights.w1 == moe::io::read_npy_matrix<float>(d + "w1_dequant.npy").values);
    const auto x = moe::io::read_npy_matrix<float>(d + "x.npy");
    const auto y_ref = moe::io::read_npy_matrix<float>(d + "y.npy");
    double ymax = 0;
    for (float v : y_ref.values) ymax = std::max(ymax, std::fabs(static_cast<double>(v)));
    CHECK(max_abs_diff(run_block(b, x).values, y_ref.values) <= 2e-5 * ymax);
    // Packed straight from the file: int8 activations, so ~1% of the float result.
    auto packed = moe::models::pack_gguf_experts<moe::kernels::formats::q8_0>(f, 0);
    moe::block<moe::default_arch, moe::kernels::formats::q8_0> block(b.spec, b.weights, std::move(packed));
    moe::matrix<float> y(x.rows, x.cols);
    block.forward(y.view(), x.view());
    const double err = max_abs_diff(y.values, y_ref.values);
    CHECK(err <= 0.03 * ymax);
    CHECK(err > 0.0);
    CHECK(error_of([&] { (void)moe::models::pack_gguf_experts<moe::kernels::formats::q4_0>(f, 0); }) ==
          "[moe.models.format] " + d + "model.gguf: tensor 'blk.0.ffn_gate_exps.weight' is Q8_0, not q4_0");
}

TEST_CASE("models: FP8 experts packed from the checkpoint's bytes equal the float block", "[models][fp8]") {
    const std::string d = models_dir + "deepseek_v3_fp8";
    const moe::io::safetensors_checkpoint ck(d);
    const auto full = moe::models::load_block(ck, 1);
    const auto lean = moe::models::load_block(ck, 1, /*experts=*/false);  // router + shared expert only
    CHECK(lean.weights.w1.empty());
    CHECK(lean.weights.s1 == full.weights.s1);
    auto packed = moe::models::pack_hf_experts<moe::kernels::formats::fp8>(ck, 1);
    // The weight-only fp8 kernel equals the float kernel on the dequantized weights, bit for bit.
    moe::block<moe::default_arch, moe::kernels::formats::fp8> q(lean.spec, lean.weights, std::move(packed));
    moe::block<> f(full.spec, full.weights);
    const auto x = moe::io::read_npy_matrix<float>(d + "/x.npy");
    moe::matrix<float> yq(x.rows, x.cols), yf(x.rows, x.cols);
    q.forward(yq.view(), x.view());
    f.forward(yf.view(), x.view());
    CHECK(yq.values == yf.values);
    CHECK(q.packed_experts().expert_bytes() < f.packed_experts().expert_bytes() / 3);  // 1 byte per weight, not 4
    const moe::io::safetensors_checkpoint bf(models_dir + "deepseek_v3");
    CHECK(error_of([&] { (void)moe::models::pack_hf_experts<moe::kernels::formats::fp8>(bf, 1); }) ==
          "[moe.models.format] " + models_dir + "deepseek_v3: tensor 'model.layers.1.mlp.experts.0.gate_proj.weight' is F32, not F8_E4M3 (fp8)");
}
