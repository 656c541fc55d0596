// The scalar reference of the quantized expert kernels, instantiated once: tests/scalar_kernels.cpp
// (baseline flags) holds the explicit instantiations, and the test programs that define
// MOE_TEST_EXTERN_SCALAR_KERNELS (the baseline and the per-arch programs) declare them extern,
// so that every per-arch program compares its arch with one compiled copy of the reference
// instead of compiling the twenty formats' scalar kernels again with its own flags. The
// reference must not depend on the flags it is built with (moe's determinism claim); these
// programs check that too, since their scalar results now come from a baseline build.
#pragma once

#include <moe/executor.hpp>
#include <moe/kernels/formats.hpp>
#include <moe/kernels/quant_ffn.hpp>

namespace moe_test::scalar_kernels {
namespace fm = moe::kernels::formats;
using q4_k_m = fm::mixed<fm::q4_k, fm::q6_k>;
}  // namespace moe_test::scalar_kernels

// X(format, executor) for every instantiation the tests call with moe::scalar.
// (The tests pass the serial executor as an rvalue, so one instantiation per format serves all.)
#define MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, F)                          \
    X(F, moe::serial_executor)
#define MOE_TEST_SCALAR_KERNEL_LIST(X)                                  \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::q8_0)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::q4_0)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::q4_1)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::q5_0)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::q5_1)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::q2_k)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::q3_k)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::q4_k)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::q5_k)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::q6_k)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::iq4_nl)  \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::iq4_xs)  \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::int8)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::int4)    \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::fp8)     \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::mxfp4)   \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::mxfp4_dot) \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe::kernels::formats::bf16_dot) \
    MOE_TEST_SCALAR_KERNEL_EXECUTORS(X, moe_test::scalar_kernels::q4_k_m)

#define MOE_TEST_SCALAR_KERNEL(F, EX)                                                                                    \
    template void moe::kernels::quant_expert_ffn<moe::scalar, F, EX>(                                                    \
        moe::matrix_view<float>, moe::matrix_view<const float>, const moe::dispatch_plan&,                               \
        const moe::kernels::packed_quant_experts<F>&, void*, std::size_t, EX&&, const moe::kernels::ffn_extras&);
#define MOE_TEST_EXTERN_SCALAR_KERNEL(F, EX) extern MOE_TEST_SCALAR_KERNEL(F, EX)

#ifdef MOE_TEST_EXTERN_SCALAR_KERNELS
MOE_TEST_SCALAR_KERNEL_LIST(MOE_TEST_EXTERN_SCALAR_KERNEL)
#endif
