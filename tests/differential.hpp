// Differential checks across archs: one case drawn from bytes runs on moe::scalar (the
// reference) and on the SIMD arch `A`, and every result must be the same bits (or the same
// error message). Shared by the seeded Catch2 test (tests/test_differential.cpp, one program
// per arch) and the libFuzzer target (tests/fuzz/fuzz_differential.cpp, one per arch).
//
// What a case draws:
// - router: every score function, pre/post softmax, select_on_logits, every renormalisation,
//   scaling, groups of every size from 1 to E (group_score_top_m 0..size, both masks,
//   weights_from_masked), k from 1 to E (and invalid ones), biases (none, small, ties, huge),
//   E and T off the lane count and the 16-token tile, float and bf16 logits drawn normal,
//   from a few values (exact ties), huge, subnormal, with -inf, NaN or +inf;
//   then capacity (every formula and drop policy) on the routing, and gather / combine;
// - the packed gate GEMM on shapes off the register blocks;
// - the load-balancing losses (every variant and score function) and z-loss with gradients;
// - top-p, expert-choice and Sinkhorn routing;
// - the quantized expert kernels of every format, on K and N off their tiles.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <moe/kernels/formats.hpp>
#include <moe/kernels/quant_ffn.hpp>
#include <moe/moe.hpp>

#include "scalar_kernels.hpp"

namespace moe_diff {

/// The case's bytes; reads past the end give 0, so every byte string is a case.
struct bytes {
    const std::uint8_t* p;
    std::size_t n;
    std::uint8_t u8() noexcept { return n ? (--n, *p++) : 0; }
    std::uint64_t u64() noexcept {
        std::uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | u8();
        return v;
    }
    float f32() noexcept {
        std::uint32_t v = 0;
        for (int i = 0; i < 4; ++i) v = (v << 8) | u8();
        float f;
        std::memcpy(&f, &v, 4);
        return f;
    }
};

/// Runs f; returns the moe::error message it threw, or "" (any other exception propagates).
template <class F>
std::string outcome(F&& f) {
    try {
        f();
    } catch (const moe::error& e) {
        return e.what();
    }
    return "";
}

template <class V>
bool same_bits(const std::vector<V>& a, const std::vector<V>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(V)) == 0);
}

/// Where two float vectors first differ, for the failure message.
template <class V>
std::string first_difference(const char* what, const std::vector<V>& ref, const std::vector<V>& got) {
    std::ostringstream s;
    s << what << " differ";
    if (ref.size() != got.size()) {
        s << " in size: " << ref.size() << " vs " << got.size();
        return s.str();
    }
    for (std::size_t i = 0; i < ref.size(); ++i)
        if (std::memcmp(&ref[i], &got[i], sizeof(V)) != 0) {
            s.precision(9);
            s << " at " << i << ": scalar " << +ref[i] << ", simd " << +got[i];
            break;
        }
    return s.str();
}

/// One logit of a case's distribution.
struct logit_source {
    int mode;  // 0 normal, 1 a few values (ties), 2 extremes, 3 the fuzzer's own bytes
    moe::splitmix64 rng;
    bytes* b;
    float scale;
    float next() {
        switch (mode) {
            case 0: return static_cast<float>(rng.normal()) * scale;
            case 1: {
                static constexpr float few[] = {-1.0f, 0.0f, 0.5f, 0.5f, 1.0f, 2.0f};
                return few[rng.next() % 6];
            }
            case 2: {
                static constexpr float odd[] = {-INFINITY, 1e-40f, -1e-40f, 3e38f, -3e38f, 1e30f, 0.0f, -0.0f, 88.0f, -104.0f};
                const std::uint64_t r = rng.next();
                return r % 3 == 0 ? odd[(r >> 8) % 10] : static_cast<float>(rng.normal()) * 20.0f;
            }
            default:
                switch (b->u8() % 8) {
                    case 0: return -INFINITY;
                    case 1: return 1e-40f;
                    case 2: return 0.5f;
                    case 3: return b->f32();
                    default: return static_cast<float>(static_cast<std::int8_t>(b->u8())) / 16.0f;
                }
        }
    }
};

