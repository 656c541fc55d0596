// moe-route's trace and placement mode: a multi-layer routing trace (or EPLB's [L, E] loads)
// in; replicated and affinity placements, local routing consistency (SRP, SCH) and an
// expert-offloading cache simulation out, as tables, .npy files and a figure.
//
//   moe-route --synthetic-trace 8,4096,64 --placement eplb:80,8,2,8 --placement affinity:8 --cache 8,16
//   moe-route --trace router_logits.npy --preset qwen3_moe --cache 8,16,32 --plot trace.png
//   moe-route --loads loads.npy --placement eplb:288,8,4,32 --out eplb/
#include "route_trace.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <moe/io/npy.hpp>
#include <moe/metrics.hpp>
#include <moe/analysis/offload.hpp>
#include <moe/analysis/stats.hpp>
#include <moe/placement.hpp>
#include <moe/presets.hpp>
#include <moe/analysis/trace.hpp>

#define MOE_CLI_TOOL "moe-route"
#include "cli_args.hpp"

void check_memory(const char* what, double bytes) {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
    const double have = pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
    if (have > 0 && bytes > have) {
        char msg[256];
        std::snprintf(msg, sizeof msg, "%s needs %.1f GB of memory; this machine has %.1f GB", what, bytes / 1e9, have / 1e9);
        fail("moe.cli.memory", msg);
    }
}

