// Expert sets (kernels/expert_set.hpp): a block whose experts each run in their own format.
// References: the single-format blocks on the same float weights (every row of an expert must
// be, bit for bit, the row its format's block computes), the single-format kernels on the full
// plan, and the errors verbatim.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <moe/block.hpp>
#include <moe/kernels/expert_set.hpp>

#include "test_support.hpp"

namespace {

namespace k = moe::kernels;
namespace fm = moe::kernels::formats;

struct layer {
    std::size_t E = 6, H = 256, F = 256;
    moe::block_spec spec;
    moe::block_weights w;
};

/// A GPT-OSS-like block (expert biases, the clamped SwiGLU) or a plain one, top-1 so that each
/// token's output is its expert's row times a weight of exactly 1.
layer make_layer(bool biased, std::uint64_t seed) {
    layer l;
    moe::splitmix64 rng(seed);
    auto fill = [&](std::vector<float>& v, std::size_t n, double s) {
        v.resize(n);
        for (auto& x : v) x = static_cast<float>(rng.normal() * s);
    };
    const std::size_t E = l.E, H = l.H, F = l.F;
    fill(l.w.router_w, E * H, 1.0);
    fill(l.w.w1, E * F * H, 1.0 / 16);
    fill(l.w.w3, E * F * H, 1.0 / 16);
    fill(l.w.w2, E * H * F, 1.0 / 16);
    l.spec.family = biased ? "gpt_oss" : "mixtral";
    l.spec.router = moe::presets::mixtral();
    l.spec.router.top_k = 1;
    l.spec.num_experts = E;
    l.spec.hidden = H;
    l.spec.ffn = F;
    if (biased) {
        l.spec.expert_bias = true;
        l.spec.activation = k::ffn_activation::swiglu_oai;
        fill(l.w.b1, E * F, 0.5);
        fill(l.w.b3, E * F, 0.5);
        fill(l.w.b2, E * H, 0.5);
    }
    return l;
}

moe::matrix<float> tokens(std::size_t T, std::size_t H) {
    moe::matrix<float> x(T, H);
    moe::splitmix64 rng(T * 7 + H);
    for (auto& v : x.values) v = static_cast<float>(rng.normal());
    return x;
}

/// The formats these tests name: add_converted compiles a kernel for each (the whole registry
/// is covered by moe-layer --requant and the Python tests of layer_options::expert_formats).
using test_formats = k::format_list<float, Eigen::bfloat16, fm::q8_0, fm::q4_k>;

/// A block's expert set from one format name per expert, as layer_options::expert_formats
/// groups them (experts of one name share a group, in order of first appearance).
k::expert_set<moe::default_arch> make_set(const layer& l, const std::vector<std::string>& names) {
    return k::make_expert_set<test_formats>(names, l.E, l.H, l.F, l.w.w1.data(), l.w.w3.data(), l.w.w2.data());
}

template <class W>
moe::matrix<float> run_single(const layer& l, const moe::matrix<float>& x) {
    moe::block<moe::default_arch, W> b(l.spec, l.w);
    moe::matrix<float> y(x.rows, x.cols);
    b.forward(y.view(), x);
    return y;
}

std::vector<std::uint32_t> row_bits(const moe::matrix<float>& m, std::size_t r) {
    std::vector<std::uint32_t> b(m.cols);
    std::memcpy(b.data(), m.row(r), m.cols * 4);
    return b;
}

}  // namespace

