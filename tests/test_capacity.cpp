// Capacity formulas against each peer's own expression, evaluated in Python / torch:
//   megatron       math.ceil((T*k / E) * cf)                       (get_capacity, num_tokens = T*k)
//   deepspeed      torch.ceil(k * (T / E) * torch.tensor(cf))        (_capacity: float32 product)
//   tutel          k * int(cf * ((T + E - 1) // E))
//   megablocks     int(cf * (k * T * 1 / E))
//   capacity_aware math.ceil(cf * (k*T/E))
#include "test_support.hpp"

using moe_test::error_of;

namespace {
struct expect {
    std::size_t T, E, k;
    double cf;
    std::size_t megatron, deepspeed, tutel, megablocks, capacity_aware;
};
}  // namespace

TEST_CASE("capacity: every formula as its peer computes it", "[capacity]") {
    const expect cases[] = {
        {4096, 8, 2, 1.25, 1280, 1280, 1280, 1280, 1280},
        {4096, 64, 8, 1.0, 512, 512, 512, 512, 512},
        {100, 7, 2, 1.1, 32, 32, 32, 31, 32},
        {10, 64, 8, 1.0, 2, 2, 8, 1, 2},
        {4096, 256, 8, 1.5, 192, 192, 192, 192, 192},
        {1000, 3, 1, 1.0 / 3, 112, 112, 111, 111, 112},
        {77, 5, 3, 2.2, 102, 102, 105, 101, 102},
        // float32 vs double: DeepSpeed rounds differently from Megatron here.
        {100, 3, 1, 0.9, 31, 30, 30, 30, 31},
        {100, 3, 3, 0.3, 30, 31, 30, 30, 30},
        {100, 3, 3, 1.2, 120, 121, 120, 120, 120},
    };
    for (const auto& c : cases) {
        CAPTURE(c.T, c.E, c.k, c.cf);
        auto cap = [&](moe::capacity_formula f) {
            moe::capacity_config cfg;
            cfg.formula = f;
            cfg.factor = c.cf;
            return moe::expert_capacity(cfg, c.T, c.E, c.k, 999);
        };
        CHECK(cap(moe::capacity_formula::megatron) == c.megatron);
        CHECK(cap(moe::capacity_formula::deepspeed) == c.deepspeed);
        CHECK(cap(moe::capacity_formula::tutel) == c.tutel);
        CHECK(cap(moe::capacity_formula::megablocks) == (c.megablocks ? c.megablocks : 999));
        CHECK(cap(moe::capacity_formula::capacity_aware) == c.capacity_aware);
    }
}

TEST_CASE("capacity: min_capacity, alignment and the dropless cases", "[capacity]") {
    moe::capacity_config c;
    c.formula = moe::capacity_formula::deepspeed;
    c.factor = 1.0;
    c.min_capacity = 4;
    CHECK(moe::expert_capacity(c, 8, 8, 1, 0) == 4);  // ceil(1.0) = 1 < min_capacity
    c.formula = moe::capacity_formula::tutel;
    c.min_capacity = 0;
    c.alignment = 8;
    CHECK(moe::expert_capacity(c, 100, 7, 2, 0) == 32);  // 2 * int(1.0 * 15) = 30 -> 32
    c.factor = 0.0;                                        // dropless: the largest load, aligned
    CHECK(moe::expert_capacity(c, 100, 7, 2, 41) == 48);
    c.factor = -1.0;                                       // min(dropless, 2 * 15) = 30 -> 32
    CHECK(moe::expert_capacity(c, 100, 7, 2, 41) == 32);
    CHECK(moe::expert_capacity(c, 100, 7, 2, 17) == 24);
    c = {};
    c.formula = moe::capacity_formula::megablocks;
    c.factor = 0.0;
    CHECK(moe::expert_capacity(c, 100, 7, 2, 23) == 23);
    c.formula = moe::capacity_formula::dropless;
    CHECK(moe::expert_capacity(c, 100, 7, 2, 23) == 23);
}

TEST_CASE("capacity: bad factors are errors", "[capacity][errors]") {
    moe::capacity_config c;
    c.factor = -1.0;
    CHECK(error_of([&] { (void)moe::expert_capacity(c, 10, 2, 1, 0); }) ==
          "[moe.capacity.factor] capacity factor -1 is negative (only tutel gives it a meaning)");
    c.factor = 0.0;
    CHECK(error_of([&] { (void)moe::expert_capacity(c, 10, 2, 1, 0); }) ==
          "[moe.capacity.factor] capacity factor 0 would give every expert capacity 0 (megatron); use capacity_formula::dropless for no capacity");
    c.factor = NAN;
    CHECK(error_of([&] { (void)moe::expert_capacity(c, 10, 2, 1, 0); }) == "[moe.capacity.factor] capacity factor nan is not finite");
    c.factor = 1.0;
    c.alignment = 0;
    CHECK(error_of([&] { (void)moe::expert_capacity(c, 10, 2, 1, 0); }) == "[moe.capacity.alignment] alignment must be at least 1");
    c.alignment = 1;
    CHECK(error_of([&] { (void)moe::expert_capacity(c, 10, 0, 1, 0); }) == "[moe.capacity.shape] num_experts=0");
    CHECK(error_of([] { (void)moe::parse_capacity_formula("gshard"); }) ==
          "[moe.capacity.formula] unknown capacity formula 'gshard' (expected megatron, deepspeed, tutel, megablocks, capacity_aware or dropless)");
    CHECK(moe::parse_capacity_formula("tutel") == moe::capacity_formula::tutel);
}
