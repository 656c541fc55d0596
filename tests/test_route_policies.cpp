// moe/route_policies.hpp: top-p (dynamic k), null experts, expert choice, Sinkhorn, hash routing and
// zero-computation experts.
#include <cmath>
#include <numeric>
#include <set>

#include <moe/route_policies.hpp>

#include "test_support.hpp"

using moe_test::error_of;

TEST_CASE("top-p: the fewest experts whose mass reaches p, within [min_k, max_k]", "[selection]") {
    const auto l = moe_test::random_logits(200, 16, 8);
    for (double p : {0.3, 0.6, 0.9, 1.0}) {
        moe::top_p_config cfg;
        cfg.p = p;
        cfg.max_k = 6;
        cfg.min_k = 2;
        cfg.keep_scores = true;
        const auto r = moe::route_top_p(l, cfg);
        CHECK(r.top_k == 6);
        for (std::size_t t = 0; t < r.num_tokens; ++t) {
            double mass = 0, before_last = 0;
            std::size_t n = 0;
            for (std::size_t s = 0; s < r.top_k; ++s)
                if (r.index(t, s) >= 0) {
                    before_last = mass;
                    mass += r.weight(t, s);
                    ++n;
                    REQUIRE(r.weight(t, s) == r.score(t, static_cast<std::size_t>(r.index(t, s))));
                }
            REQUIRE(n >= 2);
            REQUIRE(n <= 6);
            if (n < 6) REQUIRE(mass >= p - 1e-6);          // kept mass reaches p unless capped
            if (n > 2) REQUIRE(before_last < p + 1e-6);     // and no expert more than needed
        }
        const double mean_k = moe::mean_experts_per_token(r);
        CHECK(mean_k >= 2.0);
        CHECK(mean_k <= 6.0);
    }
}

TEST_CASE("top-p: variable slots go through capacity and dispatch unchanged", "[selection]") {
    const auto l = moe_test::random_logits(256, 8, 12);
    moe::top_p_config cfg;
    cfg.p = 0.7;
    auto r = moe::route_top_p(l, cfg);
    std::size_t routed = 0;
    for (auto i : r.indices) routed += i >= 0;
    const auto plan = moe::make_plan(r);
    CHECK(plan.num_rows() == routed);
    moe::drop_config d;
    d.capacity.factor = 1.0;
    const auto rep = moe::apply_capacity(r, d);
    std::size_t after = 0;
    for (auto i : r.indices) after += i >= 0;
    CHECK(after + rep.dropped.size() == routed);  // nothing lost: routed or reported as dropped
}

TEST_CASE("null experts: slots on null experts become empty", "[selection]") {
    const auto l = moe_test::random_logits(100, 12, 5);  // 8 real + 4 null
    auto cfg = moe::presets::mixtral(2);
    cfg.keep_scores = true;
    const auto full = moe::route(l, cfg);
    const auto r = moe::strip_null_experts(full, 8);
    CHECK(r.num_experts == 8);
    std::size_t null_slots = 0;
    for (std::size_t i = 0; i < full.indices.size(); ++i) {
        if (full.indices[i] >= 8) {
            ++null_slots;
            REQUIRE(r.indices[i] == -1);
            REQUIRE(r.weights[i] == 0.0f);
        } else {
            REQUIRE(r.indices[i] == full.indices[i]);
            REQUIRE(r.weights[i] == full.weights[i]);
        }
    }
    CHECK(null_slots > 0);
    CHECK(moe::mean_experts_per_token(r) == Approx(2.0 - static_cast<double>(null_slots) / 100.0));
    CHECK(r.score(3, 7) == full.score(3, 7));
    CHECK(moe_test::error_of([&] { (void)moe::strip_null_experts(full, 13); }) ==
          "[moe.selection.null_experts] num_real=13 must be in [1, num_experts=12]");
}

TEST_CASE("expert choice: every expert takes exactly C tokens, ties to the lower token", "[selection]") {
    const auto l = moe_test::random_logits(64, 8, 21);
    moe::expert_choice_config cfg;
    cfg.capacity_factor = 1.5;  // C = ceil(64 * 1.5 / 8) = 12
    const auto r = moe::route_expert_choice(l, cfg);
    for (std::size_t n : r.tokens_per_expert()) CHECK(n == 12);
    moe::matrix<float> flat(10, 2, 0.0f);
    cfg.capacity = 3;
    const auto rt = moe::route_expert_choice(flat, cfg);
    for (std::size_t t = 0; t < 10; ++t) {
        CHECK(rt.index(t, 0) == (t < 3 ? 0 : -1));
        CHECK(rt.index(t, 1) == (t < 3 ? 1 : -1));
    }
}

