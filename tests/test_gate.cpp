// Gate linear against a naive double-precision loop; bf16 weights; shape errors.
#include "test_support.hpp"

using moe_test::error_of;

TEST_CASE("gate: x W^T + b matches a naive loop", "[gate]") {
    const auto x = moe_test::random_logits(19, 37, 1, 1.0f);
    const auto w = moe_test::random_logits(8, 37, 2, 0.1f);
    const std::vector<float> b = {0.1f, -0.2f, 0.3f, 0, 0, 0, 0, 1.0f};
    const auto l = moe::gate(x.view(), w.view(), b);
    for (std::size_t t = 0; t < 19; ++t)
        for (std::size_t e = 0; e < 8; ++e) {
            double want = b[e];
            for (std::size_t h = 0; h < 37; ++h) want += double(x(t, h)) * double(w(e, h));
            REQUIRE(l(t, e) == Approx(want).margin(1e-5));
        }
    moe::matrix<Eigen::bfloat16> xb(19, 37), wb(8, 37);
    for (std::size_t i = 0; i < x.values.size(); ++i) xb.values[i] = Eigen::bfloat16(x.values[i]);
    for (std::size_t i = 0; i < w.values.size(); ++i) wb.values[i] = Eigen::bfloat16(w.values[i]);
    const auto lb = moe::gate(xb, wb);
    for (std::size_t t = 0; t < 19; ++t)
        for (std::size_t e = 0; e < 8; ++e) {
            double want = 0;
            for (std::size_t h = 0; h < 37; ++h) want += double(float(xb(t, h))) * double(float(wb(e, h)));
            REQUIRE(lb(t, e) == Approx(want).margin(1e-5));
        }
}

TEST_CASE("gate: shape mismatches are reported", "[gate][errors]") {
    const moe::matrix<float> x(4, 16), w(8, 15);
    CHECK(error_of([&] { (void)moe::gate(x.view(), w.view()); }) ==
          "[moe.gate.shape] x has hidden size 16 but the gate weight has 15");
    const moe::matrix<float> w2(8, 16);
    CHECK(error_of([&] { (void)moe::gate(x.view(), w2.view(), std::vector<float>(3)); }) ==
          "[moe.gate.shape] gate bias has 3 entries, expected num_experts=8");
}

TEST_CASE("gate: the packed kernel matches a naive loop, every shape edge", "[gate]") {
    for (std::size_t E : {1u, 7u, 8u, 16u, 17u, 33u, 64u}) {
        for (std::size_t T : {1u, 5u, 9u, 70u}) {
            const auto x = moe_test::random_logits(T, 37, T + E, 1.0f);
            const auto w = moe_test::random_logits(E, 37, 100 + E, 0.1f);
            std::vector<float> b(E);
            for (std::size_t e = 0; e < E; ++e) b[e] = 0.01f * static_cast<float>(e);
            const auto packed = moe::pack_gate(w.view());
            moe::matrix<float> l(T, E, -1.0f);
            moe::gate_into(l.view(), x.view(), packed, b);
            for (std::size_t t = 0; t < T; ++t)
                for (std::size_t e = 0; e < E; ++e) {
                    double want = b[e];
                    for (std::size_t h = 0; h < 37; ++h) want += double(x(t, h)) * double(w(e, h));
                    CAPTURE(E, T, t, e);
                    REQUIRE(l(t, e) == Approx(want).margin(2e-5));
                }
        }
    }
    const auto w = moe_test::random_logits(8, 16, 1);
    const moe::matrix<float> x(4, 15);
    moe::matrix<float> l(4, 8);
    CHECK(moe_test::error_of([&] { moe::gate_into(l.view(), x.view(), moe::pack_gate(w.view())); }) ==
          "[moe.gate.shape] x has hidden size 15 but the gate weight has 16");
}
