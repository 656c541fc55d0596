// Grouped SwiGLU expert kernels against an Eigen reference (double), for every arch this
// translation unit is built for, every weight type, and shapes whose H and F are not multiples
// of the SIMD width, with experts that get no row, one row and every row. Also: SIMD results
// bit-identical to moe::scalar, and to themselves for any executor and tiling.
//
// Tolerances (relative to max |y| of the reference, which uses the weights as stored):
//  - f32 / f16 / bf16 weights: 1e-4. The kernel sums K <= 200 float products per output (16-bit
//    weights widen to float exactly); float rounding contributes ~K * 2^-24 of the largest
//    partial sum, far below 1e-4, while any wrong element, row or expert is O(1).
//  - f64: 1e-12.
#include <tuple>

#include <Eigen/Dense>

#include <moe/kernels/expert_ffn.hpp>

#include "test_support.hpp"

namespace {

struct layer {
    std::size_t E, H, F;
    std::vector<double> w1, w3, w2;  // E x F x H, E x F x H, E x H x F
};

layer make_layer(std::size_t E, std::size_t H, std::size_t F, std::uint64_t seed) {
    moe::splitmix64 rng(seed);
    layer l{E, H, F, {}, {}, {}};
    for (auto* v : {&l.w1, &l.w3}) {
        v->resize(E * F * H);
        for (auto& x : *v) x = rng.normal() / std::sqrt(static_cast<double>(H));
    }
    l.w2.resize(E * H * F);
    for (auto& x : l.w2) x = rng.normal() / std::sqrt(static_cast<double>(F));
    return l;
}

template <class W>
std::vector<W> as(const std::vector<double>& v) {
    std::vector<W> out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<W>(v[i]);
    return out;
}

/// Eigen reference of every plan row, in double, from the weights as stored in W.
template <class W>
Eigen::MatrixXd reference(const layer& l, const moe::matrix<double>& x, const moe::dispatch_plan& plan) {
    const auto stored = [](const std::vector<double>& v) {
        std::vector<double> out(v.size());
        for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(static_cast<W>(v[i]));
        return out;
    };
    const std::vector<double> w1 = stored(l.w1), w3 = stored(l.w3), w2 = stored(l.w2);
    const std::size_t H = l.H, F = l.F;
    Eigen::MatrixXd y = Eigen::MatrixXd::Zero(static_cast<Eigen::Index>(plan.num_rows()), static_cast<Eigen::Index>(H));
    for (std::size_t e = 0; e < l.E; ++e) {
        using M = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        const Eigen::Map<const M> W1(w1.data() + e * F * H, F, H), W3(w3.data() + e * F * H, F, H), W2(w2.data() + e * H * F, H, F);
        for (auto r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
            Eigen::RowVectorXd xr = Eigen::RowVectorXd::Zero(static_cast<Eigen::Index>(H));
            const auto tok = plan.row_token[static_cast<std::size_t>(r)];
            if (tok >= 0)
                for (std::size_t h = 0; h < H; ++h) {
                    const double v = x(static_cast<std::size_t>(tok), h);
                    xr(static_cast<Eigen::Index>(h)) = v;
                }
            const Eigen::RowVectorXd h1 = xr * W1.transpose(), h3 = xr * W3.transpose();
            Eigen::RowVectorXd a(static_cast<Eigen::Index>(F));
            for (Eigen::Index f = 0; f < a.size(); ++f) a(f) = h1(f) / (1.0 + std::exp(-h1(f))) * h3(f);
            y.row(r) = a * W2.transpose();
        }
    }
    return y;
}

/// A routing over E = 5 experts: expert 0 gets every token, expert 1 one token, expert 2 none,
/// experts 3 and 4 share the second slots.
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

template <class Arch, class W, class Executor = moe::serial_executor>
moe::matrix<moe::kernels::detail::compute_t<W>> run_ffn(const layer& l, const moe::matrix<double>& x,
                                                        const moe::dispatch_plan& plan, Executor ex = {},
                                                        moe::kernels::ffn_tiling tiling = {}) {
    using C = moe::kernels::detail::compute_t<W>;
    const auto w1 = as<W>(l.w1), w3 = as<W>(l.w3), w2 = as<W>(l.w2);
    const auto packed = moe::kernels::pack_experts<Arch>(w1.data(), w3.data(), w2.data(), l.E, l.H, l.F);
    moe::matrix<C> xc(x.rows, x.cols);
    for (std::size_t i = 0; i < x.values.size(); ++i) xc.values[i] = static_cast<C>(x.values[i]);
    moe::matrix<C> y(plan.num_rows(), l.H, C(-7));
    moe::kernels::ffn_workspace ws;
    ws.reserve(moe::kernels::workspace_size(plan, packed).total());
    moe::kernels::expert_ffn(y.view(), moe::matrix_view<const C>(xc.view()), plan, packed, ws.data(), ws.size(), ex, tiling);
    return y;
}

template <class Arch, class W>
void check_against_eigen(std::size_t T, std::size_t H, std::size_t F, std::size_t block, double tol) {
    CAPTURE(T, H, F, block);
    const layer l = make_layer(5, H, F, 11 + H * 7 + F);
    moe::matrix<double> x(T, H);
    moe::splitmix64 rng(T + H);
    for (auto& v : x.values) v = rng.normal();
    const auto plan = moe::make_plan(shaped_routing(T), block);
    const auto y = run_ffn<Arch, W>(l, x, plan);
    const Eigen::MatrixXd ref = reference<W>(l, x, plan);
    const double scale = ref.cwiseAbs().maxCoeff();
    REQUIRE(scale > 0.0);
    for (std::size_t r = 0; r < plan.num_rows(); ++r)
        for (std::size_t h = 0; h < H; ++h) {
            CAPTURE(r, h);
            REQUIRE(std::fabs(static_cast<double>(y(r, h)) - ref(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(h))) <=
                    tol * scale);
        }
}

template <class T>
std::vector<std::uint32_t> bits_of(const moe::matrix<T>& m) {
    std::vector<std::uint32_t> b(m.values.size() * sizeof(T) / 4);
    std::memcpy(b.data(), m.values.data(), b.size() * 4);
    return b;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("kernels: grouped SwiGLU experts match Eigen for every weight type", "[kernels]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    INFO("arch " << TestType::name());
    const std::size_t shapes[][3] = {{20, 37, 53}, {13, 64, 48}, {9, 33, 17}, {1, 16, 200}, {40, 130, 70}};
    for (const auto& s : shapes) {
        for (std::size_t block : {1u, 4u}) {
            check_against_eigen<TestType, float>(s[0], s[1], s[2], block, 1e-4);
            check_against_eigen<TestType, Eigen::half>(s[0], s[1], s[2], block, 1e-4);
            check_against_eigen<TestType, Eigen::bfloat16>(s[0], s[1], s[2], block, 1e-4);
        }
        check_against_eigen<moe::scalar, double>(s[0], s[1], s[2], 1, 1e-12);
    }
}

TEMPLATE_LIST_TEST_CASE("kernels: bit-identical to moe::scalar, for any executor and tiling", "[kernels][determinism]", moe_test::archs) {
    if (!moe_test::arch_runs_here<TestType>()) return;
    INFO("arch " << TestType::name());
    const layer l = make_layer(5, 45, 77, 5);
    moe::matrix<double> x(30, 45);
    moe::splitmix64 rng(9);
    for (auto& v : x.values) v = rng.normal();
    const auto plan = moe::make_plan(shaped_routing(30), 2);
    moe::kernels::ffn_tiling small;
    small.rows_per_tile = 8;
    small.panel_bytes_per_tile = 1;
    small.down_panels_per_tile = 3;
    small.l1_panel_bytes = 1000;
    CHECK(bits_of(run_ffn<TestType, float>(l, x, plan)) == bits_of(run_ffn<moe::scalar, float>(l, x, plan)));
    CHECK(bits_of(run_ffn<TestType, Eigen::half>(l, x, plan)) == bits_of(run_ffn<moe::scalar, Eigen::half>(l, x, plan)));
    CHECK(bits_of(run_ffn<TestType, Eigen::bfloat16>(l, x, plan)) ==
          bits_of(run_ffn<moe::scalar, Eigen::bfloat16>(l, x, plan)));
    CHECK(bits_of(run_ffn<TestType, float>(l, x, plan, moe_test::reversed_threads_executor{3}, small)) ==
          bits_of(run_ffn<TestType, float>(l, x, plan)));
    CHECK(bits_of(run_ffn<TestType, Eigen::bfloat16>(l, x, plan, moe_test::reversed_threads_executor{2}, small)) ==
          bits_of(run_ffn<TestType, Eigen::bfloat16>(l, x, plan)));
}

TEST_CASE("kernels: bad shapes and short workspaces get stable errors", "[kernels]") {
    const layer l = make_layer(5, 8, 8, 1);
    const auto w1 = as<float>(l.w1), w3 = as<float>(l.w3), w2 = as<float>(l.w2);
    const auto packed = moe::kernels::pack_experts<moe::scalar>(w1.data(), w3.data(), w2.data(), 5, 8, 8);
    const auto plan = moe::make_plan(shaped_routing(6));
    moe::matrix<float> x(6, 8, 1.0f), y(plan.num_rows(), 8), x_wide(6, 9);
    moe::kernels::ffn_workspace ws;
    const std::size_t need = moe::kernels::workspace_size(plan, packed).total();
    ws.reserve(need);
    using moe_test::error_of;
    CHECK(error_of([&] {
              moe::kernels::expert_ffn(y.view(), moe::matrix_view<const float>(x.view()), plan, packed, ws.data(), need - 1);
          }) == "[moe.kernels.workspace] workspace of " + std::to_string(need - 1) + " bytes (needs " +
                    std::to_string(need) + ", 64-byte aligned)");
    CHECK(error_of([&] {
              moe::kernels::expert_ffn(y.view(), moe::matrix_view<const float>(x_wide.view()), plan, packed, ws.data(),
                                       ws.size());
          }) == "[moe.kernels.shape] x has 9 columns, hidden=8");
    const auto plan4 = moe::make_plan(moe::route(moe_test::random_logits(6, 4, 1), moe::presets::mixtral()));
    CHECK(error_of([&] {
              moe::kernels::expert_ffn(y.view(), moe::matrix_view<const float>(x.view()), plan4, packed, ws.data(), ws.size());
          }) == "[moe.kernels.shape] plan has 4 experts, packed weights 5");
    CHECK(error_of([&] { (void)moe::kernels::pack_experts<moe::scalar>(w1.data(), w3.data(), w2.data(), 5, 0, 8); }) ==
          "[moe.kernels.shape] experts=5, hidden=0, ffn=8: every dimension must be >= 1");
}
