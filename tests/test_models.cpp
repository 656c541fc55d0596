// Model families: tiny HF checkpoints written by tests/gen_models_golden.py, loaded through
// moe's safetensors reader and run as moe::block, against torch statements of each family's
// HF block (routing exact, outputs within float tolerance); loader errors verbatim.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>

#include <moe/models/checkpoint.hpp>
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
    check_family("dbrx", "dbrx");  // experts fused over all experts, down stored transposed
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
}

TEST_CASE("models: GPT-OSS's biased, clamped experts run in quantized formats", "[models][golden]") {
    // Integer formats quantize the activations too: the bound is the same as for plain SwiGLU
    // experts (qwen3_moe above), and the result is not the float one.
    check_family<moe::kernels::formats::q8_0>("gpt_oss", "gpt_oss", 0.02);
    const moe::io::safetensors_checkpoint g(models_dir + "gpt_oss");
    const auto gb = moe::models::load_block(g, 1);
    const auto x = moe::io::read_npy_matrix<float>(models_dir + "gpt_oss/x.npy");
    moe::block<moe::default_arch, moe::kernels::formats::q8_0> q(gb.spec, gb.weights);
    moe::block<moe::scalar, moe::kernels::formats::q8_0> qs(gb.spec, gb.weights);
    moe::block<> f(gb.spec, gb.weights);
    moe::matrix<float> yq(x.rows, x.cols), ys(x.rows, x.cols), yf(x.rows, x.cols);
    q.forward(yq.view(), x.view());
    qs.forward(ys.view(), x.view());
    f.forward(yf.view(), x.view());
    CHECK(yq.values == ys.values);  // the epilogue is arch-independent
    CHECK(yq.values != yf.values);
}

