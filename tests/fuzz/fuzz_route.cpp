// libFuzzer harness: bytes -> shape, router config, logits (NaN, +-inf, ties, subnormals),
// capacity config -> route -> capacity (drop, reroute, fill-in) -> plan -> gather / combine
// -> metrics, checking every invariant. Invalid configurations must end in a clean moe::error.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <moe/moe.hpp>

namespace {

struct bytes {
    const std::uint8_t* p;
    std::size_t n;
    std::uint8_t u8() { return n ? (--n, *p++) : 0; }
    float f32() {
        std::uint32_t v = 0;
        for (int i = 0; i < 4; ++i) v = (v << 8) | u8();
        float f;
        std::memcpy(&f, &v, 4);
        return f;
    }
};

#define FUZZ_CHECK(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            std::fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__); \
            std::abort();                                                             \
        }                                                                             \
    } while (0)

float logit(bytes& b) {
    switch (b.u8() % 10) {
        case 0: return NAN;
        case 1: return INFINITY;
        case 2: return -INFINITY;
        case 3: return 1e-40f;  // subnormal
        case 4: return 0.5f;    // ties
        case 5: return static_cast<float>(static_cast<std::int8_t>(b.u8())) * 8.0f;
        case 6: return b.f32();
        default: return static_cast<float>(static_cast<std::int8_t>(b.u8())) / 16.0f;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    bytes b{data, size};
    const std::size_t T = b.u8() % 48, E = 1 + b.u8() % 24;
    moe::router_config cfg;
    cfg.score = static_cast<moe::score_function>(b.u8() % 3);
    cfg.top_k = b.u8() % (E + 2);  // 0 and E + 1 are invalid
    cfg.pre_softmax = b.u8() & 1;
    cfg.renorm = static_cast<moe::renormalize>(b.u8() % 4);
    cfg.renorm_eps = (b.u8() % 3) * 1e-5f;
    cfg.scaling_factor = 0.5f + (b.u8() % 8) * 0.5f;
    if (b.u8() % 3 == 0) {
        cfg.num_groups = 1 + b.u8() % 6;
        cfg.group_top_k = b.u8() % 4;
        cfg.group_score_top_m = b.u8() % 4;
        cfg.mask = static_cast<moe::group_mask>(b.u8() % 2);
    }
    cfg.keep_scores = true;
    moe::matrix<float> logits(T, E);
    for (auto& v : logits.values) v = logit(b);
    std::vector<float> bias;
    if (b.u8() % 4 == 0)
        for (std::size_t e = 0; e < E; ++e) bias.push_back(static_cast<float>(static_cast<std::int8_t>(b.u8())) / 64.0f);

    moe::routing<float> r;
    try {
        r = moe::route(logits, cfg, bias);
    } catch (const moe::error&) {
        return 0;  // a clean error for an invalid configuration or bad logits
    }
    const std::size_t k = cfg.top_k;
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t s = 0; s < k; ++s) {
            const int e = r.index(t, s);
            FUZZ_CHECK(e >= 0 && e < static_cast<int>(E));
            FUZZ_CHECK(std::isfinite(r.weight(t, s)));
            for (std::size_t s2 = 0; s2 < s; ++s2) FUZZ_CHECK(r.index(t, s2) != e);
        }

    moe::drop_config d;
    d.capacity.formula = static_cast<moe::capacity_formula>(b.u8() % 6);
    d.capacity.factor = static_cast<double>(static_cast<std::int8_t>(b.u8())) / 32.0;
    d.capacity.min_capacity = b.u8() % 3;
    d.capacity.alignment = b.u8() % 4;  // 0 is invalid
    d.policy = static_cast<moe::drop_policy>(b.u8() % 6);
    d.reroute = b.u8() & 1;
    if (b.u8() & 1)
        for (std::size_t e = 0; e < E; ++e) d.placement.push_back(static_cast<std::int32_t>(e % 3));
    const bool fill = b.u8() & 1;
    const std::size_t block = 1 + b.u8() % 8;
    const auto before = r;
    moe::capacity_report rep;
    try {
        rep = moe::apply_capacity(r, d);
    } catch (const moe::error&) {
        return 0;
    }
    // Every slot is routed xor reported dropped; capacity holds; no expert twice per token.
    std::size_t di = 0;
    std::vector<std::size_t> load(E, 0);
    for (std::size_t i = 0; i < T * k; ++i) {
        const bool dropped = di < rep.dropped.size() && rep.dropped[di] == static_cast<std::int32_t>(i);
        if (dropped) ++di;
        FUZZ_CHECK(dropped == (r.indices[i] < 0));
        if (r.indices[i] >= 0) ++load[static_cast<std::size_t>(r.indices[i])];
    }
    FUZZ_CHECK(di == rep.dropped.size());
    FUZZ_CHECK(load == rep.load_after);
    for (std::size_t e = 0; e < E; ++e) FUZZ_CHECK(load[e] <= rep.capacities[e]);
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t s = 0; s < k; ++s)
            for (std::size_t s2 = 0; s2 < s; ++s2) FUZZ_CHECK(r.index(t, s) < 0 || r.index(t, s) != r.index(t, s2));
    if (fill) {
        moe::fill_in_report fr;
        r = moe::fill_in(r, rep.capacity, &fr);
        for (std::size_t e = 0; e < E; ++e) FUZZ_CHECK(fr.load_after[e] <= std::max(rep.capacity, load[e]));
    }

    // Plan, gather, combine: combining all-ones rows gives each token its kept weight sum.
    const auto plan = moe::make_plan(r, block);
    for (std::size_t e = 0; e < E; ++e) FUZZ_CHECK(plan.offsets[e] <= plan.offsets[e + 1]);
    for (std::size_t i = 0; i < r.indices.size(); ++i)
        if (r.indices[i] >= 0) {
            const std::int32_t row = plan.slot_row[i];
            FUZZ_CHECK(row >= plan.offsets[static_cast<std::size_t>(r.indices[i])] &&
                       row < plan.offsets[static_cast<std::size_t>(r.indices[i]) + 1]);
            FUZZ_CHECK(static_cast<std::size_t>(plan.row_token[static_cast<std::size_t>(row)]) == i / r.top_k);
        }
    const std::size_t H = 3;
    moe::matrix<float> x(T, H, 1.0f), rows(plan.num_rows(), H, -1.0f), y(T, H, -1.0f);
    moe::gather(rows.view(), x.view(), plan);
    moe::combine(y.view(), rows.view(), plan, r);
    for (std::size_t t = 0; t < T; ++t) {
        float sum = 0.0f;
        for (std::size_t s = 0; s < r.top_k; ++s)
            if (r.index(t, s) >= 0) sum = std::fma(r.weight(t, s), 1.0f, sum);
        for (std::size_t h = 0; h < H; ++h) FUZZ_CHECK(y(t, h) == sum);
    }
    const auto m = moe::measure(r, &rep, &plan);
    FUZZ_CHECK(std::isfinite(m.cv) && std::isfinite(m.max_over_mean) && m.padding_fraction >= 0.0);
    (void)before;
    return 0;
}
