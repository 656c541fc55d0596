// Routing research tools (issue 28): replay (recorded routings reproduce the forward bit for bit,
// on every family's golden checkpoint and every router preset), expert reduction (SER against a
// float64 statement of the rule, per-call top-k) and routing statistics (against hand-computed
// values and a brute-force statement), routing records (round trip; untrusted files); bad input verbatim.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <moe/analysis/record.hpp>
#include <moe/analysis/stats.hpp>
#include <moe/block.hpp>
#include <moe/expert_reduction.hpp>
#include <moe/io/npy.hpp>
#include <moe/models/checkpoint.hpp>
#include <moe/models/hf.hpp>
#include <moe/presets.hpp>
#include <moe/replay.hpp>

#include "test_support.hpp"

using moe_test::error_of;

namespace {

const std::string models_dir = std::string(MOE_TEST_DATA_DIR) + "/models/";

template <class T>
moe::matrix<T> cast(const moe::matrix<float>& m) {
    moe::matrix<T> out(m.rows, m.cols);
    for (std::size_t i = 0; i < m.values.size(); ++i) out.values[i] = static_cast<T>(m.values[i]);
    return out;
}

template <class T>
void check_replay_of_presets() {
    const auto l32 = moe::synthetic_logits(150, 16, moe::skew::parse("zipf:1.2"), 11);
    const auto l = cast<T>(l32);
    std::size_t checked = 0;
    for (const char* name : moe::presets::preset_names) {
        moe::router_config c = moe::presets::by_name(name);
        try {
            c.validate(16);
        } catch (const moe::error&) {
            continue;  // recipes for other expert counts
        }
        CAPTURE(name);
        c.keep_scores = true;
        const auto r = moe::route(l.view(), c);
        const auto q = moe::replay(l.view(), c, moe::indices_view(r));
        CHECK(q.indices == r.indices);
        CHECK(q.weights == r.weights);  // bit for bit: the router's own weighing
        CHECK(q.scores == r.scores);
        ++checked;
    }
    CHECK(checked >= 12);
}

}  // namespace

TEST_CASE("replay: every preset's routing replays to the same weights, bit for bit", "[research][replay]") {
    check_replay_of_presets<float>();
    check_replay_of_presets<double>();
    check_replay_of_presets<Eigen::bfloat16>();
}

TEST_CASE("replay: a recorded forward replays bit for bit on every family's golden checkpoint", "[research][replay][models]") {
    for (const char* name : {"mixtral", "minimax_m2", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "glm4_moe",
                             "dots1", "ernie4_5_moe", "qwen3_next", "hunyuan_v1_moe", "longcat_flash", "gpt_oss", "llama4",
                             "granitemoeshared", "dbrx"}) {
        CAPTURE(name);
        const moe::io::safetensors_checkpoint ck(models_dir + name);
        const auto b = moe::models::load_block(ck, 1);
        const auto x = moe::io::read_npy_matrix<float>(models_dir + name + "/x.npy");
        moe::block<> block(b.spec, b.weights);
        moe::matrix<float> y(x.rows, x.cols), y2(x.rows, x.cols), y3(x.rows, x.cols);
        block.forward(y.view(), x.view());
        const moe::routing<float> rec = block.last_routing();
        // Indices only: weights recomputed from this router's scores.
        block.forward_replay(y2.view(), x.view(), moe::indices_view(rec), {}, moe_test::reversed_threads_executor{3});
        CHECK(block.last_routing().weights == rec.weights);
        CHECK(y2.values == y.values);
        // Indices and weights.
        block.forward_replay(y3.view(), x.view(), moe::indices_view(rec), moe::weights_view(rec));
        CHECK(y3.values == y.values);
    }
}

