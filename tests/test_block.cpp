// The sparse MoE block against the torch statement of HF MixtralSparseMoeBlock
// (tests/gen_layer_golden.py). Tolerance 1e-4 of max |y|: the reference evaluates the experts in
// float64 from the same float32 weights; ours accumulates float32 FMA chains over K <= 48, whose
// rounding is ~K * 2^-24 of the partial sums, and the routing (float32 softmax, top-2) is the
// same decision on this data. A wrong expert, weight or row would be O(1).
#include <moe/block.hpp>

#include "test_support.hpp"

#include <type_traits>

namespace {

const std::string dir = std::string(MOE_TEST_DATA_DIR) + "/layer/";

std::vector<float> floats(const std::string& name) {
    const auto a = moe::io::read_npy(dir + name + ".npy");
    std::vector<float> v(a.size());
    std::memcpy(v.data(), a.bytes.data(), v.size() * 4);
    return v;
}

template <class W>
std::vector<W> as(const std::vector<float>& v) {
    return std::vector<W>(v.begin(), v.end());
}

template <class W>
moe::matrix<float> run_block(const moe::layer_options& o) {
    const auto router = moe::io::read_npy_matrix<float>(dir + "router.npy");
    const auto x = moe::io::read_npy_matrix<float>(dir + "x.npy");
    const auto w1 = as<W>(floats("w1")), w3 = as<W>(floats("w3")), w2 = as<W>(floats("w2"));
    moe::block<moe::default_arch, W> block(router.view(), w1.data(), w3.data(), w2.data(), 40, o);
    moe::matrix<float> y(x.rows, x.cols);
    block.forward(y.view(), x, moe_test::reversed_threads_executor{2});
    return y;
}

double max_abs(const std::vector<float>& v) {
    double m = 0;
    for (float f : v) m = std::max(m, static_cast<double>(std::fabs(f)));
    return m;
}

}  // namespace

TEST_CASE("block: the sparse MoE block matches HF MixtralSparseMoeBlock", "[layer][golden]") {
    const auto want = moe::io::read_npy_matrix<float>(dir + "y.npy");
    const auto y = run_block<float>({});
    const double scale = max_abs(want.values);
    REQUIRE(scale > 0.1);
    for (std::size_t i = 0; i < want.values.size(); ++i) {
        CAPTURE(i);
        REQUIRE(std::fabs(y.values[i] - want.values[i]) <= 1e-4 * scale);
    }
    // bf16 weights: the same layer up to the weights' rounding (8-bit mantissas: ~2^-9 relative
    // per weight, averaging out over K terms); 2% of max |y| bounds it on this data.
    const auto yb = run_block<Eigen::bfloat16>({});
    for (std::size_t i = 0; i < want.values.size(); ++i) REQUIRE(std::fabs(yb.values[i] - want.values[i]) <= 2e-2 * scale);
}

TEST_CASE("block: capacity switches off or never binding give the dropless output", "[layer]") {
    const auto dropless = run_block<float>({});
    moe::layer_options o;
    o.capacity = true;
    o.drop.capacity.factor = 100.0;  // never binding
    o.drop.reroute = true;
    CHECK(run_block<float>(o).values == dropless.values);
    o.drop.capacity.factor = 0.5;  // binding: some tokens lose an expert
    CHECK(run_block<float>(o).values != dropless.values);
    o.fill_in = true;
    o.capacity = false;
    CHECK(moe_test::error_of([&] { (void)run_block<float>(o); }) ==
          "[moe.layer.options] fill_in needs capacity: set layer_options::capacity");
}

