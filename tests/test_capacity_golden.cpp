// Golden token-drop cases: Megatron apply_router_token_dropping (probs, position), DeepSpeed
// top1/top2 gating, Tutel slot-major and batch-prioritised routing, from the torch
// transcriptions in tests/gen_capacity_golden.py. Dropped slots must match exactly; weights to
// a few float ulps.
#include <fstream>
#include <map>
#include <sstream>

#include "test_support.hpp"

namespace {

moe::router_config router_from_spec(const std::string& spec) {
    const auto comma = spec.find(',');
    const std::string name = spec.substr(0, comma);
    const std::size_t k = std::stoul(spec.substr(comma + 1));
    moe::router_config c;
    if (name == "megatron_pre") c = moe::presets::megatron(k, moe::score_function::softmax, true);
    else if (name == "softmax_raw") c = moe::presets::qwen2_moe(k, false);
    else if (name == "tutel") c = moe::presets::tutel(k);
    else FAIL("unknown router spec " << spec);
    c.keep_scores = true;
    return c;
}

}  // namespace

TEST_CASE("golden: token drops as Megatron, DeepSpeed and Tutel make them", "[capacity][golden]") {
    const std::string dir = std::string(MOE_TEST_DATA_DIR) + "/capacity/";
    std::ifstream f(dir + "cases.txt");
    REQUIRE(f.good());
    std::string line;
    std::size_t checked = 0;
    while (std::getline(f, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream words(line);
        std::string name, router, word;
        words >> name >> router;
        std::map<std::string, std::string> kv;
        while (words >> word) kv[word.substr(0, word.find('='))] = word.substr(word.find('=') + 1);
        CAPTURE(name);
        moe::drop_config d;
        d.capacity.formula = moe::parse_capacity_formula(kv.at("formula"));
        d.capacity.factor = std::stod(kv.at("factor"));
        if (kv.count("min")) d.capacity.min_capacity = std::stoul(kv.at("min"));
        d.policy = moe::parse_drop_policy(kv.at("policy"));
        if (kv.at("renorm") == "clamp") {
            d.renorm_after = moe::renormalize::clamp;
            d.renorm_eps = 1.1920928955078125e-7f;  // torch.finfo(float32).eps
        }
        const auto logits = moe::io::read_npy_matrix<float>(dir + name + ".logits.npy");
        const auto want_idx = moe::io::read_npy_matrix<std::int32_t>(dir + name + ".indices.npy");
        const auto want_w = moe::io::read_npy_matrix<float>(dir + name + ".weights.npy");
        auto r = moe::route(logits, router_from_spec(router));
        const auto rep = moe::apply_capacity(r, d);
        REQUIRE(rep.capacity == std::stoul(kv.at("capacity")));
        std::size_t dropped = 0;
        for (std::size_t t = 0; t < r.num_tokens; ++t)
            for (std::size_t s = 0; s < r.top_k; ++s) {
                CAPTURE(t, s);
                REQUIRE(r.index(t, s) == want_idx(t, s));
                const float w = want_w(t, s);
                REQUIRE(std::fabs(r.weight(t, s) - w) <= 8 * 1.1920929e-7f * std::fabs(w) + 1e-37f);
                dropped += want_idx(t, s) < 0;
            }
        REQUIRE(rep.dropped.size() == dropped);
        ++checked;
    }
    CHECK(checked == 18);
}