TEST_CASE("models: GPT-OSS MXFP4 experts packed from the checkpoint's bytes equal the float block", "[models][mxfp4]") {
    const std::string d = models_dir + "gpt_oss_mxfp4";
    const moe::io::safetensors_checkpoint ck(d);
    const auto full = moe::models::load_block(ck, 1);
    const auto lean = moe::models::load_block(ck, 1, /*experts=*/false);  // router and the experts' biases
    CHECK(lean.weights.w1.empty());
    CHECK(lean.weights.b1 == full.weights.b1);
    CHECK(lean.weights.b2 == full.weights.b2);
    auto packed = moe::models::pack_hf_experts<moe::kernels::formats::mxfp4>(ck, 1);
    CHECK(packed.expert_bytes() * 6 < full.spec.hidden * full.spec.ffn * 3 * 4);  // ~0.53 byte per weight, not 4
    // Weight-only MXFP4 with the biases and the clamped SwiGLU in the kernel's epilogue equals
    // the float kernel on the dequantized weights, bit for bit, on every arch.
    moe::block<moe::default_arch, moe::kernels::formats::mxfp4> q(lean.spec, lean.weights, std::move(packed));
    moe::block<moe::scalar, moe::kernels::formats::mxfp4> qs(lean.spec, lean.weights,
                                                             moe::models::pack_hf_experts<moe::kernels::formats::mxfp4>(ck, 1));
    moe::block<> fb(full.spec, full.weights);
    const auto x = moe::io::read_npy_matrix<float>(d + "/x.npy");
    const auto y_ref = moe::io::read_npy_matrix<float>(d + "/y.npy");
    moe::matrix<float> yq(x.rows, x.cols), ys(x.rows, x.cols), yf(x.rows, x.cols);
    q.forward(yq.view(), x.view());
    qs.forward(ys.view(), x.view());
    fb.forward(yf.view(), x.view());
    CHECK(yq.values == yf.values);
    CHECK(ys.values == yf.values);
    double worst = 0, ymax = 0;
    for (std::size_t i = 0; i < yq.values.size(); ++i) {
        worst = std::max(worst, std::fabs(static_cast<double>(yq.values[i]) - y_ref.values[i]));
        ymax = std::max(ymax, std::fabs(static_cast<double>(y_ref.values[i])));
    }
    CHECK(worst <= 2e-5 * ymax);  // and HF transformers' block on the same checkpoint
    // A subset, packed from those experts' bytes only: each is that expert of the full pack.
    const auto all = moe::models::pack_hf_experts<moe::kernels::formats::mxfp4>(ck, 1);
    const auto sub = moe::models::pack_hf_experts<moe::kernels::formats::mxfp4>(ck, 1, {}, {3, 0});
    REQUIRE(sub.num_experts() == 2);
    CHECK(std::memcmp(sub.up(0, 0), all.up(3, 0), all.expert_bytes()) == 0);
    CHECK(std::memcmp(sub.up(1, 0), all.up(0, 0), all.expert_bytes()) == 0);
    CHECK(error_of([&] { (void)moe::models::pack_hf_experts<moe::kernels::formats::mxfp4>(ck, 1, {}, {0, 99}); }) ==
          "[moe.models.load] " + d + ": expert 99 outside [0, " + std::to_string(full.spec.num_experts) + ") of layer 1");
    // A checkpoint that stores its experts otherwise.
    const moe::io::safetensors_checkpoint bf(models_dir + "gpt_oss");
    CHECK(error_of([&] { (void)moe::models::pack_hf_experts<moe::kernels::formats::mxfp4>(bf, 1); }) ==
          "[moe.models.format] " + models_dir +
              "gpt_oss: gpt_oss does not store its experts as MXFP4 'model.layers.1.mlp.experts.gate_up_proj_blocks' / '_scales'; "
              "pack_hf_experts<mxfp4> reads those");
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
              "deepseek_v3, kimi_k2, glm4_moe, dots1, ernie4_5_moe, qwen3_next, hunyuan_v1_moe, longcat_flash, gpt_oss, llama4, llama4_text, granitemoe, granitemoeshared, dbrx)");
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
    // GPT-OSS with gate and up (and their biases) fused per expert, as newer converters write it.
    const auto split = moe::models::load_block(moe::io::gguf_file(models_dir + "gpt_oss/model.gguf"), 1);
    const auto fused = moe::models::load_block(moe::io::gguf_file(models_dir + "gpt_oss/model_fused.gguf"), 1);
    CHECK(fused.spec.ffn == split.spec.ffn);
    CHECK(fused.weights.w1 == split.weights.w1);
    CHECK(fused.weights.w3 == split.weights.w3);
    CHECK(fused.weights.b1 == split.weights.b1);
    CHECK(fused.weights.b3 == split.weights.b3);
    CHECK(fused.weights.w2 == split.weights.w2);
    const moe::io::gguf_file mx(models_dir + "mixtral/model.gguf");
    CHECK(error_of([&] { (void)moe::models::load_block(mx, 0); }) == "[moe.models.layer] llama: layer 0 is a dense layer, not an MoE block");
    CHECK(error_of([&] { (void)moe::models::load_block(mx, 2); }) == "[moe.models.layer] llama: layer 2 out of range (2 layers)");
    const moe::io::gguf_file tiny(std::string(MOE_TEST_DATA_DIR) + "/io/tiny.gguf");
    CHECK(error_of([&] { (void)moe::models::load_block(tiny, 0); }) ==
          "[moe.models.config] " + std::string(MOE_TEST_DATA_DIR) +
              "/io/tiny.gguf: architecture 'mixtral' is not one moe loads (llama, qwen2moe, qwen3moe, olmoe, deepseek2, dots1, ernie4_5-moe, qwen3next, hunyuan-moe, gpt-oss, llama4)");
}

