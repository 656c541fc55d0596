/// @file kernels/pack.hpp
/// Expert weights packed once, at load, into the panels the grouped SwiGLU micro-kernels stream.
///
/// Layout (per expert, `nr` = panel width of the arch: 2 SIMD vectors of float):
/// - `w13` (the up projection, K = H): panel p holds columns [p*nr/2, (p+1)*nr/2) of W1 followed
///   by the same columns of W3, k-major: for each k, nr values. F is padded with zero columns to
///   a multiple of nr/2. One micro-kernel call thus yields matching W1 and W3 outputs, and the
///   SwiGLU epilogue runs in registers.
/// - `w2` (the down projection, K = F): panel p holds columns [p*nr, (p+1)*nr) of W2^T (output
///   features of H), k-major; H is padded with zeros to a multiple of nr.
/// - 16-bit weights (bf16, f16) use the same layout with 2-byte elements.
/// Panels of an expert are contiguous (w13 then w2), experts follow each other, so a decode step
/// reads each active expert's bytes once, front to back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <Eigen/Core>

#include "../arch.hpp"
#include "../config.hpp"
#include "../detail/lane_math.hpp"

namespace moe::kernels {

/// Register blocking of the micro-kernels for an arch: `mr` rows x `nr` floats (2 vectors).
template <class Arch>
struct blocking {
    static constexpr std::size_t width = detail::lane_ops<Arch>::width;
    static constexpr std::size_t nr = 2 * width;
    static constexpr std::size_t mr = width >= 16 ? 8 : (width >= 8 ? 6 : 4);
};

template <class W>
inline constexpr bool is_weight_type_v = std::is_same<W, float>::value || std::is_same<W, double>::value ||
                                         std::is_same<W, Eigen::bfloat16>::value || std::is_same<W, Eigen::half>::value;

/// Options of `pack_experts`.
struct pack_options {
    /// Ask the kernel for transparent huge pages on the packed buffer (Linux madvise); on the
    /// 2-core development VM this raised 2-thread read bandwidth from ~37 to ~47 GB/s.
    bool huge_pages = true;
};

namespace detail {

struct aligned_free {
    void operator()(void* p) const noexcept { std::free(p); }
};

}  // namespace detail

/// Packed weights of `num_experts` SwiGLU experts (hidden H, ffn F) for arch `Arch`, stored as
/// `W` (float, double, Eigen::bfloat16 or Eigen::half). Build with `pack_experts`.
template <class Arch, class W>
class packed_experts {
public:
    using arch_type = Arch;
    using weight_type = W;
    static constexpr std::size_t nr = blocking<Arch>::nr;
    static constexpr std::size_t half = nr / 2;

    packed_experts() = default;
    packed_experts(std::size_t e, std::size_t h, std::size_t f, const pack_options& o) : E_(e), H_(h), F_(f) {
        const std::size_t n = e * expert_elems();
        bytes_ = (n * sizeof(W) + (std::size_t(2) << 20) - 1) / (std::size_t(2) << 20) * (std::size_t(2) << 20);
        void* p = bytes_ ? std::aligned_alloc(std::size_t(2) << 20, bytes_) : nullptr;
        if (bytes_ && !p) MOE_THROW("moe.kernels.alloc", "cannot allocate ", bytes_, " bytes of packed weights");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (p && o.huge_pages) ::madvise(p, bytes_, MADV_HUGEPAGE);
#else
        static_cast<void>(o);
#endif
        data_.reset(static_cast<W*>(p));
        if (p) std::memset(p, 0, bytes_);
    }

