// expert-parallel: the sparse MoE layer with its experts spread over MPI ranks.
//
//   mpirun -np 4 expert-parallel                      # 256 tokens per rank, H 1024, F 1024, 8 experts
//   mpirun -np 4 expert-parallel --tokens 1024 --skew zipf:1.0
//   mpirun -np 4 expert-parallel --ranks-per-node 2   # fake nodes of 2 ranks: flat vs two-level exchange
//   mpirun -np 2 expert-parallel --model-cost         # the exchange's cost model, checked and extrapolated
//   mpirun -np 2 expert-parallel --model-cost --latency-us 3 --bandwidth-gbs 40   # a network's figures
//
// For each policy (dropless, capacity drop, reroute, placement-aware reroute) it prints, per
// rank, the tokens it holds, the expert rows it computes, the rows it sends and receives and the
// bytes it puts on the wire, then the straggler across ranks and the forward time.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <moe/moe.hpp>
#include <moe/mpi/cost_model.hpp>
#include <moe/mpi/expert_parallel.hpp>
#include <moe/analysis/synthetic.hpp>

namespace {

/// One warm-up forward, then one timed: the slowest rank's seconds.
double timed_forward(moe::mpi::expert_parallel_block<moe::default_arch, float>& ep, moe::matrix<float>& y, const moe::matrix<float>& x) {
    ep.forward(y.view(), x);  // warm-up
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    ep.forward(y.view(), x);
    double dt = MPI_Wtime() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return dt;
}

/// --model-cost: measures alpha and beta here, checks the model against forwards on this
/// communicator, then predicts dispatch + combine for DeepSeek-V3 and Mixtral at 8..1024 ranks.
void model_cost(int rank, int size, std::size_t H, std::size_t F, std::size_t E, std::size_t k, double latency_us, double bandwidth_gbs) {
    const auto measured = moe::mpi::exchange_cost_model::measure(MPI_COMM_WORLD);
    if (rank == 0)
        std::printf("exchange cost model on %d ranks: alpha %.2f us per peer, beta %.2f GB/s per rank (measured)\n", size,
                    measured.alpha * 1e6, measured.beta / 1e9);
    // Check: the exposed exchange of real forwards (forward minus the largest route + experts +
    // combine of any rank) against the model's prediction from the forward's own row counts.
    moe::splitmix64 rng(7);
    std::vector<float> router(E * H), w1(E * F * H), w3(E * F * H), w2(E * H * F);
    for (auto& v : router) v = static_cast<float>(rng.normal() / std::sqrt(static_cast<double>(H)));
    for (auto* v : {&w1, &w3, &w2})
        for (auto& x : *v) x = static_cast<float>(rng.uniform() - 0.5) * 0.05f;
    moe::layer_options o;
    o.router = moe::presets::mixtral(k);
    moe::mpi::expert_parallel_block<moe::default_arch, float> ep(MPI_COMM_WORLD, moe::view(router.data(), E, H), w1.data(), w3.data(),
                                                                 w2.data(), F, moe::mpi::placement::contiguous(E, size), o);
    if (rank == 0)
        std::printf("\ncheck against this machine (H %zu, F %zu, %zu experts, top-%zu):\n  tokens/rank  remote rows (max)  measured ms  predicted ms  error\n",
                    H, F, E, k);
    for (std::size_t T : {64, 256, 1024}) {
        const moe::matrix<float> x = moe::synthetic_logits(T, H, moe::skew{}, 300 + static_cast<std::uint64_t>(rank));
        moe::matrix<float> y(T, H);
        ep.forward(y.view(), x);  // warm-up
        double total = 0, compute = 0;
        const int reps = 10;
        unsigned long long remote = 0;
        for (int i = 0; i < reps; ++i) {
            MPI_Barrier(MPI_COMM_WORLD);
            const double t0 = MPI_Wtime();
            ep.forward(y.view(), x);
            const auto& st = ep.last_stats();
            double v[2] = {MPI_Wtime() - t0, st.route_s + st.experts_s + st.combine_s};
            MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            total += v[0];
            compute += v[1];
            remote = std::max<unsigned long long>(st.rows_sent, st.rows_received);
        }
        MPI_Allreduce(MPI_IN_PLACE, &remote, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
        const double meas = (total - compute) / reps, pred = measured.predict_exchange(static_cast<std::size_t>(size), remote, H);
        if (rank == 0)
            std::printf("  %11zu  %17llu  %11.3f  %12.3f  %+5.0f%%\n", T, remote, meas * 1e3, pred * 1e3, (pred - meas) / meas * 100.0);
    }
    moe::mpi::exchange_cost_model m = measured;
    if (latency_us > 0) m.alpha = latency_us * 1e-6;
    if (bandwidth_gbs > 0) m.beta = bandwidth_gbs * 1e9;
    if (rank != 0) return;
    std::printf("\npredicted dispatch + combine per forward (alpha %.2f us, beta %.2f GB/s%s), uniform routing; metadata bytes per rank:\n",
                m.alpha * 1e6, m.beta / 1e9, latency_us > 0 || bandwidth_gbs > 0 ? ", given" : ", measured here");
    std::printf("  model        ranks  tokens/rank  H     k  f32 rows ms  bf16 rows ms  counts metadata  allgather metadata\n");
    struct shape {
        const char* name;
        std::size_t H, k, E, T;
    };
    const shape shapes[] = {{"DeepSeek-V3", 7168, 8, 256, 4096}, {"DeepSeek-V3", 7168, 8, 256, 128}, {"Mixtral", 4096, 2, 8, 4096}};
    for (const shape& sh : shapes)
        for (std::size_t R = 8; R <= 1024; R *= 2) {
            if (R > sh.E) break;  // expert parallelism puts at least one expert on each rank
            std::printf("  %-11s  %5zu  %11zu  %4zu  %zu  %11.3f  %12.3f  %15.0f  %18.0f\n", sh.name, R, sh.T, sh.H, sh.k,
                        m.dispatch_combine_seconds(R, sh.T, sh.k, sh.H, 4) * 1e3, m.dispatch_combine_seconds(R, sh.T, sh.k, sh.H, 2) * 1e3,
                        moe::mpi::exchange_cost_model::counts_metadata_bytes(sh.E),
                        moe::mpi::exchange_cost_model::allgather_metadata_bytes(R, sh.T, sh.k));
        }
}

}  // namespace

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    std::size_t T = 256, H = 1024, F = 1024, E = 8, k = 2;
    std::string skew = "zipf:0.8";
    bool cost = false;
    double latency_us = 0, bandwidth_gbs = 0;
    int ranks_per_node = -1;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--model-cost") {
            cost = true;
            continue;
        }
        const std::string v = i + 1 < argc ? argv[++i] : "";
        const std::size_t n = std::strtoull(v.c_str(), nullptr, 10);
        if (a == "--tokens") T = n;
        else if (a == "--hidden") H = n;
        else if (a == "--ffn") F = n;
        else if (a == "--experts") E = n;
        else if (a == "--top-k") k = n;
        else if (a == "--skew") skew = v;
        else if (a == "--ranks-per-node") ranks_per_node = static_cast<int>(n);
        else if (a == "--latency-us") latency_us = std::strtod(v.c_str(), nullptr);
        else if (a == "--bandwidth-gbs") bandwidth_gbs = std::strtod(v.c_str(), nullptr);
        else {
            if (rank == 0) std::fprintf(stderr, "expert-parallel: [moe.cli.arg] unknown option '%s'\n", a.c_str());
            MPI_Finalize();
            return 2;
        }
    }
    if (cost) {
        try {
            model_cost(rank, size, H, F, E, k, latency_us, bandwidth_gbs);
        } catch (const moe::error& e) {
            std::fprintf(stderr, "expert-parallel (rank %d): %s\n", rank, e.what());
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        MPI_Finalize();
        return 0;
    }
    try {
        // Same weights on every rank (seeded); each rank packs only its experts.
        moe::splitmix64 rng(1);
        std::vector<float> router(E * H), w1(E * F * H), w3(E * F * H), w2(E * H * F);
        // The router leans towards low-numbered experts (zipf-like popularity) so that policies differ.
        const moe::skew sk = moe::skew::parse(skew);
        for (std::size_t e = 0; e < E; ++e)
            for (std::size_t h = 0; h < H; ++h)
                router[e * H + h] = static_cast<float>(rng.normal() / std::sqrt(static_cast<double>(H)) +
                                                       (h == 0 && sk.type == moe::skew::kind::zipf ? -sk.param * std::log(1.0 + e) : 0.0));
        for (auto* v : {&w1, &w3, &w2})
            for (auto& x : *v) x = static_cast<float>(rng.uniform() - 0.5) * 0.05f;
        moe::matrix<float> x = moe::synthetic_logits(T, H, moe::skew{}, 100 + static_cast<std::uint64_t>(rank));
        for (std::size_t t = 0; t < T; ++t) x(t, 0) = 1.0f;  // carries the popularity term of the router
        moe::matrix<float> y(T, H);
        const auto pl = moe::mpi::placement::contiguous(E, size);
        struct policy {
            const char* name;
            bool capacity, reroute, aware;
        };
        const policy policies[] = {{"dropless", false, false, false},
                                   {"capacity 1.0, drop", true, false, false},
                                   {"capacity 1.0, reroute", true, true, false},
                                   {"capacity 1.0, placement-aware reroute", true, true, true}};
        if (rank == 0)
            std::printf("expert parallelism: %d ranks, %zu tokens per rank, H %zu, F %zu, %zu experts (contiguous), top-%zu\n", size,
                        T, H, F, E, k);
        for (const policy& p : policies) {
            moe::layer_options o;
            o.router = moe::presets::mixtral(k);
            o.capacity = p.capacity;
            o.drop.capacity.factor = 1.0;
            o.drop.reroute = p.reroute;
            moe::mpi::expert_parallel_block<moe::default_arch, float> ep(MPI_COMM_WORLD, moe::view(router.data(), E, H), w1.data(),
                                                                         w3.data(), w2.data(), F, pl, o, p.aware);
            const double dt = timed_forward(ep, y, x);
            const auto& st = ep.last_stats();
            unsigned long long mine[4] = {T, st.rows_sent, st.rows_received, st.bytes_on_wire};
            std::vector<unsigned long long> all(4 * static_cast<std::size_t>(size));
            MPI_Gather(mine, 4, MPI_UNSIGNED_LONG_LONG, all.data(), 4, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
            if (rank == 0) {
                std::printf("\n== %s: forward %.2f ms, rank straggler (max/mean expert rows) %.3f, dropped %zu, rerouted %zu",
                            p.name, dt * 1e3, st.max_over_mean, st.dropped, st.rerouted);
                if (p.aware) std::printf(", %zu bytes kept off the wire", st.bytes_saved);
                std::printf("\n  rank  tokens  expert rows  rows sent  rows received  bytes on the wire\n");
                for (int r = 0; r < size; ++r) {
                    const auto* a = all.data() + 4 * static_cast<std::size_t>(r);
                    std::printf("  %4d  %6llu  %11zu  %9llu  %13llu  %17llu\n", r, a[0], st.rank_rows[static_cast<std::size_t>(r)], a[1],
                                a[2], a[3]);
                }
            }
        }
        if (ranks_per_node >= 0) {
            // Nodes: the flat exchange against the two-level one (dropless, counts protocol).
            moe::layer_options o;
            o.router = moe::presets::mixtral(k);
            moe::mpi::expert_parallel_block<moe::default_arch, float> ep(MPI_COMM_WORLD, moe::view(router.data(), E, H), w1.data(),
                                                                         w3.data(), w2.data(), F, pl, o);
            if (rank == 0)
                std::printf("\n== nodes of %s ranks (dropless): bytes that crossed nodes, all ranks\n",
                            ranks_per_node ? std::to_string(ranks_per_node).c_str() : "shared-memory");
            for (bool two_level : {false, true}) {
                ep.set_topology(ranks_per_node, two_level);
                const double dt = timed_forward(ep, y, x);
                unsigned long long v[2] = {ep.last_stats().inter_node_bytes, ep.last_stats().metadata_bytes};
                MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
                if (rank == 0)
                    std::printf("  %-9s  %12llu bytes across nodes, %8llu metadata bytes, forward %.2f ms\n", two_level ? "two-level" : "flat", v[0],
                                v[1], dt * 1e3);
            }
        }
    } catch (const moe::error& e) {
        std::fprintf(stderr, "expert-parallel (rank %d): %s\n", rank, e.what());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    MPI_Finalize();
    return 0;
}
