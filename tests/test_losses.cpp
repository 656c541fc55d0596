// Losses and the aux-loss-free bias: gradients against central finite differences in double,
// balanced values on uniform logits, accumulator identities, the bias update balancing a skewed
// stream, dynamic-k properties, and every error verbatim. (Noise: test_noise.cpp; the
// selection policies: test_route_policies.cpp.)
#include <moe/losses.hpp>
#include <moe/noise.hpp>
#include <moe/route_policies.hpp>

#include "test_support.hpp"

namespace {

moe::matrix<double> random_logits_d(std::size_t t, std::size_t e, std::uint64_t seed) {
    moe::splitmix64 rng(seed);
    moe::matrix<double> m(t, e);
    for (auto& v : m.values) v = rng.normal() * 1.5;
    return m;
}

template <class W>
moe::routing<W> topk_of(const moe::matrix<double>& l, std::size_t k) {
    moe::router_config c = moe::presets::megatron(k);
    return moe::route(l, c);
}

/// Central differences of f at every logit, h = 1e-6, compared against the analytic gradient.
template <class F>
void check_fd(const moe::matrix<double>& l, const moe::matrix<double>& grad, F f, double tol = 1e-6) {
    moe::matrix<double> x = l;
    double scale = 0.0;
    for (double g : grad.values) scale = std::max(scale, std::fabs(g));
    REQUIRE(scale > 0.0);
    for (std::size_t i = 0; i < x.values.size(); ++i) {
        const double h = 1e-6, v = x.values[i];
        x.values[i] = v + h;
        const double up = f(x);
        x.values[i] = v - h;
        const double down = f(x);
        x.values[i] = v;
        const double fd = (up - down) / (2 * h);
        CAPTURE(i, fd, grad.values[i]);
        REQUIRE(std::fabs(fd - grad.values[i]) <= tol * scale + 1e-9);
    }
}

}  // namespace

TEST_CASE("losses: analytic gradients match central finite differences in double", "[losses]") {
    const auto l = random_logits_d(24, 6, 7);
    const auto r = topk_of<double>(l, 2);
    std::vector<std::uint8_t> mask(24, 1);
    mask[3] = mask[10] = 0;
    moe::matrix<double> g(24, 6);

    for (auto variant : {moe::aux_loss_variant::megatron, moe::aux_loss_variant::hf_mixtral, moe::aux_loss_variant::deepspeed})
        for (auto score : {moe::score_function::softmax, moe::score_function::sigmoid, moe::score_function::sqrtsoftplus}) {
            CAPTURE(moe::to_string(variant), moe::to_string(score));
            moe::aux_loss_config cfg;
            cfg.variant = variant;
            cfg.score = score;
            cfg.coeff = 0.01;
            moe::load_balancing_loss(l.view(), r, cfg, mask, g.view());
            CHECK(g(3, 0) == 0.0);
            check_fd(l, g, [&](const moe::matrix<double>& x) { return moe::load_balancing_loss(x.view(), r, cfg, mask); });
        }
    SECTION("null experts") {
        moe::aux_loss_config cfg;
        cfg.num_null_experts = 2;
        moe::load_balancing_loss(l.view(), r, cfg, {}, g.view());
        check_fd(l, g, [&](const moe::matrix<double>& x) { return moe::load_balancing_loss(x.view(), r, cfg); });
    }
    SECTION("sequence level") {
        moe::sequence_load_balancing_loss(l.view(), r, 8, {}, mask, g.view());
        check_fd(l, g, [&](const moe::matrix<double>& x) { return moe::sequence_load_balancing_loss(x.view(), r, 8, {}, mask); });
    }
    SECTION("z-loss") {
        moe::z_loss(l.view(), 1e-3, mask, g.view());
        check_fd(l, g, [&](const moe::matrix<double>& x) { return moe::z_loss(x.view(), 1e-3, mask); });
    }
    SECTION("importance + load") {
        moe::matrix<double> noise(24, 6);
        moe::add_normal_noise(noise.view(), 1.0 / 6, 3);
        moe::matrix<double> noisy = l;
        for (std::size_t i = 0; i < noisy.values.size(); ++i) noisy.values[i] += noise.values[i];
        const auto rn = topk_of<double>(noisy, 2);
        moe::importance_load_loss(l.view(), noisy.view(), rn, 1.0, g.view());
        check_fd(l, g, [&](const moe::matrix<double>& x) {
            moe::matrix<double> nx = x;
            for (std::size_t i = 0; i < nx.values.size(); ++i) nx.values[i] += noise.values[i];
            return moe::importance_load_loss(x.view(), nx.view(), rn, 1.0);
        });
    }
}