    [[nodiscard]] std::size_t num_experts() const noexcept { return E_; }
    [[nodiscard]] std::size_t hidden() const noexcept { return H_; }
    [[nodiscard]] std::size_t ffn() const noexcept { return F_; }
    /// Panels of the up (w13) and down (w2) projections per expert.
    [[nodiscard]] std::size_t up_panels() const noexcept { return (F_ + half - 1) / half; }
    [[nodiscard]] std::size_t down_panels() const noexcept { return (H_ + nr - 1) / nr; }
    [[nodiscard]] std::size_t up_k() const noexcept { return H_; }
    [[nodiscard]] std::size_t down_k() const noexcept { return F_; }
    [[nodiscard]] std::size_t expert_elems() const noexcept { return (up_panels() * up_k() + down_panels() * down_k()) * nr; }
    /// Panel p of expert e's up projection / down projection.
    [[nodiscard]] W* up(std::size_t e, std::size_t p) noexcept { return data_.get() + e * expert_elems() + p * up_k() * nr; }
    [[nodiscard]] const W* up(std::size_t e, std::size_t p) const noexcept {
        return data_.get() + e * expert_elems() + p * up_k() * nr;
    }
    [[nodiscard]] W* down(std::size_t e, std::size_t p) noexcept {
        return data_.get() + e * expert_elems() + (up_panels() * up_k() + p * down_k()) * nr;
    }
    [[nodiscard]] const W* down(std::size_t e, std::size_t p) const noexcept {
        return data_.get() + e * expert_elems() + (up_panels() * up_k() + p * down_k()) * nr;
    }
    /// Bytes of one expert's packed weights (what a decode step streams per active expert).
    [[nodiscard]] std::size_t expert_bytes() const noexcept { return expert_elems() * sizeof(W); }
    /// Of those, the up panels' bytes (W1 and W3 interleaved); the rest are the down panels'.
    [[nodiscard]] std::size_t expert_up_bytes() const noexcept { return up_panels() * up_k() * nr * sizeof(W); }
    [[nodiscard]] std::size_t expert_down_bytes() const noexcept { return expert_bytes() - expert_up_bytes(); }
    [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }

private:
    std::size_t E_ = 0, H_ = 0, F_ = 0, bytes_ = 0;
    std::unique_ptr<W, detail::aligned_free> data_;
};

namespace detail {
/// Packs one expert's row-major weights (a1, a3: F x H; a2: H x F) as expert e of p.
template <class Arch, class W>
void pack_float_expert(packed_experts<Arch, W>& p, std::size_t e, const W* a1, const W* a3, const W* a2) {
    constexpr std::size_t nr = packed_experts<Arch, W>::nr, half = nr / 2;
    const std::size_t H = p.hidden(), F = p.ffn();
    for (std::size_t pnl = 0; pnl < p.up_panels(); ++pnl) {
        W* dst = p.up(e, pnl);
        for (std::size_t j = 0; j < half; ++j) {
            const std::size_t f = pnl * half + j;
            if (f >= F) break;
            for (std::size_t k = 0; k < H; ++k) {
                dst[k * nr + j] = a1[f * H + k];
                dst[k * nr + half + j] = a3[f * H + k];
            }
        }
    }
    for (std::size_t pnl = 0; pnl < p.down_panels(); ++pnl) {
        W* dst = p.down(e, pnl);
        for (std::size_t j = 0; j < nr; ++j) {
            const std::size_t h = pnl * nr + j;
            if (h >= H) break;
            for (std::size_t k = 0; k < F; ++k) dst[k * nr + j] = a2[h * F + k];
        }
    }
}
}  // namespace detail

/// Packs row-major expert weights (HF / PyTorch layout): w1, w3: E x F x H; w2: E x H x F.
/// Throws [moe.kernels.shape] for a zero dimension.
template <class Arch, class W>
[[nodiscard]] packed_experts<Arch, W> pack_experts(const W* w1, const W* w3, const W* w2, std::size_t num_experts,
                                                   std::size_t hidden, std::size_t ffn, const pack_options& o = {}) {
    static_assert(is_weight_type_v<W>, "moe::kernels: weights are float, double, Eigen::bfloat16 or Eigen::half");
    if (num_experts == 0 || hidden == 0 || ffn == 0)
        MOE_THROW("moe.kernels.shape", "experts=", num_experts, ", hidden=", hidden, ", ffn=", ffn, ": every dimension must be >= 1");
    packed_experts<Arch, W> p(num_experts, hidden, ffn, o);
    for (std::size_t e = 0; e < num_experts; ++e)
        detail::pack_float_expert(p, e, w1 + e * ffn * hidden, w3 + e * ffn * hidden, w2 + e * hidden * ffn);
    return p;
}

}  // namespace moe::kernels
