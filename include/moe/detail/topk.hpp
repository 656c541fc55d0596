/// @file detail/topk.hpp
/// Top-k selection kernels with exact comparisons (ties to the lower index, the same result on
/// every arch): `top_k_desc` over one row, and the lane-parallel insertion network
/// (`topk_lanes`) that selects for W tokens at once, one per SIMD lane.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../arch.hpp"
#include "lane_math.hpp"

namespace moe {
namespace detail {

/// The k largest keys of key[0..n), descending, ties to the lower index. Exact comparisons
/// only, so the result is the same on every arch; SIMD just skips chunks that cannot enter.
template <class Arch, class C>
void top_k_desc(const C* key, std::size_t n, std::size_t k, std::int32_t* idx, C* val) noexcept {
    auto insert = [&](std::size_t filled, C v, std::size_t i) {
        std::size_t pos = filled;
        while (pos > 0 && val[pos - 1] < v) {
            if (pos < k) {
                val[pos] = val[pos - 1];
                idx[pos] = idx[pos - 1];
            }
            --pos;
        }
        val[pos] = v;
        idx[pos] = static_cast<std::int32_t>(i);
    };
    for (std::size_t i = 0; i < k; ++i) insert(i, key[i], i);
    C thr = val[k - 1];
    std::size_t i = k;
    if constexpr (std::is_same<C, float>::value && has_simd_path_v<Arch>) {
        using O = lane_ops<Arch>;
        for (; i + O::width <= n; i += O::width) {
            if (!xsimd::any(O::load(key + i) > O::splat(thr))) continue;
            for (std::size_t j = i; j < i + O::width; ++j) {
                if (key[j] > thr) {
                    insert(k, key[j], j);
                    thr = val[k - 1];
                }
            }
        }
    }
    for (; i < n; ++i) {
        if (key[i] > thr) {
            insert(k, key[i], i);
            thr = val[k - 1];
        }
    }
}

/// Vector min / max with the NaN behaviour the insertion network relies on: the second
/// operand is returned when the comparison is false (x86 minps / maxps semantics).
template <class Arch>
MOE_ALWAYS_INLINE typename lane_ops<Arch>::V min_second(typename lane_ops<Arch>::V a, typename lane_ops<Arch>::V b) noexcept {
    return xsimd::select(a < b, a, b);
}
template <class Arch>
MOE_ALWAYS_INLINE typename lane_ops<Arch>::V max_second(typename lane_ops<Arch>::V a, typename lane_ops<Arch>::V b) noexcept {
    return xsimd::select(a > b, a, b);
}

/// One insertion of key v (index vi) into the sorted slots t / ti (descending; unfilled slots
/// are NaN and come last). As the slots are sorted, "v beats slot j" (m_j) is monotone in j,
/// so every slot is updated from the old state at once, without a chain through the slots:
///   t_j  <- m_j ? (m_{j-1} ? t_{j-1} : v) : t_j   = max(t_j, min(v, t_{j-1}))
///   ti_j <- the same choice, by masks.
/// A key enters only when strictly larger (or the slot is unfilled): ties keep the lower index.
template <class Arch, class Slots>
MOE_ALWAYS_INLINE void insert_lanes(Slots& t, Slots& ti, std::size_t k, typename lane_ops<Arch>::V v,
                                    typename lane_ops<Arch>::V vi) noexcept {
    using V = typename lane_ops<Arch>::V;
    auto beats = [&](std::size_t j) { return !(v <= V(t[j])); };  // true for an unfilled (NaN) slot
    for (std::size_t j = k; j-- > 1;) {
        const auto mj = beats(j), mp = beats(j - 1);
        const V tj = t[j], tp = t[j - 1], tij = ti[j], tip = ti[j - 1];
        t[j] = max_second<Arch>(tj, min_second<Arch>(v, tp));
        ti[j] = xsimd::select(mj, xsimd::select(mp, tip, vi), tij);
    }
    const auto m0 = beats(0);
    t[0] = xsimd::select(m0, v, V(t[0]));
    ti[0] = xsimd::select(m0, vi, V(ti[0]));
}

/// Insertion network: the k largest of n key vectors per lane, descending, ties to the lower
/// index. `top` / `topi` receive k vectors of keys and of indices (as floats: exact below
/// 2^24). Slots start as NaN so that any key, -inf included, fills them.
template <class Arch, std::size_t K>
void topk_network(const float* keyT, std::size_t n, std::size_t stride, float* top, float* topi) noexcept {
    using O = lane_ops<Arch>;
    using V = typename O::V;
    constexpr std::size_t W = O::width;
    V t[K], ti[K];
    for (std::size_t j = 0; j < K; ++j) {
        t[j] = O::splat(std::numeric_limits<float>::quiet_NaN());
        ti[j] = O::splat(-1.0f);
    }
    for (std::size_t e = 0; e < n; ++e)
        insert_lanes<Arch>(t, ti, K, O::load(keyT + e * stride * W), O::splat(static_cast<float>(e)));
    for (std::size_t j = 0; j < K; ++j) {
        O::store(top + j * W, t[j]);
        O::store(topi + j * W, ti[j]);
    }
}

/// The same network for any k, with the slots in memory.
template <class Arch>
void topk_network_any(const float* keyT, std::size_t n, std::size_t stride, std::size_t k, float* top,
                      float* topi) noexcept {
    using O = lane_ops<Arch>;
    using V = typename O::V;
    constexpr std::size_t W = O::width;
    struct slots {  // k vectors in memory, read and written as V
        float* p;
        struct ref {
            float* q;
            operator V() const noexcept { return O::load(q); }
            ref& operator=(V x) noexcept {
                O::store(q, x);
                return *this;
            }
        };
        ref operator[](std::size_t j) const noexcept { return {p + j * W}; }
    };
    slots t{top}, ti{topi};
    for (std::size_t j = 0; j < k; ++j) {
        O::store(top + j * W, O::splat(std::numeric_limits<float>::quiet_NaN()));
        O::store(topi + j * W, O::splat(-1.0f));
    }
    for (std::size_t e = 0; e < n; ++e)
        insert_lanes<Arch>(t, ti, k, O::load(keyT + e * stride * W), O::splat(static_cast<float>(e)));
}

template <class Arch>
void topk_lanes(const float* keyT, std::size_t n, std::size_t stride, std::size_t k, float* top, float* topi) noexcept {
    switch (k) {
        case 1: topk_network<Arch, 1>(keyT, n, stride, top, topi); break;
        case 2: topk_network<Arch, 2>(keyT, n, stride, top, topi); break;
        case 4: topk_network<Arch, 4>(keyT, n, stride, top, topi); break;
        case 6: topk_network<Arch, 6>(keyT, n, stride, top, topi); break;
        case 8: topk_network<Arch, 8>(keyT, n, stride, top, topi); break;
        default: topk_network_any<Arch>(keyT, n, stride, k, top, topi); break;
    }
}

}  // namespace detail
}  // namespace moe
