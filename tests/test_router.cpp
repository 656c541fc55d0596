// Router: properties, configuration errors (verbatim), ties, bias semantics, input types,
// determinism across executors.
#include <cmath>
#include <numeric>
#include <set>

#include "test_support.hpp"

using moe_test::error_of;

namespace {

void check_properties(const moe::routing<float>& r, const moe::router_config& cfg) {
    for (std::size_t t = 0; t < r.num_tokens; ++t) {
        std::set<int> seen;
        float sum = 0.0f;
        for (std::size_t s = 0; s < r.top_k; ++s) {
            const int e = r.index(t, s);
            REQUIRE(e >= 0);
            REQUIRE(static_cast<std::size_t>(e) < r.num_experts);
            REQUIRE(seen.insert(e).second);  // unique per token
            REQUIRE(r.weight(t, s) >= 0.0f);
            sum += r.weight(t, s);
        }
        if (cfg.renorm != moe::renormalize::none || (cfg.score == moe::score_function::softmax && !cfg.pre_softmax))
            REQUIRE(sum == Approx(cfg.scaling_factor).epsilon(1e-5));
        if (cfg.grouped()) {
            std::set<std::size_t> groups;
            for (std::size_t s = 0; s < r.top_k; ++s)
                groups.insert(static_cast<std::size_t>(r.index(t, s)) / (r.num_experts / cfg.num_groups));
            REQUIRE(groups.size() <= cfg.group_top_k);
        }
    }
}

}  // namespace

TEST_CASE("router: invariants hold for every score function and option", "[router]") {
    const auto logits = moe_test::random_logits(97, 24, 7);
    for (auto score : {moe::score_function::softmax, moe::score_function::sigmoid, moe::score_function::sqrtsoftplus})
        for (bool pre : {true, false})
            for (auto renorm : {moe::renormalize::none, moe::renormalize::sum, moe::renormalize::sum_eps})
                for (std::size_t groups : {0u, 4u}) {
                    moe::router_config c;
                    c.score = score;
                    c.pre_softmax = pre;
                    c.renorm = renorm;
                    c.renorm_eps = renorm == moe::renormalize::sum_eps ? 1e-20f : 0.0f;
                    c.top_k = 5;
                    c.scaling_factor = 1.5f;
                    if (groups) {
                        c.num_groups = groups;
                        c.group_top_k = 2;
                        c.group_score_top_m = 2;
                    }
                    CAPTURE(moe::to_string(score), pre, static_cast<int>(renorm), groups);
                    check_properties(moe::route(logits, c), c);
                }
}

TEST_CASE("router: top-k picks the largest scores in descending order, ties to the lower index", "[router]") {
    moe::matrix<float> l(1, 6);
    l.values = {1.0f, 3.0f, 3.0f, -1.0f, 3.0f, 2.0f};
    moe::router_config c = moe::presets::qwen2_moe(4);
    const auto r = moe::route(l, c);
    CHECK(r.indices == std::vector<std::int32_t>{1, 2, 4, 5});
    CHECK(r.weight(0, 0) == r.weight(0, 1));
    CHECK(r.weight(0, 2) == r.weight(0, 0));
    CHECK(r.weight(0, 3) < r.weight(0, 0));

    moe::matrix<float> flat(2, 8, 0.25f);
    const auto rf = moe::route(flat, moe::presets::mixtral());
    CHECK(rf.indices == std::vector<std::int32_t>{0, 1, 0, 1});
    CHECK(rf.weights == std::vector<float>{0.5f, 0.5f, 0.5f, 0.5f});
}