TEST_CASE("expert set: each expert's rows are its format's block's rows, bit for bit", "[expert_set][kernels]") {
    for (bool biased : {false, true}) {
        INFO("biased " << biased);
        const layer l = make_layer(biased, biased ? 11 : 12);
        const auto x = tokens(40, l.H);
        const std::vector<std::string> names{"q8_0", "q4_k", "f32", "q4_k", "q8_0", "bf16"};
        moe::block<moe::default_arch, k::per_expert> b(l.spec, l.w, make_set(l, names));
        REQUIRE(b.packed_experts().num_groups() == 4);
        CHECK(b.packed_experts().format_of(3) == "q4_k");
        CHECK(b.packed_experts().group(0).experts == std::vector<std::int32_t>{0, 4});
        moe::matrix<float> y(x.rows, x.cols);
        b.forward(y.view(), x, moe_test::reversed_threads_executor{3});
        const auto y8 = run_single<fm::q8_0>(l, x), y4 = run_single<fm::q4_k>(l, x), yf = run_single<float>(l, x),
                   yb = run_single<Eigen::bfloat16>(l, x);
        std::vector<int> seen(l.E, 0);
        for (std::size_t t = 0; t < x.rows; ++t) {
            const auto e = static_cast<std::size_t>(b.last_routing().indices[t]);
            ++seen[e];
            const auto& want = names[e] == "q8_0" ? y8 : names[e] == "q4_k" ? y4 : names[e] == "f32" ? yf : yb;
            INFO("token " << t << " expert " << e);
            CHECK(row_bits(y, t) == row_bits(want, t));
            CHECK(row_bits(y, t) != row_bits(e == 2 ? y8 : yf, t));  // the formats really differ
        }
        for (std::size_t e = 0; e < l.E; ++e) CHECK(seen[e] > 0);  // every group ran
        // Bytes: the groups' own packed sizes.
        const auto& s = b.packed_experts();
        CHECK(s.expert_bytes(0) == s.group(0).expert_bytes);
        CHECK(s.expert_bytes(2) == l.H * l.F * 3 * 4);  // f32: 3 H F floats, no padding at these sizes
        CHECK(s.expert_bytes(1) < s.expert_bytes(0));
        CHECK(s.expert_bytes(0) < s.expert_bytes(5));
        CHECK(s.bytes() == 2 * s.expert_bytes(0) + 2 * s.expert_bytes(1) + s.expert_bytes(2) + s.expert_bytes(5));
        for (std::size_t g = 0; g < s.num_groups(); ++g) CHECK(s.group(g).up_bytes + s.group(g).down_bytes == s.group(g).expert_bytes);
        for (std::size_t g = 0; g < s.num_groups(); ++g)
            if (s.group(g).format == "f32") {  // W1 and W3 interleaved (2 H F floats), then W2 (H F)
                CHECK(s.group(g).up_bytes == 2 * l.H * l.F * 4);
                CHECK(s.group(g).down_bytes == l.H * l.F * 4);
            }
    }
}

TEST_CASE("expert set: one format for all equals that format's block", "[expert_set][kernels]") {
    layer l = make_layer(false, 5);
    l.spec.router = moe::presets::mixtral();  // top-2
    const auto x = tokens(17, l.H);
    for (const char* name : {"q4_k", "f32"}) {
        moe::block<moe::default_arch, k::per_expert> b(l.spec, l.w, make_set(l, std::vector<std::string>(l.E, name)));
        CHECK(b.packed_experts().num_groups() == 1);
        moe::matrix<float> y(x.rows, x.cols);
        b.forward(y.view(), x);
        CHECK(y.values == (std::string(name) == "f32" ? run_single<float>(l, x) : run_single<fm::q4_k>(l, x)).values);
    }
}

TEST_CASE("expert set: a kept subset of packed experts plus requantized ones", "[expert_set][kernels]") {
    // The file's experts in Q4_K, experts 1 and 4 requantized to Q8_0 from the float weights.
    const layer l = make_layer(false, 21);
    const auto q = k::quantize_experts<fm::q4_k>(l.w.w1.data(), l.w.w3.data(), l.w.w2.data(), l.E, l.H, l.F);
    const auto all = k::pack_quant_experts<fm::q4_k>(q, l.H, l.F);
    const std::vector<std::int32_t> kept{0, 2, 3, 5};
    const auto sub = all.subset(kept);
    REQUIRE(sub.num_experts() == 4);
    CHECK(std::memcmp(sub.up(2, 0), all.up(3, 0), all.expert_bytes()) == 0);
    k::expert_set<moe::default_arch> s(l.E, l.H, l.F);
    s.add<fm::q4_k>(kept, all.subset(kept));
    CHECK(moe_test::error_of([&] { s.validate(); }) == "[moe.kernels.experts] expert 1 of 6 has no format (add it to a group)");
    k::add_converted<test_formats>(s, {1, 4}, k::parse_weight_format("q8_0"), l.w.w1.data(), l.w.w3.data(), l.w.w2.data());
    s.validate();
    CHECK(s.format_of(4) == "q8_0");
    moe::block<moe::default_arch, k::per_expert> b(l.spec, l.w, std::move(s));
    moe::block<moe::default_arch, k::per_expert> c(l.spec, l.w, make_set(l, {"q4_k", "q8_0", "q4_k", "q4_k", "q8_0", "q4_k"}));
    const auto x = tokens(23, l.H);
    moe::matrix<float> yb(x.rows, x.cols), yc(x.rows, x.cols);
    b.forward(yb.view(), x);
    c.forward(yc.view(), x);
    CHECK(yb.values == yc.values);
    CHECK(moe_test::error_of([&] { (void)all.subset({6}); }) == "[moe.kernels.experts] expert 6 outside [0, 6)");
}

