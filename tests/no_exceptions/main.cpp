// Built with -fno-exceptions: moe must compile, work, and on bad input print "[id] message"
// to stderr and abort (MOE_THROW), rather than fail to build or misbehave.
#include <cstdio>
#include <cstring>
#include <vector>

#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>

int main(int argc, char** argv) {
    auto logits = moe::synthetic_logits(64, 8, moe::skew::parse("zipf:1"), 1);
    auto cfg = moe::presets::mixtral();
    if (argc > 1 && std::strcmp(argv[1], "bad") == 0) cfg.top_k = 9;  // k > E: [moe.router.top_k]
    cfg.keep_scores = true;
    auto r = moe::route(logits, cfg);
    moe::drop_config d;
    d.reroute = true;
    const auto rep = moe::apply_capacity(r, d);
    const auto plan = moe::make_plan(r, 16);
    moe::matrix<float> rows(plan.num_rows(), 8), y(64, 8);
    moe::gather(rows.view(), logits.view(), plan);
    moe::combine(y.view(), rows.view(), plan, r);
    const auto m = moe::measure(r, &rep, &plan);
    std::printf("no-exceptions build routed %zu slots, dropped %zu\n", m.routed, m.dropped);
    return 0;
}
