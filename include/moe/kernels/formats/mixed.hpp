/// @file kernels/formats/mixed.hpp
/// A block's routed experts in two formats: gate and up (the up projection, K = H) in `Up`,
/// down (K = F) in `Down`, as GGUF's mixed quantization types store them (Q4_K_M: Q4_K gate
/// and up, Q6_K down). A weight format like the others for `packed_quant_experts`,
/// `quant_expert_ffn` and `moe::block`: each projection runs its own format's kernel on its
/// own bytes, with no float copy. Both formats quantize activations the same way (integer,
/// int8 or bf16) or neither does (weight-only). Named "up+down" ("q4_k+q6_k").
#pragma once

#include <array>
#include <cstddef>

#include "common.hpp"

namespace moe::kernels::formats {

namespace detail {
constexpr std::size_t name_len(const char* s) {
    std::size_t n = 0;
    while (s[n]) ++n;
    return n;
}
/// "a+b" at compile time.
template <class A, class B>
struct joined_name {
    static constexpr std::size_t size = name_len(A::name) + name_len(B::name) + 2;
    static constexpr std::array<char, size> make() {
        std::array<char, size> out{};
        std::size_t o = 0;
        for (std::size_t i = 0; A::name[i]; ++i) out[o++] = A::name[i];
        out[o++] = '+';
        for (std::size_t i = 0; B::name[i]; ++i) out[o++] = B::name[i];
        out[o] = '\0';
        return out;
    }
    static constexpr std::array<char, size> value = make();
};
}  // namespace detail

template <class Up, class Down>
struct mixed {
    static_assert(Up::integer == Down::integer && detail::bf16_act_v<Up> == detail::bf16_act_v<Down>,
                  "mixed<Up, Down>: both formats must treat activations alike (integer, bf16 or weight-only)");
    using up = Up;
    using down = Down;
    static constexpr bool integer = Up::integer;
    static constexpr const char* name = detail::joined_name<Up, Down>::value.data();
};

/// The format of a block's gate / up and of its down projection: W itself, or mixed's parts.
template <class W>
struct format_parts {
    using up = W;
    using down = W;
};
template <class Up, class Down>
struct format_parts<mixed<Up, Down>> {
    using up = Up;
    using down = Down;
};
template <class W>
using up_format_t = typename format_parts<W>::up;
template <class W>
using down_format_t = typename format_parts<W>::down;

}  // namespace moe::kernels::formats