TEST_CASE("replay: another routing changes the output, and given weights are taken as they are", "[research][replay]") {
    const std::size_t T = 6, E = 8, H = 16, F = 24;
    const auto router = moe::synthetic_logits(E, H, {}, 1);
    std::vector<float> w1(E * F * H), w3(E * F * H), w2(E * H * F);
    moe::splitmix64 rng(5);
    for (auto* v : {&w1, &w3, &w2})
        for (float& f : *v) f = static_cast<float>(static_cast<double>(rng.next() % 2001) / 1000.0 - 1.0) * 0.1f;
    moe::layer_options o;
    o.router.top_k = 2;
    moe::block<> block(router.view(), w1.data(), w3.data(), w2.data(), F, o);
    const auto x = moe::synthetic_logits(T, H, {}, 2);
    moe::matrix<float> y(T, H), y2(T, H);
    block.forward(y.view(), x.view());
    const auto rec = block.last_routing();
    // Every token forced to experts 7 and 6 (or 6 and 5 where it chose 7 and 6).
    std::vector<std::int32_t> idx(T * 2);
    for (std::size_t t = 0; t < T; ++t) {
        idx[t * 2] = 7;
        idx[t * 2 + 1] = rec.index(t, 0) == 6 && rec.index(t, 1) == 7 ? 5 : 6;
    }
    std::vector<float> w(T * 2, 0.5f);
    w[1] = -1.0f;  // taken as given (a research probe), not renormalised
    block.forward_replay(y2.view(), x.view(), {idx.data(), T, 2}, {w.data(), T, 2});
    CHECK(block.last_routing().indices == idx);
    CHECK(block.last_routing().weights == w);
    CHECK(y2.values != y.values);
    // Empty slots weigh 0; the others are weighed as a top-1 (renormalised to 1).
    idx.assign(T * 2, -1);
    for (std::size_t t = 0; t < T; ++t) idx[t * 2 + 1] = static_cast<std::int32_t>(t);
    block.forward_replay(y2.view(), x.view(), {idx.data(), T, 2});
    for (std::size_t t = 0; t < T; ++t) {
        CHECK(block.last_routing().weight(t, 0) == 0.0f);
        CHECK(block.last_routing().weight(t, 1) == 1.0f);
    }
}

TEST_CASE("replay: bad input gives a clear error", "[research][replay][errors]") {
    const auto l = moe::synthetic_logits(3, 4, {}, 1);
    moe::router_config c;
    c.top_k = 2;
    std::vector<std::int32_t> idx = {0, 1, 2, 3, 1, 0};
    std::vector<float> w(6, 0.5f);
    const moe::matrix_view<const std::int32_t> iv(idx.data(), 3, 2);
    CHECK(error_of([&] { (void)moe::replay(l.view(), c, {idx.data(), 2, 2}); }) ==
          "[moe.replay.shape] replayed indices are 2 x 2, expected tokens x k = 3 x 2");
    CHECK(error_of([&] { (void)moe::replay(l.view(), c, {idx.data(), 2, 3}); }) ==
          "[moe.replay.shape] replayed indices are 2 x 3, expected tokens x k = 3 x 2");
    CHECK(error_of([&] { (void)moe::replay(l.view(), c, iv, {w.data(), 2, 2}); }) ==
          "[moe.replay.shape] replayed weights are 2 x 2, expected tokens x k = 3 x 2");
    idx[3] = 4;
    CHECK(error_of([&] { (void)moe::replay(l.view(), c, iv); }) == "[moe.replay.index] token 1, slot 1 holds expert 4, outside [-1, 4)");
    idx[3] = -2;
    CHECK(error_of([&] { (void)moe::replay(l.view(), c, iv); }) == "[moe.replay.index] token 1, slot 1 holds expert -2, outside [-1, 4)");
    idx[3] = 2;
    CHECK(error_of([&] { (void)moe::replay(l.view(), c, iv); }) == "[moe.replay.index] token 1 lists expert 2 twice (slots 0 and 1)");
    idx[3] = 3;
    w[4] = std::nanf("");
    CHECK(error_of([&] { (void)moe::replay(l.view(), c, iv, {w.data(), 3, 2}); }) ==
          "[moe.replay.weights] token 2, slot 0 has weight nan: replayed weights must be finite");
    moe::matrix<float> bad = l;
    bad(1, 2) = std::nanf("");
    CHECK(error_of([&] { (void)moe::replay(bad, c, iv); }) ==
          "[moe.router.logits] logits row 1, expert 2 is nan: only finite values and -inf (a masked expert) are accepted");
    // A replay through the block checks before it computes anything.
    const auto router = moe::synthetic_logits(4, 8, {}, 1);
    std::vector<float> ew(4 * 8 * 8, 0.01f);
    moe::block<> block(router.view(), ew.data(), ew.data(), ew.data(), 8);
    const auto x = moe::synthetic_logits(3, 8, {}, 3);
    moe::matrix<float> y(3, 8);
    idx = {0, 1, 2, 3, 1, 9};
    CHECK(error_of([&] { block.forward_replay(y.view(), x.view(), iv); }) ==
          "[moe.replay.index] token 2, slot 1 holds expert 9, outside [-1, 4)");
    CHECK(error_of([&] { block.forward_replay(y.view(), x.view(), {idx.data(), 2, 3}); }) ==
          "[moe.replay.shape] replayed indices are 2 x 3, expected tokens x k = 3 x 2");
}

