// Placement: EPLB against the torch statement of DeepSeek's algorithm (tests/gen_placement_golden.py,
// which also checks EPLB's README example), EPLB's invariants, routings over physical experts
// through capacity / dispatch / combine, device loads and traffic against direct counts.
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <moe/capacity.hpp>
#include <moe/dispatch.hpp>
#include <moe/io/npy.hpp>
#include <moe/metrics.hpp>
#include <moe/placement.hpp>

#include "test_support.hpp"

namespace {
const std::string dir = std::string(MOE_TEST_DATA_DIR) + "/placement/";

/// Every EPLB invariant: each logical expert has logcnt replicas, numbered 0..cnt-1, each
/// physical slot runs one expert, log2phy inverts phy2log, and each device gets P/D slots.
void check_placement(const moe::replica_placement& p) {
    const std::size_t E = p.num_logical, P = p.num_physical, R = p.max_replicas;
    for (std::size_t l = 0; l < p.num_layers; ++l) {
        std::size_t total = 0;
        for (std::size_t e = 0; e < E; ++e) {
            const auto cnt = static_cast<std::size_t>(p.replicas(l, e));
            REQUIRE(cnt >= 1);
            total += cnt;
            for (std::size_t r = 0; r < R; ++r) {
                const std::int32_t q = p.physical(l, e, r);
                if (r >= cnt) {
                    REQUIRE(q == -1);
                    continue;
                }
                REQUIRE(q >= 0);
                REQUIRE(p.phy2log[l * P + static_cast<std::size_t>(q)] == static_cast<std::int32_t>(e));
                REQUIRE(p.phyrank[l * P + static_cast<std::size_t>(q)] == static_cast<std::int32_t>(r));
            }
        }
        REQUIRE(total == P);
    }
}
}  // namespace

