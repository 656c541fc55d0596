// Score functions against double-precision references: accuracy, subnormals, extremes.
#include <cmath>

#include "test_support.hpp"

namespace {

/// Distance in float ulps between a float and the correctly rounded double reference.
double ulps(float got, double want) {
    const float w = static_cast<float>(want);
    if (got == w) return 0.0;
    const float step = std::nextafter(w, got) - w;
    return std::fabs((static_cast<double>(got) - want) / static_cast<double>(step));
}

}  // namespace

TEST_CASE("scoring: exp is within 1 ulp of exp() over its whole domain, subnormals included", "[scoring]") {
    double worst = 0;
    for (float x = -103.9f; x <= 0.0f; x = std::nextafter(x + 0.00731f, 1.0f)) {
        const double want = std::exp(static_cast<double>(x));
        if (want < 1.2e-38) continue;  // subnormal: checked below in absolute terms
        worst = std::max(worst, ulps(moe::detail::exp_nonpos<moe::scalar>(x), want));
    }
    CHECK(worst <= 1.0);
    // Subnormal results are rounded once, like libm: within one subnormal step.
    for (float x = -103.9f; x < -87.4f; x += 0.01f) {
        const double want = std::exp(static_cast<double>(x));
        REQUIRE(std::fabs(moe::detail::exp_nonpos<moe::scalar>(x) - want) <= 1.5e-45);
    }
    CHECK(moe::detail::exp_nonpos<moe::scalar>(-INFINITY) == 0.0f);
    CHECK(moe::detail::exp_nonpos<moe::scalar>(0.0f) == 1.0f);
    CHECK(moe::detail::exp_nonpos<moe::scalar>(-200.0f) == 0.0f);
}

TEST_CASE("scoring: sigmoid and sqrtsoftplus within 2 ulps, tails included", "[scoring]") {
    double worst_sig = 0, worst_ssp = 0;
    for (float x = -80.0f; x <= 80.0f; x += 0.0173f) {
        const double xd = x;
        const double sig = xd > 0 ? 1.0 / (1.0 + std::exp(-xd)) : std::exp(xd) / (1.0 + std::exp(xd));
        worst_sig = std::max(worst_sig, ulps(moe::detail::sigmoid<moe::scalar>(x), sig));
        const double ssp = std::sqrt(std::max(xd, 0.0) + std::log1p(std::exp(-std::fabs(xd))));
        worst_ssp = std::max(worst_ssp, ulps(moe::detail::sqrt_softplus<moe::scalar>(x), ssp));
    }
    CHECK(worst_sig <= 2.0);
    CHECK(worst_ssp <= 2.0);
    CHECK(moe::detail::sigmoid<moe::scalar>(-INFINITY) == 0.0f);
    CHECK(moe::detail::sigmoid<moe::scalar>(0.0f) == 0.5f);
    // torch's float32 sigmoid is 1 / (1 + exp(-x)): exp overflows to +inf from
    // x = -88.72283935546875 down, so the result is exactly 0 there (torch 1.13 and 2.x print
    // 0.0 for -88.72283935546875 and 2.938758e-39 for the next float up, -88.72283172607422).
    CHECK(moe::detail::sigmoid<moe::scalar>(-88.72283935546875f) == 0.0f);
    CHECK(moe::detail::sigmoid<moe::scalar>(-100.0f) == 0.0f);
    CHECK(moe::detail::sigmoid<moe::scalar>(-88.72283172607422f) == 2.938758297831148e-39f);
    CHECK(moe::detail::sigmoid<moe::scalar>(-88.0f) == 6.054601485195952e-39f);
}

TEST_CASE("scoring: softmax rows sum to 1 and keep tiny probabilities ordered", "[scoring]") {
    std::vector<float> x = {100.0f, 0.0f, 10.0f, 12.0f, -INFINITY};
    std::vector<float> p(x.size());
    moe::detail::softmax_row<moe::scalar>(x.data(), p.data(), x.size());
    CHECK(p[0] == 1.0f);
    CHECK(p[4] == 0.0f);
    CHECK(p[1] > 0.0f);  // subnormal, not flushed
    CHECK(p[1] < p[2]);
    CHECK(p[2] < p[3]);
    const auto l = moe_test::random_logits(10, 77, 8);
    std::vector<float> row(77);
    for (std::size_t t = 0; t < 10; ++t) {
        moe::detail::softmax_row<moe::scalar>(l.row(t), row.data(), 77);
        double s = 0;
        for (float v : row) s += v;
        CHECK(s == Approx(1.0).epsilon(1e-6));
    }
}
