// Traces and offloading: SRP / SCH on traces worked by hand and against a direct statement of
// the definitions, the cache policies on hand-worked sequences, Belady against brute force
// (no eviction sequence loads fewer experts), prefetch on correlated layers.
#include <functional>
#include <limits>
#include <map>

#include <moe/io/npy.hpp>
#include <moe/analysis/offload.hpp>
#include <moe/analysis/trace.hpp>

#include "test_support.hpp"

namespace {

moe::routing_trace one_layer(std::size_t E, std::size_t k, const std::vector<std::int32_t>& idx) {
    moe::routing_trace tr(1, idx.size() / k, E, k);
    tr.indices = idx;
    return tr;
}

/// SRP's definition, stated directly: every segment, every threshold, sums over segments.
double srp_direct(const moe::routing_trace& tr, std::size_t l, std::size_t L) {
    double best = 0;
    for (std::size_t th = 0; th <= L; ++th) {
        double m = 0, p = 0, a = 0;
        for (std::size_t i = 0; i + L <= tr.num_tokens; ++i)
            for (std::size_t e = 0; e < tr.num_experts; ++e) {
                std::size_t c = 0;
                for (std::size_t t = i; t < i + L; ++t)
                    for (std::size_t s = 0; s < tr.top_k; ++s) c += tr.at(l, t, s) == static_cast<std::int32_t>(e);
                a += static_cast<double>(c);
                if (c >= th) {
                    m += static_cast<double>(c);
                    p += static_cast<double>(L);
                }
            }
        best = std::max(best, 2 * m / std::max(p + a, 1.0));
    }
    return best;
}

double sch_direct(const moe::routing_trace& tr, std::size_t l, std::size_t L, std::size_t cap) {
    double hits = 0, acts = 0;
    for (std::size_t i = 0; i + L <= tr.num_tokens; ++i) {
        std::vector<std::size_t> c(tr.num_experts, 0);
        for (std::size_t t = i; t < i + L; ++t)
            for (std::size_t s = 0; s < tr.top_k; ++s)
                if (tr.at(l, t, s) >= 0) ++c[static_cast<std::size_t>(tr.at(l, t, s))];
        std::sort(c.begin(), c.end(), std::greater<>());
        for (std::size_t j = 0; j < c.size(); ++j) {
            acts += static_cast<double>(c[j]);
            if (j < cap) hits += static_cast<double>(c[j]);
        }
    }
    return hits / acts;
}

/// The fewest loads any eviction sequence achieves on a one-layer trace (exhaustive search;
/// the current token's experts stay resident).
std::size_t brute_force_loads(const moe::routing_trace& tr, std::size_t cap) {
    const std::size_t T = tr.num_tokens, k = tr.top_k;
    std::map<std::pair<std::size_t, unsigned>, std::size_t> memo;
    std::function<std::size_t(std::size_t, unsigned)> go = [&](std::size_t t, unsigned cache) -> std::size_t {
        if (t == T) return 0;
        const auto key = std::make_pair(t, cache);
        if (auto it = memo.find(key); it != memo.end()) return it->second;
        unsigned need = 0;
        for (std::size_t s = 0; s < k; ++s)
            if (tr.at(0, t, s) >= 0) need |= 1u << tr.at(0, t, s);
        const unsigned missing = need & ~cache;
        const std::size_t loads = static_cast<std::size_t>(__builtin_popcount(missing));
        std::size_t best = static_cast<std::size_t>(-1);
        // Keep `need` plus any subset of the rest of the cache that fits.
        const unsigned others = cache & ~need;
        for (unsigned sub = others;; sub = (sub - 1) & others) {
            if (static_cast<std::size_t>(__builtin_popcount(sub | need)) <= cap) best = std::min(best, go(t + 1, sub | need));
            if (sub == 0) break;
        }
        return memo[key] = loads + best;
    };
    return go(0, 0);
}

}  // namespace

TEST_CASE("offload: SRP and SCH on a trace worked by hand", "[offload]") {
    // Experts of 4 tokens (k = 1, E = 3): 0 0 1 0. Segments of 2: {0,0} {0,1} {1,0}.
    const auto tr = one_layer(3, 1, {0, 0, 1, 0});
    // theta 0: F1 = 2*6 / (9*2 + 6) = 0.5; theta 1: 2*6 / (5*2 + 6) = 0.75; theta 2: 2*2 / (2 + 6) = 0.5.
    const auto srp = moe::segment_routing_performance(tr, 0, 2);
    CHECK(srp.srp == Approx(0.75));
    CHECK(srp.threshold == 1);
    CHECK(srp.precision == Approx(0.6));
    CHECK(srp.recall == Approx(1.0));
    // One cached expert per segment serves 2 + 1 + 1 of 6 activations; two serve all.
    CHECK(moe::segment_cache_hit_rate(tr, 0, 2, 1) == Approx(4.0 / 6.0));
    CHECK(moe::segment_cache_hit_rate(tr, 0, 2, 2) == Approx(1.0));
    CHECK(moe::segment_cache_hit_rate(tr, 0, 1, 1) == Approx(1.0));
    CHECK(moe_test::error_of([&] { (void)moe::segment_routing_performance(tr, 0, 5); }) ==
          "[moe.offload.segment] segment length 5 must be in [1, num_tokens=4]");
    CHECK(moe_test::error_of([&] { (void)moe::segment_cache_hit_rate(tr, 1, 2, 1); }) ==
          "[moe.trace.layer] layer 1 is past the trace's 1 layers");
}