TEST_CASE("losses: a balanced routing on uniform logits gives the balanced value", "[losses]") {
    const std::size_t E = 8, k = 2, T = 64;
    moe::matrix<float> l(T, E, 0.0f);
    moe::routing<float> r(T, E, k, false);
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t s = 0; s < k; ++s) r.indices[t * k + s] = static_cast<std::int32_t>((t * k + s) % E);
    moe::aux_loss_config cfg;
    CHECK(moe::load_balancing_loss(l.view(), r, cfg) == Approx(1.0).epsilon(1e-12));
    cfg.variant = moe::aux_loss_variant::hf_mixtral;
    CHECK(moe::load_balancing_loss(l.view(), r, cfg) == Approx(2.0).epsilon(1e-12));
    cfg.variant = moe::aux_loss_variant::deepspeed;  // first choices: t*2 % 8 covers 4 experts twice as often
    CHECK(moe::load_balancing_loss(l.view(), r, cfg) == Approx(1.0).epsilon(1e-12));
    cfg = {};
    cfg.score = moe::score_function::sigmoid;
    CHECK(moe::load_balancing_loss(l.view(), r, cfg) == Approx(1.0).epsilon(1e-12));
    // z-loss of zero logits: log(E)^2.
    CHECK(moe::z_loss(l.view()) == Approx(std::log(8.0) * std::log(8.0)).epsilon(1e-12));
    // Every token on experts 0 and 1, with the probability there too: the maximum, E / k.
    for (std::size_t t = 0; t < T; ++t) {
        r.indices[t * k] = 0;
        r.indices[t * k + 1] = 1;
        l(t, 0) = l(t, 1) = 40.0f;
    }
    CHECK(moe::load_balancing_loss(l.view(), r, moe::aux_loss_config{}) == Approx(4.0).epsilon(1e-6));
}

TEST_CASE("losses: the global-batch accumulator", "[losses]") {
    const auto a = moe_test::random_logits(40, 8, 1), b = moe_test::random_logits(24, 8, 2);
    const auto ra = moe::route(a, moe::presets::megatron(2)), rb = moe::route(b, moe::presets::megatron(2));
    moe::global_load_balancer acc;
    acc.add(a.view(), ra);
    moe::matrix<float> g1(40, 8), g2(40, 8);
    SECTION("one micro-batch equals the micro-batch loss, value and gradient") {
        CHECK(acc.loss() == moe::load_balancing_loss(a.view(), ra, {}, {}, g1.view()));
        acc.gradient(a.view(), g2.view());
        CHECK(g1.values == g2.values);
    }
    SECTION("two micro-batches equal the loss of their concatenation, not the mean of theirs") {
        acc.add(b.view(), rb);
        moe::matrix<float> ab(64, 8);
        std::copy(a.values.begin(), a.values.end(), ab.values.begin());
        std::copy(b.values.begin(), b.values.end(), ab.values.begin() + 320);
        const auto rab = moe::route(ab, moe::presets::megatron(2));
        CHECK(acc.loss() == Approx(moe::load_balancing_loss(ab.view(), rab, {})).epsilon(1e-12));
        const double mean = 0.5 * (moe::load_balancing_loss(a.view(), ra, {}) + moe::load_balancing_loss(b.view(), rb, {}));
        CHECK(std::fabs(acc.loss() - mean) > 1e-4);
        // Ranks: terms merged from elsewhere add the same way.
        moe::global_load_balancer other;
        other.merge(moe::aux_loss_statistics(a.view(), ra, {}));
        other.merge(moe::aux_loss_statistics(b.view(), rb, {}));
        CHECK(other.loss() == acc.loss());
        acc.reset();
        CHECK(acc.loss() == 0.0);
        CHECK(moe_test::error_of([&] { acc.gradient(a.view(), g1.view()); }) == "[moe.losses.global] gradient() before any add()");
    }
}

TEST_CASE("aux-loss-free bias: a skewed stream becomes balanced", "[losses][bias]") {
    // DeepSeek-V3 style: sigmoid scores, top-4 of 16, bias on selection only; zipf-skewed logits.
    const std::size_t E = 16, T = 512;
    moe::router_config cfg = moe::presets::deepseek_v3(4, 1, 1);
    std::vector<float> bias(E, 0.0f);
    double first = 0.0, last = 0.0;
    const std::size_t steps = 400;
    for (std::size_t step = 0; step < steps; ++step) {
        const auto logits = moe::synthetic_logits(T, E, moe::skew::parse("zipf:1.0"), 1000 + step);
        const auto r = moe::route(logits, cfg, bias);
        const auto n = r.tokens_per_expert();
        const double mx = static_cast<double>(*std::max_element(n.begin(), n.end()));
        const double ratio = mx / (static_cast<double>(T * 4) / E);
        if (step == 0) first = ratio;
        if (step >= steps - 20) last += ratio / 20.0;
        moe::update_expert_bias(bias, n, 1e-3f);
    }
    CAPTURE(first, last);
    CHECK(first > 2.5);
    CHECK(last < 1.25);
    // Over-loaded experts end with lower bias than under-loaded ones.
    CHECK(bias.front() < bias.back());
}