TEST_CASE("block: quantized experts (weight-only fp8) equal the f32 layer on the dequantized weights", "[layer][formats]") {
    // fp8 dequantizes each weight once and multiplies with fp32 FMAs in k order: the block with
    // fp8 experts is bit for bit the f32 block given the dequantized weights.
    namespace fm = moe::kernels::formats;
    const auto router = moe::io::read_npy_matrix<float>(dir + "router.npy");
    const auto x = moe::io::read_npy_matrix<float>(dir + "x.npy");
    const auto w1 = floats("w1"), w3 = floats("w3"), w2 = floats("w2");
    const auto q = moe::kernels::quantize_experts<fm::fp8>(w1.data(), w3.data(), w2.data(), 4, 48, 40);
    moe::block<moe::default_arch, fm::fp8> block(router.view(), q, 40);
    std::vector<float> d1(w1.size()), d3(w3.size()), d2(w2.size());
    for (std::size_t e = 0; e < 4; ++e) {
        fm::fp8::dequantize(fm::view_of(q.w1[e]), d1.data() + e * 40 * 48);
        fm::fp8::dequantize(fm::view_of(q.w3[e]), d3.data() + e * 40 * 48);
        fm::fp8::dequantize(fm::view_of(q.w2[e]), d2.data() + e * 48 * 40);
    }
    moe::block<moe::default_arch, float> ref(router.view(), d1.data(), d3.data(), d2.data(), 40);
    moe::matrix<float> y(x.rows, x.cols), yr(x.rows, x.cols);
    block.forward(y.view(), x, moe_test::reversed_threads_executor{2});
    ref.forward(yr.view(), x);
    CHECK(y.values == yr.values);
    CHECK(y.values != floats("y"));  // the quantization is visible
    // The float-weight constructor quantizes with the same reference quantizer.
    moe::block<moe::default_arch, fm::fp8> from_float(router.view(), w1.data(), w3.data(), w2.data(), 40);
    moe::matrix<float> yf(x.rows, x.cols);
    from_float.forward(yf.view(), x);
    CHECK(yf.values == y.values);
    CHECK(block.expert_bytes() < 40 * 48 * 3 + 3 * 64 * 16);
}

TEST_CASE("block: the router-and-experts constructor is the spec constructor of a plain block", "[layer]") {
    // One class: a Mixtral-structured block built from (router, w1, w3, w2) and the same block
    // described by a block_spec give the same bits; the old names are aliases of it.
    static_assert(std::is_same<moe::sparse_moe_block<moe::default_arch, float>, moe::block<moe::default_arch, float>>::value, "");
    static_assert(std::is_same<moe::models::moe_block<moe::scalar, moe::kernels::formats::q8_0>,
                               moe::block<moe::scalar, moe::kernels::formats::q8_0>>::value,
                  "");
    const auto router = moe::io::read_npy_matrix<float>(dir + "router.npy");
    const auto x = moe::io::read_npy_matrix<float>(dir + "x.npy");
    moe::block_weights w;
    w.router_w = router.values;
    w.w1 = floats("w1");
    w.w3 = floats("w3");
    w.w2 = floats("w2");
    moe::block_spec s;
    s.family = "mixtral";
    s.router = moe::presets::mixtral();
    s.num_experts = 4;
    s.hidden = 48;
    s.ffn = 40;
    moe::layer_options o;
    o.capacity = true;
    o.drop.capacity.factor = 0.5;
    o.drop.reroute = true;
    moe::block<moe::default_arch, moe::kernels::formats::int8> a(router.view(), w.w1.data(), w.w3.data(), w.w2.data(), 40, o);
    moe::block<moe::default_arch, moe::kernels::formats::int8> b(s, w, o);
    moe::matrix<float> ya(x.rows, x.cols), yb(x.rows, x.cols);
    a.forward(ya.view(), x);
    b.forward(yb.view(), x, moe_test::reversed_threads_executor{2});
    CHECK(ya.values == yb.values);
    CHECK(a.last_routing().indices == b.last_routing().indices);
    CHECK(a.last_capacity().dropped.size() == b.last_capacity().dropped.size());
    CHECK(a.options().router.keep_scores);  // reroute ranks by scores: the fix-up kept them
    auto four = moe::stages::experts<moe::default_arch, float>::pack(w.w1.data(), w.w3.data(), w.w2.data(), 4, 48, 40, o);
    CHECK(moe_test::error_of([&] { moe::block<> c(moe::matrix_view<const float>(router.values.data(), 3, 48), std::move(four), o); }) ==
          "[moe.layer.shape] router is 3 x 48, experts 4 x hidden 48");
}