TEST_CASE("offload: SRP and SCH agree with the definitions on random traces", "[offload]") {
    for (std::uint64_t seed : {1u, 2u, 3u}) {
        const auto tr = moe::synthetic_trace(2, 40, 8, 2, 2.0, moe::skew::parse("zipf:1"), seed);
        for (std::size_t l = 0; l < 2; ++l)
            for (std::size_t L : {1u, 3u, 8u, 40u}) {
                CHECK(moe::segment_routing_performance(tr, l, L).srp == Approx(srp_direct(tr, l, L)).epsilon(1e-12));
                for (std::size_t m : {1u, 2u, 4u, 8u})
                    CHECK(moe::segment_cache_hit_rate(tr, l, L, m) == Approx(sch_direct(tr, l, L, m)).epsilon(1e-12));
            }
    }
}

TEST_CASE("offload: cache policies on a sequence worked by hand", "[offload]") {
    // Cache of 2, experts 0 1 2 0 1 2: LRU and LFU miss every time; Belady keeps 0 for token 3
    // (evicting 1, used later) and 2 for token 5 (evicting 0, never used again).
    const auto tr = one_layer(3, 1, {0, 1, 2, 0, 1, 2});
    const auto lru = moe::simulate_cache(tr, 2, moe::cache_policy::lru);
    const auto lfu = moe::simulate_cache(tr, 2, moe::cache_policy::lfu);
    const auto opt = moe::simulate_cache(tr, 2, moe::cache_policy::belady);
    CHECK(lru.hits == 0);
    CHECK(lru.loads == 6);
    CHECK(lfu.hits == 0);
    CHECK(opt.hits == 2);
    CHECK(opt.loads == 4);
    CHECK(opt.hit_rate() == Approx(2.0 / 6.0));
    CHECK(opt.bytes_per_token(1000.0) == Approx(4000.0 / 6.0));
    // LFU keeps the frequent expert where LRU does not: 0 0 0 1 2 0.
    const auto freq = one_layer(3, 1, {0, 0, 0, 1, 2, 0});
    CHECK(moe::simulate_cache(freq, 2, moe::cache_policy::lfu).hits == 3);
    CHECK(moe::simulate_cache(freq, 2, moe::cache_policy::lru).hits == 2);
    CHECK(moe_test::error_of([&] { (void)moe::simulate_cache(tr, 0, moe::cache_policy::lru); }) ==
          "[moe.offload.capacity] cache capacity must be >= 1 expert per layer");
    CHECK(moe_test::error_of([] { (void)moe::parse_cache_policy("fifo"); }) ==
          "[moe.offload.policy] unknown cache policy 'fifo' (expected lru, lfu, belady or prefetch)");
}

TEST_CASE("offload: Belady loads no more than brute force's best, nor than any policy", "[offload]") {
    moe::splitmix64 rng(9);
    for (int trial = 0; trial < 60; ++trial) {
        const std::size_t E = 5, k = 1 + static_cast<std::size_t>(trial % 2), T = 10, cap = k + 1 + static_cast<std::size_t>(trial % 3);
        std::vector<std::int32_t> idx;
        for (std::size_t t = 0; t < T; ++t) {
            std::vector<std::int32_t> picks;
            while (picks.size() < k) {
                const auto e = static_cast<std::int32_t>(rng.next() % E);
                if (std::find(picks.begin(), picks.end(), e) == picks.end()) picks.push_back(e);
            }
            idx.insert(idx.end(), picks.begin(), picks.end());
        }
        const auto tr = one_layer(E, k, idx);
        const std::size_t best = brute_force_loads(tr, cap);
        const auto opt = moe::simulate_cache(tr, cap, moe::cache_policy::belady);
        CAPTURE(trial, k, cap);
        CHECK(opt.loads == best);
        for (auto p : {moe::cache_policy::lru, moe::cache_policy::lfu, moe::cache_policy::prefetch})
            CHECK(moe::simulate_cache(tr, cap, p).loads >= best);
    }
}

TEST_CASE("offload: prefetching from transition counts pays on correlated layers", "[offload]") {
    const auto tr = moe::synthetic_trace(4, 400, 16, 2, 6.0, {}, 3);
    const auto lru = moe::simulate_cache(tr, 4, moe::cache_policy::lru);
    const auto pre = moe::simulate_cache(tr, 4, moe::cache_policy::prefetch);
    const auto opt = moe::simulate_cache(tr, 4, moe::cache_policy::belady);
    CAPTURE(lru.hit_rate(), pre.hit_rate(), opt.hit_rate());
    CHECK(pre.hit_rate() > lru.hit_rate() + 0.1);
    CHECK(pre.prefetches > 0);
    CHECK(opt.loads <= pre.loads);
    CHECK(opt.loads <= lru.loads);
    // On independent layers the predictions carry nothing: no gain worth the name.
    const auto flat = moe::synthetic_trace(4, 400, 16, 2, 0.0, {}, 3);
    CHECK(moe::simulate_cache(flat, 4, moe::cache_policy::prefetch).hit_rate() <
          moe::simulate_cache(flat, 4, moe::cache_policy::lru).hit_rate() + 0.1);
}

