// Dispatch plan, gather and combine: plan invariants against a brute-force reference, and the
// round trips that must hold exactly.
#include <map>
#include <numeric>

#include "test_support.hpp"

using moe_test::error_of;

namespace {

/// A routing with some empty slots (-1), as capacity drops will produce.
moe::routing<float> sample_routing(std::size_t T, std::size_t E, std::size_t k, std::uint64_t seed, bool holes) {
    auto r = moe::route(moe_test::random_logits(T, E, seed), moe::presets::qwen2_moe(k, true));
    moe::splitmix64 rng(seed + 1);
    if (holes)
        for (std::size_t i = 0; i < r.indices.size(); ++i)
            if (rng.uniform() < 0.2) {
                r.indices[i] = -1;
                r.weights[i] = 0.0f;
            }
    return r;
}

void check_plan(const moe::dispatch_plan& p, const moe::routing<float>& r, std::size_t rows_per_expert = 0) {
    const std::size_t E = r.num_experts, k = r.top_k;
    // Reference: (expert, token) pairs in sorted order = the expected rows, expert by expert.
    std::map<std::pair<int, int>, int> expected;  // (expert, token) -> slot
    for (std::size_t t = 0; t < r.num_tokens; ++t)
        for (std::size_t s = 0; s < k; ++s)
            if (r.index(t, s) >= 0) expected[{r.index(t, s), static_cast<int>(t)}] = static_cast<int>(s);
    REQUIRE(p.offsets.size() == E + 1);
    REQUIRE(p.offsets[0] == 0);
    auto it = expected.begin();
    for (std::size_t e = 0; e < E; ++e) {
        const int begin = p.offsets[e], end = p.offsets[e + 1], routed = p.counts[e];
        // Rows: the routed count (or rows_per_expert), rounded up to the block.
        const int want = static_cast<int>((std::max<std::size_t>(static_cast<std::size_t>(routed), rows_per_expert) + p.block - 1) /
                                          p.block * p.block);
        REQUIRE(end - begin == want);
        for (int row = begin; row < end; ++row) {
            if (row < begin + routed) {
                REQUIRE(it != expected.end());
                REQUIRE(it->first.first == static_cast<int>(e));
                REQUIRE(p.row_token[static_cast<std::size_t>(row)] == it->first.second);  // token order inside an expert
                REQUIRE(p.row_slot[static_cast<std::size_t>(row)] == it->second);
                REQUIRE(p.slot_row[static_cast<std::size_t>(it->first.second) * k + static_cast<std::size_t>(it->second)] == row);
                ++it;
            } else {
                REQUIRE(p.row_token[static_cast<std::size_t>(row)] == -1);  // padding
                REQUIRE(p.row_slot[static_cast<std::size_t>(row)] == -1);
            }
        }
    }
    REQUIRE(it == expected.end());
    for (std::size_t i = 0; i < r.indices.size(); ++i)
        if (r.indices[i] < 0) REQUIRE(p.slot_row[i] == -1);  // nothing lost: empty slots say so
}

}  // namespace

TEST_CASE("dispatch: plans are expert-major, stable, padded to the block", "[dispatch]") {
    for (std::size_t block : {1u, 4u, 128u})
        for (bool holes : {false, true})
            for (auto [T, E, k] : {std::tuple<std::size_t, std::size_t, std::size_t>{1, 8, 2}, {37, 8, 2}, {200, 64, 8}, {5, 16, 4}}) {
                CAPTURE(block, holes, T, E, k);
                const auto r = sample_routing(T, E, k, T * E + k, holes);
                const auto p = moe::make_plan(r, block);
                check_plan(p, r);
                if (block == 1) CHECK(p.padding_fraction() == 0.0);
            }
    // All tokens to one expert; experts with no rows.
    moe::routing<float> one(50, 8, 1, false);
    for (auto& i : one.indices) i = 3;
    const auto p = moe::make_plan(one, 16);
    check_plan(p, one);
    CHECK(p.num_rows() == 64);
    CHECK(p.padding_fraction() == Approx(14.0 / 64.0));
}

