// main() for the per-arch test programs. Compiled with baseline flags, so that it can say
// "skip" (exit 77) on a CPU that lacks the arch before any code built for that arch runs.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

int main(int argc, char** argv) {
#if defined(MOE_TEST_REQUIRE_CPU) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (!__builtin_cpu_supports(MOE_TEST_REQUIRE_CPU)) {
        std::printf("skipped: this CPU lacks %s\n", MOE_TEST_REQUIRE_CPU);
        return 77;
    }
#endif
    return Catch::Session().run(argc, argv);
}
