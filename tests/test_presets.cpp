// moe/presets.hpp: each preset names the semantics its source states.
#include "test_support.hpp"

using moe_test::error_of;

TEST_CASE("presets: each names the semantics its documentation states", "[presets]") {
    const auto m = moe::presets::mixtral();
    CHECK((m.score == moe::score_function::softmax && m.top_k == 2 && m.pre_softmax && m.renorm == moe::renormalize::sum));
    const auto d = moe::presets::deepseek_v3();
    CHECK((d.score == moe::score_function::sigmoid && d.top_k == 8 && d.num_groups == 8 && d.group_top_k == 4 &&
           d.group_score_top_m == 2 && d.mask == moe::group_mask::zero && d.renorm == moe::renormalize::sum_eps &&
           d.renorm_eps == 1e-20f && d.scaling_factor == 2.5f));
    CHECK(moe::presets::megatron(1, moe::score_function::sigmoid).renorm == moe::renormalize::none);
    CHECK(moe::presets::megatron(8, moe::score_function::sigmoid, false, 8, 4).group_score_top_m == 2);
    CHECK(moe::presets::switch_transformer().top_k == 1);
    const auto v4 = moe::presets::deepseek_v4(6, 1.5f);
    CHECK((v4.score == moe::score_function::sqrtsoftplus && v4.top_k == 6 && v4.num_groups == 0 && v4.renorm == moe::renormalize::sum &&
           v4.scaling_factor == 1.5f));
    for (const char* name : moe::presets::preset_names) CHECK_NOTHROW(moe::presets::by_name(name).validate(256));
}
