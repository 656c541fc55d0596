// Built with baseline flags, so that it can run (and say "skip") on a CPU that lacks the arch
// of the differential fuzzer it is linked into.
extern "C" int moe_fuzz_require_cpu() {
#if defined(MOE_FUZZ_REQUIRE_CPU) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports(MOE_FUZZ_REQUIRE_CPU) ? 1 : 0;
#else
    return 1;
#endif
}