namespace {

struct placement_spec {
    std::string kind;  // eplb | contiguous | affinity
    std::size_t R = 0, G = 1, N = 1, D = 0;
    std::string name() const {
        return kind == "eplb" ? "eplb:" + std::to_string(R) + "," + std::to_string(G) + "," + std::to_string(N) + "," + std::to_string(D)
                              : kind + ":" + std::to_string(D);
    }
};

struct trace_options {
    std::string trace_path, loads_path, out_dir, plot, write_trace, json;
    bool stats = false;
    std::size_t capacity = 0;
    std::size_t syn_L = 0, syn_T = 0, syn_E = 0, experts = 0;
    double affinity = 4.0;
    std::string skew = "zipf:1.0";
    std::uint64_t seed = 0;
    moe::router_config cfg = moe::presets::mixtral();
    std::vector<placement_spec> placements;
    moe::replica_policy policy = moe::replica_policy::round_robin;
    std::vector<std::size_t> cache_sizes, segments{16};
    double expert_bytes = 3.0 * 4096 * 14336 * 2;
};

std::vector<std::size_t> size_list(const std::string& opt, const std::string& v) {
    std::vector<std::size_t> out;
    std::size_t start = 0;
    while (start <= v.size()) {
        const std::size_t comma = v.find(',', start);
        out.push_back(to_size(opt, v.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

template <class F>
auto parsed(F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const moe::error& e) {
        fail(e.id(), std::string(e.what()).substr(e.id().size() + 3));
    }
}

trace_options parse(int argc, char** argv) {
    trace_options o;
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == "--preset" && i + 1 < argc) o.cfg = parsed([&] { return moe::presets::by_name(argv[i + 1]); });
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) fail("moe.cli.value", a + " needs a value");
            return argv[++i];
        };
        if (a == "--trace") o.trace_path = value();
        else if (a == "--loads") o.loads_path = value();
        else if (a == "--synthetic-trace") {
            const auto v = size_list(a, value());
            if (v.size() != 3 || v[0] == 0 || v[1] == 0 || v[2] == 0) fail("moe.cli.value", "--synthetic-trace expects L,T,E (all positive)");
            o.syn_L = v[0];
            o.syn_T = v[1];
            o.syn_E = v[2];
        } else if (a == "--affinity") o.affinity = to_double(a, value());
        else if (a == "--skew") o.skew = value();
        else if (a == "--seed") o.seed = to_size(a, value());
        else if (a == "--preset") (void)value();
        else if (a == "--top-k") o.cfg.top_k = to_size(a, value());
        else if (a == "--experts") o.experts = to_size(a, value());
        else if (a == "--placement") {
            const std::string v = value();
            const auto colon = v.find(':');
            placement_spec p;
            p.kind = v.substr(0, colon);
            if (colon == std::string::npos || (p.kind != "eplb" && p.kind != "contiguous" && p.kind != "affinity"))
                fail("moe.cli.value", "--placement expects eplb:R,G,N,D, contiguous:D or affinity:D, got '" + v + "'");
            const auto n = size_list(a, v.substr(colon + 1));
            if (p.kind == "eplb") {
                if (n.size() != 4) fail("moe.cli.value", "--placement eplb expects R,G,N,D (replicas, groups, nodes, devices), got '" + v + "'");
                p.R = n[0];
                p.G = n[1];
                p.N = n[2];
                p.D = n[3];
            } else {
                if (n.size() != 1 || n[0] == 0) fail("moe.cli.value", "--placement " + p.kind + " expects one positive device count, got '" + v + "'");
                p.D = n[0];
            }
            o.placements.push_back(p);
        } else if (a == "--replica-policy") o.policy = parsed([&] { return moe::parse_replica_policy(value()); });
        else if (a == "--cache") o.cache_sizes = size_list(a, value());
        else if (a == "--segment") o.segments = size_list(a, value());
        else if (a == "--expert-bytes") o.expert_bytes = to_double(a, value());
        else if (a == "--out") o.out_dir = value();
        else if (a == "--plot") o.plot = value();
        else if (a == "--write-trace") o.write_trace = value();
        else if (a == "--stats") o.stats = true;
        else if (a == "--json") o.json = value();
        else if (a == "--capacity") o.capacity = to_size(a, value());
        else fail("moe.cli.option", "unknown option '" + a + "' in trace mode (see moe-route --help)");
    }
    const int inputs = !o.trace_path.empty() + !o.loads_path.empty() + (o.syn_L > 0);
    if (inputs != 1) fail("moe.cli.input", "give exactly one of --trace FILE.npy, --loads FILE.npy or --synthetic-trace L,T,E");
    for (std::size_t m : o.cache_sizes)
        if (m == 0) fail("moe.cli.value", "--cache sizes must be >= 1 expert");
    if (!o.loads_path.empty() && (!o.cache_sizes.empty() || !o.write_trace.empty() || o.stats))
        fail("moe.cli.option", "--loads gives loads, not a trace: --cache, --stats and --write-trace need --trace or --synthetic-trace");
    if ((!o.json.empty() || o.capacity) && !o.stats) fail("moe.cli.option", "--json and --capacity go with --stats");
    if (!o.loads_path.empty())
        for (const auto& p : o.placements)
            if (p.kind == "affinity") fail("moe.cli.option", "affinity placement needs a trace (--trace or --synthetic-trace), not --loads");
    return o;
}

double max_over_mean(const std::vector<double>& v) {
    double s = 0, m = 0;
    for (double x : v) {
        s += x;
        m = std::max(m, x);
    }
    return s > 0 ? m * static_cast<double>(v.size()) / s : 0.0;
}