TEST_CASE("models: a DeepSeek GGUF without group keys routes as llama.cpp does and says so once", "[models][gguf]") {
    const std::string path = models_dir + "deepseek_v3/model_legacy.gguf";
    const moe::io::gguf_file f(path);
    std::vector<std::string> heard;
    const auto b = moe::models::load_block(f, 1, true, [&](const std::string& m) { heard.push_back(m); });
    CHECK(b.spec.router.num_groups == 0);  // no group limits, as llama.cpp routes this file
    REQUIRE(heard.size() == 1);
    CHECK(heard[0] == "[moe.models.legacy] " + path +
                          ": no deepseek2.expert_group_count / expert_group_used_count (converted before llama.cpp wrote them): "
                          "routing without group limits, as llama.cpp does; the HF model keeps each token's experts in topk_group "
                          "of n_group groups (DeepSeek-V3 / R1: 4 of 8), so some tokens route differently");
    // Otherwise the same block as the file with the keys, but for the groups.
    const moe::io::gguf_file keyed(models_dir + "deepseek_v3/model.gguf");
    const auto k = moe::models::load_block(keyed, 1, true, [&](const std::string& m) { heard.push_back(m); });
    CHECK(heard.size() == 1);  // a file with the keys: nothing to say
    CHECK(k.spec.router.num_groups == 4);
    CHECK(k.weights.w1 == b.weights.w1);
    // Silent without a sink (the library's default); a checkpoint says it once however often it loads.
    CHECK_NOTHROW((void)moe::models::load_block(f, 1));
    moe::models::checkpoint ck(path);
    ck.set_warnings([&](const std::string& m) { heard.push_back(m); });
    CHECK(ck.moe_layers() == std::vector<std::size_t>{1});
    (void)ck.load(1);
    CHECK(heard.size() == 2);
    // Other families never ask for the keys.
    const moe::io::gguf_file mx(models_dir + "mixtral/model.gguf");
    (void)moe::models::load_block(mx, 1, false, [&](const std::string& m) { heard.push_back(m); });
    CHECK(heard.size() == 2);
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
    // A subset of the experts, packed from their own bytes only: each is that expert of the full pack.
    const auto sub = moe::models::pack_gguf_experts<moe::kernels::formats::q8_0>(f, 0, {}, {2, 0});
    const auto all = moe::models::pack_gguf_experts<moe::kernels::formats::q8_0>(f, 0);
    REQUIRE(sub.num_experts() == 2);
    CHECK(std::memcmp(sub.up(0, 0), all.up(2, 0), all.expert_bytes()) == 0);
    CHECK(std::memcmp(sub.up(1, 0), all.up(0, 0), all.expert_bytes()) == 0);
    CHECK(error_of([&] { (void)moe::models::pack_gguf_experts<moe::kernels::formats::q8_0>(f, 0, {}, {0, 9}); }) ==
          "[moe.models.load] " + d + "model.gguf: expert 9 outside [0, " + std::to_string(b.spec.num_experts) + ") of layer 0");

    // Newer converters fuse gate and up (ffn_gate_up_exps [H, 2F, E], gate = the first F rows of
    // each expert): the same weights, dequantized or packed from the fused blocks, the same bits.
    const moe::io::gguf_file fu(d + "model_fused.gguf");
    CHECK(moe::models::gguf_expert_types(fu, 0) == std::vector<std::string>{"Q8_0", "Q8_0", "Q8_0"});
    const auto bf = moe::models::load_block(fu, 0);
    CHECK(bf.spec.ffn == b.spec.ffn);
    CHECK(bf.weights.w1 == b.weights.w1);
    CHECK(bf.weights.w3 == b.weights.w3);
    CHECK(bf.weights.w2 == b.weights.w2);
    moe::block<moe::default_arch, moe::kernels::formats::q8_0> fused_block(bf.spec, bf.weights,
                                                                             moe::models::pack_gguf_experts<moe::kernels::formats::q8_0>(fu, 0));
    moe::matrix<float> yf(x.rows, x.cols);
    fused_block.forward(yf.view(), x.view());
    CHECK(yf.values == y.values);
    CHECK(error_of([&] { (void)moe::models::pack_gguf_experts<moe::kernels::formats::q4_0>(fu, 0); }) ==
          "[moe.models.format] " + d + "model_fused.gguf: tensor 'blk.0.ffn_gate_up_exps.weight' is Q8_0, not q4_0");
}