TEST_CASE("dispatch: gather then combine restores x, and padding changes nothing", "[dispatch]") {
    const std::size_t T = 45, E = 8, H = 37;
    const auto x = moe_test::random_logits(T, H, 3);
    for (bool holes : {false, true}) {
        auto r = sample_routing(T, E, 2, 9, holes);
        // Weights that sum to 1 per token over its routed slots (an identity "expert").
        std::vector<float> kept(T, 0.0f);
        for (std::size_t t = 0; t < T; ++t) {
            std::size_t n = 0;
            for (std::size_t s = 0; s < 2; ++s) n += r.index(t, s) >= 0;
            for (std::size_t s = 0; s < 2; ++s) r.weights[t * 2 + s] = r.index(t, s) >= 0 ? 1.0f / float(n) : 0.0f;
            kept[t] = n ? 1.0f : 0.0f;
        }
        moe::matrix<float> y_ref;
        for (std::size_t block : {1u, 8u}) {
            const auto p = moe::make_plan(r, block);
            moe::matrix<float> rows(p.num_rows(), H, -7.0f), y(T, H, -7.0f);
            moe::gather(rows.view(), x.view(), p);
            for (std::size_t i = 0; i < p.num_rows(); ++i)
                if (p.row_token[i] < 0)
                    for (std::size_t h = 0; h < H; ++h) REQUIRE(rows(i, h) == 0.0f);  // padding is zero
            moe::combine(y.view(), rows.view(), p, r, moe_test::reversed_threads_executor{});
            for (std::size_t t = 0; t < T; ++t)
                for (std::size_t h = 0; h < H; ++h) REQUIRE(y(t, h) == kept[t] * x(t, h));  // 1/n * x summed n times: exact for n <= 2
            if (block == 1) y_ref = y;
            else CHECK(y.values == y_ref.values);
        }
    }
}

TEST_CASE("dispatch: bad routings and shapes are errors", "[dispatch][errors]") {
    moe::routing<float> r(2, 4, 2, false);
    r.indices = {0, 1, 2, 4};
    CHECK(error_of([&] { (void)moe::make_plan(r); }) == "[moe.dispatch.index] token 1, slot 1 names expert 4 (num_experts=4)");
    r.indices = {0, 1, 2, 2};
    CHECK(error_of([&] { (void)moe::make_plan(r); }) == "[moe.dispatch.duplicate] token 1 has slots 0 and 1 on expert 2");
    r.indices = {0, 1, 2, -1};
    CHECK(error_of([&] { (void)moe::make_plan(r, 0); }) == "[moe.dispatch.block] block size must be at least 1");
    const auto p = moe::make_plan(r);
    moe::matrix<float> x(2, 8), rows(2, 8), y(2, 8);
    CHECK(error_of([&] { moe::gather(rows.view(), x.view(), p); }) ==
          "[moe.dispatch.shape] gather: x is 2 x 8, rows 2 x 8; the plan needs 2 tokens and 3 rows of 8");
    CHECK(error_of([&] { moe::combine(y.view(), rows.view(), p, r); }) ==
          "[moe.dispatch.shape] combine: y is 2 x 8, expert output 2 x 8; the plan needs 2 tokens and 3 rows");
}

TEST_CASE("dispatch: combine sums slots in order, also past 64 slots per token", "[dispatch]") {
    // k = 70 > 64 takes the multi-pass path; the reference is the documented FMA chain.
    const std::size_t T = 3, E = 80, k = 70, H = 41;
    auto r = moe::route(moe_test::random_logits(T, E, 5), moe::presets::qwen2_moe(k, true));
    r.indices[5] = -1;  // an empty slot is skipped
    r.weights[5] = 0.0f;
    const auto p = moe::make_plan(r);
    const auto out = moe_test::random_logits(p.num_rows(), H, 6);
    moe::matrix<float> y(T, H);
    moe::combine(y.view(), out.view(), p, r);
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t h = 0; h < H; ++h) {
            float a = 0.0f;
            for (std::size_t s = 0; s < k; ++s)
                if (p.slot_row[t * k + s] >= 0) a = std::fma(r.weight(t, s), out(static_cast<std::size_t>(p.slot_row[t * k + s]), h), a);
            REQUIRE(y(t, h) == a);
        }
}

