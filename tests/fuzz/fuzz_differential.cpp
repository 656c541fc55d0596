// libFuzzer harness, one program per SIMD arch: every input is a differential case
// (tests/differential.hpp) that must give the scalar reference's bits on the arch the program
// is built for (moe::default_arch). A difference prints what differs and aborts.
#include <cstdio>
#include <cstdlib>

#include "../differential.hpp"

extern "C" int moe_fuzz_require_cpu();  // fuzz_arch_guard.cpp, built with baseline flags

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    if (!moe_fuzz_require_cpu()) {
        std::printf("skipped: this CPU lacks %s\n", MOE_FUZZ_REQUIRE_CPU);
        std::exit(77);
    }
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static_assert(moe::has_simd_path_v<moe::default_arch>, "build this harness with an arch's flags");
    const std::string diff = moe_diff::check_case<moe::default_arch>(data, size);
    if (!diff.empty()) {
        std::fprintf(stderr, "scalar and %s differ: %s\n", moe::default_arch::name(), diff.c_str());
        std::abort();
    }
    return 0;
}