TEST_CASE("placement: EPLB reproduces DeepSeek's algorithm (README example and random cases)", "[placement][golden]") {
    std::ifstream f(dir + "cases.txt");
    REQUIRE(f.good());
    std::string line;
    std::size_t checked = 0;
    while (std::getline(f, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream words(line);
        std::string name;
        std::size_t P = 0, G = 0, N = 0, D = 0;
        words >> name >> P >> G >> N >> D;
        CAPTURE(name);
        const auto loads = moe::io::read_npy_matrix<float>(dir + name + ".loads.npy");
        const auto phy2log = moe::io::read_npy_matrix<std::int32_t>(dir + name + ".phy2log.npy");
        const auto logcnt = moe::io::read_npy_matrix<std::int32_t>(dir + name + ".logcnt.npy");
        const auto log2phy = moe::io::read_npy(dir + name + ".log2phy.npy");  // [L, E, R] int32
        REQUIRE(log2phy.descr == "<i4");
        std::vector<std::int32_t> l2p(log2phy.size());
        std::memcpy(l2p.data(), log2phy.bytes.data(), l2p.size() * sizeof(std::int32_t));
        const auto p = moe::rebalance_experts(loads.view(), P, G, N, D);
        CHECK(p.phy2log == phy2log.values);
        CHECK(p.logcnt == logcnt.values);
        REQUIRE(log2phy.shape.size() == 3);
        CHECK(p.max_replicas == log2phy.shape[2]);
        CHECK(p.log2phy == l2p);
        check_placement(p);
        ++checked;
    }
    CHECK(checked == 8);
}

TEST_CASE("placement: EPLB's README example, written out", "[placement]") {
    const std::vector<float> w = {90, 132, 40, 61, 104, 165, 39, 4,   73,  56,  183, 86,
                                  20, 107, 104, 64, 19,  197, 187, 157, 172, 86, 16,  27};
    const auto p = moe::rebalance_experts(moe::matrix_view<const float>(w.data(), 2, 12), 16, 4, 2, 8);
    CHECK(p.phy2log == std::vector<std::int32_t>{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1,
                                                 7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1});
    // The hottest expert of layer 0 (10, load 183) got a second replica, on another device.
    CHECK(p.replicas(0, 10) == 2);
    CHECK(p.device_of(static_cast<std::size_t>(p.physical(0, 10, 0))) != p.device_of(static_cast<std::size_t>(p.physical(0, 10, 1))));
}

TEST_CASE("placement: EPLB balances devices better than the contiguous placement", "[placement]") {
    moe::splitmix64 rng(5);
    const std::size_t E = 64, D = 8;
    std::vector<float> w(E);
    for (std::size_t e = 0; e < E; ++e) w[e] = static_cast<float>(std::pow(rng.uniform() + 0.05, 4.0) * 1000.0);
    auto device_max = [&](const moe::replica_placement& p) {
        std::vector<double> dev(D, 0.0);
        for (std::size_t q = 0; q < p.num_physical; ++q) {
            const auto e = static_cast<std::size_t>(p.phy2log[q]);
            dev[static_cast<std::size_t>(p.device_of(q))] += w[e] / p.replicas(0, e);
        }
        return *std::max_element(dev.begin(), dev.end());
    };
    const auto eplb = moe::rebalance_experts(moe::matrix_view<const float>(w.data(), 1, E), E + 16, 8, 1, D);
    const auto flat = moe::contiguous_placement(1, E, D);
    check_placement(eplb);
    check_placement(flat);
    CHECK(device_max(eplb) < 0.8 * device_max(flat));
}

TEST_CASE("placement: bad input gets stable IDs", "[placement]") {
    const std::vector<float> w(16, 1.0f);
    const moe::matrix_view<const float> v(w.data(), 2, 8);
    CHECK(moe_test::error_of([&] { (void)moe::rebalance_experts(v, 6, 1, 1, 2); }) ==
          "[moe.placement.replicas] num_replicas=6 is fewer than the 8 experts (each needs one)");
    CHECK(moe_test::error_of([&] { (void)moe::rebalance_experts(v, 10, 1, 1, 4); }) ==
          "[moe.placement.devices] num_replicas=10 must be a positive multiple of num_devices=4");
    CHECK(moe_test::error_of([&] { (void)moe::rebalance_experts(v, 8, 3, 1, 2); }) ==
          "[moe.placement.groups] num_groups=3 does not divide the 8 experts");
    CHECK(moe_test::error_of([&] { (void)moe::rebalance_experts(v, 12, 2, 2, 3); }) ==
          "[moe.placement.devices] num_devices=3 is not a multiple of num_nodes=2");
    std::vector<float> bad = w;
    bad[9] = -1.0f;
    CHECK(moe_test::error_of([&] { (void)moe::rebalance_experts(moe::matrix_view<const float>(bad.data(), 2, 8), 8, 1, 1, 2); }) ==
          "[moe.placement.loads] load of layer 1, expert 1 is -1 (loads are finite and >= 0)");
    CHECK(moe_test::error_of([] { (void)moe::parse_replica_policy("random"); }) ==
          "[moe.placement.policy] unknown replica policy 'random' (expected round_robin or least_loaded)");
    const auto p = moe::contiguous_placement(1, 8, 2);
    const auto r = moe::route(moe_test::random_logits(4, 6, 1), moe::presets::mixtral());
    CHECK(moe_test::error_of([&] { (void)moe::to_physical(r, p); }) ==
          "[moe.placement.routing] routing has 6 experts, the placement 8 logical ones");
    CHECK(moe_test::error_of([&] { (void)moe::to_physical(moe::route(moe_test::random_logits(4, 8, 1), moe::presets::mixtral()), p, 1); }) ==
          "[moe.placement.layer] layer 1 is past the placement's 1 layers");
}

TEST_CASE("placement: routings over replicas keep every slot and spread hot experts", "[placement]") {
    const std::size_t T = 512, E = 16, D = 4;
    auto logits = moe_test::random_logits(T, E, 11);
    for (std::size_t t = 0; t < T; ++t) logits(t, 3) += 3.0f;  // expert 3 is hot
    auto cfg = moe::presets::mixtral();
    cfg.keep_scores = true;
    const auto r = moe::route(logits, cfg);
    const auto load = r.tokens_per_expert();
    std::vector<float> w(load.begin(), load.end());
    const auto p = moe::rebalance_experts(moe::matrix_view<const float>(w.data(), 1, E), 20, 1, 1, D);
    REQUIRE(p.replicas(0, 3) >= 2);
    std::vector<std::size_t> device_max;
    for (auto policy : {moe::replica_policy::round_robin, moe::replica_policy::least_loaded}) {
        const auto ph = moe::to_physical(r, p, 0, policy);
        REQUIRE(ph.num_experts == 20);
        // Each slot goes to a replica of its own expert, with its weight and its scores.
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t s = 0; s < r.top_k; ++s) {
                REQUIRE(p.phy2log[static_cast<std::size_t>(ph.index(t, s))] == r.index(t, s));
                REQUIRE(ph.weight(t, s) == r.weight(t, s));
                REQUIRE(ph.scores[t * 20 + static_cast<std::size_t>(ph.index(t, s))] == r.scores[t * E + static_cast<std::size_t>(r.index(t, s))]);
            }
        // Round robin: every replica of the hot expert serves a share of it (least-loaded may
        // leave a replica idle when its device is busy with other experts).
        const auto phl = ph.tokens_per_expert();
        for (std::int32_t c = 0; c < p.replicas(0, 3) && policy == moe::replica_policy::round_robin; ++c)
            CHECK(phl[static_cast<std::size_t>(p.physical(0, 3, static_cast<std::size_t>(c)))] > load[3] / (2 * static_cast<std::size_t>(p.replicas(0, 3))));
        if (policy == moe::replica_policy::round_robin)  // replica t mod count: token t's choice alone
            for (std::size_t t = 0; t < T; ++t)
                for (std::size_t s = 0; s < r.top_k; ++s) {
                    const auto e = static_cast<std::size_t>(r.index(t, s));
                    REQUIRE(ph.index(t, s) == p.physical(0, e, t % static_cast<std::size_t>(p.replicas(0, e))));
                }
        const auto dl = moe::device_loads(ph, p.physical_devices());
        device_max.push_back(*std::max_element(dl.begin(), dl.end()));
        // Through capacity, dispatch and combine as any routing: nothing lost.
        auto capped = ph;
        moe::drop_config dc;
        dc.capacity.factor = 1.0;
        dc.placement = p.physical_devices();
        dc.reroute = true;
        const auto rep = moe::apply_capacity(capped, dc);
        std::size_t routed = 0;
        for (std::int32_t e : capped.indices) routed += e >= 0;
        CHECK(routed + rep.dropped.size() == T * r.top_k);
        const auto plan = moe::make_plan(capped);
        CHECK(plan.num_rows() == routed);
        // Device loads agree with the traffic report's, and traffic adds up.
        const auto tr = moe::measure_traffic(ph, p.physical_devices(), D);
        CHECK(tr.device_load == moe::device_loads(ph, p.physical_devices()));
        CHECK(tr.cross_rows + tr.local_rows == T * r.top_k);
        std::size_t sent = 0, received = 0;
        for (std::size_t d = 0; d < D; ++d) {
            sent += tr.sent[d];
            received += tr.received[d];
        }
        CHECK(sent == tr.cross_rows);
        CHECK(received == tr.cross_rows);
        CHECK(tr.cross_bytes(4096) == 2.0 * static_cast<double>(tr.cross_rows) * 4096);
    }
    CHECK(device_max[1] <= device_max[0]);  // least-loaded balances devices at least as well
}