TEST_CASE("router: softmax weights match a double-precision reference", "[router]") {
    const auto logits = moe_test::random_logits(33, 13, 3, 4.0f);
    moe::router_config c = moe::presets::switch_transformer();
    c.keep_scores = true;
    const auto r = moe::route(logits, c);
    for (std::size_t t = 0; t < logits.rows; ++t) {
        double m = -INFINITY, sum = 0;
        for (std::size_t e = 0; e < logits.cols; ++e) m = std::max(m, double(logits(t, e)));
        for (std::size_t e = 0; e < logits.cols; ++e) sum += std::exp(double(logits(t, e)) - m);
        for (std::size_t e = 0; e < logits.cols; ++e) {
            const double p = std::exp(double(logits(t, e)) - m) / sum;
            // float32 rounds x - max (relative 2^-24 of |x - max| in the exponent), then a few
            // ulps from exp, the sum and the division.
            const double rel = 4 * 1.2e-7 + std::fabs(double(logits(t, e)) - m) * 6e-8;
            REQUIRE(double(r.score(t, e)) == Approx(p).epsilon(rel).margin(1e-30));
        }
        std::size_t best = 0;
        for (std::size_t e = 1; e < logits.cols; ++e)
            if (logits(t, e) > logits(t, best)) best = e;
        REQUIRE(r.index(t, 0) == static_cast<int>(best));
        REQUIRE(r.weight(t, 0) == r.score(t, best));
    }
}

TEST_CASE("router: the bias changes the selection but never the weights", "[router]") {
    moe::matrix<float> l(1, 4);
    l.values = {2.0f, 1.0f, 0.0f, -1.0f};
    moe::router_config c = moe::presets::megatron(2, moe::score_function::sigmoid);
    c.keep_scores = true;
    const auto plain = moe::route(l, c);
    CHECK(plain.indices == std::vector<std::int32_t>{0, 1});
    const std::vector<float> bias = {0.0f, 0.0f, 0.0f, 5.0f};
    const auto biased = moe::route(l, c, bias);
    CHECK(biased.indices == std::vector<std::int32_t>{3, 0});
    const float s3 = biased.score(0, 3), s0 = biased.score(0, 0);
    CHECK(biased.weight(0, 0) == Approx(s3 / (s3 + s0)));  // unbiased scores, renormalised
    CHECK(biased.weight(0, 1) == Approx(s0 / (s3 + s0)));
    CHECK(biased.scores == plain.scores);
}

TEST_CASE("router: group masks -inf and 0.0 differ exactly where HF DeepSeek-V3 says", "[router]") {
    // sigmoid(0) = 0.5 everywhere; biased keys {-0.1, -0.2, -0.4, -0.45}; groups {0,1}, {2,3};
    // the best group is kept. With the 0.0 mask, the dropped group's experts (0.0) beat the
    // kept group's negative keys, as HF DeepSeek-V3 does; with -inf they cannot be chosen.
    moe::matrix<float> l(1, 4, 0.0f);
    const std::vector<float> bias = {-0.6f, -0.7f, -0.9f, -0.95f};
    moe::router_config c = moe::presets::deepseek_v3(2, 2, 1, 1.0f);
    c.group_score_top_m = 1;
    c.mask = moe::group_mask::zero;
    auto r = moe::route(l, c, bias);
    CHECK(r.indices == std::vector<std::int32_t>{2, 3});
    CHECK(r.weights == std::vector<float>{0.5f, 0.5f});  // unbiased scores, renormalised
    c.mask = moe::group_mask::neg_inf;
    r = moe::route(l, c, bias);
    CHECK(r.indices == std::vector<std::int32_t>{0, 1});
}

TEST_CASE("router: post-softmax weights are a softmax over the chosen logits", "[router]") {
    moe::matrix<float> l(1, 5);
    l.values = {0.5f, 2.0f, -1.0f, 1.0f, 0.0f};
    const auto r = moe::route(l, moe::presets::megatron(2));
    CHECK(r.indices == std::vector<std::int32_t>{1, 3});
    const double w0 = 1.0 / (1.0 + std::exp(-1.0));
    CHECK(r.weight(0, 0) == Approx(w0).epsilon(1e-6));
    CHECK(r.weight(0, 1) == Approx(1.0 - w0).epsilon(1e-6));
}