TEST_CASE("sinkhorn: balanced columns, converged", "[selection]") {
    const auto l = moe_test::random_logits(128, 8, 3);
    moe::matrix<double> out(128, 8);
    const auto info = moe::sinkhorn(l.view(), out.view());
    CHECK(info.converged);
    for (std::size_t e = 0; e < 8; ++e) {
        double c = 0;
        for (std::size_t t = 0; t < 128; ++t) c += out(t, e);
        CHECK(c == Approx(1.0 / 8).epsilon(1e-3));
    }
    const auto r = moe::route_sinkhorn(l.view(), 2);
    const auto n = r.tokens_per_expert();
    const auto plain = moe::route(l, moe::presets::megatron(2)).tokens_per_expert();
    CHECK(*std::max_element(n.begin(), n.end()) <= *std::max_element(plain.begin(), plain.end()));
}

TEST_CASE("hash routing: experts from the token-id table, weights from the router's scores", "[router][hash]") {
    // DeepSeek-V4-style hash layer: sqrtsoftplus scores, renormalised, x 1.5.
    const std::size_t T = 5, E = 6;
    moe::matrix<float> logits(T, E);
    for (std::size_t i = 0; i < logits.values.size(); ++i) logits.values[i] = std::sin(0.7f * static_cast<float>(i)) * 3.0f;
    moe::matrix<std::int32_t> table(4, 2);
    table.values = {0, 1, 5, 2, 3, 4, 2, 0};
    const std::vector<std::int64_t> ids = {2, 0, 3, 3, 1};
    moe::router_config cfg;
    cfg.score = moe::score_function::sqrtsoftplus;
    cfg.renorm = moe::renormalize::sum;
    cfg.scaling_factor = 1.5f;
    cfg.num_groups = 4;  // ignored: the table decides
    cfg.group_top_k = 1;
    const auto r = moe::route_hash(logits.view(), ids, table.view(), cfg);
    for (std::size_t t = 0; t < T; ++t) {
        double s[2], sum = 0;
        for (std::size_t j = 0; j < 2; ++j) {
            const std::int32_t e = table(static_cast<std::size_t>(ids[t]), j);
            CHECK(r.index(t, j) == e);
            const double l = logits(t, static_cast<std::size_t>(e));
            s[j] = std::sqrt(std::log1p(std::exp(l)));
            sum += s[j];
        }
        for (std::size_t j = 0; j < 2; ++j) CHECK(r.weight(t, j) == Approx(1.5 * s[j] / sum).epsilon(1e-6));
    }
    // The DeepSeek-V4 preset weighs the hash layers' experts the same way.
    const auto v4 = moe::route_hash(logits.view(), ids, table.view(), moe::presets::deepseek_v4(6, 1.5f));
    CHECK(v4.indices == r.indices);
    CHECK(v4.weights == r.weights);
    CHECK(error_of([&] { (void)moe::route_hash(logits.view(), {2, 0, 9, 3, 1}, table.view(), cfg); }) ==
          "[moe.router.hash] token 2 has id 9; the table has 4 rows");
    CHECK(error_of([&] { (void)moe::route_hash(logits.view(), {2, 0}, table.view(), cfg); }) == "[moe.router.hash] 2 token ids for 5 tokens");
    table(1, 1) = 6;
    CHECK(error_of([&] { (void)moe::route_hash(logits.view(), ids, table.view(), cfg); }) ==
          "[moe.router.hash] table row 1 holds expert 6, outside [0, 6)");
    table(1, 1) = 5;
    CHECK(error_of([&] { (void)moe::route_hash(logits.view(), ids, table.view(), cfg); }) == "[moe.router.hash] table row 1 names expert 5 twice");
}

TEST_CASE("zero-computation experts: zero and identity slots leave the dispatch", "[router][zero_experts]") {
    // 4 real experts + 2 zero-computation ones (indices 4, 5).
    moe::routing<float> r(3, 6, 2, false);
    r.indices = {0, 4, 5, 1, 2, 3};
    r.weights = {0.6f, 0.4f, 0.7f, 0.3f, 0.5f, 0.5f};
    moe::matrix<float> x(3, 2), yz(3, 2);
    x.values = {1, 2, 3, 4, 5, 6};
    moe::routing<float> z = r;
    CHECK(moe::split_zero_experts(z, 4, moe::zero_expert_type::identity, x.view(), yz.view()) == 2);
    CHECK(z.indices == std::vector<std::int32_t>{0, -1, -1, 1, 2, 3});
    CHECK(yz.values == std::vector<float>{0.4f * 1, 0.4f * 2, 0.7f * 3, 0.7f * 4, 0, 0});
    moe::routing<float> z0 = r;
    CHECK(moe::split_zero_experts(z0, 4, moe::zero_expert_type::zero, {}, {}) == 2);
    CHECK(z0.indices == z.indices);
    CHECK(moe::make_plan(z0).num_rows() == 4);  // only the real experts' slots are computed
    CHECK(error_of([&] { (void)moe::split_zero_experts(z0, 7, moe::zero_expert_type::zero, {}, {}); }) ==
          "[moe.router.zero_experts] num_real=7 exceeds num_experts=6");
}