TEST_CASE("placement: traffic counted directly", "[placement]") {
    // 4 tokens on 2 devices (tokens 0-1 on device 0, 2-3 on device 1); experts 0,1 on device 0.
    moe::routing<float> r(4, 4, 2, false);
    r.indices = {0, 2, 1, -1, 3, 0, 2, 3};
    r.weights.assign(8, 0.5f);
    const auto t = moe::measure_traffic(r, {0, 0, 1, 1}, 2);
    // Local: t0->e0, t1->e1, t2->e3, t3->e2, t3->e3. Cross: t0->e2 (0 to 1), t2->e0 (1 to 0).
    CHECK(t.local_rows == 5);
    CHECK(t.cross_rows == 2);
    CHECK(t.device_load == std::vector<std::size_t>{3, 4});
    CHECK(t.sent == std::vector<std::size_t>{1, 1});
    CHECK(t.received == std::vector<std::size_t>{1, 1});
    CHECK(t.max_over_mean == Approx(8.0 / 7.0));
    CHECK(moe_test::error_of([&] { (void)moe::measure_traffic(r, {0, 0, 1, 2}, 2); }) ==
          "[moe.capacity.placement] placement holds device 2, outside [0, 2)");
}

TEST_CASE("placement: affinity placement keeps correlated layers on one device", "[placement]") {
    const std::size_t L = 4, E = 16, D = 4;
    const auto tr = moe::synthetic_trace(L, 800, E, 2, 5.0, {}, 4);
    const auto c = moe::transition_counts(tr);
    const auto aff = moe::affinity_placement(c, L, E, D);
    const auto flat = moe::contiguous_layers(L, E, D);
    for (std::size_t l = 0; l < L; ++l) {  // balanced: E / D experts on every device
        std::vector<std::size_t> fill(D, 0);
        for (std::int32_t d : aff.layer(l)) ++fill[static_cast<std::size_t>(d)];
        CHECK(fill == std::vector<std::size_t>(D, E / D));
    }
    const auto t_aff = moe::transition_traffic(tr, aff), t_flat = moe::transition_traffic(tr, flat);
    CHECK(t_aff.pairs == t_flat.pairs);
    CHECK(t_aff.crossing + moe::colocated_transitions(c, aff) == Approx(t_aff.pairs));  // two statements of one count
    const auto eplb = moe::rebalance_experts(moe::layer_loads(tr).view(), E + 4, 1, 1, D);
    const auto t_eplb = moe::transition_traffic(tr, eplb);
    CHECK(t_eplb.pairs == t_flat.pairs);
    CAPTURE(t_aff.crossing_fraction(), t_flat.crossing_fraction(), t_eplb.crossing_fraction());
    CHECK(t_aff.crossing_fraction() < 0.7 * t_flat.crossing_fraction());  // 0.40 vs 0.69 here
    CHECK(t_aff.crossing_fraction() < t_eplb.crossing_fraction());
    CHECK(moe_test::error_of([&] { (void)moe::affinity_placement(c, L + 1, E, D); }) ==
          "[moe.placement.transitions] expected 4 transition matrices for 5 layers, got 3");
    CHECK(moe_test::error_of([&] { (void)moe::affinity_placement(c, L, E, 3); }) ==
          "[moe.placement.devices] num_devices=3 does not divide the 16 experts");
}