namespace {

/// SER stated in float64 for a softmax router with renormalisation (Mixtral / Qwen3 style) or a
/// sigmoid router with renormalisation and scaling (DeepSeek-V3 style): scores s, top-k by
/// score, keep the first k_min and those with weight >= t x the top weight, weights = the kept
/// scores over their sum, times the scaling factor.
void ser_statement(const moe::matrix<float>& l, const moe::router_config& c, std::size_t k_min, double thr, std::size_t t,
                   std::vector<int>& idx, std::vector<double>& w) {
    const std::size_t E = l.cols;
    std::vector<double> s(E);
    double mx = -1e300, z = 0;
    for (std::size_t e = 0; e < E; ++e) mx = std::max(mx, static_cast<double>(l(t, e)));
    for (std::size_t e = 0; e < E; ++e) {
        s[e] = c.score == moe::score_function::softmax ? std::exp(l(t, e) - mx) : 1.0 / (1.0 + std::exp(-static_cast<double>(l(t, e))));
        z += s[e];
    }
    if (c.score == moe::score_function::softmax)
        for (double& v : s) v /= z;
    std::vector<int> order(E);
    for (std::size_t e = 0; e < E; ++e) order[e] = static_cast<int>(e);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return s[a] > s[b]; });
    idx.clear();
    w.clear();
    const double top = s[order[0]];
    for (std::size_t j = 0; j < c.top_k; ++j)
        if (j < k_min || s[order[j]] >= thr * top) idx.push_back(order[j]);
    double sum = 0;
    for (int e : idx) sum += s[e];
    for (int e : idx) w.push_back(s[e] / sum * c.scaling_factor);
}

}  // namespace

TEST_CASE("ser: keeps k_min experts and those above threshold x the top weight, reweighed as the recipe does", "[research][ser]") {
    const auto l = moe::synthetic_logits(300, 32, moe::skew::parse("zipf:1.0"), 4);
    for (const char* preset : {"qwen3_moe", "deepseek_v3"}) {
        moe::router_config c = moe::presets::by_name(preset);
        c.num_groups = c.group_top_k = 0;
        c.top_k = 6;
        for (std::size_t k_min : {1, 2}) {
            for (double thr : {0.0, 0.3, 0.7, 1.0}) {
                CAPTURE(preset, k_min, thr);
                auto r = moe::route(l.view(), c);
                moe::replay_workspace<float> ws;
                const std::size_t dropped = moe::reduce_experts(r, l.view(), c, moe::ser_config{k_min, thr}, ws);
                std::size_t expect_dropped = 0;
                std::vector<int> idx;
                std::vector<double> w;
                for (std::size_t t = 0; t < l.rows; ++t) {
                    ser_statement(l, c, k_min, thr, t, idx, w);
                    expect_dropped += c.top_k - idx.size();
                    for (std::size_t s = 0; s < c.top_k; ++s) {
                        CAPTURE(t, s);
                        if (s < idx.size()) {
                            REQUIRE(r.index(t, s) == idx[s]);
                            REQUIRE(std::fabs(r.weight(t, s) - w[s]) <= 4e-7 * std::fabs(w[s]) + 1e-9);
                        } else {
                            REQUIRE(r.index(t, s) == -1);
                            REQUIRE(r.weight(t, s) == 0.0f);
                        }
                    }
                }
                CHECK(dropped == expect_dropped);
                if (thr == 0.0) CHECK(dropped == 0);
            }
        }
    }
    moe::routing<float> r(1, 4, 2, false);
    moe::replay_workspace<float> ws;
    const auto l1 = moe::synthetic_logits(1, 4, {}, 1);
    moe::router_config c;
    CHECK(error_of([&] { moe::reduce_experts(r, l1.view(), c, moe::ser_config{3, 0.5}, ws); }) ==
          "[moe.selection.ser] k_min=3 must be in [1, top_k=2]");
    CHECK(error_of([&] { moe::reduce_experts(r, l1.view(), c, moe::ser_config{1, 1.5}, ws); }) ==
          "[moe.selection.ser] threshold=1.5 must be in [0, 1]");
}

