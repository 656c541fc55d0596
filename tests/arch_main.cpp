// main() for the per-arch test programs. Compiled with baseline flags, so that it can say
// "skip" (exit 77) on a CPU that lacks the arch before any code built for that arch runs.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>

#include <moe/arch.hpp>

int main(int argc, char** argv) {
#if defined(MOE_TEST_REQUIRE_CPU) && (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (!__builtin_cpu_supports(MOE_TEST_REQUIRE_CPU)) {
        std::printf("skipped: this CPU lacks %s\n", MOE_TEST_REQUIRE_CPU);
        return 77;
    }
#endif
#if defined(MOE_TEST_REQUIRE_ARM)
    const moe::arm_features f = moe::read_arm_features();
    const char* need = MOE_TEST_REQUIRE_ARM;
    const bool ok = f.asimd && (std::strcmp(need, "dotprod") != 0 || f.dotprod) &&
                    (std::strcmp(need, "i8mm") != 0 || (f.i8mm && f.bf16));
    if (!ok) {
        std::printf("skipped: this CPU lacks %s\n", need[0] ? need : "asimd");
        return 77;
    }
    std::printf("lanes built for %s; cpu has%s%s%s%s\n", need[0] ? need : "plain NEON", f.dotprod ? " +dotprod" : "",
                f.i8mm ? " +i8mm" : "", f.bf16 ? " +bf16" : "", f.sve ? " +sve" : "");
#endif
    return Catch::Session().run(argc, argv);
}
