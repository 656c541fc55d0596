// moe/noise.hpp: counter-based seeded noise (thread-invariant, with the right distributions) and
// DeepSpeed's RSample.
#include <cmath>

#include <moe/noise.hpp>

#include "test_support.hpp"

using moe_test::error_of;

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
