/// @file detail/barrier.hpp
/// `barrier(x)`: x unchanged, opaque to the optimiser, so that `barrier(a * b) + c` is rounded
/// twice on every arch. GCC contracts a bare `a * b + c` into one fused multiply-add wherever
/// the target has FMA (its default, -ffp-contract=fast, holds for C++ in every -std mode), and
/// not where it has none: the same scalar line then gives other bits in a baseline x86-64
/// build than in an x86-64-v3 or -march=native one. Scalar code whose results moe promises to
/// be arch-independent (losses, noise, samplers, reference quantizers) writes either
/// `std::fma` or `barrier(a * b) + c`, never the bare form. No dependencies: the lowest layer.
#pragma once

#include <type_traits>

namespace moe::detail {

/// float or double (one template: the asm constraint holds either in a general or an SSE / FP
/// register).
template <class T>
inline T barrier(T x) noexcept {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "moe: barrier takes a float or a double");
#if defined(__GNUC__) || defined(__clang__)
    __asm__("" : "+r,x"(x));
    return x;
#else
    volatile T v = x;
    return v;
#endif
}

}  // namespace moe::detail