TEST_CASE("ser and top_k in the block: the reduced routing runs, and equals replaying it", "[research][ser]") {
    const std::size_t T = 40, E = 8, H = 16, F = 24;
    const auto router = moe::synthetic_logits(E, H, {}, 1);
    std::vector<float> w1(E * F * H), w3(E * F * H), w2(E * H * F);
    moe::splitmix64 rng(5);
    for (auto* v : {&w1, &w3, &w2})
        for (float& f : *v) f = static_cast<float>(static_cast<double>(rng.next() % 2001) / 1000.0 - 1.0) * 0.1f;
    moe::layer_options o;
    o.router = moe::presets::by_name("qwen3_moe");
    o.router.top_k = 4;
    moe::block<> block(router.view(), w1.data(), w3.data(), w2.data(), F, o);
    const auto x = moe::synthetic_logits(T, H, {}, 2);
    moe::matrix<float> y(T, H), y2(T, H);
    block.set_reduction(0, moe::ser_config{1, 0.5});
    block.forward(y.view(), x.view());
    const auto red = block.last_routing();
    CHECK(moe::mean_experts_per_token(red) < 4.0);
    CHECK(moe::mean_experts_per_token(red) >= 1.0);
    block.set_reduction(0);
    block.forward_replay(y2.view(), x.view(), moe::indices_view(red));
    CHECK(block.last_routing().weights == red.weights);
    CHECK(y2.values == y.values);
    // A per-call top-k below the recipe's is the recipe routed with that k.
    block.set_reduction(2);
    block.forward(y.view(), x.view());
    moe::router_config c2 = o.router;
    c2.top_k = 2;
    const auto r2 = moe::route(block.last_logits(), c2);
    CHECK(block.last_routing().indices == r2.indices);
    CHECK(block.last_routing().weights == r2.weights);
    CHECK(error_of([&] { block.set_reduction(5); }) == "[moe.router.top_k] top_k=5 must be in [1, the recipe's k=4]");
    CHECK(error_of([&] { block.set_reduction(2, moe::ser_config{3, 0.5}); }) == "[moe.selection.ser] k_min=3 must be in [1, top_k=2]");
    block.set_reduction(0);
    block.forward(y.view(), x.view());
    CHECK(block.last_routing().top_k == 4);
}