TEST_CASE("models: experts read one at a time as float32 equal the layer's float load", "[models][gguf]") {
    // From a GGUF file each expert is dequantized from its own rows (plain, fused gate+up, mixed
    // types, a fallback type); from an HF folder of a family with one module per expert (BF16,
    // F32, FP8 with its scales) each expert's tensors are read; the HF families that fuse their
    // experts have the reader hold the layer's floats.
    const std::vector<std::string> fused_hf{"dbrx", "gpt_oss", "gpt_oss_mxfp4", "granitemoeshared", "llama4"};
    for (const char* path : {"mixtral_q8_0/model.gguf", "mixtral_q8_0/model_fused.gguf", "mixtral_q4_k_m/model.gguf",
                             "mixtral_q5_k_m_f96/model.gguf", "gpt_oss/model_fused.gguf", "mixtral/model.gguf", "mixtral", "mixtral_bf16",
                             "qwen3_moe", "qwen2_moe", "qwen3_next", "olmoe", "deepseek_v2", "deepseek_v3", "deepseek_v3_fp8", "dots1",
                             "ernie4_5_moe", "glm4_moe", "hunyuan_v1_moe", "longcat_flash", "minimax_m2", "dbrx", "gpt_oss",
                             "gpt_oss_mxfp4", "granitemoeshared", "llama4"}) {
        CAPTURE(path);
        const moe::models::checkpoint ck(models_dir + path);
        const bool hf = std::string(path).find('/') == std::string::npos;
        const std::size_t L = hf ? 1 : ck.moe_layers().at(0);  // the HF fixtures hold layer 1
        const moe::models::loaded_block b = ck.load(L);
        const std::size_t E = b.spec.num_experts, n = b.spec.hidden * b.spec.ffn;
        const auto rd = ck.expert_floats(L);
        CHECK(rd.num_experts() == E);
        const bool fused = std::find(fused_hf.begin(), fused_hf.end(), path) != fused_hf.end();
        CHECK(rd.held_bytes() == (fused ? 3 * E * n * sizeof(float) : 0));
        std::vector<float> w1(n), w3(n), w2(n);
        for (std::size_t e : {E - 1, std::size_t(0)}) {  // any order
            rd.read(e, w1.data(), w3.data(), w2.data());
            const auto at = [&](const std::vector<float>& v) { return std::vector<float>(v.begin() + static_cast<std::ptrdiff_t>(e * n), v.begin() + static_cast<std::ptrdiff_t>((e + 1) * n)); };
            CHECK(w1 == at(b.weights.w1));
            CHECK(w3 == at(b.weights.w3));
            CHECK(w2 == at(b.weights.w2));
        }
        CHECK(error_of([&] { rd.read(E, w1.data(), w3.data(), w2.data()); }).find(
                  "expert " + std::to_string(E) + " outside [0, " + std::to_string(E) + ") of layer " + std::to_string(L)) != std::string::npos);
    }
    // Converting from the reader, expert by expert, gives the set add_converted gives from the
    // whole float layer: the same forward, bit for bit.
    const moe::models::checkpoint ck(models_dir + "mixtral_q4_k_m/model.gguf");
    const moe::models::loaded_block b = ck.load(0);
    const auto rd = ck.expert_floats(0);
    const auto x = moe::io::read_npy_matrix<float>(models_dir + "mixtral_q4_k_m/x.npy");
    using set_t = moe::kernels::expert_set<moe::default_arch>;
    using fmts = moe::kernels::format_list<float, moe::kernels::formats::q8_0>;
    std::vector<moe::matrix<float>> ys;
    for (int way = 0; way < 2; ++way) {
        set_t set(b.spec.num_experts, b.spec.hidden, b.spec.ffn);
        if (way == 0) {
            moe::kernels::add_converted<fmts>(set, {0, 2}, moe::kernels::parse_weight_format("q8_0"), b.weights.w1.data(), b.weights.w3.data(),
                                              b.weights.w2.data());
            moe::kernels::add_converted<fmts>(set, {1}, moe::kernels::parse_weight_format("f32"), b.weights.w1.data(), b.weights.w3.data(),
                                              b.weights.w2.data());
        } else {
            const std::vector<std::int32_t> hot{0, 2};
            moe::kernels::add_converted_from<fmts>(set, hot, moe::kernels::parse_weight_format("q8_0"),
                                                   [&](std::size_t e, float* a, float* c, float* d) { rd.read(e, a, c, d); });
            moe::kernels::add_converted_from<fmts>(set, {1}, moe::kernels::parse_weight_format("f32"),
                                                   [&](std::size_t e, float* a, float* c, float* d) {
                                                       CHECK(e == 1);  // fetch gets the expert's id, not its position in ids
                                                       rd.read(e, a, c, d);
                                                   });
        }
        moe::block<moe::default_arch, moe::kernels::per_expert> blk(b.spec, b.weights, std::move(set));
        ys.emplace_back(x.rows, x.cols);
        blk.forward(ys.back().view(), x.view());
    }
    CHECK(ys[0].values == ys[1].values);
    CHECK(std::any_of(ys[0].values.begin(), ys[0].values.end(), [](float v) { return v != 0.0f; }));
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
    // A subset through the checkpoint, from those experts' bytes only.
    const moe::models::checkpoint c(d);
    const auto all = c.pack_experts<moe::kernels::formats::fp8>(1);
    const auto sub = c.pack_experts<moe::kernels::formats::fp8>(1, {}, {2});
    REQUIRE(sub.num_experts() == 1);
    CHECK(std::memcmp(sub.up(0, 0), all.up(2, 0), all.expert_bytes()) == 0);
    CHECK(error_of([&] { (void)c.pack_experts<moe::kernels::formats::fp8>(1, {}, {-1}); }) ==
          "[moe.models.load] " + d + ": expert -1 outside [0, " + std::to_string(full.spec.num_experts) + ") of layer 1");
    const moe::io::safetensors_checkpoint bf(models_dir + "deepseek_v3");
    CHECK(error_of([&] { (void)moe::models::pack_hf_experts<moe::kernels::formats::fp8>(bf, 1); }) ==
          "[moe.models.format] " + models_dir + "deepseek_v3: tensor 'model.layers.1.mlp.experts.0.gate_proj.weight' is F32, not F8_E4M3 (fp8)");
}