TEST_CASE("expert set: bad input gets stable errors", "[expert_set][errors]") {
    // layer_options::expert_formats' own errors are tested from Python (tests/python/test_pipeline.py).
    const layer l = make_layer(false, 3);
    auto add = [&](std::vector<std::int32_t> ids, const char* name, k::expert_set<moe::default_arch>& s) {
        k::add_converted<test_formats>(s, std::move(ids), k::parse_weight_format(name), l.w.w1.data(), l.w.w3.data(), l.w.w2.data());
    };
    k::expert_set<moe::default_arch> s(l.E, l.H, l.F);
    add({0, 1}, "q8_0", s);
    CHECK(moe_test::error_of([&] { add({1}, "f32", s); }) == "[moe.kernels.experts] expert 1 is already in the group of q8_0");
    CHECK(moe_test::error_of([&] { add({7}, "f32", s); }) == "[moe.kernels.experts] expert 7 outside [0, 6)");
    const auto q = k::quantize_experts<fm::q8_0>(l.w.w1.data(), l.w.w3.data(), l.w.w2.data(), 2, l.H, l.F);
    CHECK(moe_test::error_of([&] { s.add<fm::q8_0>({2, 3, 4}, k::pack_quant_experts<fm::q8_0>(q, l.H, l.F)); }) ==
          "[moe.kernels.experts] q8_0: packed experts are 2 x 256 x 256 for 3 experts of hidden 256, ffn 256");
    CHECK(moe_test::error_of([&] { add({2, 3, 2}, "f32", s); }) == "[moe.kernels.experts] expert 2 is listed twice for f32");
    // An incomplete set refuses to run as well as to make a block (run checks a count, O(1)).
    const auto x = tokens(4, l.H);
    moe::matrix<float> logits(4, l.E);
    const auto plan = moe::make_plan(moe::route(logits, moe::presets::mixtral(1)));
    moe::matrix<float> rows(plan.num_rows(), l.H);
    k::ffn_workspace ws;
    CHECK(moe_test::error_of([&] { s.run(rows.view(), moe::matrix_view<const float>(x.view()), plan, ws, moe::serial_executor{}); }) ==
          "[moe.kernels.experts] expert 2 of 6 has no format (add it to a group)");
    CHECK(moe_test::error_of([&] { moe::block<moe::default_arch, k::per_expert> b(l.spec, l.w, std::move(s)); }) ==
          "[moe.kernels.experts] expert 2 of 6 has no format (add it to a group)");
    CHECK(moe_test::error_of([&] { (void)make_set(l, {"q8_0", "f32"}); }) == "[moe.kernels.experts] 2 format names for 6 experts");
}

// llama.cpp's quantizer (llama_tensor_get_type) stores a k-quant tensor whose rows are not a
// multiple of 256 in a fallback type; the pair runs where the k-quant alone refuses the shape.
static_assert(std::is_same<fm::gguf_fallback_t<fm::q4_k>, fm::q5_0>::value, "Q4_K -> Q5_0");
static_assert(std::is_same<fm::gguf_fallback_t<fm::q6_k>, fm::q8_0>::value, "Q6_K -> Q8_0");
static_assert(std::is_same<fm::gguf_fallback_t<fm::q5_k>, fm::q5_1>::value, "Q5_K -> Q5_1");
static_assert(std::is_same<fm::gguf_fallback_t<fm::q2_k>, fm::iq4_nl>::value &&
                  std::is_same<fm::gguf_fallback_t<fm::q3_k>, fm::iq4_nl>::value &&
                  std::is_same<fm::gguf_fallback_t<fm::iq4_xs>, fm::iq4_nl>::value,
              "Q2_K, Q3_K, IQ4_XS -> IQ4_NL");
