// Golden cases for the losses and the selection policies, from the torch statements in
// tests/gen_losses_golden.py (values and torch.autograd gradients in float64).
//
// Tolerances: our float32 path computes each P(t, e) with a relative error of a few ulps and
// sums in double, so values agree to ~1e-6 relative; gradients are compared against the
// largest entry (|g - want| <= 1e-5 * max|want|), since tiny entries are differences of
// float32 products. Indices of selections must match exactly.
#include <fstream>
#include <map>
#include <sstream>

#include <moe/losses.hpp>
#include <moe/route_policies.hpp>

#include "test_support.hpp"

namespace {

const std::string dir = std::string(MOE_TEST_DATA_DIR) + "/losses/";

struct golden_case {
    std::string name, kind;
    std::map<std::string, std::string> kv;
    double num(const std::string& k) const { return std::stod(kv.at(k)); }
    std::size_t size(const std::string& k) const { return std::stoul(kv.at(k)); }
};

std::vector<golden_case> read_cases() {
    std::ifstream f(dir + "cases.txt");
    REQUIRE(f.good());
    std::vector<golden_case> out;
    std::string line, word;
    while (std::getline(f, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream words(line);
        golden_case c;
        words >> c.name >> c.kind;
        while (words >> word) c.kv[word.substr(0, word.find('='))] = word.substr(word.find('=') + 1);
        out.push_back(c);
    }
    return out;
}

moe::matrix<float> logits_of(const std::string& name) { return moe::io::read_npy_matrix<float>(dir + name + ".logits.npy"); }

/// A routing holding the golden top-k indices (weights unused by the losses).
moe::routing<float> routing_of(const std::string& name, std::size_t E) {
    const auto idx = moe::io::read_npy_matrix<std::int32_t>(dir + name + ".indices.npy");
    moe::routing<float> r(idx.rows, E, idx.cols, false);
    r.indices = idx.values;
    return r;
}

std::vector<std::uint8_t> mask_of(const std::string& name) {
    std::ifstream probe(dir + name + ".mask.npy");
    if (!probe) return {};
    const auto m = moe::io::read_npy_matrix<std::int32_t>(dir + name + ".mask.npy", true);
    return std::vector<std::uint8_t>(m.values.begin(), m.values.end());
}

void check_grad(const moe::matrix<float>& got, const std::string& name) {
    const auto want = moe::io::read_npy_matrix<double>(dir + name + ".grad.npy");
    REQUIRE(got.rows == want.rows);
    REQUIRE(got.cols == want.cols);
    double scale = 0.0;
    for (double v : want.values) scale = std::max(scale, std::fabs(v));
    for (std::size_t i = 0; i < want.values.size(); ++i) {
        CAPTURE(i, got.values[i], want.values[i]);
        REQUIRE(std::fabs(static_cast<double>(got.values[i]) - want.values[i]) <= 1e-5 * scale);
    }
}

void check_value(double got, const golden_case& c) {
    CAPTURE(got, c.kv.at("value"));
    REQUIRE(std::fabs(got - c.num("value")) <= 2e-6 * std::fabs(c.num("value")));
}

void check_selection(const moe::routing<float>& r, const std::string& name) {
    const auto idx = moe::io::read_npy_matrix<std::int32_t>(dir + name + ".indices.npy");
    const auto w = moe::io::read_npy_matrix<float>(dir + name + ".weights.npy");
    REQUIRE(r.top_k == idx.cols);
    for (std::size_t t = 0; t < idx.rows; ++t)
        for (std::size_t s = 0; s < idx.cols; ++s) {
            CAPTURE(t, s);
            REQUIRE(r.index(t, s) == idx(t, s));
            REQUIRE(std::fabs(r.weight(t, s) - w(t, s)) <= 4 * 1.1920929e-7f * std::fabs(w(t, s)) + 1e-30f);
        }
}

}  // namespace

TEST_CASE("golden: losses and gradients as Megatron, HF, DeepSpeed and Tutel define them", "[losses][golden]") {
    std::size_t checked = 0;
    for (const golden_case& c : read_cases()) {
        CAPTURE(c.name);
        if (c.kind == "lbl") {
            const auto logits = logits_of(c.name);
            const auto r = routing_of(c.name, logits.cols);
            const auto mask = mask_of(c.name);
            moe::aux_loss_config cfg;
            cfg.variant = c.kv.at("variant") == "megatron"     ? moe::aux_loss_variant::megatron
                          : c.kv.at("variant") == "hf_mixtral" ? moe::aux_loss_variant::hf_mixtral
                                                               : moe::aux_loss_variant::deepspeed;
            cfg.score = moe::parse_score_function(c.kv.at("score"));
            cfg.num_null_experts = c.size("null");
            moe::matrix<float> grad(logits.rows, logits.cols);
            check_value(moe::load_balancing_loss(logits.view(), r, cfg, mask, grad.view()), c);
            check_grad(grad, c.name);
            if (cfg.variant == moe::aux_loss_variant::megatron && cfg.num_null_experts == 0) {
                // The golden counts are Megatron's: the plain top-k of the loss scores.
                const auto mr = moe::aux_loss_routing(logits.view(), r.top_k, cfg.score);
                CHECK(mr.indices == r.indices);
            }
        } else if (c.kind == "seq") {
            const auto logits = logits_of(c.name);
            moe::matrix<float> grad(logits.rows, logits.cols);
            check_value(moe::sequence_load_balancing_loss(logits.view(), routing_of(c.name, logits.cols), c.size("seq_len"),
                                                          {}, {}, grad.view()),
                        c);
            check_grad(grad, c.name);
        } else if (c.kind == "global") {
            moe::global_load_balancer acc;
            const std::size_t n = c.size("micro");
            for (std::size_t i = 0; i < n; ++i) {
                const std::string part = c.name + "_" + std::to_string(i);
                const auto logits = logits_of(part);
                acc.add(logits.view(), routing_of(part, logits.cols));
            }
            check_value(acc.loss(), c);
            for (std::size_t i = 0; i < n; ++i) {
                const std::string part = c.name + "_" + std::to_string(i);
                const auto logits = logits_of(part);
                moe::matrix<float> grad(logits.rows, logits.cols);
                acc.gradient(logits.view(), grad.view());
                check_grad(grad, part);
            }
        } else if (c.kind == "z") {
            const auto logits = logits_of(c.name);
            moe::matrix<float> grad(logits.rows, logits.cols);
            check_value(moe::z_loss(logits.view(), 1.0, mask_of(c.name), grad.view()), c);
            check_grad(grad, c.name);
        } else if (c.kind == "importance") {
            const auto logits = logits_of(c.name);
            const auto noisy = moe::io::read_npy_matrix<float>(dir + c.name + ".noisy.npy");
            moe::matrix<float> grad(logits.rows, logits.cols);
            check_value(moe::importance_load_loss(logits.view(), noisy.view(), routing_of(c.name, logits.cols),
                                                  c.num("gate_noise"), grad.view()),
                        c);
            check_grad(grad, c.name);
        } else if (c.kind == "sinkhorn") {
            const auto logits = logits_of(c.name);
            const auto norm = moe::io::read_npy_matrix<double>(dir + c.name + ".norm.npy");
            moe::matrix<double> got(logits.rows, logits.cols);
            const auto info = moe::sinkhorn(logits.view(), got.view());
            CHECK(info.converged);
            CHECK(info.iterations == c.size("iterations"));
            for (std::size_t i = 0; i < norm.values.size(); ++i)
                REQUIRE(std::fabs(got.values[i] - norm.values[i]) <= 1e-12 * std::fabs(norm.values[i]) + 1e-300);
            check_selection(moe::route_sinkhorn(logits.view(), c.size("k")), c.name);
        } else if (c.kind == "top_p") {
            moe::top_p_config cfg;
            cfg.p = c.num("p");
            cfg.min_k = c.size("min_k");
            cfg.max_k = c.size("max_k");
            check_selection(moe::route_top_p(logits_of(c.name).view(), cfg), c.name);
        } else if (c.kind == "expert_choice") {
            moe::expert_choice_config cfg;
            cfg.capacity_factor = c.num("capacity_factor");
            check_selection(moe::route_expert_choice(logits_of(c.name).view(), cfg), c.name);
        } else {
            FAIL("unknown golden kind " << c.kind);
        }
        ++checked;
    }
    CHECK(checked == 21);
}