TEST_CASE("models: a checkpoint names its experts' stored format and packs them from its bytes", "[models]") {
    using moe::models::checkpoint;
    CHECK(checkpoint(models_dir + "gpt_oss_mxfp4").expert_format(1) == "mxfp4");
    CHECK(checkpoint(models_dir + "deepseek_v3_fp8").expert_format(1) == "fp8");
    CHECK(checkpoint(models_dir + "gpt_oss").expert_format(1).empty());  // float experts
    CHECK(checkpoint(models_dir + "gpt_oss/model.gguf").expert_format(1).empty());
    const checkpoint q8(models_dir + "mixtral_q8_0/model.gguf");
    REQUIRE(q8.expert_format(0) == "q8_0");
    // All but the routed experts, then the experts from the file's blocks: the same block as
    // the full load with the same packed experts.
    const auto lean = q8.load_without_experts(0), full = q8.load(0);
    CHECK(lean.weights.w1.empty());
    CHECK(lean.spec.ffn == full.spec.ffn);
    using q8_0 = moe::kernels::formats::q8_0;
    moe::block<moe::default_arch, q8_0> a(lean.spec, lean.weights, q8.pack_experts<q8_0>(0));
    moe::block<moe::default_arch, q8_0> b(full.spec, full.weights, moe::models::pack_gguf_experts<q8_0>(*q8.gguf(), 0));
    const auto x = moe::io::read_npy_matrix<float>(models_dir + "mixtral_q8_0/x.npy");
    moe::matrix<float> ya(x.rows, x.cols), yb(x.rows, x.cols);
    a.forward(ya.view(), x.view());
    b.forward(yb.view(), x.view());
    CHECK(ya.values == yb.values);
    // GGUF GPT-OSS: the lean load keeps the experts' biases.
    const checkpoint g(models_dir + "gpt_oss/model.gguf");
    CHECK(g.load_without_experts(1).weights.b2 == g.load(1).weights.b2);
    CHECK(error_of([&] { (void)checkpoint(models_dir + "mixtral").pack_experts<moe::kernels::formats::q4_k>(0); }) ==
          "[moe.models.format] " + models_dir + "mixtral: moe does not read q4_k experts from a Hugging Face checkpoint in place");
}

