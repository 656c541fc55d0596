// moe/presets.hpp: each preset names the semantics its source states.
#include <iterator>
#include <string>
#include <tuple>
#include <utility>

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

TEST_CASE("presets: by_name gives each family's recipe with its defaults, from the family registry", "[presets]") {
    auto fields = [](const moe::router_config& c) {
        return std::make_tuple(c.score, c.top_k, c.pre_softmax, c.select_on_logits, c.renorm, c.renorm_eps, c.scaling_factor,
                               c.num_groups, c.group_top_k, c.group_score_top_m, c.mask, c.weights_from_masked);
    };
    namespace p = moe::presets;
    const std::pair<const char*, moe::router_config> named[] = {
        {"mixtral", p::mixtral()},     {"minimax_m2", p::minimax_m2()}, {"qwen2_moe", p::qwen2_moe()},
        {"qwen3_moe", p::qwen3_moe()}, {"olmoe", p::olmoe()},           {"deepseek_v2", p::deepseek_v2()},
        {"deepseek_v3", p::deepseek_v3()}, {"kimi_k2", p::kimi_k2()},   {"glm4_moe", p::glm4_moe()},
        {"gpt_oss", p::gpt_oss()},     {"llama4", p::llama4()},         {"granite_moe", p::granite_moe()},
        {"dbrx", p::dbrx()},           {"deepseek_v4", p::deepseek_v4()}, {"megatron", p::megatron(2)},
        {"switch", p::switch_transformer()}};
    REQUIRE(p::preset_names.size() == std::size(named));
    for (std::size_t i = 0; i < std::size(named); ++i) {
        INFO(named[i].first);
        CHECK(std::string(p::preset_names[i]) == named[i].first);
        CHECK(fields(p::by_name(named[i].first)) == fields(named[i].second));
    }
    // The recipes differ where their sources do.
    CHECK(p::qwen3_moe().renorm == moe::renormalize::sum);
    CHECK(p::olmoe().renorm == moe::renormalize::none);
    CHECK((p::deepseek_v2().weights_from_masked && p::deepseek_v2().group_score_top_m == 1 && p::deepseek_v2().scaling_factor == 16.0f));
    CHECK((p::kimi_k2().num_groups == 1 && p::kimi_k2().scaling_factor == 2.827f));
    CHECK((!p::gpt_oss().pre_softmax && p::llama4().select_on_logits));
}
