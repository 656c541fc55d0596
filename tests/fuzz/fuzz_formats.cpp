// libFuzzer harness for the weight formats: bytes -> format, shape, source bytes and scales
// (any values: NaN and infinite scales, NaN codes, wrong lengths), float weights for the
// reference quantizers (NaN, infinities, subnormals, extremes) -> validate / quantize (a clean
// moe::error or success) -> dequantize -> pack -> quant_expert_ffn on a tiny plan, whose result
// must equal the moe::scalar reference bit for bit.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <moe/kernels/formats.hpp>
#include <moe/kernels/quant_ffn.hpp>
#include <moe/moe.hpp>

namespace {

namespace fm = moe::kernels::formats;

struct bytes {
    const std::uint8_t* p;
    std::size_t n;
    std::uint8_t u8() { return n ? (--n, *p++) : 0; }
    float f32() {
        switch (u8() % 8) {
            case 0: return NAN;
            case 1: return u8() & 1 ? INFINITY : -INFINITY;
            case 2: return 1e-40f;
            case 3: return u8() & 1 ? 3e38f : -3e38f;
            case 4: return 0.0f;
            default: return (static_cast<float>(u8()) - 128.0f) / 16.0f;
        }
    }
};

#define FUZZ_CHECK(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            std::fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__); \
            std::abort();                                                             \
        }                                                                             \
    } while (0)

template <class Fmt>
void run(bytes& b, fm::format_params p) {
    const std::size_t ks[] = {4, 8, 16, 32, 36, 64, 128, 256, 40};
    const std::size_t H = ks[b.u8() % 9], F = ks[b.u8() % 9], E = 1 + b.u8() % 3;
    std::vector<fm::quant_matrix> m;
    try {
        for (std::size_t i = 0; i < 3 * E; ++i) {
            const bool down = i % 3 == 2;
            const std::size_t n = down ? H : F, k = down ? F : H;
            if (b.u8() % 2) {
                std::vector<float> w(n * k);
                for (auto& v : w) v = b.f32();
                m.push_back(Fmt::quantize(w.data(), n, k, p));
            } else {
                // Raw source bytes: quantize zeros for the expected lengths, then overwrite.
                std::vector<float> zero(n * k, 0.0f);
                fm::quant_matrix q = Fmt::quantize(zero.data(), n, k, p);
                for (auto& x : q.data) x = b.u8();
                for (auto& x : q.scales) x = b.u8();
                if (b.u8() % 16 == 0 && !q.data.empty()) q.data.pop_back();
                m.push_back(std::move(q));
            }
            Fmt::validate(fm::view_of(m.back()));
            std::vector<float> deq(m.back().rows * m.back().cols);
            Fmt::dequantize(fm::view_of(m.back()), deq.data());
        }
        moe::kernels::quantized_experts<Fmt> q;
        for (std::size_t e = 0; e < E; ++e) {
            q.w1.push_back(m[3 * e]);
            q.w3.push_back(m[3 * e + 1]);
            q.w2.push_back(m[3 * e + 2]);
        }
        const auto pw = moe::kernels::pack_quant_experts<Fmt>(q, H, F, moe::kernels::pack_options{false});
        const std::size_t T = 1 + b.u8() % 9;
        moe::matrix<float> x(T, H);
        for (auto& v : x.values) v = b.f32();
        moe::routing<float> r(T, E, 1, false);
        for (std::size_t t = 0; t < T; ++t) {
            r.indices[t] = static_cast<std::int32_t>(b.u8() % E);
            r.weights[t] = 1.0f;
        }
        const auto plan = moe::make_plan(r, 1 + b.u8() % 4);
        moe::matrix<float> y1(plan.num_rows(), H), y2(plan.num_rows(), H);
        moe::kernels::ffn_workspace ws;
        ws.reserve(moe::kernels::workspace_size(plan, pw).total());
        moe::kernels::quant_expert_ffn<moe::default_arch>(y1.view(), moe::matrix_view<const float>(x.view()), plan, pw, ws.data(), ws.size());
        moe::kernels::quant_expert_ffn<moe::scalar>(y2.view(), moe::matrix_view<const float>(x.view()), plan, pw, ws.data(), ws.size());
        FUZZ_CHECK(std::memcmp(y1.values.data(), y2.values.data(), y1.values.size() * 4) == 0);
    } catch (const moe::error& e) {
        FUZZ_CHECK(std::strncmp(e.what(), "[moe.kernels.", 13) == 0);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    bytes b{data, size};
    switch (b.u8() % 18) {
        case 17: run<fm::mxfp4_dot>(b, {}); break;
        case 16: run<fm::q5_1>(b, {}); break;
        case 14: run<fm::q2_k>(b, {}); break;
        case 15: run<fm::q3_k>(b, {}); break;
        case 11: run<fm::q5_k>(b, {}); break;
        case 12: run<fm::iq4_nl>(b, {}); break;
        case 13: run<fm::iq4_xs>(b, {}); break;
        case 8: run<fm::q5_0>(b, {}); break;
        case 9: run<fm::q4_1>(b, {}); break;
        case 0: run<fm::q8_0>(b, {}); break;
        case 1: run<fm::q4_0>(b, {}); break;
        case 2: run<fm::q4_k>(b, {}); break;
        case 3: run<fm::q6_k>(b, {}); break;
        case 4: run<fm::int8>(b, {}); break;
        case 5: run<fm::int4>(b, {std::size_t(8) << (b.u8() % 5), (b.u8() & 1) != 0}); break;
        case 6: run<fm::fp8>(b, {}); break;
        case 7: run<fm::mxfp4>(b, {}); break;
        default:
            try {
                (void)moe::kernels::parse_weight_format(std::string(reinterpret_cast<const char*>(b.p), b.n));
            } catch (const moe::error& e) {
                FUZZ_CHECK(std::strncmp(e.what(), "[moe.kernels.format]", 20) == 0);
            }
            break;
    }
    return 0;
}