namespace {

/// A numpy-written GGUF layer (gen_models_golden.py, gguf_q4_k_m) in the file's own formats W:
/// the float block on numpy's dequantization is torch's; W packed from the file's blocks runs
/// with int8 activations near it, the same bits on every arch. Returns the packed block's bytes.
template <class W>
std::size_t check_gguf_quant_layer(const std::string& dir, const std::vector<std::string>& types, const char* fmt) {
    const std::string d = models_dir + dir + "/";
    const moe::models::checkpoint ck(d + "model.gguf");
    CHECK(moe::models::gguf_expert_types(*ck.gguf(), 0) == types);
    REQUIRE(ck.expert_format(0) == fmt);
    const auto lean = ck.load_without_experts(0);
    moe::block<moe::default_arch, W> q(lean.spec, lean.weights, ck.pack_experts<W>(0));
    moe::block<moe::scalar, W> qs(lean.spec, lean.weights, ck.pack_experts<W>(0));
    const auto full = ck.load(0);  // dequantized by numpy's statement of the layouts
    moe::block<> f(full.spec, full.weights);
    const auto x = moe::io::read_npy_matrix<float>(d + "x.npy");
    const auto y_ref = moe::io::read_npy_matrix<float>(d + "y.npy");
    moe::matrix<float> yq(x.rows, x.cols), ys(x.rows, x.cols), yf(x.rows, x.cols);
    q.forward(yq.view(), x.view());
    qs.forward(ys.view(), x.view());
    f.forward(yf.view(), x.view());
    CHECK(yq.values == ys.values);
    auto rel = [&](const std::vector<float>& a) {
        double num = 0, den = 0;
        for (std::size_t i = 0; i < a.size(); ++i) {
            num += std::pow(static_cast<double>(a[i]) - y_ref.values[i], 2);
            den += std::pow(static_cast<double>(y_ref.values[i]), 2);
        }
        return std::sqrt(num / den);
    };
    CHECK(rel(yf.values) < 2e-5);  // the float block on the dequantized weights is torch's
    CHECK(rel(yq.values) < 0.02);  // int8 activations, as the single-format blocks (qwen3_moe above)
    CHECK(rel(yq.values) > 1e-5);
    return q.expert_bytes();
}

}  // namespace

