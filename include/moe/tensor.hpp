/// @file tensor.hpp
/// The two shapes every stage exchanges: a non-owning row-major `matrix_view` over caller
/// memory, and an owning `matrix` for results.
#pragma once

#include <cstddef>
#include <type_traits>
#include <vector>

#include "config.hpp"

namespace moe {

namespace detail {
/// Blocks template argument deduction (C++20's std::type_identity), so that a read-only
/// parameter accepts views of mutable data.
template <class T>
struct type_identity {
    using type = T;
};
template <class T>
using non_deduced_t = typename type_identity<T>::type;
}  // namespace detail

/// A row-major view: `rows` x `cols`, row `i` starting at `data + i * stride`.
/// @tparam T element type; `const T` for read-only views.
template <class T>
struct matrix_view {
    T* data = nullptr;
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::size_t stride = 0;

    constexpr matrix_view() = default;
    constexpr matrix_view(T* d, std::size_t r, std::size_t c) noexcept : data(d), rows(r), cols(c), stride(c) {}
    constexpr matrix_view(T* d, std::size_t r, std::size_t c, std::size_t s) noexcept
        : data(d), rows(r), cols(c), stride(s) {}
    /// A view of mutable data converts to a read-only view.
    template <class U, class = std::enable_if_t<std::is_same<const U, T>::value>>
    constexpr matrix_view(const matrix_view<U>& o) noexcept : data(o.data), rows(o.rows), cols(o.cols), stride(o.stride) {}

    [[nodiscard]] constexpr T* row(std::size_t i) const noexcept { return data + i * stride; }
    [[nodiscard]] constexpr T& operator()(std::size_t i, std::size_t j) const noexcept { return data[i * stride + j]; }
    [[nodiscard]] constexpr bool empty() const noexcept { return rows == 0 || cols == 0; }
};

/// An owning row-major matrix (contiguous, stride == cols).
template <class T>
struct matrix {
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::vector<T> values;

    matrix() = default;
    matrix(std::size_t r, std::size_t c, T fill = T{}) : rows(r), cols(c), values(r * c, fill) {}

    [[nodiscard]] T& operator()(std::size_t i, std::size_t j) noexcept { return values[i * cols + j]; }
    [[nodiscard]] const T& operator()(std::size_t i, std::size_t j) const noexcept { return values[i * cols + j]; }
    [[nodiscard]] T* row(std::size_t i) noexcept { return values.data() + i * cols; }
    [[nodiscard]] const T* row(std::size_t i) const noexcept { return values.data() + i * cols; }
    [[nodiscard]] matrix_view<T> view() noexcept { return {values.data(), rows, cols}; }
    [[nodiscard]] matrix_view<const T> view() const noexcept { return {values.data(), rows, cols}; }
    operator matrix_view<const T>() const noexcept { return view(); }
};

/// Read-only view over `rows` x `cols` contiguous row-major values.
template <class T>
[[nodiscard]] constexpr matrix_view<const T> view(const T* data, std::size_t rows, std::size_t cols) noexcept {
    return {data, rows, cols};
}

}  // namespace moe

namespace moe {

/// A read-only contiguous sequence (C++17 stand-in for std::span<const T>).
template <class T>
struct vector_view {
    const T* data = nullptr;
    std::size_t size = 0;

    constexpr vector_view() = default;
    constexpr vector_view(const T* d, std::size_t n) noexcept : data(d), size(n) {}
    vector_view(const std::vector<T>& v) noexcept : data(v.data()), size(v.size()) {}  // NOLINT: implicit by design
    [[nodiscard]] constexpr bool empty() const noexcept { return size == 0; }
    [[nodiscard]] constexpr const T& operator[](std::size_t i) const noexcept { return data[i]; }
};

}  // namespace moe

namespace moe {
namespace detail {

/// Element type of a matrix or matrix view (const removed), for functions that accept either.
template <class L>
struct view_traits;
template <class T>
struct view_traits<matrix_view<T>> {
    using element = std::remove_const_t<T>;
};
template <class T>
struct view_traits<matrix<T>> {
    using element = T;
};
template <class L>
using element_t = typename view_traits<std::decay_t<L>>::element;

/// A read-only view of a matrix or matrix view.
template <class T>
[[nodiscard]] constexpr matrix_view<const T> const_view(const matrix_view<T>& v) noexcept {
    return v;
}
template <class T>
[[nodiscard]] matrix_view<const T> const_view(const matrix<T>& m) noexcept {
    return m.view();
}

}  // namespace detail
}  // namespace moe
