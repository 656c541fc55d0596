// The README's usage example (its lines, with the inputs it assumes made up here), so that the
// README keeps compiling.
#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>
#include <cstdio>
// The README's example, made compilable: run_experts is an identity "expert".
static void run_experts(const moe::matrix<float>& rows, const std::vector<std::int32_t>&, moe::matrix<float>& out) { out = rows; }
struct pool_t { template <class F> void parallel_for(std::size_t n, F&& f) { for (std::size_t i = 0; i < n; ++i) f(i); } } pool;
int main() {
    const std::size_t T = 300, E = 256, H = 32;
    const auto x = moe::synthetic_logits(T, H, moe::skew::parse("uniform"), 1);
    auto w_gate = moe::synthetic_logits(E, H, moe::skew::parse("uniform"), 2);
    const std::vector<float> bias(E, 0.0f);
    moe::matrix<float> logits = moe::gate(x, w_gate);            // T x E = x (T x H) * W^T (E x H)
    moe::router_config cfg = moe::presets::deepseek_v3();        // sigmoid, 8 groups / top-4, top-8, x2.5
    cfg.keep_scores = true;                                      // reroute ranks experts by full score
    moe::routing<float> r = moe::route(logits, cfg, bias);       // bias: selection only (E values)
    moe::drop_config cap;                                        // Megatron capacity, factor 1.25,
    cap.capacity.factor = 1.25;                                  // overflow rerouted to next-best experts
    cap.reroute = true;
    moe::capacity_report rep = moe::apply_capacity(r, cap);      // what still drops: index -1, reported
    moe::dispatch_plan plan = moe::make_plan(r, /*block=*/128);  // expert-major rows, padded to blocks
    moe::matrix<float> rows(plan.num_rows(), H), out(plan.num_rows(), H), y(T, H);
    moe::gather(rows.view(), x.view(), plan);                    // token rows, expert by expert
    run_experts(rows, plan.offsets, out);                        // your FFN on each expert's row range
    moe::combine(y.view(), out.view(), plan, r);                 // y = sum over slots of weight * output
    const moe::packed_gate wg = moe::pack_gate(w_gate.view());   // once
    moe::routing<float> routed(T, E, cfg.top_k, /*keep_scores=*/true);
    moe::router_workspace<float> ws;                             // grows once, then reused
    auto pool_exec = [&](std::size_t n, auto&& f) { pool.parallel_for(n, f); };
    moe::gate_into(logits.view(), x.view(), wg, {}, pool_exec);
    moe::route_into(routed, logits.view(), cfg, bias, ws, pool_exec);
    std::printf("dropped %zu, rerouted %zu, rows %zu\n", rep.dropped.size(), rep.rerouted.size(), plan.num_rows());
}