inline moe::matrix<float> draw_logits(bytes& b, std::size_t T, std::size_t E) {
    logit_source src{b.u8() % 4, moe::splitmix64(b.u64()), &b, 0.25f + static_cast<float>(b.u8() % 16)};
    moe::matrix<float> l(T, E);
    for (auto& v : l.values) v = src.next();
    // Rarely a NaN or +inf (the case then checks that both paths report the same row), or a
    // whole row of -inf (an error for softmax only).
    if (T > 0 && b.u8() % 16 == 0) {
        const std::size_t t = b.u8() % T, e = b.u8() % E;
        switch (b.u8() % 3) {
            case 0: l(t, e) = NAN; break;
            case 1: l(t, e) = INFINITY; break;
            default:
                for (std::size_t j = 0; j < E; ++j) l(t, j) = -INFINITY;
        }
    }
    return l;
}

template <class A>
std::string check_router(bytes& b) {
    static constexpr std::size_t wide[] = {96, 128, 160, 256};
    const std::size_t E = b.u8() % 8 == 0 ? wide[b.u8() % 4] : 1 + b.u8() % 72;
    const std::size_t T = b.u8() % 4 == 0 ? b.u8() % 16 : 16 + b.u8() % 120;
    moe::router_config cfg;
    cfg.score = static_cast<moe::score_function>(b.u8() % 3);
    cfg.top_k = b.u8() % 32 == 0 ? (b.u8() & 1 ? 0 : E + 1) : 1 + b.u8() % E;
    cfg.pre_softmax = b.u8() & 1;
    cfg.select_on_logits = cfg.score != moe::score_function::softmax && b.u8() % 4 == 0;
    cfg.renorm = static_cast<moe::renormalize>(b.u8() % 4);
    cfg.renorm_eps = cfg.renorm == moe::renormalize::clamp ? 1e-3f : static_cast<float>(b.u8() % 3) * 1e-5f;
    cfg.scaling_factor = b.u8() % 2 ? 1.0f : 0.25f + static_cast<float>(b.u8() % 10) * 0.5f;
    if (b.u8() % 2) {
        std::vector<std::size_t> divisors;
        for (std::size_t g = 1; g <= E; ++g)
            if (E % g == 0) divisors.push_back(g);
        cfg.num_groups = divisors[b.u8() % divisors.size()];
        const std::size_t S = E / cfg.num_groups;
        cfg.group_top_k = 1 + b.u8() % cfg.num_groups;
        cfg.group_score_top_m = b.u8() % (S + 1);
        cfg.mask = static_cast<moe::group_mask>(b.u8() % 2);
        cfg.weights_from_masked = b.u8() % 4 == 0;
        if (cfg.mask == moe::group_mask::neg_inf && cfg.top_k > cfg.group_top_k * S && b.u8() % 8 != 0)
            cfg.top_k = cfg.group_top_k * S;
    }
    cfg.keep_scores = b.u8() & 1;
    std::vector<float> bias;
    switch (b.u8() % 5) {
        case 0: break;
        case 1: bias.assign(E, 0.0f); break;
        case 2:
            for (std::size_t e = 0; e < E; ++e) bias.push_back(static_cast<float>(static_cast<std::int8_t>(b.u8())) / 64.0f);
            break;
        case 3:
            for (std::size_t e = 0; e < E; ++e) bias.push_back(e % 2 ? 0.5f : 0.0f);
            break;
        default:
            for (std::size_t e = 0; e < E; ++e) bias.push_back(static_cast<float>(static_cast<std::int8_t>(b.u8())) * 1e3f);
    }
    const auto l = draw_logits(b, T, E);

    std::ostringstream where;
    where << "router E=" << E << " T=" << T << " score=" << moe::to_string(cfg.score) << " k=" << cfg.top_k
          << " pre_softmax=" << cfg.pre_softmax << " select_on_logits=" << cfg.select_on_logits
          << " renorm=" << moe::to_string(cfg.renorm) << " scale=" << cfg.scaling_factor << " groups=" << cfg.num_groups
          << "/" << cfg.group_top_k << " m=" << cfg.group_score_top_m << " mask=" << static_cast<int>(cfg.mask)
          << " from_masked=" << cfg.weights_from_masked << " bias=" << bias.size() << ": ";
    moe::routing<float> ref, got;
    const std::string e_ref = outcome([&] { ref = moe::route<moe::scalar>(l, cfg, bias); });
    const std::string e_got = outcome([&] { got = moe::route<A>(l, cfg, bias); });
    if (e_ref != e_got) return where.str() + "errors differ: scalar '" + e_ref + "', simd '" + e_got + "'";
    if (!e_ref.empty()) return "";
    if (!same_bits(ref.indices, got.indices)) return where.str() + first_difference("indices", ref.indices, got.indices);
    if (!same_bits(ref.weights, got.weights)) return where.str() + first_difference("weights", ref.weights, got.weights);
    if (!same_bits(ref.scores, got.scores)) return where.str() + first_difference("scores", ref.scores, got.scores);

    if (b.u8() % 4 == 0) {  // the same logits as bf16
        moe::matrix<Eigen::bfloat16> lb(T, E);
        for (std::size_t i = 0; i < l.values.size(); ++i) lb.values[i] = Eigen::bfloat16(l.values[i]);
        moe::routing<float> rb, gb;
        const std::string eb_ref = outcome([&] { rb = moe::route<moe::scalar>(lb, cfg, bias); });
        const std::string eb_got = outcome([&] { gb = moe::route<A>(lb, cfg, bias); });
        if (eb_ref != eb_got) return where.str() + "bf16 errors differ: '" + eb_ref + "' vs '" + eb_got + "'";
        if (!same_bits(rb.indices, gb.indices) || !same_bits(rb.weights, gb.weights) || !same_bits(rb.scores, gb.scores))
            return where.str() + "bf16 logits route differently";
    }

    // Capacity on the routing, then the plan and the arch's gather / combine.
    moe::drop_config d;
    d.capacity.formula = static_cast<moe::capacity_formula>(b.u8() % 6);
    d.capacity.factor = 0.25 * (1 + b.u8() % 8);
    d.capacity.min_capacity = b.u8() % 3;
    d.policy = static_cast<moe::drop_policy>(b.u8() % 6);
    d.reroute = b.u8() & 1;
    moe::routing<float> kept = ref;
    if (!outcome([&] { (void)moe::apply_capacity(kept, d); }).empty()) kept = ref;
    const auto plan = moe::make_plan(kept, 1 + b.u8() % 8);
    const std::size_t H = 1 + b.u8() % 40;
    moe::matrix<float> x(T, H);
    moe::splitmix64 rx(b.u64());
    for (auto& v : x.values) v = static_cast<float>(rx.normal());
    moe::matrix<float> rows_ref(plan.num_rows(), H), rows_got(plan.num_rows(), H), y_ref(T, H), y_got(T, H);
    moe::gather<moe::scalar>(rows_ref.view(), x.view(), plan);
    moe::gather<A>(rows_got.view(), x.view(), plan);
    if (!same_bits(rows_ref.values, rows_got.values)) return where.str() + "gather differs";
    moe::combine<moe::scalar>(y_ref.view(), rows_ref.view(), plan, kept);
    moe::combine<A>(y_got.view(), rows_ref.view(), plan, kept);
    if (!same_bits(y_ref.values, y_got.values)) return where.str() + first_difference("combine", y_ref.values, y_got.values);
    return "";
}

