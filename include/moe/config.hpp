/// @file config.hpp
/// Version, error reporting and assertion macros shared by every moe header.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

// The one place the version is written; CMake parses it from here.
#define MOE_VERSION_MAJOR 0
#define MOE_VERSION_MINOR 1
#define MOE_VERSION_PATCH 0
#define MOE_VERSION (MOE_VERSION_MAJOR * 10000 + MOE_VERSION_MINOR * 100 + MOE_VERSION_PATCH)

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define MOE_HAS_EXCEPTIONS 1
#else
#define MOE_HAS_EXCEPTIONS 0
#endif

namespace moe {

/// Every error moe reports. `what()` is "[id] message"; `id()` is the stable identifier
/// (e.g. "moe.router.top_k") that callers and tests can match on.
class error : public std::invalid_argument {
public:
    error(std::string id, const std::string& message)
        : std::invalid_argument("[" + id + "] " + message), id_(std::move(id)) {}
    [[nodiscard]] const std::string& id() const noexcept { return id_; }

private:
    std::string id_;
};

namespace detail {

template <class... Parts>
[[nodiscard]] std::string concat(const Parts&... parts) {
    std::ostringstream os;
    os.precision(9);
    (os << ... << parts);
    return os.str();
}

[[noreturn]] inline void throw_error(const char* id, const std::string& message) {
#if MOE_HAS_EXCEPTIONS
    throw error(id, message);
#else
    std::fprintf(stderr, "[%s] %s\n", id, message.c_str());
    std::abort();
#endif
}

}  // namespace detail
}  // namespace moe

/// Report bad input or configuration: throws moe::error("[ID] message"), or prints it and
/// aborts when exceptions are disabled. ID is a string literal such as "moe.router.top_k";
/// the remaining arguments are streamed into the message.
#ifndef MOE_THROW
#define MOE_THROW(id, ...) ::moe::detail::throw_error(id, ::moe::detail::concat(__VA_ARGS__))
#endif

/// Forces inlining of small SIMD helpers whose calls would otherwise spill every vector
/// register (all zmm registers are caller-saved).
/// MOE_LAMBDA_INLINE does the same for a lambda (after its parameter list), and
/// MOE_UNROLL_INLINE for detail::unroll's helpers. Both force inlining only in optimized
/// builds: at -O0 (sanitizer and debug builds) clang's always-inliner copied the nested
/// rows x panels x codes lambdas of every format into each caller, and one test file of the
/// quantized kernels took over 13 GB to compile.
#if defined(__GNUC__) || defined(__clang__)
#define MOE_ALWAYS_INLINE inline __attribute__((always_inline))
#if defined(__OPTIMIZE__)
#define MOE_LAMBDA_INLINE __attribute__((always_inline))
#define MOE_UNROLL_INLINE inline __attribute__((always_inline))
#else
#define MOE_LAMBDA_INLINE
#define MOE_UNROLL_INLINE inline
#endif
#else
#define MOE_ALWAYS_INLINE inline
#define MOE_LAMBDA_INLINE
#define MOE_UNROLL_INLINE inline
#endif

/// Internal invariant check for hot loops; compiled out under NDEBUG.
#ifndef MOE_ASSERT
#ifdef NDEBUG
#define MOE_ASSERT(cond) static_cast<void>(0)
#else
#define MOE_ASSERT(cond)                                                                   \
    ((cond) ? static_cast<void>(0)                                                         \
            : (std::fprintf(stderr, "%s:%d: MOE_ASSERT(%s) failed\n", __FILE__, __LINE__, #cond), \
               std::abort()))
#endif
#endif