static_assert(std::is_same<fm::gguf_fallback_t<fm::q8_0>, fm::q8_0>::value && fm::block_of_v<fm::q4_k> == 256 &&
                  fm::block_of_v<fm::q5_0> == 32 && fm::block_of_v<fm::int8> == 1 && fm::block_of_v<float> == 1,
              "32-blocks are their own fallback; block_of");

TEST_CASE("expert_set: a k-quant whose down rows do not fit its block runs with llama.cpp's fallback", "[kernels][experts]") {
    const std::size_t E = 3, H = 256, F = 96;  // F = 96: a multiple of 32, not of 256
    std::vector<float> w1(E * F * H), w3(E * F * H), w2(E * H * F);
    moe::splitmix64 rng(11);
    for (auto* v : {&w1, &w3, &w2})
        for (auto& x : *v) x = static_cast<float>(rng.normal() / 16);
    CHECK_THROWS_WITH(k::quantize_experts<fm::q4_k>(w1.data(), w3.data(), w2.data(), E, H, F),
                      "[moe.kernels.format] q4_k: K=96 is not a positive multiple of the block 256");
    using pair = fm::mixed<fm::q4_k, fm::gguf_fallback_t<fm::q4_k>>;
    CHECK(std::string(pair::name) == "q4_k+q5_0");
    const auto q = k::quantize_experts<pair>(w1.data(), w3.data(), w2.data(), E, H, F);
    const auto packed = k::pack_quant_experts<pair>(q, H, F);
    // Reference: the float experts on the dequantized weights (gate / up from their q4_k bytes,
    // down from its q5_0 bytes): only the int8 activations differ, within about 1% here;
    // either projection read in the wrong format would be far off.
    auto deq = [](auto fmt, const std::vector<fm::quant_matrix>& ms, std::size_t n) {
        std::vector<float> out(ms.size() * n);
        for (std::size_t e = 0; e < ms.size(); ++e) decltype(fmt)::dequantize(fm::view_of(ms[e]), out.data() + e * n);
        return out;
    };
    const auto d1 = deq(fm::q4_k{}, q.w1, F * H), d3 = deq(fm::q4_k{}, q.w3, F * H), d2 = deq(fm::q5_0{}, q.w2, H * F);
    const auto x = tokens(16, H);
    moe::matrix<float> logits(16, E);
    for (std::size_t t = 0; t < 16; ++t) logits(t, t % E) = 1.0f;
    const auto plan = moe::make_plan(moe::route(logits, moe::presets::mixtral(1)));
    moe::matrix<float> yq(plan.num_rows(), H), yf(plan.num_rows(), H);
    k::ffn_workspace ws;
    ws.reserve(k::workspace_size(plan, packed).total());
    k::quant_expert_ffn<moe::scalar>(yq.view(), moe::matrix_view<const float>(x.view()), plan, packed, ws.data(), ws.size(), moe::serial_executor{});
    const auto pf = k::pack_experts<moe::scalar>(d1.data(), d3.data(), d2.data(), E, H, F);
    k::ffn_workspace wf;
    wf.reserve(k::workspace_size(plan, pf).total());
    k::expert_ffn(yf.view(), moe::matrix_view<const float>(x.view()), plan, pf, wf.data(), wf.size(), moe::serial_executor{});
    double num = 0, den = 0;
    for (std::size_t i = 0; i < yf.values.size(); ++i) {
        num += (yq.values[i] - yf.values[i]) * (yq.values[i] - yf.values[i]);
        den += yf.values[i] * yf.values[i];
    }
    CHECK(den > 0);
    CHECK(std::sqrt(num / den) < 0.02);
}
