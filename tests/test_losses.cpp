// Losses, aux-loss-free bias, noise and selection policies: gradients against central finite
// differences in double, balanced values on uniform logits, accumulator identities, the bias
// update balancing a skewed stream, noise statistics and thread invariance, dynamic-k
// properties, and every error verbatim.
#include <moe/losses.hpp>
#include <moe/noise.hpp>
#include <moe/selection.hpp>

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

TEST_CASE("noise: counter-based, seeded, thread-invariant, with the right distributions", "[noise]") {
    const std::size_t T = 300, E = 100;
    moe::matrix<double> g(T, E, 0.0), n(T, E, 0.0), j(T, E, 1.0);
    moe::add_gumbel_noise(g.view(), 5);
    moe::add_normal_noise(n.view(), 2.0, 5);
    moe::apply_jitter(j.view(), 0.01, 5);
    auto mean_var = [](const std::vector<double>& v) {
        double m = 0, q = 0;
        for (double x : v) m += x;
        m /= static_cast<double>(v.size());
        for (double x : v) q += (x - m) * (x - m);
        return std::make_pair(m, q / static_cast<double>(v.size() - 1));
    };
    const auto [gm, gv] = mean_var(g.values);
    CHECK(gm == Approx(0.5772156649).margin(0.01));
    CHECK(gv == Approx(1.6449340668).margin(0.03));
    const auto [nm, nv] = mean_var(n.values);
    CHECK(nm == Approx(0.0).margin(0.02));
    CHECK(nv == Approx(4.0).margin(0.08));
    for (double x : j.values) REQUIRE((x >= 0.99 && x <= 1.01));
    const auto [jm, jv] = mean_var(j.values);
    CHECK(jv == Approx(0.02 * 0.02 / 12).epsilon(0.03));
    static_cast<void>(jm);

    moe::matrix<float> a(T, E, 0.0f), b(T, E, 0.0f), c(T, E, 0.0f);
    moe::add_gumbel_noise(a.view(), 9);
    moe::add_gumbel_noise(b.view(), 9, moe_test::reversed_threads_executor{3});
    moe::add_gumbel_noise(c.view(), 10);
    CHECK(a.values == b.values);
    CHECK(a.values != c.values);

    CHECK(moe_test::error_of([&] { moe::apply_jitter(a.view(), 1.0, 1); }) == "[moe.noise.jitter] jitter eps=1 must be in [0, 1)");
    CHECK(moe_test::error_of([&] { moe::add_normal_noise(a.view(), -1.0, 1); }) ==
          "[moe.noise.normal] noise stddev=-1 must be finite and >= 0");
}

TEST_CASE("noise: DeepSpeed RSample selects on noisy logits and weighs by the clean softmax", "[noise]") {
    const auto clean = moe_test::random_logits(64, 8, 4);
    moe::matrix<float> noisy = clean;
    moe::add_gumbel_noise(noisy.view(), 77);
    moe::router_config cfg = moe::presets::switch_transformer();
    auto r = moe::route(noisy, cfg);
    moe::rescore(r, clean.view(), cfg);
    std::size_t moved = 0;
    for (std::size_t t = 0; t < 64; ++t) {
        std::size_t arg = 0;
        for (std::size_t e = 1; e < 8; ++e)
            if (noisy(t, e) > noisy(t, arg)) arg = e;
        REQUIRE(r.index(t, 0) == static_cast<std::int32_t>(arg));
        double m = -1e30, s = 0;
        for (std::size_t e = 0; e < 8; ++e) m = std::max(m, static_cast<double>(clean(t, e)));
        for (std::size_t e = 0; e < 8; ++e) s += std::exp(clean(t, e) - m);
        REQUIRE(r.weight(t, 0) == Approx(std::exp(clean(t, arg) - m) / s).epsilon(1e-6));
        std::size_t carg = 0;
        for (std::size_t e = 1; e < 8; ++e)
            if (clean(t, e) > clean(t, carg)) carg = e;
        moved += carg != arg;
    }
    CHECK(moved > 0);  // the noise does change some choices
}

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