template <class A>
std::string check_gate(bytes& b) {
    const std::size_t T = 1 + b.u8() % 40, H = 1 + b.u8() % 100, E = 1 + b.u8() % 70;
    moe::splitmix64 r(b.u64());
    moe::matrix<float> x(T, H), w(E, H);
    for (auto& v : x.values) v = static_cast<float>(r.normal());
    for (auto& v : w.values) v = static_cast<float>(r.normal()) * 0.1f;
    if (b.u8() % 4 == 0) x.values[b.u8() % x.values.size()] = 1e-40f;
    moe::matrix<float> ref(T, E), got(T, E);
    moe::gate_into<moe::scalar>(ref.view(), x.view(), moe::pack_gate<moe::scalar>(w.view()));
    moe::gate_into<A>(got.view(), x.view(), moe::pack_gate<A>(w.view()));
    if (!same_bits(ref.values, got.values)) {
        std::ostringstream s;
        s << "gate T=" << T << " H=" << H << " E=" << E << ": " << first_difference("logits", ref.values, got.values);
        return s.str();
    }
    return "";
}

template <class A>
std::string check_losses(bytes& b) {
    const std::size_t T = 1 + b.u8() % 80, E = 2 + b.u8() % 40;
    moe::splitmix64 r(b.u64());
    moe::matrix<float> l(T, E);
    for (auto& v : l.values) v = static_cast<float>(r.normal()) * 3.0f;
    moe::aux_loss_config cfg;
    cfg.variant = static_cast<moe::aux_loss_variant>(b.u8() % 3);
    cfg.score = static_cast<moe::score_function>(b.u8() % 3);
    const std::size_t k = 1 + b.u8() % std::min<std::size_t>(E, 8);
    std::vector<std::uint8_t> mask;
    if (b.u8() & 1)
        for (std::size_t t = 0; t < T; ++t) mask.push_back(b.u8() % 4 != 0);
    std::ostringstream where;
    where << "losses T=" << T << " E=" << E << " k=" << k << " variant=" << static_cast<int>(cfg.variant)
          << " score=" << moe::to_string(cfg.score) << ": ";
    const auto rt = moe::aux_loss_routing<moe::scalar>(moe::matrix_view<const float>(l.view()), k, cfg.score);
    const auto rg = moe::aux_loss_routing<A>(moe::matrix_view<const float>(l.view()), k, cfg.score);
    if (!same_bits(rt.indices, rg.indices)) return where.str() + "aux-loss routing differs";
    moe::matrix<float> g_ref(T, E), g_got(T, E);
    double v_ref = 0, v_got = 0;
    const std::string e_ref = outcome([&] { v_ref = moe::load_balancing_loss<moe::scalar>(l.view(), rt, cfg, mask, g_ref.view()); });
    const std::string e_got = outcome([&] { v_got = moe::load_balancing_loss<A>(l.view(), rt, cfg, mask, g_got.view()); });
    if (e_ref != e_got) return where.str() + "errors differ: '" + e_ref + "' vs '" + e_got + "'";
    if (std::memcmp(&v_ref, &v_got, sizeof v_ref) != 0) return where.str() + "load-balancing loss values differ";
    if (!same_bits(g_ref.values, g_got.values)) return where.str() + first_difference("gradients", g_ref.values, g_got.values);
    v_ref = moe::z_loss<moe::scalar>(l.view(), 1e-3, mask, g_ref.view());
    v_got = moe::z_loss<A>(l.view(), 1e-3, mask, g_got.view());
    if (std::memcmp(&v_ref, &v_got, sizeof v_ref) != 0 || !same_bits(g_ref.values, g_got.values))
        return where.str() + "z-loss differs";
    return "";
}