/// The --stats table (docs/research.md states each column) and, with `json`, the same as JSON.
void print_stats(const moe::trace_statistics& s, const std::string& json) {
    std::printf("\nrouting statistics (loads: routed slots per expert%s)\n", s.total.capacity ? "; drop: under the capacity" : "");
    std::printf("%5s %8s %9s %7s %7s %9s %11s %13s %7s\n", "layer", "routed", "max/mean", "cv", "jain", "load ent", "adj overlap",
                "layer overlap", "drop");
    auto row = [](const char* name, const moe::routing_statistics& r, double layer_overlap) {
        std::printf("%5s %8zu %9.3f %7.3f %7.3f %9.3f %11.3f ", name, r.routed, r.max_over_mean, r.cv, r.jain, r.load_entropy,
                    r.adjacent_overlap);
        if (std::isnan(layer_overlap)) std::printf("%13s", "-");
        else std::printf("%13.3f", layer_overlap);
        std::printf(" %7.3f\n", r.drop_rate);
    };
    for (std::size_t l = 0; l < s.layers.size(); ++l)
        row(std::to_string(l).c_str(), s.layers[l], l ? s.layer_overlap[l - 1] : std::nan(""));
    double mean_overlap = 0;
    for (double v : s.layer_overlap) mean_overlap += v / static_cast<double>(s.layer_overlap.size());
    row("all", s.total, s.layer_overlap.empty() ? std::nan("") : mean_overlap);
    if (json.empty()) return;
    auto num = [](double v) {
        if (std::isnan(v)) return std::string("null");
        char b[32];
        std::snprintf(b, sizeof b, "%.17g", v);
        return std::string(b);
    };
    auto one = [&](const moe::routing_statistics& r) {
        std::string j = "{\"load\": [";
        for (std::size_t e = 0; e < r.load.size(); ++e) j += (e ? ", " : "") + std::to_string(r.load[e]);
        j += "], \"routed\": " + std::to_string(r.routed) + ", \"max_over_mean\": " + num(r.max_over_mean) + ", \"cv\": " + num(r.cv) +
             ", \"jain\": " + num(r.jain) + ", \"load_entropy\": " + num(r.load_entropy) + ", \"adjacent_overlap\": " +
             num(r.adjacent_overlap) + ", \"capacity\": " + std::to_string(r.capacity) + ", \"drop_rate\": " + num(r.drop_rate) + "}";
        return j;
    };
    std::ofstream f(json);
    f << "{\"layers\": [";
    for (std::size_t l = 0; l < s.layers.size(); ++l) f << (l ? ",\n  " : "\n  ") << one(s.layers[l]);
    f << "],\n \"layer_overlap\": [";
    for (std::size_t l = 0; l < s.layer_overlap.size(); ++l) f << (l ? ", " : "") << num(s.layer_overlap[l]);
    f << "],\n \"total\": " << one(s.total) << "}\n";
    f.close();
    if (!f) fail("moe.cli.output", "failed writing " + json);
    std::printf("wrote %s\n", json.c_str());
}

void ensure_dir(const std::string& d) {
    ::mkdir(d.c_str(), 0755);
    struct stat st {};
    if (::stat(d.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) fail("moe.cli.out", "cannot create directory '" + d + "'");
}

}  // namespace