TEST_CASE("models: a Q4_K_M GGUF layer runs in its own mixed formats (Q4_K gate / up, Q6_K down)", "[models][gguf]") {
    namespace fm = moe::kernels::formats;
    const std::string d = models_dir + "mixtral_q4_k_m/";
    const std::size_t HF = 256 * 256;
    // Packed: the file's bytes, (2 x 0.5625 + 0.8203) / 3 = 0.65 bytes per weight (plus sub-scales), not 4.
    CHECK(check_gguf_quant_layer<fm::mixed<fm::q4_k, fm::q6_k>>("mixtral_q4_k_m", {"Q4_K", "Q4_K", "Q6_K"}, "q4_k+q6_k") * 10 <
          7 * 3 * HF);
    CHECK(error_of([&] { (void)moe::models::checkpoint(d + "model.gguf").pack_experts<fm::q4_k>(0); }) ==
          "[moe.models.format] " + d + "model.gguf: tensor 'blk.0.ffn_down_exps.weight' is Q6_K, not q4_k");
    // Q5_K_M: Q5_K gate / up (0.6875 B / weight in the file, 0.83 packed as 6-bit codes), Q6_K down.
    CHECK(check_gguf_quant_layer<fm::mixed<fm::q5_k, fm::q6_k>>("mixtral_q5_k_m", {"Q5_K", "Q5_K", "Q6_K"}, "q5_k+q6_k") * 100 <
          85 * 3 * HF);
    // IQ4_XS experts (the "dynamic" quants' expert type): 0.53 B / weight, looked up in registers.
    CHECK(check_gguf_quant_layer<fm::iq4_xs>("mixtral_iq4_xs", {"IQ4_XS", "IQ4_XS", "IQ4_XS"}, "iq4_xs") * 100 < 55 * 3 * HF);
    // MXFP4 experts (GPT-OSS GGUFs): packed in place as mxfp4:dot (ggml's int8 dot, 0.53 B /
    // weight); the float block reads the same bytes through mxfp4's own decoder.
    CHECK(check_gguf_quant_layer<fm::mxfp4_dot>("mixtral_mxfp4", {"MXFP4", "MXFP4", "MXFP4"}, "mxfp4:dot") * 100 < 54 * 3 * HF);
    // Q3_K_M: Q3_K gate / up (0.43 B / weight in the file, 0.45 packed as 2 + 1 bit planes), Q4_K down.
    CHECK(check_gguf_quant_layer<fm::mixed<fm::q3_k, fm::q4_k>>("mixtral_q3_k_m", {"Q3_K", "Q3_K", "Q4_K"}, "q3_k+q4_k") * 100 <
          50 * 3 * HF);
    // Q2_K: Q2_K gate / up (0.33 B / weight in the file, 0.39 packed: sub-scales and mins as bytes), Q3_K down.
    CHECK(check_gguf_quant_layer<fm::mixed<fm::q2_k, fm::q3_k>>("mixtral_q2_k", {"Q2_K", "Q2_K", "Q3_K"}, "q2_k+q3_k") * 100 <
          42 * 3 * HF);
    // Q4_K_M at F = 96 (DeepSeek-V2-Lite's F = 1408 alike: not a multiple of 256): the down
    // projections in llama.cpp's fallback types, Q5_0 (from Q4_K) or Q8_0 (from Q6_K).
    const std::size_t HF96 = 256 * 96;
    CHECK(check_gguf_quant_layer<fm::mixed<fm::q4_k, fm::q5_0>>("mixtral_q4_k_m_f96", {"Q4_K", "Q4_K", "Q5_0"}, "q4_k+q5_0") * 100 <
          70 * 3 * HF96);
    CHECK(check_gguf_quant_layer<fm::mixed<fm::q4_k, fm::q8_0>>("mixtral_q4_k_m_f96_q8", {"Q4_K", "Q4_K", "Q8_0"}, "q4_k+q8_0") * 100 <
          85 * 3 * HF96);
    // Q5_K_M at F = 96: down in Q5_1 (from Q5_K: 0.75 B / weight in the file, 0.875 packed as
    // 6-bit codes) or Q8_0 (from Q6_K); gate / up Q5_K at 0.83 packed.
    CHECK(check_gguf_quant_layer<fm::mixed<fm::q5_k, fm::q5_1>>("mixtral_q5_k_m_f96", {"Q5_K", "Q5_K", "Q5_1"}, "q5_k+q5_1") * 100 <
          86 * 3 * HF96);
    CHECK(check_gguf_quant_layer<fm::mixed<fm::q5_k, fm::q8_0>>("mixtral_q5_k_m_f96_q8", {"Q5_K", "Q5_K", "Q8_0"}, "q5_k+q8_0") * 100 <
          92 * 3 * HF96);
    // A pair moe has no mixed format for loads as float32 through the same dequantizers.
    const moe::models::checkpoint nl(models_dir + "mixtral_iq4_nl/model.gguf");
    CHECK(nl.expert_format(0).empty());
    const auto full = nl.load(0);
    moe::block<> f(full.spec, full.weights);
    const auto x = moe::io::read_npy_matrix<float>(models_dir + "mixtral_iq4_nl/x.npy");
    const auto y_ref = moe::io::read_npy_matrix<float>(models_dir + "mixtral_iq4_nl/y.npy");
    moe::matrix<float> y(x.rows, x.cols);
    f.forward(y.view(), x.view());
    double ymax = 0;
    for (float v : y_ref.values) ymax = std::max(ymax, std::fabs(static_cast<double>(v)));
    CHECK(max_abs_diff(y.values, y_ref.values) <= 2e-5 * ymax);
}