TEST_CASE("routing_stats: hand-computed values", "[research][stats]") {
    moe::routing<float> r(3, 4, 2, false);
    r.indices = {0, 1, 1, 2, 1, -1};
    const auto s = moe::routing_stats(r, 2);
    CHECK(s.load == std::vector<std::size_t>{1, 3, 1, 0});
    CHECK(s.routed == 5);
    CHECK(s.mean_load == 1.25);
    CHECK(s.max_over_mean == Approx(2.4).epsilon(1e-15));
    CHECK(s.cv == Approx(std::sqrt((0.0625 + 3.0625 + 0.0625 + 1.5625) / 4) / 1.25).epsilon(1e-14));
    CHECK(s.jain == Approx(25.0 / 44.0).epsilon(1e-15));
    CHECK(s.load_entropy == Approx(-(0.4 * std::log(0.2) + 0.6 * std::log(0.6))).epsilon(1e-14));
    CHECK(s.adjacent_overlap == 0.75);  // token 1: {1, 2} shares 1 of 2 with {0, 1}; token 2: {1} shares 1 of 1
    CHECK(s.drop_rate == 0.2);          // capacity 2: expert 1 loses one of 5 routed slots
    CHECK(std::isnan(s.routing_entropy));
    // Routing entropy: a uniform row has ln E, a one-hot row 0.
    moe::routing<float> u(2, 4, 1, true);
    u.indices = {0, 1};
    u.scores = {0.25f, 0.25f, 0.25f, 0.25f, 0, 1, 0, 0};
    CHECK(moe::routing_stats(u).routing_entropy == Approx(std::log(4.0) / 2).epsilon(1e-7));
    moe::routing<float> empty(0, 4, 2, false);
    const auto e = moe::routing_stats(empty);
    CHECK(e.routed == 0);
    CHECK(std::isnan(e.adjacent_overlap));
}

TEST_CASE("routing_stats over a trace: per layer, summed, and the layer-to-layer overlap", "[research][stats]") {
    const auto tr = moe::synthetic_trace(3, 200, 16, 2, 4.0, moe::skew::parse("zipf:1.0"), 9);
    const auto s = moe::routing_stats(tr, 30);
    REQUIRE(s.layers.size() == 3);
    REQUIRE(s.layer_overlap.size() == 2);
    std::vector<std::size_t> total(16, 0);
    for (std::size_t l = 0; l < 3; ++l) {
        const auto one = moe::routing_stats(tr.layer(l), 30);
        CHECK(one.load == s.layers[l].load);
        CHECK(one.jain == s.layers[l].jain);
        for (std::size_t e = 0; e < 16; ++e) total[e] += one.load[e];
    }
    CHECK(s.total.load == total);
    double dropped = 0;
    for (const auto& one : s.layers) dropped += one.drop_rate * static_cast<double>(one.routed);
    CHECK(s.total.drop_rate == Approx(dropped / 1200.0).epsilon(1e-12));
    CHECK(s.total.drop_rate > 0);
    // Brute-force statement of the overlaps with std::set.
    auto set_of = [&](std::size_t l, std::size_t t) {
        std::set<int> out;
        for (std::size_t j = 0; j < 2; ++j)
            if (tr.at(l, t, j) >= 0) out.insert(tr.at(l, t, j));
        return out;
    };
    for (std::size_t l = 1; l < 3; ++l) {
        double sum = 0;
        for (std::size_t t = 0; t < 200; ++t) {
            const auto a = set_of(l, t), b = set_of(l - 1, t);
            std::size_t n = 0;
            for (int e : a) n += b.count(e);
            sum += static_cast<double>(n) / static_cast<double>(a.size());
        }
        CHECK(s.layer_overlap[l - 1] == Approx(sum / 200).epsilon(1e-12));
    }
    double adj = 0;
    for (std::size_t t = 1; t < 200; ++t) {
        const auto a = set_of(0, t), b = set_of(0, t - 1);
        std::size_t n = 0;
        for (int e : a) n += b.count(e);
        adj += static_cast<double>(n) / static_cast<double>(a.size());
    }
    CHECK(s.layers[0].adjacent_overlap == Approx(adj / 199).epsilon(1e-12));
}

namespace {

// A record of two layers' routing of synthetic logits (layer ids 3 and 7).
moe::routing_record make_record(moe::router_config c, std::size_t T, std::size_t E) {
    moe::routing_record rec;
    rec.num_layers = 2;
    rec.num_tokens = T;
    rec.num_experts = E;
    rec.top_k = c.top_k;
    rec.layers = {3, 7};
    rec.model = "synthetic";
    rec.recipe = moe::router_recipe_json(c);
    for (std::uint64_t l = 0; l < 2; ++l) {
        const auto r = moe::route(moe::synthetic_logits(T, E, {}, 40 + l).view(), c);
        rec.indices.insert(rec.indices.end(), r.indices.begin(), r.indices.end());
        rec.weights.insert(rec.weights.end(), r.weights.begin(), r.weights.end());
    }
    return rec;
}

std::string record_dir(const std::string& name) {
    const std::string d = std::string(MOE_TEST_TMP_DIR) + "/" + name;
    std::filesystem::remove_all(d);
    return d;
}

void write_text(const std::string& path, const std::string& text) {
    std::ofstream f(path);
    f << text;
}

}  // namespace