TEST_CASE("dispatch: pad-to-capacity gives every expert exactly C rows, and masked tokens vanish", "[dispatch]") {
    auto r = sample_routing(40, 8, 2, 3, false);
    std::vector<std::uint8_t> valid(40, 1);
    for (std::size_t t = 30; t < 40; ++t) valid[t] = 0;  // a padded batch
    moe::mask_tokens(r, valid);
    for (std::size_t t = 30; t < 40; ++t) CHECK((r.index(t, 0) == -1 && r.index(t, 1) == -1 && r.weight(t, 0) == 0.0f));
    moe::drop_config d;
    d.capacity.factor = 1.0;  // megatron: ceil(40 * 2 / 8) = 10
    const auto rep = moe::apply_capacity(r, d);
    CHECK(rep.capacity == 10);
    for (std::int32_t i : rep.dropped) CHECK(i / 2 < 30);  // masked tokens are never "dropped"
    const auto p = moe::make_plan(r, 1, rep.capacity);
    check_plan(p, r, rep.capacity);
    for (std::size_t e = 0; e < 8; ++e) CHECK(p.offsets[e + 1] - p.offsets[e] == 10);
    const auto pb = moe::make_plan(r, 4, rep.capacity);  // then rounded to blocks of 4
    check_plan(pb, r, rep.capacity);
    for (std::size_t e = 0; e < 8; ++e) CHECK(pb.offsets[e + 1] - pb.offsets[e] == 12);
    CHECK(moe_test::error_of([&] { (void)moe::make_plan(r, 1, 2); }).rfind("[moe.dispatch.capacity] expert ", 0) == 0);
    CHECK(moe_test::error_of([&] { moe::mask_tokens(r, std::vector<int>(3, 1)); }) ==
          "[moe.router.mask] mask has 3 entries, expected num_tokens=40");
}

TEST_CASE("dispatch: vLLM moe_align_block_size layout", "[dispatch]") {
    // Reference: vLLM's torch golden, transcribed: stable sort of the flattened expert ids,
    // per-expert counts padded to the block, sentinel = numel, one expert id per block.
    for (std::size_t block : {1u, 4u, 16u}) {
        const auto r = sample_routing(37, 8, 2, block, false);
        const std::size_t n = r.indices.size();
        std::vector<std::int32_t> order(n);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return r.indices[a] < r.indices[b]; });
        std::vector<std::int32_t> want_ids, want_experts;
        std::size_t pos = 0;
        for (std::int32_t e = 0; e < 8; ++e) {
            std::size_t c = 0;
            while (pos < n && r.indices[static_cast<std::size_t>(order[pos])] == e) want_ids.push_back(order[pos++]), ++c;
            const std::size_t padded = (c + block - 1) / block * block;
            for (std::size_t j = c; j < padded; ++j) want_ids.push_back(static_cast<std::int32_t>(n));
            for (std::size_t b = 0; b < padded / block; ++b) want_experts.push_back(e);
        }
        const auto v = moe::to_vllm_layout(moe::make_plan(r, block));
        CAPTURE(block);
        CHECK(v.sorted_token_ids == want_ids);
        CHECK(v.expert_ids == want_experts);
        CHECK(v.num_tokens_post_pad == static_cast<std::int32_t>(want_ids.size()));
    }
}

TEST_CASE("dispatch: MegaBlocks block padding (blocking = 128)", "[dispatch]") {
    // MegaBlocks: padded_bins = inclusive_cumsum(round_up(tokens_per_expert, blocking)), and
    // each expert's rows start at the previous bin; the padded rows are empty.
    const auto r = sample_routing(300, 16, 2, 11, true);
    const auto p = moe::make_plan(r, 128);
    const auto tokens_per_expert = r.tokens_per_expert();
    std::int64_t bin = 0;
    for (std::size_t e = 0; e < 16; ++e) {
        bin += static_cast<std::int64_t>((tokens_per_expert[e] + 127) / 128 * 128);
        CHECK(p.offsets[e + 1] == bin);
        CHECK(static_cast<std::size_t>(p.counts[e]) == tokens_per_expert[e]);
    }
}

TEST_CASE("dispatch: pad-to-capacity above T pads to T rows, as Megatron", "[dispatch]") {
    // T=20, E=8, k=2, cf=8: Megatron's capacity is ceil(20*2/8*8) = 40, its padded input 8 x 20.
    moe::capacity_config c;
    c.factor = 8.0;
    const std::size_t cap = moe::expert_capacity(c, 20, 8, 2, 0);
    CHECK(cap == 40);
    CHECK(moe::padded_rows_per_expert(cap, 20) == 20);
    CHECK(moe::padded_rows_per_expert(7, 20) == 7);
    moe::routing<float> r(20, 8, 2, false);
    for (std::size_t t = 0; t < 20; ++t) {
        r.indices[2 * t] = static_cast<std::int32_t>(t % 8);
        r.indices[2 * t + 1] = static_cast<std::int32_t>((t + 1) % 8);
        r.weights[2 * t] = r.weights[2 * t + 1] = 0.5f;
    }
    CHECK(moe::make_plan(r, 1, moe::padded_rows_per_expert(cap, 20)).num_rows() == 160);
}