TEST_CASE("block: DeepSeek-V4's recipe (sqrt-softplus router, clamped SwiGLU on routed and shared experts)", "[layer][arch]") {
    // The activation silu(min(h1, L)) * clamp(h3, -L, L) against a float64 statement of it over
    // the block's own routing (checked by the router goldens), with L small enough to bind; and
    // the same bits on every arch.
    const std::size_t E = 4, H = 48, F = 40, Fs = 16;
    const auto router = moe::io::read_npy_matrix<float>(dir + "router.npy");
    const auto x = moe::io::read_npy_matrix<float>(dir + "x.npy");
    moe::block_weights w;
    w.router_w = router.values;
    w.selection_bias = {0.05f, -0.02f, 0.0f, 0.01f};
    w.w1 = floats("w1");
    w.w3 = floats("w3");
    w.w2 = floats("w2");
    moe::splitmix64 rng(7);
    for (auto* v : {&w.s1, &w.s3, &w.s2}) {
        v->resize(Fs * H);
        for (auto& e : *v) e = static_cast<float>(rng.uniform() - 0.5) * 0.3f;
    }
    moe::block_spec s;
    s.family = "deepseek_v4";
    s.router = moe::presets::deepseek_v4(2, 1.5f);
    s.num_experts = E;
    s.hidden = H;
    s.ffn = F;
    s.shared_ffn = Fs;
    s.selection_bias = true;
    s.activation = moe::kernels::ffn_activation::swiglu_clamp;
    s.swiglu_limit = 0.25f;
    auto run = [&](auto arch, moe::routing<float>* r = nullptr) {
        moe::block<decltype(arch), float> b(s, w);
        moe::matrix<float> y(x.rows, x.cols);
        b.forward(y.view(), x);
        if (r) *r = b.last_routing();
        return y.values;
    };
    moe::routing<float> r;
    const auto y = run(moe::scalar{}, &r);
    const double L = s.swiglu_limit;
    std::size_t clamped_gate = 0, clamped_up = 0;
    auto mlp = [&](const float* w1, const float* w3, const float* w2, std::size_t f, std::size_t t, std::vector<double>& out) {
        std::vector<double> a(f);
        for (std::size_t j = 0; j < f; ++j) {
            double h1 = 0, h3 = 0;
            for (std::size_t h = 0; h < H; ++h) {
                h1 += static_cast<double>(w1[j * H + h]) * x(t, h);
                h3 += static_cast<double>(w3[j * H + h]) * x(t, h);
            }
            clamped_gate += h1 > L;
            clamped_up += std::fabs(h3) > L;
            const double g = std::min(h1, L), u = std::max(-L, std::min(h3, L));
            a[j] = g / (1.0 + std::exp(-g)) * u;
        }
        out.assign(H, 0.0);
        for (std::size_t h = 0; h < H; ++h)
            for (std::size_t j = 0; j < f; ++j) out[h] += static_cast<double>(w2[h * f + j]) * a[j];
    };
    double worst = 0, ymax = 0;
    std::vector<double> o;
    for (std::size_t t = 0; t < x.rows; ++t) {
        std::vector<double> ref(H, 0.0);
        for (std::size_t k = 0; k < r.top_k; ++k) {
            const auto e = static_cast<std::size_t>(r.index(t, k));
            mlp(w.w1.data() + e * F * H, w.w3.data() + e * F * H, w.w2.data() + e * H * F, F, t, o);
            for (std::size_t h = 0; h < H; ++h) ref[h] += r.weight(t, k) * o[h];
        }
        mlp(w.s1.data(), w.s3.data(), w.s2.data(), Fs, t, o);
        for (std::size_t h = 0; h < H; ++h) {
            ref[h] += o[h];
            worst = std::max(worst, std::fabs(ref[h] - y[t * H + h]));
            ymax = std::max(ymax, std::fabs(ref[h]));
        }
    }
    CHECK(clamped_gate > 0);
    CHECK(clamped_up > 0);
    CAPTURE(worst, ymax);
    CHECK(worst <= 1e-5 * ymax);
    std::apply([&](auto... a) { (void)std::initializer_list<int>{([&] {
                                    if (moe_test::arch_runs_here<decltype(a)>()) CHECK(run(a) == y);
                                }(), 0)...}; },
               moe_test::archs{});
}