TEST_CASE("record: written and read back exactly, with layer positions and the trace it gives", "[research][record]") {
    moe::router_config c = moe::presets::by_name("deepseek_v3");
    const auto rec = make_record(c, 40, 256);
    const std::string d = record_dir("moe_record_ok");
    moe::write_record(d, rec);
    const auto back = moe::read_record(d);
    CHECK(back.num_layers == 2);
    CHECK(back.num_tokens == 40);
    CHECK(back.num_experts == 256);
    CHECK(back.top_k == 8);
    CHECK(back.layers == rec.layers);
    CHECK(back.indices == rec.indices);
    CHECK(back.weights == rec.weights);  // float32 on disk: exact
    CHECK(back.model == "synthetic");
    CHECK(back.recipe["score"] == "sigmoid");
    CHECK(back.recipe["num_groups"] == 8);
    CHECK(back.recipe["top_k"] == 8);
    CHECK(back.position_of(7) == 1);
    CHECK(error_of([&] { (void)back.position_of(5); }) == "[moe.record.layer] layer 5 is not in the record (layers 3, 7)");
    // Layer 1's view is the second routing, and replays to the same weights.
    const auto l1 = moe::synthetic_logits(40, 256, {}, 41);
    const auto q = moe::replay(l1.view(), c, back.layer_indices(1));
    const auto w1 = back.layer_weights(1);
    CHECK(std::vector<float>(w1.data, w1.data + 40 * 8) == q.weights);
    const auto tr = back.trace();
    CHECK(tr.num_layers == 2);
    CHECK(tr.indices == rec.indices);
    // The sidecar as any JSON reader sees it.
    std::ifstream f(d + "/record.json");
    const auto j = nlohmann::json::parse(f);
    CHECK(j["format"] == "moe.routing_record");
    CHECK(j["version"] == 1);
    CHECK(j["tie_rule"] == "lower_index");
    CHECK(j["layers"] == nlohmann::json({3, 7}));
    // Indices only: no weights.npy, and replay recomputes them.
    auto idx_only = rec;
    idx_only.weights.clear();
    moe::write_record(d, idx_only);
    CHECK_FALSE(std::filesystem::exists(d + "/weights.npy"));
    const auto b2 = moe::read_record(d);
    CHECK(b2.weights.empty());
    CHECK(b2.layer_weights(0).data == nullptr);
    CHECK(b2.indices == rec.indices);
}