template <class A>
std::string check_policies(bytes& b) {
    const std::size_t T = 1 + b.u8() % 64, E = 1 + b.u8() % 33;
    const auto l = draw_logits(b, T, E);
    const int which = b.u8() % 3;
    moe::routing<float> ref, got;
    std::string e_ref, e_got;
    if (which == 0) {
        moe::top_p_config c;
        c.p = 0.05 + 0.1 * (b.u8() % 10);
        c.min_k = 1 + b.u8() % E;
        c.score = static_cast<moe::score_function>(b.u8() % 3);
        c.keep_scores = true;
        e_ref = outcome([&] { ref = moe::route_top_p<moe::scalar>(l, c); });
        e_got = outcome([&] { got = moe::route_top_p<A>(l, c); });
    } else if (which == 1) {
        moe::expert_choice_config c;
        c.capacity_factor = 0.5 * (1 + b.u8() % 6);
        c.score = static_cast<moe::score_function>(b.u8() % 3);
        e_ref = outcome([&] { ref = moe::route_expert_choice<moe::scalar>(l, c); });
        e_got = outcome([&] { got = moe::route_expert_choice<A>(l, c); });
    } else {
        const std::size_t k = 1 + b.u8() % E;
        e_ref = outcome([&] { ref = moe::route_sinkhorn<moe::scalar>(l, k); });
        e_got = outcome([&] { got = moe::route_sinkhorn<A>(l, k); });
    }
    std::ostringstream where;
    where << "policy " << which << " T=" << T << " E=" << E << ": ";
    if (e_ref != e_got) return where.str() + "errors differ: '" + e_ref + "' vs '" + e_got + "'";
    if (!same_bits(ref.indices, got.indices) || !same_bits(ref.weights, got.weights) || !same_bits(ref.scores, got.scores))
        return where.str() + first_difference("weights", ref.weights, got.weights);
    return "";
}

