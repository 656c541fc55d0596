// Quantized weight formats: the reference quantizers and dequantizers against golden bytes from
// a numpy statement of each published format (tests/gen_formats_golden.py); the quantized expert
// kernels bit-identical to moe::scalar on every arch and executor, weight-only formats equal to
// the float kernel on their dequantized weights, integer formats within a derived bound of a
// float reference; and every bad input's error, verbatim.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <moe/kernels/expert_ffn.hpp>
#include <moe/kernels/formats.hpp>
#include <moe/kernels/quant_ffn.hpp>
#include <moe/io/gguf.hpp>

#include "scalar_kernels.hpp"
#include "test_support.hpp"

namespace {

namespace fm = moe::kernels::formats;
// The avx512bf16 program builds this file for the instruction test below only.
#ifndef MOE_TEST_BF16_ONLY

std::vector<std::uint8_t> read_bytes(const std::string& name) {
    std::ifstream f(std::string(MOE_TEST_DATA_DIR) + "/formats/" + name, std::ios::binary);
    REQUIRE(f.good());
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<float> read_f32(const std::string& name) {
    const auto b = read_bytes(name);
    std::vector<float> v(b.size() / 4);
    std::memcpy(v.data(), b.data(), v.size() * 4);
    return v;
}

std::vector<std::uint32_t> bits(const std::vector<float>& v) {
    std::vector<std::uint32_t> b(v.size());
    std::memcpy(b.data(), v.data(), v.size() * 4);
    return b;
}

template <class Fmt>
void check_golden(const std::string& file, fm::format_params p) {
    INFO("format " << file);
    constexpr std::size_t N = 24, K = 256;
    const auto w = read_f32("w.f32");
    REQUIRE(w.size() == N * K);
    const fm::quant_matrix m = Fmt::quantize(w.data(), N, K, p);
    CHECK(m.data == read_bytes(file + ".data.bin"));
    CHECK(m.scales == read_bytes(file + ".scales.bin"));
    std::vector<float> deq(N * K);
    Fmt::validate(fm::view_of(m));
    Fmt::dequantize(fm::view_of(m), deq.data());
    CHECK(bits(deq) == bits(read_f32(file + ".deq.f32")));
}

// ---- kernels ----

struct qlayer {
    std::size_t E, H, F;
    std::vector<float> w1, w3, w2;
};

qlayer make_qlayer(std::size_t E, std::size_t H, std::size_t F, std::uint64_t seed) {
    moe::splitmix64 rng(seed);
    qlayer l{E, H, F, {}, {}, {}};
    for (auto* v : {&l.w1, &l.w3}) {
        v->resize(E * F * H);
        for (auto& x : *v) x = static_cast<float>(rng.normal() / std::sqrt(static_cast<double>(H)));
    }
    l.w2.resize(E * H * F);
    for (auto& x : l.w2) x = static_cast<float>(rng.normal() / std::sqrt(static_cast<double>(F)));
    return l;
}

/// Expert 0 gets every token, 1 one token, 2 none, 3 and 4 share the second slots.
moe::routing<float> shaped_routing(std::size_t T) {
    moe::routing<float> r(T, 5, 2, false);
    for (std::size_t t = 0; t < T; ++t) {
        r.indices[t * 2] = 0;
        r.indices[t * 2 + 1] = t == 3 ? 1 : static_cast<std::int32_t>(3 + t % 2);
        r.weights[t * 2] = 0.6f;
        r.weights[t * 2 + 1] = 0.4f;
    }
    return r;
}

template <class Arch, class Fmt, class Executor = moe::serial_executor>
std::vector<float> run_quant(const moe::kernels::packed_quant_experts<Fmt>& pw, const moe::matrix<float>& x,
                             const moe::dispatch_plan& plan, Executor ex = {}) {
    moe::matrix<float> y(plan.num_rows(), pw.hidden(), -7.0f);
    moe::kernels::ffn_workspace ws;
    ws.reserve(moe::kernels::workspace_size(plan, pw).total());
    moe::kernels::quant_expert_ffn<Arch>(y.view(), moe::matrix_view<const float>(x.view()), plan, pw, ws.data(), ws.size(), std::move(ex));
    return y.values;
}

/// The dequantized weights of every expert, stacked as the float kernel takes them.
template <class Fmt>
void dequantize_all(const moe::kernels::quantized_experts<Fmt>& q, std::vector<float>& w1, std::vector<float>& w3,
                    std::vector<float>& w2) {
    auto one = [](const std::vector<fm::quant_matrix>& ms, std::vector<float>& out) {
        const std::size_t n = ms[0].rows * ms[0].cols;
        out.assign(ms.size() * n, 0.0f);
        for (std::size_t e = 0; e < ms.size(); ++e) Fmt::dequantize(fm::view_of(ms[e]), out.data() + e * n);
    };
    one(q.w1, w1);
    one(q.w3, w3);
    one(q.w2, w2);
}

/// Float reference (double) of every plan row on the dequantized weights with unquantized
/// activations, and a bound on the kernel's distance from it. Derivation, per output:
///  - quantizing x in blocks of B with d = amax / 127 moves each x_k by at most d / 2;
///    so |dh_f| <= e1_f = sum_k |W1_fk| d_b(k) / 2, likewise e3_f for W3;
///  - silu' lies in [-0.1, 1.1]: |d(silu(h1) h3)| <= 1.1 e1 (|h3| + e3) + (|silu(h1)| + 1.1 e1) e3;
///  - the activations a are quantized the same way (their block maxima grow by at most the
///    largest |da|), adding d'_b / 2 per element; |dy_h| <= sum_f |W2_hf| (|da_f| + d'_b(f) / 2);
///  - plus float rounding: 1e-5 of max |y|.
template <class Fmt>
void check_bound(const qlayer& l, const std::vector<float>& w1, const std::vector<float>& w3, const std::vector<float>& w2,
                 const moe::matrix<float>& x, const moe::dispatch_plan& plan, const std::vector<float>& y, std::size_t bx,
                 std::size_t ba) {
    const std::size_t H = l.H, F = l.F;
    std::vector<double> ref(plan.num_rows() * H, 0.0), bound(plan.num_rows() * H, 0.0);
    double ymax = 0.0;
    for (std::size_t e = 0; e < l.E; ++e)
        for (auto r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
            const auto tok = plan.row_token[static_cast<std::size_t>(r)];
            std::vector<double> xr(H, 0.0), dx(H, 0.0);
            if (tok >= 0)
                for (std::size_t k = 0; k < H; ++k) xr[k] = x(static_cast<std::size_t>(tok), k);
            for (std::size_t b = 0; b < H; b += bx) {
                double amax = 0.0;
                for (std::size_t k = b; k < b + bx; ++k) amax = std::max(amax, std::fabs(xr[k]));
                for (std::size_t k = b; k < b + bx; ++k) dx[k] = amax / 127.0 / 2.0 * (1.0 + 1e-6);
            }
            std::vector<double> a(F), da(F);
            for (std::size_t f = 0; f < F; ++f) {
                double h1 = 0.0, h3 = 0.0, e1 = 0.0, e3 = 0.0;
                for (std::size_t k = 0; k < H; ++k) {
                    const double u = w1[(e * F + f) * H + k], v = w3[(e * F + f) * H + k];
                    h1 += u * xr[k];
                    h3 += v * xr[k];
                    e1 += std::fabs(u) * dx[k];
                    e3 += std::fabs(v) * dx[k];
                }
                const double s = h1 / (1.0 + std::exp(-h1));
                a[f] = s * h3;
                da[f] = 1.1 * e1 * (std::fabs(h3) + e3) + (std::fabs(s) + 1.1 * e1) * e3;
            }
            double damax = 0.0;
            for (double v : da) damax = std::max(damax, v);
            std::vector<double> ea(F);
            for (std::size_t b = 0; b < F; b += ba) {
                double amax = 0.0;
                for (std::size_t f = b; f < b + ba; ++f) amax = std::max(amax, std::fabs(a[f]));
                for (std::size_t f = b; f < b + ba; ++f) ea[f] = da[f] + (amax + damax) / 127.0 / 2.0 * (1.0 + 1e-6);
            }
            for (std::size_t h = 0; h < H; ++h) {
                double yv = 0.0, eb = 0.0;
                for (std::size_t f = 0; f < F; ++f) {
                    yv += w2[(e * H + h) * F + f] * a[f];
                    eb += std::fabs(w2[(e * H + h) * F + f]) * ea[f];
                }
                ref[static_cast<std::size_t>(r) * H + h] = yv;
                bound[static_cast<std::size_t>(r) * H + h] = eb;
                ymax = std::max(ymax, std::fabs(yv));
            }
        }
    double worst = 0.0;
    std::vector<double> sorted = bound;
    std::sort(sorted.begin(), sorted.end());
    const double median_bound = sorted[sorted.size() / 2];
    for (std::size_t i = 0; i < ref.size(); ++i) {
        const double err = std::fabs(static_cast<double>(y[i]) - ref[i]);
        CAPTURE(i, y[i], ref[i], bound[i]);
        REQUIRE(err <= bound[i] + 1e-5 * ymax);
        worst = std::max(worst, err / (bound[i] + 1e-5 * ymax));
    }
    // The bound is not vacuous: it is far below |y|, and the errors use a visible part of it
    // (a kernel that skipped the activation quantization would still pass; the bit-exact
    // comparison with moe::scalar pins the arithmetic).
    // (The bound adds |w| |dx| without cancellation: linear in K where the error grows as
    // sqrt(K), so it is loose for long blocks, yet still well below |y|.)
    CAPTURE(worst, median_bound, ymax);
    CHECK(median_bound < 0.5 * ymax);
    CHECK(worst > 0.001);
}

/// A plain statement of bf16_dot's arithmetic (formats/bf16_dot.hpp), written apart from the
/// lanes: activations rounded by vcvtneps2bf16's rule, pair u into chain u % 2, each pair the
/// odd product then the even one (fused, DAZ / FTZ), chain0 + chain1; SwiGLU with moe's
/// sigmoid; the SwiGLU output rounded again for W2.
std::vector<float> bf16_dot_statement(const moe::kernels::quantized_experts<fm::bf16_dot>& q, const moe::matrix<float>& x,
                                      const moe::dispatch_plan& plan, std::size_t H, std::size_t F) {
    auto w_at = [](const fm::quant_matrix& m, std::size_t r, std::size_t k) {
        return fm::detail::bf16_to_float(fm::detail::load_u16(m.data.data() + 2 * (r * m.cols + k)));
    };
    auto round = [](float v) { return fm::detail::bf16_to_float(fm::detail::float_to_bf16_ne(v)); };
    auto dot = [&](const fm::quant_matrix& m, std::size_t r, const std::vector<float>& a) {
        float c[2] = {0.0f, 0.0f};
        for (std::size_t u = 0; u < m.cols / 2; ++u) {
            float& acc = c[u % 2];
            acc = fm::detail::fma_daz_ftz(w_at(m, r, 2 * u + 1), a[2 * u + 1], acc);
            acc = fm::detail::fma_daz_ftz(w_at(m, r, 2 * u), a[2 * u], acc);
        }
        return c[0] + c[1];
    };
    std::vector<float> y(plan.num_rows() * H, 0.0f);
    for (std::size_t e = 0; e + 1 < plan.offsets.size(); ++e)
        for (auto r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
            const auto tok = plan.row_token[static_cast<std::size_t>(r)];
            std::vector<float> a(H, 0.0f), h(F);
            if (tok >= 0)
                for (std::size_t k = 0; k < H; ++k) a[k] = round(x(static_cast<std::size_t>(tok), k));
            for (std::size_t f = 0; f < F; ++f) {
                const float g = dot(q.w1[e], f, a), u = dot(q.w3[e], f, a);
                h[f] = round((g * moe::detail::sigmoid<moe::scalar>(g)) * u);
            }
            for (std::size_t c = 0; c < H; ++c) y[static_cast<std::size_t>(r) * H + c] = dot(q.w2[e], c, h);
        }
    return y;
}

template <class Arch, class Fmt>
void check_kernel(std::size_t H, std::size_t F, fm::format_params p, std::size_t T = 21) {
    INFO("format " << Fmt::name << " H=" << H << " F=" << F << " group " << p.group << " arch " << Arch::name());
    const qlayer l = make_qlayer(5, H, F, H * 31 + F);
    const auto q = moe::kernels::quantize_experts<Fmt>(l.w1.data(), l.w3.data(), l.w2.data(), l.E, H, F, p);
    const auto pw = moe::kernels::pack_quant_experts<Fmt>(q, H, F);
    moe::matrix<float> x(T, H);
    moe::splitmix64 rng(T + H);
    for (auto& v : x.values) v = static_cast<float>(rng.normal());
    x(2, 0) = 40.0f;  // one outlier: its block's scale is large
    for (std::size_t block : {1u, 4u}) {
        const auto plan = moe::make_plan(shaped_routing(T), block);
        const auto y = run_quant<Arch>(pw, x, plan);
        // Bit-identical to the reference lanes and for any executor.
        CHECK(bits(y) == bits(run_quant<moe::scalar>(pw, x, plan)));
        CHECK(bits(y) == bits(run_quant<Arch>(pw, x, plan, moe_test::reversed_threads_executor{3})));
        std::vector<float> d1, d3, d2;
        dequantize_all(q, d1, d3, d2);
        if constexpr (fm::detail::bf16_act_v<Fmt>) {
            CHECK(bits(y) == bits(bf16_dot_statement(q, x, plan, H, F)));
            // And near the float layer on the same weights: bf16 activations move each
            // output by a small relative amount (not a bit-level claim).
            const auto packed = moe::kernels::pack_experts<moe::scalar>(d1.data(), d3.data(), d2.data(), l.E, H, F);
            moe::matrix<float> yf(plan.num_rows(), H, -7.0f);
            moe::kernels::ffn_workspace ws;
            ws.reserve(moe::kernels::workspace_size(plan, packed).total());
            moe::kernels::expert_ffn(yf.view(), moe::matrix_view<const float>(x.view()), plan, packed, ws.data(), ws.size());
            double num = 0.0, den = 0.0, diff = 0.0;
            for (std::size_t i = 0; i < y.size(); ++i) {
                num += (y[i] - yf.values[i]) * (y[i] - yf.values[i]);
                den += yf.values[i] * yf.values[i];
                diff += y[i] != yf.values[i];
            }
            CHECK(std::sqrt(num / den) < 1e-2);
            CHECK(diff > 0);  // the activations really were rounded
        } else if constexpr (Fmt::integer) {
            check_bound<Fmt>(l, d1, d3, d2, x, plan, y, Fmt::act_block(H, p), Fmt::act_block(F, p));
        } else {
            // Weight-only: exactly the float kernel on the dequantized weights.
            const auto packed = moe::kernels::pack_experts<moe::scalar>(d1.data(), d3.data(), d2.data(), l.E, H, F);
            moe::matrix<float> yf(plan.num_rows(), H, -7.0f);
            moe::kernels::ffn_workspace ws;
            ws.reserve(moe::kernels::workspace_size(plan, packed).total());
            moe::kernels::expert_ffn(yf.view(), moe::matrix_view<const float>(x.view()), plan, packed, ws.data(), ws.size());
            CHECK(bits(y) == bits(yf.values));
        }
    }
}

}  // namespace

TEST_CASE("formats: reference quantizers and dequantizers match the numpy statement byte for byte", "[formats]") {
    check_golden<fm::q8_0>("q8_0", {});
    check_golden<fm::q4_0>("q4_0", {});
    check_golden<fm::q4_1>("q4_1", {});
    check_golden<fm::q5_0>("q5_0", {});
    check_golden<fm::q5_1>("q5_1", {});
    check_golden<fm::q2_k>("q2_k", {});
    check_golden<fm::q3_k>("q3_k", {});
    check_golden<fm::q4_k>("q4_k", {});
    check_golden<fm::q5_k>("q5_k", {});
    check_golden<fm::q6_k>("q6_k", {});
    check_golden<fm::iq4_nl>("iq4_nl", {});
    check_golden<fm::iq4_xs>("iq4_xs", {});
    check_golden<fm::int8>("int8", {});
    check_golden<fm::int4>("int4_32", {32, false});
    check_golden<fm::int4>("int4_128_zp", {128, true});
    check_golden<fm::fp8>("fp8", {});
    check_golden<fm::mxfp4>("mxfp4", {});
    check_golden<fm::mxfp4_dot>("mxfp4_dot", {});
    check_golden<fm::bf16_dot>("bf16", {});
}

TEST_CASE("formats: bf16 rounding and the vdpbf16ps step as the Intel SDM states them", "[formats]") {
    // vcvtneps2bf16: subnormals to signed zero, ties to even, NaN quieted, carry to infinity.
    CHECK(fm::detail::float_to_bf16_ne(std::ldexp(1.0f, -130)) == 0x0000);
    CHECK(fm::detail::float_to_bf16_ne(-std::ldexp(1.0f, -130)) == 0x8000);
    CHECK(fm::detail::float_to_bf16(std::ldexp(1.0f, -130)) == 0x0008);  // PyTorch's keeps it (8 x 2^-133)
    CHECK(fm::detail::float_to_bf16_ne(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);  // tie: even
    CHECK(fm::detail::float_to_bf16_ne(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);
    CHECK(fm::detail::float_to_bf16_ne(std::numeric_limits<float>::max()) == 0x7f80);
    CHECK(fm::detail::float_to_bf16_ne(std::nanf("")) == 0x7fc0);
    // The step order: the odd pair first. acc = 1, odd product -1, even product 2^-30:
    // (1 - 1) + 2^-30 = 2^-30, where the other order would give 0.
    CHECK(fm::detail::fma_daz_ftz(1.0f, std::ldexp(1.0f, -30), fm::detail::fma_daz_ftz(-1.0f, 1.0f, 1.0f)) ==
          std::ldexp(1.0f, -30));
    // The same through the lanes: column 0 has w(k even) = 1, w(k odd) = -1; the activations
    // are 2^-30 (k even, low half) and 1 (k odd, high half).
    fm::generic_qlanes::B w{};
    fm::detail::store_u16(w.b + 0, 0x3f80);
    fm::detail::store_u16(w.b + 2, 0xbf80);
    const std::uint32_t a2 = fm::detail::float_to_bf16(std::ldexp(1.0f, -30)) | (0x3f80u << 16);
    CHECK(fm::generic_qlanes::dpbf16(fm::generic_qlanes::bcast(1.0f), w, a2).v[0] == std::ldexp(1.0f, -30));
    // DAZ: a subnormal bf16 weight counts as zero; FTZ: a subnormal result becomes zero.
    CHECK(fm::detail::fma_daz_ftz(std::ldexp(1.0f, -127), 1.0f, 0.0f) == 0.0f);
    CHECK(fm::detail::fma_daz_ftz(std::ldexp(1.0f, -70), std::ldexp(1.0f, -70), 0.0f) == 0.0f);
    CHECK(std::signbit(fm::detail::fma_daz_ftz(-std::ldexp(1.0f, -70), std::ldexp(1.0f, -70), 0.0f)));
}

#else
}  // namespace
#endif  // MOE_TEST_BF16_ONLY

#if defined(MOE_HAVE_AVX512_QLANES) && defined(__AVX512BF16__)
TEST_CASE("formats: the emulated vdpbf16ps and vcvtneps2bf16 equal the instructions", "[formats][arch]") {
    // Random bit patterns with every exponent (subnormals, zeros, huge values, infinities),
    // finite NaN-free inputs for the dot (NaN payload priorities are not emulated).
    moe::splitmix64 rng(77);
    auto finite_bf16 = [&] {
        for (;;) {
            const auto h = static_cast<std::uint16_t>(rng.next() & 0xffff);
            const int e = (h >> 7) & 0xff;
            if (e != 0xff && (rng.next() % 4 != 0 || e < 40 || e > 215)) return h;  // extremes often
        }
    };
    std::size_t mismatches = 0;
    for (int trial = 0; trial < 200000; ++trial) {
        fm::generic_qlanes::B w;
        for (int n = 0; n < 32; ++n) fm::detail::store_u16(w.b + 2 * n, finite_bf16());
        const std::uint32_t a2 = finite_bf16() | (static_cast<std::uint32_t>(finite_bf16()) << 16);
        fm::generic_qlanes::F acc;
        for (float& v : acc.v) v = fm::detail::bf16_to_float(finite_bf16()) * (rng.next() % 2 ? 1.0f : 1.0009765625f);
        const fm::generic_qlanes::F ref = fm::generic_qlanes::dpbf16(acc, w, a2);
        float hw[16];
        _mm512_storeu_ps(hw, fm::avx512_qlanes::dpbf16(_mm512_loadu_ps(acc.v), fm::avx512_qlanes::load_b(w.b), a2));
        for (int n = 0; n < 16; ++n) {
            if (std::isnan(ref.v[n]) && std::isnan(hw[n])) continue;  // inf - inf: both NaN
            if (fm::detail::float_bits(ref.v[n]) != fm::detail::float_bits(hw[n]) && mismatches++ < 5)
                UNSCOPED_INFO("lane " << n << " acc " << acc.v[n] << " ref " << ref.v[n] << " hw " << hw[n]);
        }
    }
    CHECK(mismatches == 0);
    {  // the order case of the statement test, on the instruction
        fm::generic_qlanes::B w{};
        fm::detail::store_u16(w.b + 0, 0x3f80);
        fm::detail::store_u16(w.b + 2, 0xbf80);
        const std::uint32_t a2 = fm::detail::float_to_bf16(std::ldexp(1.0f, -30)) | (0x3f80u << 16);
        float hw[16];
        _mm512_storeu_ps(hw, fm::avx512_qlanes::dpbf16(_mm512_set1_ps(1.0f), fm::avx512_qlanes::load_b(w.b), a2));
        CHECK(hw[0] == std::ldexp(1.0f, -30));
    }
    std::size_t cvt_mismatches = 0;
    for (int trial = 0; trial < 200000; ++trial) {
        alignas(64) std::uint32_t u[16];
        for (auto& v : u) v = static_cast<std::uint32_t>(rng.next());
        u[0] &= 0x807fffffu;  // a subnormal
        u[1] |= 0x7f800000u;  // infinity or NaN
        alignas(32) std::uint16_t hw[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(hw),
                           (__m256i)_mm512_cvtneps_pbh(_mm512_castsi512_ps(_mm512_load_si512(u))));
        for (int n = 0; n < 16; ++n) {
            float f;
            std::memcpy(&f, &u[n], 4);
            cvt_mismatches += fm::detail::float_to_bf16_ne(f) != hw[n];
        }
    }
    CHECK(cvt_mismatches == 0);
}
#endif

#ifndef MOE_TEST_BF16_ONLY

TEST_CASE("formats: E4M3 and E2M1 encoders invert their decoders on every code", "[formats]") {
    for (unsigned c = 0; c < 256; ++c) {
        if ((c & 0x7f) == 0x7f) continue;  // NaN
        CAPTURE(c);
        CHECK(fm::detail::float_to_e4m3(fm::detail::e4m3_to_float(static_cast<std::uint8_t>(c))) == c);
    }
    CHECK(fm::detail::e4m3_to_float(0x7e) == 448.0f);
    CHECK(fm::detail::e4m3_to_float(0x01) == std::ldexp(1.0f, -9));
    CHECK(fm::detail::float_to_e4m3(1e6f) == 0x7e);
    CHECK(fm::detail::float_to_e4m3(-1e6f) == 0xfe);
    for (unsigned c = 0; c < 16; ++c) CHECK(fm::detail::float_to_e2m1(fm::detail::e2m1_to_float(static_cast<std::uint8_t>(c))) == c);
    CHECK(fm::detail::float_to_e2m1(0.25f) == 0);  // tie between 0 and 0.5: even code
    CHECK(fm::detail::float_to_e2m1(0.75f) == 2);  // tie between 0.5 and 1: even code (1.0)
    CHECK(fm::detail::float_to_e2m1(5.0f) == 6);   // tie between 4 and 6: even code (4)
    CHECK(fm::detail::float_to_e2m1(100.0f) == 7);
    CHECK(fm::detail::e8m0_to_float(0) == std::ldexp(1.0f, -127));
    CHECK(fm::detail::e8m0_to_float(254) == std::ldexp(1.0f, 127));
}

/// The weight-only decode (`fma_panels`, weights decoded in registers) against a plain
/// statement: dequantize, then one std::fma per weight in k order, for M rows and P panels.
template <class Arch, class Fmt, std::size_t M, std::size_t P>
void check_fma_panels(const fm::quant_matrix& m) {
    using L = fm::qlanes_t<Arch>;
    INFO("format " << Fmt::name << " M=" << M << " P=" << P << " arch " << Arch::name());
    const std::size_t K = m.cols, lda = 8;
    REQUIRE(m.rows == 16 * P);
    const auto v = fm::view_of(m);
    std::vector<float> w(m.rows * K);
    Fmt::dequantize(v, w.data());
    const std::size_t pb = Fmt::panel_bytes(K, m.params);
    std::vector<std::uint8_t> buf(pb * P);
    const std::uint8_t* panels[P];
    for (std::size_t j = 0; j < P; ++j) {
        std::size_t rows[16];
        for (std::size_t n = 0; n < 16; ++n) rows[n] = j * 16 + n;
        Fmt::pack_panel(v, rows, buf.data() + j * pb);
        panels[j] = buf.data() + j * pb;
    }
    std::vector<float> a(K * lda);
    moe::splitmix64 rng(K + M * 7 + P);
    for (auto& x : a) x = static_cast<float>(rng.normal()) * 1e-3f;
    typename L::F acc[M][P];
    for (std::size_t i = 0; i < M; ++i)
        for (std::size_t j = 0; j < P; ++j) acc[i][j] = L::bcast(0.25f * static_cast<float>(i + 1));
    Fmt::template fma_panels<L, M, P>(panels, K, 0, K, a.data(), lda, acc);
    std::vector<float> got(M * P * 16), want(M * P * 16);
    for (std::size_t i = 0; i < M; ++i)
        for (std::size_t j = 0; j < P; ++j) {
            L::store(got.data() + (i * P + j) * 16, acc[i][j]);
            for (std::size_t n = 0; n < 16; ++n) {
                float c = 0.25f * static_cast<float>(i + 1);
                for (std::size_t k = 0; k < K; ++k) c = std::fma(a[k * lda + i], w[(j * 16 + n) * K + k], c);
                want[(i * P + j) * 16 + n] = c;
            }
        }
    CHECK(bits(got) == bits(want));
}

/// Row counts at each panel count the kernel runs (detail::wo_panels; P = 1 is also the tail).
template <class Arch, class Fmt>
void check_fma_panels_for(std::size_t P, const fm::quant_matrix& m) {
    if (P == 1) {
        check_fma_panels<Arch, Fmt, 1, 1>(m);
        check_fma_panels<Arch, Fmt, 7, 1>(m);
        check_fma_panels<Arch, Fmt, 8, 1>(m);
    } else if (P == 2) {
        check_fma_panels<Arch, Fmt, 3, 2>(m);
        check_fma_panels<Arch, Fmt, 5, 2>(m);
        check_fma_panels<Arch, Fmt, 8, 2>(m);
    } else if (P == 4) {
        check_fma_panels<Arch, Fmt, 1, 4>(m);
        check_fma_panels<Arch, Fmt, 2, 4>(m);
        check_fma_panels<Arch, Fmt, 4, 4>(m);
    } else {
        check_fma_panels<Arch, Fmt, 1, 8>(m);
    }
}

TEMPLATE_LIST_TEST_CASE("formats: the weight-only decode in registers equals dequantize then FMA", "[formats][kernels]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    // fp8: a 128 x 128 scale tile past FLT_MAX / 256 (the decode cannot fold 256 into it) next
    // to ordinary ones; codes of magnitude < 1 so that nothing overflows.
    // Each panel count the kernel runs (detail::wo_panels) at the row counts that take it.
    for (std::size_t P : {1u, 2u, 4u, 8u}) {
        fm::quant_matrix m{16 * P, 512, {}, std::vector<std::uint8_t>(16 * P * 512), {}};
        moe::splitmix64 rng(P);
        for (auto& c : m.data) c = static_cast<std::uint8_t>(rng.next() & 0xB7);  // exponent <= 6: |x| < 1
        const float tile_scales[] = {2e37f, 0.02f, 3e-30f, 1.5f};
        m.scales.resize(4 * fm::fp8::tiles(m.rows) * fm::fp8::tiles(m.cols));
        for (std::size_t t = 0; t < m.scales.size() / 4; ++t) fm::detail::store_f32(m.scales.data() + 4 * t, tile_scales[t % 4]);
        check_fma_panels_for<TestType, fm::fp8>(P, m);
    }
    // mxfp4: blocks of very different magnitudes (scale bytes far apart).
    for (std::size_t P : {1u, 2u, 4u, 8u}) {
        std::vector<float> w(16 * P * 192);
        moe::splitmix64 rng(P + 100);
        for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(rng.normal()) * std::ldexp(1.0f, static_cast<int>(i / 32 % 9) * 6 - 24);
        const auto m = fm::mxfp4::quantize(w.data(), 16 * P, 192);
        check_fma_panels_for<TestType, fm::mxfp4>(P, m);
    }
}

TEMPLATE_LIST_TEST_CASE("formats: quantized expert kernels for every format and arch", "[formats][kernels]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    check_kernel<TestType, fm::q8_0>(96, 160, {});
    check_kernel<TestType, fm::q4_0>(64, 96, {});
    check_kernel<TestType, fm::q4_1>(96, 64, {});
    check_kernel<TestType, fm::q5_0>(96, 64, {});
    check_kernel<TestType, fm::q5_1>(64, 96, {});
    check_kernel<TestType, fm::q2_k>(256, 512, {}, 9);
    check_kernel<TestType, fm::q3_k>(256, 256, {}, 9);
    check_kernel<TestType, fm::q4_k>(256, 512, {}, 9);
    check_kernel<TestType, fm::q5_k>(256, 512, {}, 9);
    check_kernel<TestType, fm::q6_k>(256, 256, {}, 9);
    check_kernel<TestType, fm::iq4_nl>(64, 96, {});
    check_kernel<TestType, fm::iq4_xs>(256, 512, {}, 9);
    check_kernel<TestType, fm::int8>(36, 52, {});
    check_kernel<TestType, fm::int4>(64, 96, {32, false});
    check_kernel<TestType, fm::int4>(128, 128, {128, true}, 9);
    check_kernel<TestType, fm::fp8>(37, 53, {});
    check_kernel<TestType, fm::fp8>(150, 140, {}, 9);  // several 128 x 128 scale tiles
    check_kernel<TestType, fm::mxfp4>(64, 96, {});
    // T = 6 and 8: experts of 1, 2, 3, 4, 6 and 8 rows, so the weight-only decode runs every
    // panel count it has (8, 4, 2 and the single-panel tail); T = 21 and 9 (above): experts of
    // several row blocks, the prefill path. Each against the float kernel.
    check_kernel<TestType, fm::mxfp4>(160, 224, {}, 6);
    check_kernel<TestType, fm::mxfp4>(160, 224, {}, 8);
    check_kernel<TestType, fm::fp8>(150, 140, {}, 6);
    check_kernel<TestType, fm::fp8>(150, 140, {}, 8);
    check_kernel<TestType, fm::mxfp4_dot>(64, 96, {});
    check_kernel<TestType, fm::mxfp4_dot>(160, 224, {}, 9);
    check_kernel<TestType, fm::bf16_dot>(38, 54, {});
    check_kernel<TestType, fm::bf16_dot>(256, 160, {}, 9);
}

namespace {

/// Biases and each SwiGLU variant through the quantized kernel: weight-only formats equal
/// `expert_ffn` with the same extras on the dequantized weights bit for bit; integer formats
/// equal moe::scalar. fp8's and int8's F is not a multiple of 8: their last up panel is partial.
template <class Arch, class Fmt>
void check_extras(std::size_t H, std::size_t F) {
    const qlayer l = make_qlayer(5, H, F, H + 7 * F);  // shaped_routing's 5 experts
    const auto q = moe::kernels::quantize_experts<Fmt>(l.w1.data(), l.w3.data(), l.w2.data(), l.E, H, F);
    const auto pw = moe::kernels::pack_quant_experts<Fmt>(q, H, F);
    const std::size_t T = 13;
    moe::matrix<float> x(T, H);
    moe::splitmix64 rng(H * F);
    for (auto& v : x.values) v = static_cast<float>(3.0 * rng.normal());  // large enough to clamp
    std::vector<float> b1(l.E * F), b3(l.E * F), b2(l.E * H);
    for (auto* b : {&b1, &b3, &b2})
        for (auto& v : *b) v = static_cast<float>(rng.normal());
    const auto plan = moe::make_plan(shaped_routing(T), 4);
    std::vector<float> d1, d3, d2;
    dequantize_all(q, d1, d3, d2);
    const auto packed = moe::kernels::pack_experts<moe::scalar>(d1.data(), d3.data(), d2.data(), l.E, H, F);
    auto run = [&](auto arch, const moe::kernels::ffn_extras& ex) {
        moe::matrix<float> y(plan.num_rows(), H, -7.0f);
        moe::kernels::ffn_workspace ws;
        ws.reserve(moe::kernels::workspace_size(plan, pw).total());
        moe::kernels::quant_expert_ffn<decltype(arch)>(y.view(), moe::matrix_view<const float>(x.view()), plan, pw, ws.data(), ws.size(),
                                                       moe::serial_executor{}, ex);
        return y.values;
    };
    const auto plain = run(Arch{}, {});
    using act = moe::kernels::ffn_activation;
    for (act a : {act::swiglu, act::swiglu_oai, act::swiglu_clamp})
        for (bool biased : {false, true}) {
            INFO("format " << Fmt::name << " activation " << static_cast<int>(a) << " biases " << biased << " arch " << Arch::name());
            moe::kernels::ffn_extras ex;
            ex.activation = a;
            ex.limit = 2.5f;
            if (biased) {
                ex.b1 = b1.data();
                ex.b3 = b3.data();
                ex.b2 = b2.data();
            }
            const auto y = run(Arch{}, ex);
            if (ex.plain()) {
                CHECK(bits(y) == bits(plain));
                continue;
            }
            CHECK(bits(y) != bits(plain));
            if constexpr (Fmt::integer) {
                CHECK(bits(y) == bits(run(moe::scalar{}, ex)));
            } else {
                moe::matrix<float> yf(plan.num_rows(), H, -7.0f);
                moe::kernels::ffn_workspace ws;
                ws.reserve(moe::kernels::workspace_size(plan, packed).total());
                moe::kernels::expert_ffn(yf.view(), moe::matrix_view<const float>(x.view()), plan, packed, ws.data(), ws.size(),
                                         moe::serial_executor{}, moe::kernels::ffn_tiling{}, ex);
                CHECK(bits(y) == bits(yf.values));
            }
        }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("formats: quantized experts take biases and the clamped SwiGLU variants", "[formats][kernels]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    check_extras<TestType, fm::mxfp4>(64, 96);
    check_extras<TestType, fm::fp8>(37, 53);
    check_extras<TestType, fm::int8>(36, 52);
    check_extras<TestType, fm::q4_k>(256, 256);
}

TEMPLATE_LIST_TEST_CASE("formats: a mixed block runs gate / up and down each in its own format", "[formats][kernels]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    // Q4_K_M: Q4_K gate and up, Q6_K down.
    using mix = fm::mixed<fm::q4_k, fm::q6_k>;
    CHECK(std::string(mix::name) == "q4_k+q6_k");
    const std::size_t H = 256, F = 256, T = 9;
    const qlayer l = make_qlayer(5, H, F, 99);
    const auto q = moe::kernels::quantize_experts<mix>(l.w1.data(), l.w3.data(), l.w2.data(), l.E, H, F);
    const auto q4 = moe::kernels::quantize_experts<fm::q4_k>(l.w1.data(), l.w3.data(), l.w2.data(), l.E, H, F);
    const auto q6 = moe::kernels::quantize_experts<fm::q6_k>(l.w1.data(), l.w3.data(), l.w2.data(), l.E, H, F);
    CHECK(q.w1[1].data == q4.w1[1].data);
    CHECK(q.w3[2].data == q4.w3[2].data);
    CHECK(q.w2[3].data == q6.w2[3].data);
    // Packed: each projection's panels are its own format's panels, byte for byte.
    const auto pw = moe::kernels::pack_quant_experts<mix>(q, H, F);
    const auto p4 = moe::kernels::pack_quant_experts<fm::q4_k>(q4, H, F);
    const auto p6 = moe::kernels::pack_quant_experts<fm::q6_k>(q6, H, F);
    REQUIRE(pw.up_panel_bytes() == p4.up_panel_bytes());
    REQUIRE(pw.down_panel_bytes() == p6.down_panel_bytes());
    CHECK(pw.expert_bytes() < p6.expert_bytes());
    CHECK(pw.expert_bytes() > p4.expert_bytes());
    for (std::size_t e = 0; e < l.E; ++e) {
        CHECK(std::memcmp(pw.up(e, 0), p4.up(e, 0), pw.up_panels() * pw.up_panel_bytes()) == 0);
        CHECK(std::memcmp(pw.down(e, 0), p6.down(e, 0), pw.down_panels() * pw.down_panel_bytes()) == 0);
    }
    moe::matrix<float> x(T, H);
    moe::splitmix64 rng(T + H);
    for (auto& v : x.values) v = static_cast<float>(rng.normal());
    x(2, 0) = 40.0f;  // one outlier, as check_kernel has
    const auto plan = moe::make_plan(shaped_routing(T), 4);
    const auto y = run_quant<TestType>(pw, x, plan);
    CHECK(bits(y) == bits(run_quant<moe::scalar>(pw, x, plan)));
    CHECK(bits(y) == bits(run_quant<TestType>(pw, x, plan, moe_test::reversed_threads_executor{3})));
    // Near the float layer on the dequantized weights (gate / up from Q4_K, down from Q6_K),
    // within the activation quantization's bound.
    std::vector<float> d1, d3, d2, u1, u3, u2;
    dequantize_all(q4, d1, d3, u2);
    dequantize_all(q6, u1, u3, d2);
    check_bound<fm::q4_k>(l, d1, d3, d2, x, plan, y, 256, 256);
}

TEST_CASE("formats: gate and up rows interleaved in one tensor pack as two", "[formats]") {
    // GPT-OSS's gate_up_proj: gate row f = row 2f, up row f = row 2f + 1.
    const std::size_t E = 2, H = 64, F = 96;
    const qlayer l = make_qlayer(E, H, F, 5);
    std::vector<float> gu(E * 2 * F * H);
    for (std::size_t e = 0; e < E; ++e)
        for (std::size_t f = 0; f < F; ++f)
            for (std::size_t h = 0; h < H; ++h) {
                gu[(e * 2 * F + 2 * f) * H + h] = l.w1[(e * F + f) * H + h];
                gu[(e * 2 * F + 2 * f + 1) * H + h] = l.w3[(e * F + f) * H + h];
            }
    const auto q = moe::kernels::quantize_experts<fm::mxfp4>(l.w1.data(), l.w3.data(), l.w2.data(), E, H, F);
    std::vector<fm::quant_matrix> q13;
    std::vector<fm::quant_view> v13, v2;
    for (std::size_t e = 0; e < E; ++e) q13.push_back(fm::mxfp4::quantize(gu.data() + e * 2 * F * H, 2 * F, H));
    for (std::size_t e = 0; e < E; ++e) {
        v13.push_back(fm::view_of(q13[e]));
        v2.push_back(fm::view_of(q.w2[e]));
    }
    const auto a = moe::kernels::pack_quant_experts<fm::mxfp4>(q, H, F);
    const auto b = moe::kernels::pack_quant_experts_interleaved<fm::mxfp4>(v13.data(), v2.data(), E, H, F);
    REQUIRE(a.bytes() == b.bytes());
    CHECK(std::memcmp(a.up(0, 0), b.up(0, 0), a.bytes()) == 0);
    CHECK(moe_test::error_of([&] { (void)moe::kernels::pack_quant_experts_interleaved<fm::mxfp4>(v2.data(), v2.data(), E, H, F); }) ==
          "[moe.kernels.shape] w13 of expert 0 is 64 x 96, expected 192 x 64");
}

TEST_CASE("formats: packed bytes are the format's bytes plus small overhead", "[formats]") {
    // Per expert, H = 1024, F = 2048 (no panel padding): packed / source bytes.
    const std::size_t H = 1024, F = 2048;
    auto ratio = [&](auto tag, fm::format_params p) {
        using Fmt = decltype(tag);
        const qlayer l = make_qlayer(1, H, F, 3);
        const auto q = moe::kernels::quantize_experts<Fmt>(l.w1.data(), l.w3.data(), l.w2.data(), 1, H, F, p);
        const auto pw = moe::kernels::pack_quant_experts<Fmt>(q, H, F);
        std::size_t src = 0;
        for (const auto* m : {&q.w1[0], &q.w3[0], &q.w2[0]}) src += m->data.size() + m->scales.size();
        return static_cast<double>(pw.expert_bytes()) / static_cast<double>(src);
    };
    CHECK(ratio(fm::q8_0{}, {}) == Approx(1.0).margin(0.001));
    CHECK(ratio(fm::q4_0{}, {}) == Approx(1.0).margin(0.001));
    CHECK(ratio(fm::q4_1{}, {}) == Approx(1.0).margin(0.001));
    CHECK(ratio(fm::q5_0{}, {}) == Approx(208.0 / 176.0).margin(0.001));  // 6-bit panel codes for 5-bit values
    CHECK(ratio(fm::q5_1{}, {}) == Approx(224.0 / 192.0).margin(0.001));  // 6-bit panel codes for 5-bit values
    CHECK(ratio(fm::q6_k{}, {}) == Approx(1.0).margin(0.001));
    CHECK(ratio(fm::q5_k{}, {}) == Approx(212.0 / 176.0).margin(0.001));  // 6-bit panel codes for 5-bit values
    CHECK(ratio(fm::q2_k{}, {}) == Approx(100.0 / 84.0).margin(0.001));   // sub-scales and mins unpacked to bytes
    CHECK(ratio(fm::q3_k{}, {}) == Approx(114.0 / 110.0).margin(0.001));  // sub-scales unpacked to bytes
    CHECK(ratio(fm::iq4_nl{}, {}) == Approx(1.0).margin(0.001));
    CHECK(ratio(fm::iq4_xs{}, {}) == Approx(138.0 / 136.0).margin(0.001));  // sub-scales unpacked to bytes
    CHECK(ratio(fm::q4_k{}, {}) <= 1.03);  // sub-scales unpacked to bytes
    CHECK(ratio(fm::int8{}, {}) == Approx(1.0).margin(0.001));
    CHECK(ratio(fm::int4{}, {32, false}) <= 1.03);  // zero points stored (8 when symmetric)
    CHECK(ratio(fm::fp8{}, {}) <= 1.04);            // scales per panel column
    CHECK(ratio(fm::mxfp4{}, {}) == Approx(1.0).margin(0.001));
    CHECK(ratio(fm::mxfp4_dot{}, {}) == Approx(1.0).margin(0.001));
    CHECK(ratio(fm::bf16_dot{}, {}) == Approx(1.0).margin(0.001));
}

TEST_CASE("formats: bad input gets stable errors", "[formats][errors]") {
    using moe_test::error_of;
    const std::vector<float> w(4 * 64, 0.5f);
    CHECK(error_of([&] { (void)fm::q4_0::quantize(w.data(), 4, 48); }) ==
          "[moe.kernels.format] q4_0: K=48 is not a positive multiple of the block 32");
    std::vector<float> nan_w(w);
    nan_w[70] = NAN;
    CHECK(error_of([&] { (void)fm::mxfp4::quantize(nan_w.data(), 4, 64); }) ==
          "[moe.kernels.format] mxfp4: weight (1, 6) is nan (not finite)");
    CHECK(error_of([&] { (void)fm::q4_k::quantize(w.data(), 1, 64); }) ==
          "[moe.kernels.format] q4_k: K=64 is not a positive multiple of the block 256");
    auto m = fm::q8_0::quantize(w.data(), 4, 64);
    fm::quant_view v = fm::view_of(m);
    v.data_bytes -= 1;
    CHECK(error_of([&] { fm::q8_0::validate(v); }) == "[moe.kernels.format] q8_0: 4 x 64 needs 272 bytes of data, got 271");
    fm::detail::store_u16(m.data.data() + 34 * 3, 0x7e00);  // fp16 NaN: row 1, block 1
    CHECK(error_of([&] { fm::q8_0::validate(fm::view_of(m)); }) ==
          "[moe.kernels.format] q8_0: scale of row 1, block 1 is nan (not finite)");
    auto i8 = fm::int8::quantize(w.data(), 4, 64);
    i8.scales.pop_back();
    CHECK(error_of([&] { fm::int8::validate(fm::view_of(i8)); }) ==
          "[moe.kernels.format] int8: 4 x 64 needs 16 bytes of scales, got 15");
    CHECK(error_of([&] { (void)fm::int8::quantize(w.data(), 1, 65540); }) ==
          "[moe.kernels.format] int8: K=65540 exceeds 65536 (exact int32 accumulation)");
    CHECK(error_of([&] { (void)fm::int4::quantize(w.data(), 4, 64, {12, false}); }) ==
          "[moe.kernels.format] int4: group 12 must be a positive multiple of 8 (e.g. 32 or 128), at most 65536");
    auto i4 = fm::int4::quantize(w.data(), 4, 64, {32, true});
    i4.scales.back() = 16;
    CHECK(error_of([&] { fm::int4::validate(fm::view_of(i4)); }) ==
          "[moe.kernels.format] int4: zero point of row 3, group 1 is 16 (not 4-bit)");
    auto f8 = fm::fp8::quantize(w.data(), 4, 64);
    f8.data[70] = 0xff;
    CHECK(error_of([&] { fm::fp8::validate(fm::view_of(f8)); }) == "[moe.kernels.format] fp8: weight (1, 6) is an e4m3 NaN");
    auto mx = fm::mxfp4::quantize(w.data(), 4, 64);
    mx.scales[5] = 255;
    CHECK(error_of([&] { fm::mxfp4::validate(fm::view_of(mx)); }) ==
          "[moe.kernels.format] mxfp4: scale of row 2, block 1 is the E8M0 NaN (255)");
    // ggml's block_mxfp4 (one decoder, shared with the GGUF loader): the same values as the
    // GPT-OSS layout after moving the nibbles, and the same NaN-scale check.
    {
        const auto mq = fm::mxfp4::quantize(w.data(), 4, 64);
        std::vector<std::uint8_t> ggml(4 * 2 * fm::mxfp4::ggml_block_bytes);
        for (std::size_t b = 0; b < 8; ++b) {
            ggml[17 * b] = mq.scales[b];
            for (std::size_t j = 0; j < 16; ++j) {
                auto code = [&](std::size_t i) { const std::uint8_t x = mq.data[(32 * b + i) / 2]; return static_cast<std::uint8_t>(i & 1 ? x >> 4 : x & 15); };
                ggml[17 * b + 1 + j] = static_cast<std::uint8_t>(code(j) | (code(j + 16) << 4));
            }
        }
        std::vector<float> a(4 * 64), g(4 * 64);
        fm::mxfp4::dequantize(fm::view_of(mq), a.data());
        fm::mxfp4::dequantize_ggml(ggml.data(), 4, 64, g.data(), "tensor 'w'");
        CHECK(a == g);
        // mxfp4:dot holds exactly these bytes: its quantizer writes them, its dequantizer
        // (ggml's dequantize_row_mxfp4 through 2 e2m1 x 2^(e - 128)) reads the same values.
        const auto md = fm::mxfp4_dot::quantize(w.data(), 4, 64);
        CHECK(md.data == ggml);
        std::vector<float> d(4 * 64);
        fm::mxfp4_dot::dequantize(fm::view_of(md), d.data());
        CHECK(d == g);
        auto md_nan = md;
        md_nan.data[17 * 5] = 255;
        CHECK(error_of([&] { fm::mxfp4_dot::validate(fm::view_of(md_nan)); }) ==
              "[moe.kernels.format] mxfp4:dot: scale of row 2, block 1 is the E8M0 NaN (255)");
        ggml[17 * 3] = 255;
        CHECK(error_of([&] { fm::mxfp4::dequantize_ggml(ggml.data(), 4, 64, g.data(), "tensor 'w'"); }) ==
              "[moe.kernels.format] mxfp4: tensor 'w': scale of block 3 is the E8M0 NaN (255)");
    }
    CHECK(error_of([] { (void)moe::kernels::parse_weight_format("q8_1"); }) ==
          "[moe.kernels.format] unknown weight format 'q8_1' (expected f32, f16, bf16, bf16:dot, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, "
          "q6_k, iq4_nl, iq4_xs, int8, int4:G[:zp], fp8, mxfp4, mxfp4:dot, q4_k+q6_k, q5_k+q6_k, q2_k+q3_k, q3_k+q4_k, q3_k+q5_k, q4_k+q5_0, q4_k+q8_0, q5_k+q5_1 or q5_k+q8_0)");
    CHECK(error_of([] { (void)moe::kernels::parse_weight_format("int4:x"); }) ==
          "[moe.kernels.format] int4 group 'x' must be a positive multiple of 8 (e.g. int4:32, int4:128)");
    CHECK(moe::kernels::parse_weight_format("int4:128:zp").to_string() == "int4:128:zp");
    CHECK(moe::kernels::parse_weight_format("bf16:dot").to_string() == "bf16:dot");
    auto b16 = fm::bf16_dot::quantize(w.data(), 4, 64);
    fm::detail::store_u16(b16.data.data() + 2 * 70, 0x7f80);
    CHECK(error_of([&] { fm::bf16_dot::validate(fm::view_of(b16)); }) == "[moe.kernels.format] bf16:dot: weight (1, 6) is inf (not finite)");
    CHECK(error_of([&] { (void)fm::bf16_dot::quantize(w.data(), 8, 31); }) ==
          "[moe.kernels.format] bf16:dot: K=31 is not a positive multiple of the block 2");
    // Packing checks every expert's tensors.
    CHECK(error_of([&] { (void)fm::q8_0::quantize(w.data(), 64, 4); }) ==
          "[moe.kernels.format] q8_0: K=4 is not a positive multiple of the block 32");
    const std::vector<float> w32(32 * 32, 0.25f);
    const auto ok = moe::kernels::quantize_experts<fm::q8_0>(w32.data(), w32.data(), w32.data(), 1, 32, 32);
    std::vector<fm::quant_view> v1{fm::view_of(ok.w1[0])}, v3{fm::view_of(ok.w3[0])}, v2{fm::view_of(ok.w2[0])};
    CHECK(error_of([&] { (void)moe::kernels::pack_quant_experts<fm::q8_0>(v1.data(), v3.data(), v2.data(), 1, 32, 64); }) ==
          "[moe.kernels.shape] w1 of expert 0 is 32 x 32, expected 64 x 32");
}

TEST_CASE("formats: the registry names, parses and visits every format, and ties GGUF ids to ggml's types", "[formats]") {
    namespace k = moe::kernels;
    std::vector<std::string> names;
    std::size_t gguf = 0;
    k::for_each_format([&](auto tag) {
        using W = decltype(tag);
        using tr = k::format_traits<W>;
        const std::string n = tr::name;
        names.push_back(n);
        // parse -> to_string -> parse is the identity; visit_format reaches this very type.
        const std::string spelled = tr::has_params ? n + ":64" : n;
        const k::weight_format f = k::parse_weight_format(spelled);
        CHECK(f.name == n);
        CHECK(f.to_string() == spelled);
        CHECK(k::visit_format(f, [](auto t) { return std::is_same<decltype(t), W>::value; }));
        CHECK(std::string(k::weight_format_names).find(tr::syntax) != std::string::npos);
        if constexpr (tr::gguf_type >= 0) {
            // The ggml type a format reads has the format's block size (and, read in place, its name).
            moe::io::ggml_type_traits g{};
            REQUIRE(moe::io::ggml_traits(static_cast<std::uint32_t>(tr::gguf_type), g));
            std::string lower = g.name;
            for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            CHECK(lower == n.substr(0, n.find(':')));  // mxfp4:dot reads MXFP4 too
            if constexpr (!k::is_weight_type_v<W>) CHECK(g.block == W::block);
            ++gguf;
        }
    });
    CHECK(names.size() == k::weight_formats::size);
    CHECK(std::set<std::string>(names.begin(), names.end()).size() == names.size());
    CHECK(gguf == 17);  // F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS MXFP4 (mxfp4, mxfp4:dot)
    CHECK(moe_test::error_of([] { (void)k::parse_weight_format("int4"); }) ==
          "[moe.kernels.format] unknown weight format 'int4' (expected f32, f16, bf16, bf16:dot, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, "
          "q6_k, iq4_nl, iq4_xs, int8, int4:G[:zp], fp8, mxfp4, mxfp4:dot, q4_k+q6_k, q5_k+q6_k, q2_k+q3_k, q3_k+q4_k, q3_k+q5_k, q4_k+q5_0, q4_k+q8_0, q5_k+q5_1 or q5_k+q8_0)");
    CHECK(moe_test::error_of([] { k::visit_format(k::weight_format{"q8_1", {}}, [](auto) { return 0; }); }) ==
          "[moe.kernels.format] unknown weight format 'q8_1' (expected f32, f16, bf16, bf16:dot, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, "
          "q6_k, iq4_nl, iq4_xs, int8, int4:G[:zp], fp8, mxfp4, mxfp4:dot, q4_k+q6_k, q5_k+q6_k, q2_k+q3_k, q3_k+q4_k, q3_k+q5_k, q4_k+q5_0, q4_k+q8_0, q5_k+q5_1 or q5_k+q8_0)");
}
#endif  // MOE_TEST_BF16_ONLY