TEST_CASE("router: renormalisation eps policies", "[router]") {
    moe::matrix<float> l(1, 3);
    l.values = {-20.0f, -21.0f, -30.0f};  // sigmoid scores ~2e-9: the clamp dominates
    moe::router_config c;
    c.score = moe::score_function::sigmoid;
    c.top_k = 2;
    c.renorm = moe::renormalize::clamp;
    c.renorm_eps = 6.103515625e-5f;
    auto r = moe::route(l, c);
    const double s0 = 1.0 / (1.0 + std::exp(20.0)), s1 = 1.0 / (1.0 + std::exp(21.0));
    CHECK(r.weight(0, 0) == Approx(s0 / 6.103515625e-5).epsilon(1e-5));
    c.renorm = moe::renormalize::sum;
    r = moe::route(l, c);
    CHECK(r.weight(0, 0) == Approx(s0 / (s0 + s1)).epsilon(1e-5));
}

TEST_CASE("router: -inf logits are masked experts, an all -inf softmax row is an error", "[router][errors]") {
    moe::matrix<float> l(2, 4);
    l.values = {-INFINITY, 1.0f, -INFINITY, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    auto r = moe::route(l, moe::presets::mixtral());
    CHECK(r.indices == std::vector<std::int32_t>{1, 3, 0, 1});
    l(1, 0) = l(1, 1) = l(1, 2) = l(1, 3) = -INFINITY;
    CHECK(error_of([&] { (void)moe::route(l, moe::presets::mixtral()); }) ==
          "[moe.router.logits] logits row 1 has no finite value: softmax is undefined");
    // sigmoid of -inf is a score of 0: valid.
    auto sig = moe::presets::megatron(2, moe::score_function::sigmoid);
    r = moe::route(l, sig);
    CHECK(r.weight(1, 0) == 0.0f);
}

TEST_CASE("router: NaN and +inf logits are rejected, naming the first bad entry", "[router][errors]") {
    auto l = moe_test::random_logits(200, 8, 1);
    l(150, 3) = NAN;
    l(170, 0) = INFINITY;
    CHECK(error_of([&] { (void)moe::route(l, moe::presets::mixtral()); }) ==
          "[moe.router.logits] logits row 150, expert 3 is nan: only finite values and -inf (a masked expert) are accepted");
    l(150, 3) = 0.0f;
    CHECK(error_of([&] { (void)moe::route(l, moe::presets::mixtral(), {}, moe_test::reversed_threads_executor{}); }) ==
          "[moe.router.logits] logits row 170, expert 0 is +inf: only finite values and -inf (a masked expert) are accepted");
}

TEST_CASE("router: configuration errors carry stable IDs", "[router][errors]") {
    const auto l = moe_test::random_logits(4, 8, 2);
    auto msg = [&](moe::router_config c, std::vector<float> bias = {}) {
        return error_of([&] { (void)moe::route(l, c, bias); });
    };
    moe::router_config c = moe::presets::mixtral();
    c.top_k = 9;
    CHECK(msg(c) == "[moe.router.top_k] k=9 exceeds num_experts=8");
    c.top_k = 0;
    CHECK(msg(c) == "[moe.router.top_k] k=0: at least one expert per token is required");
    c = moe::presets::deepseek_v3(2, 3, 1);
    CHECK(msg(c) == "[moe.router.groups] num_experts=8 is not divisible by num_groups=3");
    c = moe::presets::deepseek_v3(2, 4, 5);
    CHECK(msg(c) == "[moe.router.groups] group_top_k=5 must be in [1, num_groups=4]");
    c = moe::presets::deepseek_v3(6, 4, 2);
    CHECK(msg(c).empty());  // the 0.0 mask leaves masked experts selectable (HF DeepSeek-V3)
    c.mask = moe::group_mask::neg_inf;
    CHECK(msg(c) == "[moe.router.groups] k=6 is unreachable: group_top_k=2 groups of 2 experts hold only 4");
    c = moe::presets::deepseek_v3(2, 4, 2);
    c.group_score_top_m = 3;
    CHECK(msg(c) == "[moe.router.groups] group_score_top_m=3 must be in [0, experts per group=2]");
    c = moe::presets::mixtral();
    c.group_top_k = 2;
    CHECK(msg(c) == "[moe.router.groups] group_top_k=2 given without num_groups");
    c = moe::presets::mixtral();
    c.renorm = moe::renormalize::clamp;
    CHECK(msg(c) == "[moe.router.renorm_eps] renormalize::clamp needs renorm_eps > 0, got 0");
    c.renorm_eps = -1.0f;
    CHECK(msg(c) == "[moe.router.renorm_eps] renorm_eps=-1 must be finite and >= 0");
    c = moe::presets::mixtral();
    c.scaling_factor = INFINITY;
    CHECK(msg(c) == "[moe.router.scaling_factor] scaling_factor=inf must be finite");
    c = moe::presets::mixtral();
    CHECK(msg(c, {1.0f, 2.0f}) == "[moe.router.bias] bias has 2 entries, expected num_experts=8");
    CHECK(msg(c, std::vector<float>(8, NAN)) == "[moe.router.bias] bias[0] is not finite");
    const moe::matrix<float> none(3, 0);
    CHECK(error_of([&] { (void)moe::route(none, moe::presets::mixtral()); }) ==
          "[moe.router.num_experts] num_experts=0: logits need at least one column");
    moe::routing<float> wrong(2, 8, 2, false);
    moe::router_workspace<float> ws;
    CHECK(error_of([&] { moe::route_into(wrong, l.view(), moe::presets::mixtral(), {}, ws); }) ==
          "[moe.router.output] output routing is shaped for 2 tokens x 8 experts, k=2; the call needs 4 x 8, k=2");
    CHECK(error_of([] { (void)moe::presets::by_name("gshard"); }) ==
          "[moe.config.preset] unknown preset 'gshard' (expected one of mixtral, minimax_m2, qwen2_moe, qwen3_moe, olmoe, "
          "deepseek_v2, deepseek_v3, kimi_k2, glm4_moe, gpt_oss, llama4, granite_moe, dbrx, deepseek_v4, megatron, switch)");
    CHECK(error_of([] { (void)moe::parse_score_function("relu"); }) ==
          "[moe.config.score_function] unknown score function 'relu' (expected softmax, sigmoid or sqrtsoftplus)");
}

TEST_CASE("router: zero tokens give an empty routing", "[router]") {
    const moe::matrix<float> l(0, 8);
    const auto r = moe::route(l, moe::presets::mixtral());
    CHECK(r.num_tokens == 0);
    CHECK(r.indices.empty());
    CHECK(r.tokens_per_expert() == std::vector<std::size_t>(8, 0));
}

TEST_CASE("router: results do not depend on the executor or thread count", "[router][determinism]") {
    const auto l = moe_test::random_logits(1000, 64, 11);
    for (auto c : {moe::presets::deepseek_v3(), moe::presets::mixtral(8), moe::presets::megatron(4)}) {
        c.keep_scores = true;
        const std::vector<float> bias(64, 0.01f);
        const auto a = moe::route(l, c, bias);
        const auto b = moe::route(l, c, bias, moe_test::reversed_threads_executor{3});
        const auto d = moe::route(l, c, bias, moe_test::reversed_threads_executor{2});
        CHECK(a.indices == b.indices);
        CHECK(a.weights == b.weights);
        CHECK(a.scores == b.scores);
        CHECK(a.indices == d.indices);
        CHECK(a.weights == d.weights);
    }
}

TEST_CASE("router: route_into reuses caller memory and matches route", "[router]") {
    const auto l = moe_test::random_logits(130, 16, 5);
    const auto c = moe::presets::mixtral(3);
    moe::routing<float> out(130, 16, 3, false);
    moe::router_workspace<float> ws;
    moe::route_into(out, l.view(), c, {}, ws);
    const auto* before = ws.values.data();
    moe::route_into(out, l.view(), c, {}, ws);
    CHECK(ws.values.data() == before);
    const auto r = moe::route(l, c);
    CHECK(out.indices == r.indices);
    CHECK(out.weights == r.weights);
}

TEST_CASE("router: strided views route like contiguous copies", "[router]") {
    const auto wide = moe_test::random_logits(20, 12, 9);
    const moe::matrix_view<const float> left(wide.values.data(), 20, 8, 12);
    moe::matrix<float> copy(20, 8);
    for (std::size_t t = 0; t < 20; ++t)
        for (std::size_t e = 0; e < 8; ++e) copy(t, e) = wide(t, e);
    const auto a = moe::route(left, moe::presets::mixtral());
    const auto b = moe::route(copy, moe::presets::mixtral());
    CHECK(a.indices == b.indices);
    CHECK(a.weights == b.weights);
}

TEST_CASE("router: bf16, f16 and double logits", "[router]") {
    const auto l = moe_test::random_logits(50, 32, 4);
    moe::matrix<Eigen::bfloat16> lb(50, 32);
    moe::matrix<Eigen::half> lh(50, 32);
    moe::matrix<float> fb(50, 32), fh(50, 32);
    moe::matrix<double> ld(50, 32);
    for (std::size_t i = 0; i < l.values.size(); ++i) {
        lb.values[i] = Eigen::bfloat16(l.values[i]);
        lh.values[i] = Eigen::half(l.values[i]);
        fb.values[i] = static_cast<float>(lb.values[i]);
        fh.values[i] = static_cast<float>(lh.values[i]);
        ld.values[i] = l.values[i];
    }
    const auto c = moe::presets::deepseek_v3(4, 4, 2);
    const auto rb = moe::route(lb, c), rfb = moe::route(fb, c);
    CHECK(rb.indices == rfb.indices);  // computed in float from the widened values
    CHECK(rb.weights == rfb.weights);
    const auto rh = moe::route(lh, c), rfh = moe::route(fh, c);
    CHECK(rh.indices == rfh.indices);
    CHECK(rh.weights == rfh.weights);
    const auto rd = moe::route(ld, c);
    const auto rf = moe::route(l, c);
    static_assert(std::is_same<decltype(rd), const moe::routing<double>>::value, "double logits route in double");
    CHECK(rd.indices == rf.indices);
    for (std::size_t i = 0; i < rd.weights.size(); ++i) CHECK(rd.weights[i] == Approx(rf.weights[i]).epsilon(1e-5));
}

TEST_CASE("router: post-softmax with the 0.0 group mask choosing -inf experts gives zero weights", "[router][regression]") {
    // Found by the fuzzer (tests/fuzz/corpus/regression-post-softmax-zero-mask): the kept group
    // has negative logits, the masked group -inf; with the 0.0 mask the masked experts win,
    // and softmax over two -inf logits was -inf - -inf = NaN (undefined behaviour in exp).
    moe::matrix<float> l(1, 4);
    l.values = {-1.0f, -2.0f, -INFINITY, -INFINITY};
    moe::router_config c;
    c.score = moe::score_function::softmax;
    c.pre_softmax = false;
    c.top_k = 2;
    c.num_groups = 2;
    c.group_top_k = 1;
    c.group_score_top_m = 1;
    c.mask = moe::group_mask::zero;
    const auto r = moe::route(l, c);
    CHECK(r.indices == std::vector<std::int32_t>{2, 3});
    CHECK(r.weights == std::vector<float>{0.0f, 0.0f});
    CHECK(moe::detail::exp_nonpos<moe::scalar>(NAN) == 0.0f);
}