TEST_CASE("trace: loads, transitions and logits traces", "[trace]") {
    moe::routing_trace tr(2, 3, 4, 2);
    tr.indices = {0, 1, 1, 2, 3, -1,   // layer 0
                  2, 3, 2, 0, 1, 2};   // layer 1
    tr.validate();
    const auto loads = moe::layer_loads(tr);
    CHECK(loads.values == std::vector<float>{1, 2, 1, 1, 1, 1, 3, 1});
    const auto c = moe::transition_counts(tr);
    REQUIRE(c.size() == 1);
    // token 0: {0,1} -> {2,3}; token 1: {1,2} -> {2,0}; token 2: {3} -> {1,2}
    CHECK(c[0](0, 2) == 1);
    CHECK(c[0](1, 2) == 2);
    CHECK(c[0](1, 0) == 1);
    CHECK(c[0](3, 1) == 1);
    double total = 0;
    for (double v : c[0].values) total += v;
    CHECK(total == 4 + 4 + 2);
    tr.indices[5] = 4;
    CHECK(moe_test::error_of([&] { tr.validate(); }) == "[moe.trace.index] layer 0, token 2 holds expert 4, outside [-1, 4)");
    // From logits: each layer routed as route() does.
    const auto l0 = moe_test::random_logits(5, 6, 1), l1 = moe_test::random_logits(5, 6, 2);
    std::vector<float> stacked(l0.values);
    stacked.insert(stacked.end(), l1.values.begin(), l1.values.end());
    const auto lt = moe::trace_from_logits(stacked.data(), 2, 5, 6, moe::presets::mixtral());
    CHECK(lt.layer(1).indices == moe::route(l1, moe::presets::mixtral()).indices);
}

TEST_CASE("trace: .npy traces of logits (float16 too) and of indices, bad ones get IDs", "[trace]") {
    const std::string dir = MOE_TEST_TMP_DIR;
    const auto l0 = moe_test::random_logits(6, 8, 3), l1 = moe_test::random_logits(6, 8, 4);
    std::vector<double> stacked(l0.values.begin(), l0.values.end());
    stacked.insert(stacked.end(), l1.values.begin(), l1.values.end());
    moe::io::write_npy(dir + "/trace_logits.npy", stacked.data(), {2, 6, 8});
    const auto cfg = moe::presets::mixtral();
    const auto tr = moe::read_trace(dir + "/trace_logits.npy", cfg);
    CHECK(tr.num_layers == 2);
    CHECK(tr.num_experts == 8);
    CHECK(tr.layer(0).indices == moe::route(l0, cfg).indices);
    CHECK(tr.layer(1).indices == moe::route(l1, cfg).indices);
    std::vector<std::int64_t> idx(tr.indices.begin(), tr.indices.end());
    moe::io::write_npy(dir + "/trace_idx.npy", idx.data(), {2, 6, 2});
    const auto ti = moe::read_trace(dir + "/trace_idx.npy", cfg, 8);
    CHECK(ti.indices == tr.indices);
    CHECK(ti.num_experts == 8);
    CHECK(moe_test::error_of([&] { (void)moe::read_trace(dir + "/trace_idx.npy", cfg, 3); }).rfind("[moe.trace.index] ", 0) == 0);
    // The largest index sizes the trace: at 2^63 - 1 (found by fuzz.io) that size overflowed.
    const std::vector<std::int64_t> huge{0, 1, std::numeric_limits<std::int64_t>::max(), 2};
    moe::io::write_npy(dir + "/trace_huge.npy", huge.data(), {2, 2});
    CHECK(moe_test::error_of([&] { (void)moe::read_trace(dir + "/trace_huge.npy", cfg); }) ==
          "[moe.trace.index] " + dir + "/trace_huge.npy: index 9223372036854775807 at position 2 is outside the int32 expert ids");
    CHECK(moe_test::error_of([&] { (void)moe::read_trace(dir + "/trace_huge.npy", cfg, 8); }) ==
          "[moe.trace.index] " + dir + "/trace_huge.npy: index 9223372036854775807 at position 2 is outside [-1, 8)");
    const std::vector<float> four(16, 0.0f);
    moe::io::write_npy(dir + "/trace_4d.npy", four.data(), {2, 2, 2, 2});
    CHECK(moe_test::error_of([&] { (void)moe::read_trace(dir + "/trace_4d.npy", cfg); }) ==
          "[moe.trace.shape] " + dir + "/trace_4d.npy: expected [L, T, E] logits or [L, T, k] indices, got shape [2, 2, 2, 2]");
}