int route_trace_main(int argc, char** argv) {
    const trace_options o = parse(argc, argv);
    try {
        moe::routing_trace tr;
        moe::matrix<float> loads;
        if (o.syn_L) {
            check_memory("--synthetic-trace", static_cast<double>(o.syn_L) * static_cast<double>(o.syn_T) *
                                                  (static_cast<double>(o.syn_E) * 8.0 + static_cast<double>(o.cfg.top_k) * 4.0));
            tr = moe::synthetic_trace(o.syn_L, o.syn_T, o.syn_E, o.cfg.top_k, o.affinity, moe::skew::parse(o.skew), o.seed);
        } else if (!o.trace_path.empty()) {
            tr = moe::read_trace(o.trace_path, o.cfg, o.experts);
        }
        const bool have_trace = tr.num_layers > 0;
        if (have_trace) {
            tr.validate();
            loads = moe::layer_loads(tr);
        } else {
            loads = moe::io::read_npy_matrix<float>(o.loads_path, true);
        }
        const std::size_t L = loads.rows, E = loads.cols;
        if (!o.write_trace.empty()) {
            std::vector<std::int32_t> idx = tr.indices;
            moe::io::write_npy(o.write_trace, idx.data(), {tr.num_layers, tr.num_tokens, tr.top_k});
            std::printf("wrote %s\n", o.write_trace.c_str());
        }
        if (have_trace) {
            std::printf("trace: %zu layers, %zu tokens, %zu experts, top-%zu\n\n", L, tr.num_tokens, E, tr.top_k);
            std::printf("%5s %14s", "layer", "max/mean load");
            for (std::size_t s : o.segments) std::printf("   SRP(%zu) thr  SCH(%zu,k) SCH(%zu,2k)", s, s, s);
            std::printf("\n");
            for (std::size_t l = 0; l < L; ++l) {
                std::vector<double> ld(loads.row(l), loads.row(l) + E);
                std::printf("%5zu %14.3f", l, max_over_mean(ld));
                for (std::size_t s : o.segments) {
                    const std::size_t seg = std::min(s, tr.num_tokens);
                    const auto srp = moe::segment_routing_performance(tr, l, seg);
                    std::printf("   %7.3f %3zu  %10.3f %11.3f", srp.srp, srp.threshold, moe::segment_cache_hit_rate(tr, l, seg, tr.top_k),
                                moe::segment_cache_hit_rate(tr, l, seg, 2 * tr.top_k));
                }
                std::printf("\n");
            }
        } else {
            std::printf("loads: %zu layers, %zu experts\n", L, E);
        }
        if (o.stats) print_stats(moe::routing_stats(tr, o.capacity), o.json);

        // Placements.
        std::vector<std::pair<std::string, std::vector<double>>> device_rows;  // name, mean device load per device (for the plot)
        if (!o.placements.empty()) {
            std::printf("\n%-22s %8s %22s %24s\n", "placement", "devices", "device max/mean (avg)", "layer-to-layer crossing");
            std::vector<moe::matrix<double>> counts;
            if (have_trace) counts = moe::transition_counts(tr);
            for (const auto& ps : o.placements) {
                std::vector<double> per_layer_ratio, dev_total(ps.D, 0.0);
                double crossing = -1;
                if (ps.kind == "eplb") {
                    const auto p = moe::rebalance_experts(loads.view(), ps.R, ps.G, ps.N, ps.D);
                    for (std::size_t l = 0; l < L; ++l) {
                        std::vector<double> dev(ps.D, 0.0);
                        if (have_trace) {
                            const auto ph = moe::to_physical(tr.layer(l), p, l, o.policy);
                            const auto dl = moe::device_loads(ph, p.physical_devices());
                            for (std::size_t d = 0; d < dl.size(); ++d) dev[d] = static_cast<double>(dl[d]);
                        } else {
                            for (std::size_t q = 0; q < p.num_physical; ++q) {
                                const auto e = static_cast<std::size_t>(p.phy2log[l * p.num_physical + q]);
                                dev[static_cast<std::size_t>(p.device_of(q))] += loads(l, e) / p.replicas(l, e);
                            }
                        }
                        per_layer_ratio.push_back(max_over_mean(dev));
                        for (std::size_t d = 0; d < ps.D; ++d) dev_total[d] += dev[d];
                    }
                    if (have_trace) crossing = moe::transition_traffic(tr, p, o.policy).crossing_fraction();
                    if (!o.out_dir.empty()) {
                        ensure_dir(o.out_dir);
                        moe::io::write_npy(o.out_dir + "/phy2log.npy", p.phy2log.data(), {L, p.num_physical});
                        moe::io::write_npy(o.out_dir + "/log2phy.npy", p.log2phy.data(), {L, E, p.max_replicas});
                        moe::io::write_npy(o.out_dir + "/logcnt.npy", p.logcnt.data(), {L, E});
                        std::printf("  wrote %s/{phy2log,log2phy,logcnt}.npy\n", o.out_dir.c_str());
                    }
                } else {
                    const moe::layered_placement p = ps.kind == "affinity" ? moe::affinity_placement(counts, L, E, ps.D)
                                                                             : moe::contiguous_layers(L, E, ps.D);
                    for (std::size_t l = 0; l < L; ++l) {
                        std::vector<double> dev(ps.D, 0.0);
                        for (std::size_t e = 0; e < E; ++e) dev[static_cast<std::size_t>(p.at(l, e))] += loads(l, e);
                        per_layer_ratio.push_back(max_over_mean(dev));
                        for (std::size_t d = 0; d < ps.D; ++d) dev_total[d] += dev[d];
                    }
                    if (have_trace) crossing = moe::transition_traffic(tr, p).crossing_fraction();
                    if (!o.out_dir.empty()) {
                        ensure_dir(o.out_dir);
                        moe::io::write_npy(o.out_dir + "/" + ps.kind + "_devices.npy", p.device.data(), {L, E});
                        std::printf("  wrote %s/%s_devices.npy\n", o.out_dir.c_str(), ps.kind.c_str());
                    }
                }
                double avg = 0;
                for (double r : per_layer_ratio) avg += r / static_cast<double>(per_layer_ratio.size());
                if (crossing >= 0) std::printf("%-22s %8zu %22.3f %24.3f\n", ps.name().c_str(), ps.D, avg, crossing);
                else std::printf("%-22s %8zu %22.3f %24s\n", ps.name().c_str(), ps.D, avg, "-");
                device_rows.emplace_back(ps.name(), dev_total);
            }
        }

        // Offloading caches.
        std::vector<std::vector<double>> hit(4);
        const moe::cache_policy policies[] = {moe::cache_policy::lru, moe::cache_policy::lfu, moe::cache_policy::belady,
                                              moe::cache_policy::prefetch};
        if (!o.cache_sizes.empty()) {
            std::printf("\ncache of m experts per layer (expert %.1f MB); tokens in order, layers in order\n", o.expert_bytes / 1e6);
            std::printf("%-9s %6s %9s %12s %16s\n", "policy", "m", "hit rate", "prefetches", "MB moved/token");
            for (std::size_t pi = 0; pi < 4; ++pi)
                for (std::size_t m : o.cache_sizes) {
                    const auto r = moe::simulate_cache(tr, std::min(m, E), policies[pi]);
                    hit[pi].push_back(r.hit_rate());
                    std::printf("%-9s %6zu %9.3f %12zu %16.2f\n", moe::to_string(policies[pi]), m, r.hit_rate(), r.prefetches,
                                r.bytes_per_token(o.expert_bytes) / 1e6);
                }
        }

        if (!o.plot.empty()) {
            const std::string cache_csv = o.plot + ".cache.csv", dev_csv = o.plot + ".devices.csv", loads_csv = o.plot + ".loads.csv";
            std::ofstream c(cache_csv), d(dev_csv), lc(loads_csv);
            lc << "layer,expert,load\n";  // the per-layer load heat map
            for (std::size_t l = 0; l < loads.rows; ++l)
                for (std::size_t e = 0; e < loads.cols; ++e) lc << l << "," << e << "," << loads(l, e) << "\n";
            lc.close();
            c << "policy,m,hit_rate\n";
            for (std::size_t pi = 0; pi < 4 && !o.cache_sizes.empty(); ++pi)
                for (std::size_t j = 0; j < o.cache_sizes.size(); ++j)
                    c << moe::to_string(policies[pi]) << "," << o.cache_sizes[j] << "," << hit[pi][j] << "\n";
            d << "placement,device,load\n";
            for (const auto& [name, dev] : device_rows)
                for (std::size_t i = 0; i < dev.size(); ++i) d << '"' << name << "\"," << i << "," << dev[i] / static_cast<double>(L) << "\n";
            c.close();
            d.close();
            const std::string python = ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
            const std::string cmd = python + " '" + std::string(MOE_EXAMPLES_DIR) + "/plot_trace.py' '" + cache_csv + "' '" + dev_csv + "' '" +
                                    o.plot + "' '" + loads_csv + "'";
            if (std::system(cmd.c_str()) != 0) fail("moe.cli.plot", "plotting failed (needs python3-matplotlib): " + cmd);
            std::printf("wrote %s\n", o.plot.c_str());
        }
        return 0;
    } catch (const moe::error& e) {
        std::fprintf(stderr, "moe-route: %s\n", e.what());
        return 2;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "moe-route: [moe.cli.memory] out of memory\n");
        return 2;
    }
}
