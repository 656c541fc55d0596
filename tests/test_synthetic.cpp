// moe/analysis/synthetic.hpp: skew parsing and determinism.
#include "test_support.hpp"

using moe_test::error_of;

TEST_CASE("synthetic: skew parsing and determinism", "[synthetic]") {
    CHECK(moe::skew::parse("zipf:1.5").param == 1.5);
    CHECK(moe::skew::parse("dirichlet:0.3").type == moe::skew::kind::dirichlet);
    CHECK(error_of([] { (void)moe::skew::parse("zipf:x"); }) == "[moe.synthetic.skew] cannot read the parameter of 'zipf:x'");
    CHECK(error_of([] { (void)moe::skew::parse("pareto:1"); }) ==
          "[moe.synthetic.skew] unknown skew 'pareto:1' (expected uniform, zipf:S with S >= 0 or dirichlet:A with A > 0)");
    const auto a = moe::synthetic_logits(64, 8, moe::skew::parse("zipf:2"), 3);
    const auto b = moe::synthetic_logits(64, 8, moe::skew::parse("zipf:2"), 3);
    CHECK(a.values == b.values);
    const auto load = moe::route(a, moe::presets::switch_transformer()).tokens_per_expert();
    CHECK(load[0] > load[7]);  // zipf makes low-index experts popular
}
