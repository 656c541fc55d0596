// Differential testing across archs: seeded random cases (tests/differential.hpp) must give
// the scalar reference's bits on every SIMD arch this program is built for; plus the
// regressions that such cases found. Built once per arch flag set (see tests/CMakeLists.txt).
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <tuple>

#include "differential.hpp"
#include "test_support.hpp"

namespace {

/// Cases per arch: 3000 in optimised builds (about 3 s), 300 in debug / sanitizer builds (the
/// libFuzzer targets run there); MOE_DIFFERENTIAL_CASES overrides, e.g. for a long local run.
[[maybe_unused]] std::size_t case_count() {
    if (const char* s = std::getenv("MOE_DIFFERENTIAL_CASES")) return static_cast<std::size_t>(std::strtoull(s, nullptr, 10));
#ifdef NDEBUG
    return 3000;
#else
    return 300;
#endif
}

moe::matrix<float> tiled(std::initializer_list<float> row, std::size_t T) {
    moe::matrix<float> l(T, row.size());
    for (std::size_t t = 0; t < T; ++t) std::copy(row.begin(), row.end(), l.row(t));
    return l;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("differential: groups of one expert select expert 0 on every arch (issue 29)", "[arch][router][groups]",
                        moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    INFO("arch " << TestType::name());
    // Megatron-Core's topk_routing_with_score_function gives [0, 1] and [4, 0] here: with one
    // expert per group, the group scores are the keys themselves.
    for (std::size_t T : {1u, 8u, 16u, 17u, 40u}) {
        CAPTURE(T);
        moe::router_config c;
        c.score = moe::score_function::softmax;
        c.pre_softmax = true;
        c.top_k = 2;
        c.num_groups = 4;
        c.group_top_k = 2;
        c.group_score_top_m = 1;
        const auto r = moe::route<TestType>(tiled({3, 2, 1, 0}, T), c);
        for (std::size_t t = 0; t < T; ++t) {
            REQUIRE(r.index(t, 0) == 0);
            REQUIRE(r.index(t, 1) == 1);
        }
        moe::router_config s;
        s.score = moe::score_function::sigmoid;
        s.top_k = 2;
        s.num_groups = 8;
        s.group_top_k = 4;
        s.group_score_top_m = 1;
        const auto l = tiled({3, 2, 1, 0, 5, -1, 0.5f, 2.5f}, T);
        const auto r8 = moe::route<TestType>(l, s);
        s.num_groups = 4;  // groups of two: the same answer
        const auto r4 = moe::route<TestType>(l, s);
        for (std::size_t t = 0; t < T; ++t) {
            REQUIRE(r8.index(t, 0) == 4);
            REQUIRE(r8.index(t, 1) == 0);
            REQUIRE(r4.index(t, 0) == 4);
            REQUIRE(r4.index(t, 1) == 0);
        }
    }
}

TEMPLATE_LIST_TEST_CASE("differential: a group whose keys sum to NaN ranks first on every arch", "[arch][router][groups]",
                        moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    INFO("arch " << TestType::name());
    // Group 0's keys are 3e38, 3e38 and -inf: their sum overflows to +inf, then meets -inf. torch
    // ranks the NaN group score first; moe takes it as +inf on every arch (found by the
    // differential cases: the SIMD network let a NaN group lose, the scalar one kept it).
    moe::router_config c;
    c.score = moe::score_function::sigmoid;
    c.select_on_logits = true;
    c.top_k = 2;
    c.num_groups = 2;
    c.group_top_k = 1;
    c.group_score_top_m = 3;
    for (std::size_t T : {1u, 16u, 21u}) {
        CAPTURE(T);
        const auto r = moe::route<TestType>(tiled({3e38f, 3e38f, -INFINITY, 1, 2, 3}, T), c);
        for (std::size_t t = 0; t < T; ++t) {
            REQUIRE(r.index(t, 0) == 0);
            REQUIRE(r.index(t, 1) == 1);
        }
    }
}

// The arch this program is built for (moe::default_arch; the per-arch programs in
// tests/CMakeLists.txt build this file with each arch's flags), against the scalar reference.
// One arch per program keeps the build short; the baseline program has no SIMD arch to test.
TEST_CASE("differential: random cases give the scalar reference's bits", "[arch][determinism][differential]") {
    using A = moe::default_arch;
    if constexpr (std::is_same<A, moe::scalar>::value) {
        WARN("skipped: no SIMD arch in this build");
    } else {
        if (!moe_test::arch_runs_here<A>()) return;
        INFO("arch " << A::name());
        const std::size_t n = case_count();
        std::vector<std::uint8_t> buf(192);
        for (std::size_t i = 0; i < n; ++i) {
            moe::splitmix64 rng(0xD1FFu + 7919u * i);
            for (std::size_t j = 0; j < buf.size(); j += 8) {
                const std::uint64_t v = rng.next();
                std::memcpy(buf.data() + j, &v, 8);
            }
            const std::string diff = moe_diff::check_case<A>(buf.data(), buf.size());
            CAPTURE(i);
            REQUIRE(diff == "");
        }
    }
}
