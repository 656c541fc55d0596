// Every SIMD arch this translation unit is compiled for must give bit-identical scores,
// indices and weights to moe::scalar. Built once per arch flag set (see tests/CMakeLists.txt).
#include <tuple>

#include "test_support.hpp"

namespace {

std::vector<moe::router_config> configs() {
    std::vector<moe::router_config> out = {moe::presets::mixtral(), moe::presets::qwen2_moe(8, true),
                                           moe::presets::megatron(4), moe::presets::switch_transformer(),
                                           moe::presets::megatron(4, moe::score_function::sqrtsoftplus),
                                           moe::presets::deepseek_v3(6, 4, 2)};
    for (auto& c : out) c.keep_scores = true;
    return out;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("arch: SIMD routing is bit-identical to the scalar reference", "[arch][determinism]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    INFO("arch " << TestType::name());
    // Widths that exercise full blocks and every tail: 1..33, 60, 64, 100, 256; 150 tokens cover
    // several 64-token tiles, each with whole SIMD tiles and leftover rows.
    std::vector<std::size_t> widths;
    for (std::size_t e = 1; e <= 33; ++e) widths.push_back(e);
    for (std::size_t e : {60u, 64u, 100u, 256u}) widths.push_back(e);
    for (std::size_t E : widths) {
        for (float scale : {1.0f, 30.0f}) {
            auto l = moe_test::random_logits(150, E, E * 131 + static_cast<std::size_t>(scale), scale);
            if (E > 3) l(5, 2) = -INFINITY;
            std::vector<float> bias(E);
            for (std::size_t e = 0; e < E; ++e) bias[e] = 0.01f * static_cast<float>(e % 7);
            for (auto c : configs()) {
                if (c.grouped() && (E % c.num_groups != 0 || c.top_k > E / 2)) continue;
                if (c.top_k > E) c.top_k = E;
                for (bool with_bias : {false, true}) {
                    // Without a bias (and groups) the SIMD tile path finishes weights in vectors.
                    const std::vector<float> b = with_bias ? bias : std::vector<float>{};
                    CAPTURE(E, scale, moe::to_string(c.score), c.top_k, c.pre_softmax, with_bias);
                    const auto ref = moe::route<moe::scalar>(l, c, b);
                    const auto got = moe::route<TestType>(l, c, b);
                    REQUIRE(got.indices == ref.indices);
                    REQUIRE(got.weights == ref.weights);
                    REQUIRE(got.scores == ref.scores);
                }
            }
        }
    }
}

TEMPLATE_LIST_TEST_CASE("arch: bad logits get the scalar reference's error, wherever the row is", "[arch][errors]",
                        moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    for (std::size_t row : {0u, 5u, 15u, 16u, 63u, 64u, 100u, 149u}) {
        for (float badv : {NAN, INFINITY, -INFINITY}) {
            auto l = moe_test::random_logits(150, 24, row);
            for (std::size_t e = 0; e < 24; ++e)
                if (badv == -INFINITY || e == 7) l(row, e) = badv;  // -inf: the whole row
            for (const auto& c : configs()) {
                CAPTURE(row, badv, moe::to_string(c.score));
                const std::string want = moe_test::error_of([&] { (void)moe::route<moe::scalar>(l, c); });
                const std::string got = moe_test::error_of([&] { (void)moe::route<TestType>(l, c); });
                REQUIRE(got == want);
                if (badv == -INFINITY && c.score != moe::score_function::softmax) REQUIRE(want.empty());
                else REQUIRE_FALSE(want.empty());
            }
        }
    }
}

TEMPLATE_LIST_TEST_CASE("arch: exp and log1p kernels match the scalar lanes bit for bit", "[arch]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    using O = moe::detail::lane_ops<TestType>;
    constexpr std::size_t W = O::width;
    std::vector<float> xs;
    for (float x = -110.0f; x <= 0.0f; x += 0.0137f) xs.push_back(x);
    xs.push_back(-0.0f);
    xs.push_back(-INFINITY);
    while (xs.size() % W) xs.push_back(0.0f);
    std::vector<float> out(xs.size());
    for (std::size_t i = 0; i < xs.size(); i += W)
        O::store(out.data() + i, moe::detail::exp_nonpos<TestType>(O::load(xs.data() + i)));
    for (std::size_t i = 0; i < xs.size(); ++i) {
        CAPTURE(xs[i]);
        REQUIRE(out[i] == moe::detail::exp_nonpos<moe::scalar>(xs[i]));
    }
    for (std::size_t i = 0; i < xs.size(); i += W)
        O::store(out.data() + i, moe::detail::sqrt_softplus<TestType>(O::load(xs.data() + i) + O::splat(50.0f)));
    for (std::size_t i = 0; i < xs.size(); ++i) REQUIRE(out[i] == moe::detail::sqrt_softplus<moe::scalar>(xs[i] + 50.0f));
}

TEMPLATE_LIST_TEST_CASE("arch: the packed gate kernel is bit-identical to the scalar reference", "[arch][gate]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    for (std::size_t E : {3u, 8u, 20u, 64u}) {
        const auto x = moe_test::random_logits(29, 45, E, 1.0f);
        const auto w = moe_test::random_logits(E, 45, E + 1, 0.2f);
        moe::matrix<float> ref(29, E), got(29, E);
        moe::gate_into<moe::scalar>(ref.view(), x.view(), moe::pack_gate<moe::scalar>(w.view()));
        moe::gate_into<TestType>(got.view(), x.view(), moe::pack_gate<TestType>(w.view()),
                                 {}, moe_test::reversed_threads_executor{2});
        CAPTURE(E);
        REQUIRE(got.values == ref.values);
    }
    const auto w = moe_test::random_logits(20, 8, 1);
    if (!std::is_same<TestType, moe::scalar>::value) {
        moe::matrix<float> l(2, 20);
        const moe::matrix<float> x(2, 8);
        CHECK_FALSE(moe_test::error_of([&] {
                        moe::gate_into<TestType>(l.view(), x.view(), moe::pack_gate<moe::scalar>(w.view()));
                    }).empty());
    }
}

TEMPLATE_LIST_TEST_CASE("arch: bf16 and f16 logits route like their float widening, bit for bit", "[arch]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    const auto l = moe_test::random_logits(70, 40, 3);
    moe::matrix<Eigen::bfloat16> lb(70, 40);
    moe::matrix<Eigen::half> lh(70, 40);
    moe::matrix<float> fb(70, 40), fh(70, 40);
    for (std::size_t i = 0; i < l.values.size(); ++i) {
        lb.values[i] = Eigen::bfloat16(l.values[i]);
        lh.values[i] = Eigen::half(l.values[i]);
        fb.values[i] = static_cast<float>(lb.values[i]);
        fh.values[i] = static_cast<float>(lh.values[i]);
    }
    lb(33, 5) = Eigen::bfloat16(NAN);
    for (const auto& c : configs()) {
        CAPTURE(moe::to_string(c.score), c.top_k);
        const auto rh = moe::route<TestType>(lh, c), ref = moe::route<moe::scalar>(fh, c);
        REQUIRE(rh.indices == ref.indices);
        REQUIRE(rh.weights == ref.weights);
        REQUIRE(rh.scores == ref.scores);
        REQUIRE(moe_test::error_of([&] { (void)moe::route<TestType>(lb, c); }) ==
                "[moe.router.logits] logits row 33, expert 5 is nan: only finite values and -inf (a masked expert) are accepted");
    }
}

TEMPLATE_LIST_TEST_CASE("arch: combine is bit-identical to the scalar reference", "[arch][dispatch]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    // k = 70 takes combine's multi-pass path (more than 64 slots per token).
    for (auto [E, k] : {std::pair<std::size_t, std::size_t>{16, 4}, {80, 70}}) {
        const auto r = moe::route(moe_test::random_logits(50, E, 4), moe::presets::qwen2_moe(k, true));
        const auto p = moe::make_plan(r, 4);
        for (std::size_t H : {1u, 15u, 64u, 100u}) {
            const auto out = moe_test::random_logits(p.num_rows(), H, H);
            moe::matrix<float> ref(50, H), got(50, H);
            moe::combine<moe::scalar>(ref.view(), out.view(), p, r);
            moe::combine<TestType>(got.view(), out.view(), p, r, moe_test::reversed_threads_executor{2});
            CAPTURE(E, k, H);
            REQUIRE(got.values == ref.values);
        }
    }
}

TEMPLATE_LIST_TEST_CASE("arch: large gathers and combines (streaming stores) match the scalar path", "[arch][dispatch]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    // 1024 x 4096 floats = 16 MiB: above detail::gather_stream_bytes, so SIMD archs stream.
    const std::size_t T = 1024, H = 4096;
    STATIC_REQUIRE(moe::detail::gather_stream_bytes <= T * H * sizeof(float));
    const auto r = moe::route(moe_test::random_logits(T, 8, 1), moe::presets::mixtral());
    const auto p = moe::make_plan(r, 16);
    const auto x = moe_test::random_logits(T, H, 2);
    moe::matrix<float> rows_ref(p.num_rows(), H), rows(p.num_rows(), H, 5.0f);
    moe::gather<moe::scalar>(rows_ref.view(), x.view(), p);
    moe::gather<TestType>(rows.view(), x.view(), p, moe_test::reversed_threads_executor{2});
    REQUIRE(rows.values == rows_ref.values);
    moe::matrix<float> y_ref(T, H), y(T, H, 5.0f);
    moe::combine<moe::scalar>(y_ref.view(), rows_ref.view(), p, r);
    moe::combine<TestType>(y.view(), rows.view(), p, r, moe_test::reversed_threads_executor{2});
    REQUIRE(y.values == y_ref.values);
}