template <class A, class Fmt>
std::string check_format(bytes& b, moe::kernels::formats::format_params p, const char* name) {
    namespace fm = moe::kernels::formats;
    static constexpr std::size_t ks[] = {32, 64, 96, 128, 160, 256, 288, 512};
    const std::size_t H = ks[b.u8() % 8], F = ks[b.u8() % 8], E = 1 + b.u8() % 3;
    moe::splitmix64 r(b.u64());
    moe::kernels::quantized_experts<Fmt> q;
    std::string err = outcome([&] {
        for (std::size_t i = 0; i < 3 * E; ++i) {
            const bool down = i % 3 == 2;
            const std::size_t n = down ? H : F, k = down ? F : H;
            std::vector<float> w(n * k);
            for (auto& v : w) v = static_cast<float>(r.normal()) * 0.05f;
            auto m = Fmt::quantize(w.data(), n, k, p);
            (i % 3 == 0 ? q.w1 : i % 3 == 1 ? q.w3 : q.w2).push_back(std::move(m));
        }
    });
    if (!err.empty()) return "";  // a shape the format does not take
    const auto pw = moe::kernels::pack_quant_experts<Fmt>(q, H, F, moe::kernels::pack_options{false});
    const std::size_t T = 1 + b.u8() % 20;
    moe::matrix<float> x(T, H);
    for (auto& v : x.values) v = static_cast<float>(r.normal());
    moe::routing<float> rt(T, E, 1, false);
    for (std::size_t t = 0; t < T; ++t) {
        rt.indices[t] = static_cast<std::int32_t>(b.u8() % E);
        rt.weights[t] = 1.0f;
    }
    const auto plan = moe::make_plan(rt, 1 + b.u8() % 4);
    moe::matrix<float> y_ref(plan.num_rows(), H), y_got(plan.num_rows(), H);
    moe::kernels::ffn_workspace ws;
    ws.reserve(moe::kernels::workspace_size(plan, pw).total());
    moe::kernels::quant_expert_ffn<moe::scalar>(y_ref.view(), moe::matrix_view<const float>(x.view()), plan, pw, ws.data(), ws.size());
    moe::kernels::quant_expert_ffn<A>(y_got.view(), moe::matrix_view<const float>(x.view()), plan, pw, ws.data(), ws.size());
    if (!same_bits(y_ref.values, y_got.values)) {
        std::ostringstream s;
        s << "format " << name << " H=" << H << " F=" << F << " T=" << T << ": " << first_difference("outputs", y_ref.values, y_got.values);
        return s.str();
    }
    return "";
}

template <class A>
std::string check_formats(bytes& b) {
    namespace fm = moe::kernels::formats;
    switch (b.u8() % 17) {
        case 16: return check_format<A, fm::mxfp4_dot>(b, {}, "mxfp4:dot");
        case 15: return check_format<A, fm::q5_1>(b, {}, "q5_1");
        case 13: return check_format<A, fm::q2_k>(b, {}, "q2_k");
        case 14: return check_format<A, fm::q3_k>(b, {}, "q3_k");
        case 10: return check_format<A, fm::q5_k>(b, {}, "q5_k");
        case 11: return check_format<A, fm::iq4_nl>(b, {}, "iq4_nl");
        case 12: return check_format<A, fm::iq4_xs>(b, {}, "iq4_xs");
        case 8: return check_format<A, fm::q5_0>(b, {}, "q5_0");
        case 9: return check_format<A, fm::q4_1>(b, {}, "q4_1");
        case 0: return check_format<A, fm::q8_0>(b, {}, "q8_0");
        case 1: return check_format<A, fm::q4_0>(b, {}, "q4_0");
        case 2: return check_format<A, fm::q4_k>(b, {}, "q4_k");
        case 3: return check_format<A, fm::q6_k>(b, {}, "q6_k");
        case 4: return check_format<A, fm::int8>(b, {}, "int8");
        case 5: return check_format<A, fm::int4>(b, {std::size_t(32) << (b.u8() % 3), (b.u8() & 1) != 0}, "int4");
        case 6: return check_format<A, fm::fp8>(b, {}, "fp8");
        default: return check_format<A, fm::mxfp4>(b, {}, "mxfp4");
    }
}

/// One differential case from `data`: "" when scalar and `A` agree, else what differs.
template <class A>
std::string check_case(const std::uint8_t* data, std::size_t size) {
    bytes b{data, size};
    const int kind = b.u8() % 16;
    if (kind < 9) return check_router<A>(b);
    if (kind < 11) return check_gate<A>(b);
    if (kind < 13) return check_losses<A>(b);
    if (kind < 15) return check_policies<A>(b);
    return check_formats<A>(b);
}

}  // namespace moe_diff