TEST_CASE("record: untrusted files give a clear error", "[research][record][errors]") {
    moe::router_config c;
    c.top_k = 2;
    const auto rec = make_record(c, 3, 4);
    const std::string d = record_dir("moe_record_bad");
    const std::string js = d + "/record.json", ip = d + "/indices.npy", wp = d + "/weights.npy";
    CHECK(error_of([&] { (void)moe::read_record(d); }) ==
          "[moe.record.io] " + js + ": cannot open (a routing record is a directory with record.json, indices.npy, weights.npy)");
    auto bad = rec;
    bad.layers = {1};
    CHECK(error_of([&] { moe::write_record(d, bad); }) ==
          "[moe.record.shape] record of 2 layers x 3 tokens x k=2 holds 12 indices, 12 weights and 1 layer ids");
    bad = rec;
    bad.top_k = 0;
    CHECK(error_of([&] { moe::write_record(d, bad); }) == "[moe.record.shape] num_experts=4 and top_k=0 must be >= 1");
    bad = rec;
    bad.indices[5] = 4;
    CHECK(error_of([&] { moe::write_record(d, bad); }) == "[moe.record.index] layer 0, token 2, slot 1 holds expert 4, outside [-1, 4)");
    bad = rec;
    bad.weights[7] = INFINITY;
    CHECK(error_of([&] { moe::write_record(d, bad); }) == "[moe.record.weights] layer 1, token 0, slot 1 is not finite");
    auto sidecar = [&](const std::string& text) {
        moe::write_record(d, rec);
        write_text(js, text);
        return error_of([&] { (void)moe::read_record(d); });
    };
    CHECK(sidecar("{not json") == "[moe.record.sidecar] " + js + ": not a JSON object");
    CHECK(sidecar(R"({"format": "other"})") == "[moe.record.sidecar] " + js + ": \"format\" is not \"moe.routing_record\"");
    const std::string head = R"({"format": "moe.routing_record", )";
    CHECK(sidecar(head + R"("version": 2})") == "[moe.record.sidecar] " + js + ": version 2 (this reader knows 1)");
    CHECK(sidecar(head + R"("version": 1, "num_experts": -4, "top_k": 2, "layers": [0, 1]})") ==
          "[moe.record.sidecar] " + js + ": \"num_experts\" must be a non-negative integer");
    CHECK(sidecar(head + R"("version": 1, "num_experts": 0, "top_k": 2, "layers": [0, 1]})") ==
          "[moe.record.sidecar] " + js + ": num_experts and top_k must be >= 1");
    CHECK(sidecar(head + R"("version": 1, "num_experts": 4, "top_k": 2, "layers": [0, "x"]})") ==
          "[moe.record.sidecar] " + js + ": \"layers\" must be an array of layer ids");
    CHECK(sidecar(head + R"("version": 1, "num_experts": 4, "top_k": 2, "layers": [0]})") ==
          "[moe.record.shape] " + ip + ": shape [2, 3, 2], the sidecar gives 1 layers and k=2");
    CHECK(sidecar(head + R"("version": 1, "num_experts": 4, "top_k": 3, "layers": [0, 1]})") ==
          "[moe.record.shape] " + ip + ": shape [2, 3, 2], the sidecar gives 2 layers and k=3");
    auto with_indices = [&](std::vector<std::int32_t> idx) {
        moe::write_record(d, rec);
        moe::io::write_npy(ip, idx.data(), {2, 3, 2});
        return error_of([&] { (void)moe::read_record(d); });
    };
    auto idx = rec.indices;
    idx[9] = 4;
    CHECK(with_indices(idx) == "[moe.record.index] " + ip + ": layer 1, token 1, slot 1 holds expert 4, outside [-1, 4)");
    idx[9] = -3;
    CHECK(with_indices(idx) == "[moe.record.index] " + ip + ": layer 1, token 1, slot 1 holds expert -3, outside [-1, 4)");
    idx[9] = idx[8];
    CHECK(with_indices(idx) == "[moe.record.index] " + ip + ": layer 1, token 1 lists expert " + std::to_string(idx[8]) + " twice");
    moe::write_record(d, rec);
    moe::io::write_npy(ip, rec.weights.data(), {2, 3, 2});
    CHECK(error_of([&] { (void)moe::read_record(d); }) == "[moe.record.shape] " + ip + ": dtype '<f4' where integers were expected");
    auto w = rec.weights;
    w[4] = std::nanf("");
    moe::write_record(d, rec);
    moe::io::write_npy(wp, w.data(), {2, 3, 2});
    CHECK(error_of([&] { (void)moe::read_record(d); }) == "[moe.record.weights] " + wp + ": layer 0, token 2, slot 0 is not finite");
    moe::io::write_npy(wp, w.data(), {2, 2, 3});
    CHECK(error_of([&] { (void)moe::read_record(d); }) == "[moe.record.shape] " + wp + ": shape [2, 2, 3], indices.npy has [2, 3, 2]");
    // -1 is an empty slot (a dynamic-k or reduced routing), not an error.
    idx = rec.indices;
    idx[1] = -1;
    idx[3] = -1;
    moe::write_record(d, rec);
    moe::io::write_npy(ip, idx.data(), {2, 3, 2});
    CHECK(moe::read_record(d).indices == idx);
}