TEST_CASE("aux-loss-free bias: the update rule", "[losses][bias]") {
    std::vector<float> b{0.0f, 0.0f, 0.0f, 0.5f};
    moe::update_expert_bias(b, {10, 2, 6, 6}, 0.25f);  // mean 6
    CHECK(b == std::vector<float>{-0.25f, 0.25f, 0.0f, 0.5f});
    CHECK(moe_test::error_of([&] { moe::update_expert_bias(b, {1, 2}); }) ==
          "[moe.losses.bias] bias has 4 entries, tokens_per_expert 2");
}

TEST_CASE("losses and policies: bad input gets a stable error", "[losses][selection]") {
    const auto l = moe_test::random_logits(8, 4, 1);
    const auto r = moe::route(l, moe::presets::mixtral(2));
    moe::aux_loss_config cfg;
    cfg.num_null_experts = 4;
    CHECK(moe_test::error_of([&] { moe::load_balancing_loss(l.view(), r, cfg); }) ==
          "[moe.losses.null_experts] num_null_experts=4 leaves no real expert among num_experts=4");
    const std::vector<std::uint8_t> short_mask(3, 1);
    CHECK(moe_test::error_of([&] { moe::load_balancing_loss(l.view(), r, {}, short_mask); }) ==
          "[moe.losses.mask] mask has 3 entries, expected num_tokens=8");
    moe::matrix<float> g(4, 4);
    CHECK(moe_test::error_of([&] { moe::z_loss(l.view(), 1.0, {}, g.view()); }) ==
          "[moe.losses.grad] grad is 4 x 4, expected 8 x 4");
    moe::matrix<float> bad = l;
    bad(2, 1) = std::numeric_limits<float>::quiet_NaN();
    CHECK(moe_test::error_of([&] { moe::z_loss(bad.view()); }) ==
          "[moe.losses.logits] logits row 2, expert 1 is nan: only finite values and -inf are accepted");
    CHECK(moe_test::error_of([&] { moe::sequence_load_balancing_loss(l.view(), r, 3, {}); }) ==
          "[moe.losses.sequence] seq_len=3 does not divide num_tokens=8");
    const auto r6 = moe::route(moe_test::random_logits(6, 4, 2), moe::presets::mixtral(2));
    CHECK(moe_test::error_of([&] { moe::load_balancing_loss(l.view(), r6, {}); }) ==
          "[moe.losses.routing] routing is 6 tokens x 4 experts; logits are 8 x 4");
    CHECK(moe_test::error_of([&] { moe::importance_load_loss(l.view(), l.view(), r, 0.0); }) ==
          "[moe.losses.gate_noise] gate_noise=0 must be finite and > 0");
    moe::top_p_config tp;
    tp.p = 0.0;
    CHECK(moe_test::error_of([&] { (void)moe::route_top_p(l.view(), tp); }) == "[moe.selection.top_p] p=0 must be in (0, 1]");
    tp.p = 0.5;
    tp.max_k = 5;
    CHECK(moe_test::error_of([&] { (void)moe::route_top_p(l.view(), tp); }) ==
          "[moe.selection.top_p] max_k=5 exceeds num_experts=4");
    moe::expert_choice_config ec;
    ec.capacity_factor = 0.0;
    CHECK(moe_test::error_of([&] { (void)moe::route_expert_choice(l.view(), ec); }) ==
          "[moe.selection.expert_choice] capacity_factor=0 must be finite and > 0");
    CHECK(moe_test::error_of([&] { (void)moe::route_sinkhorn(l.view(), 5); }) ==
          "[moe.selection.sinkhorn] k=5 must be in [1, num_experts=4]");
    CHECK(moe_test::error_of([&] { (void)moe::route_top_p(bad.view(), moe::top_p_config{}); }) ==
          "[moe.selection.logits] logits row 2, expert 1 is nan: only finite values and -inf are accepted");
}

TEST_CASE("losses and capacity under dynamic k use the routed slots, not the slot count", "[losses][selection]") {
    // Each token uses one of its two slots: Megatron's k is then 1, and capacity is sized for
    // T routed slots, exactly as a top-1 routing of the same choices.
    const auto l = moe_test::random_logits(64, 8, 31);
    auto r2 = moe::route(l, moe::presets::megatron(2));
    moe::routing<float> r1(64, 8, 1, false);
    for (std::size_t t = 0; t < 64; ++t) {
        r1.indices[t] = r2.index(t, 0);
        r1.weights[t] = r2.weight(t, 0);
        r2.indices[t * 2 + 1] = -1;
        r2.weights[t * 2 + 1] = 0.0f;
    }
    CHECK(moe::load_balancing_loss(l, r2, {}) == moe::load_balancing_loss(l, r1, {}));
    moe::drop_config d;
    d.capacity.factor = 1.0;
    CHECK(moe::apply_capacity(r2, d).capacity == moe::apply_capacity(r1, d).capacity);
    CHECK(moe::apply_capacity(r1, d).capacity == 8);
}
