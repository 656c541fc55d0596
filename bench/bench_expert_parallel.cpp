// Expert parallelism over MPI on loopback (run: mpirun -np 2|4 bench_expert_parallel). Cases, each
// timed as the slowest rank's time per iteration (fixed iteration counts, so that every rank runs
// the same collectives):
//   BM_EP/forward            the whole layer (route, counts exchange, all-to-all, experts, all-to-all
//                            back, combine) under the default counts protocol, H = F = 1024: phase
//                            times (slowest rank) as counters
//   BM_EP/forward_allgather  the same with the routings allgathered (the older protocol)
//   BM_EP/forward_chunked    the same in 4 chunks pipelined with the experts: the exposed exchange
//                            against the unchunked forward's (hidden_fraction)
//   BM_EP/forward_two_level  every rank its own (fake) node: the two-level exchange against the
//                            flat one (inter-node bytes, exposed exchange)
//   BM_EP/exchange           a tiny FFN (F = 32) so that the exchange dominates: the exposed exchange
//                            (forward minus route, experts and combine) over the bare MPI_Alltoallv
//                            pair that moves the same rows, measured in the same run
//   BM_EP/experts            the local expert kernels alone on the same rows
//   BM_EP/alltoall           the two MPI_Alltoallv of the same row volume alone
#include <algorithm>
#include <vector>

#include <benchmark/benchmark.h>

#include <moe/moe.hpp>
#include <moe/mpi/expert_parallel.hpp>
#include <moe/analysis/synthetic.hpp>

namespace {

constexpr std::size_t H = 1024, E = 8, T = 512;
int g_rank = 0, g_size = 1;

struct setup {
    std::size_t F;
    std::vector<float> router, w1, w3, w2;
    moe::matrix<float> x, y;
    std::unique_ptr<moe::mpi::expert_parallel_block<moe::default_arch, float>> ep;
    explicit setup(std::size_t ffn) : F(ffn), x(moe::synthetic_logits(T, H, moe::skew{}, 100 + static_cast<std::uint64_t>(g_rank))), y(T, H) {
        moe::splitmix64 rng(1);
        router.resize(E * H);
        for (auto& v : router) v = static_cast<float>(rng.normal() / 32.0);
        for (auto* v : {&w1, &w3, &w2}) {
            v->resize(E * H * F);
            for (auto& a : *v) a = static_cast<float>(rng.uniform() - 0.5) * 0.05f;
        }
        ep = std::make_unique<moe::mpi::expert_parallel_block<moe::default_arch, float>>(
            MPI_COMM_WORLD, moe::view(router.data(), E, H), w1.data(), w3.data(), w2.data(), F,
            moe::mpi::placement::contiguous(E, g_size));
        ep->forward(y.view(), x);
    }
};

setup& shared(std::size_t F = 1024) {
    static setup big(1024), tiny(32);
    return F == 1024 ? big : tiny;
}

/// Runs f on every rank, times it as the slowest rank.
template <class F>
void timed(benchmark::State& st, F&& f) {
    for (auto _ : st) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = MPI_Wtime();
        f();
        double dt = MPI_Wtime() - t0;
        MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        st.SetIterationTime(dt);
    }
}

/// The bare MPI_Alltoallv pair (rows out, outputs back) with the counts of the last forward: the
/// floor of dispatch + return. Seconds per pair, slowest rank, median of `reps`.
double bare_exchange(const moe::mpi::ep_stats& st, int reps) {
    const auto R = static_cast<std::size_t>(g_size);
    std::vector<int> sc(R), sd(R), rc(R), rd(R);
    int so = 0, ro = 0;
    for (std::size_t r = 0; r < R; ++r) {
        sc[r] = st.send_rows[r] * static_cast<int>(H);
        rc[r] = st.recv_rows[r] * static_cast<int>(H);
        sd[r] = so;
        rd[r] = ro;
        so += sc[r];
        ro += rc[r];
    }
    std::vector<float> send(static_cast<std::size_t>(so), 1.0f), recv(static_cast<std::size_t>(ro));
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = MPI_Wtime();
        MPI_Alltoallv(send.data(), sc.data(), sd.data(), MPI_FLOAT, recv.data(), rc.data(), rd.data(), MPI_FLOAT, MPI_COMM_WORLD);
        MPI_Alltoallv(recv.data(), rc.data(), rd.data(), MPI_FLOAT, send.data(), sc.data(), sd.data(), MPI_FLOAT, MPI_COMM_WORLD);
        double dt = MPI_Wtime() - t0;
        MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        t.push_back(dt);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

/// Runs `iters` forwards; returns the slowest rank's median forward time and the median exposed
/// exchange: the forward minus the largest route + experts + combine of any rank (the critical
/// path's compute). Medians, because a shared machine's hiccups land in a few iterations.
std::pair<double, double> forwards(setup& s, int iters, double* phase_max = nullptr) {
    std::vector<double> total, exposed;
    double phase[5] = {0, 0, 0, 0, 0};
    for (int i = 0; i < iters; ++i) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = MPI_Wtime();
        s.ep->forward(s.y.view(), s.x);
        double v[2] = {MPI_Wtime() - t0, 0};
        const auto& ps = s.ep->last_stats();
        v[1] = ps.route_s + ps.experts_s + ps.combine_s;
        MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        total.push_back(v[0]);
        exposed.push_back(v[0] - v[1]);
        const double p[5] = {ps.route_s, ps.dispatch_s, ps.experts_s, ps.return_s, ps.combine_s};
        for (int j = 0; j < 5; ++j) phase[j] += p[j];
    }
    if (phase_max) {
        for (int j = 0; j < 5; ++j) phase_max[j] = phase[j] / iters;
        MPI_Allreduce(MPI_IN_PLACE, phase_max, 5, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
    const auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    return {median(total), median(exposed)};
}

void report_phases(benchmark::State& st, const double* phase) {
    const char* names[5] = {"route_ms", "dispatch_ms", "experts_ms", "return_ms", "combine_ms"};
    for (int i = 0; i < 5; ++i) st.counters[names[i]] = phase[i] * 1e3;
}

void forward_with(benchmark::State& st, moe::mpi::ep_protocol p) {
    setup& s = shared();
    s.ep->set_protocol(p);
    timed(st, [&] { s.ep->forward(s.y.view(), s.x); });
    const auto& stats = s.ep->last_stats();
    st.counters["bytes_on_wire_rank0"] = static_cast<double>(stats.bytes_on_wire);
    st.counters["metadata_bytes_rank0"] = static_cast<double>(stats.metadata_bytes);
    st.counters["ranks"] = g_size;
    if (stats.counts_protocol) {
        double phase[5];
        forwards(s, 5, phase);
        report_phases(st, phase);
    }
    s.ep->set_protocol(moe::mpi::ep_protocol::automatic);
}

void BM_ForwardChunked(benchmark::State& st) {
    setup& s = shared();
    const auto one = forwards(s, 15);
    s.ep->set_chunks(4);
    double phase[5];
    const auto four = forwards(s, 15, phase);
    timed(st, [&] { s.ep->forward(s.y.view(), s.x); });
    s.ep->set_chunks(1);
    report_phases(st, phase);
    st.counters["exposed_exchange_1chunk_ms"] = one.second * 1e3;
    st.counters["exposed_exchange_4chunks_ms"] = four.second * 1e3;
    st.counters["hidden_fraction"] = 1.0 - four.second / one.second;
    st.counters["forward_1chunk_ms"] = one.first * 1e3;
}

void BM_TwoLevel(benchmark::State& st) {
    // Every rank its own (fake) node: the flat exchange's inter-node bytes against the two-level one's.
    setup& s = shared();
    s.ep->set_topology(1, false);
    const auto flat = forwards(s, 15);
    const double flat_bytes = static_cast<double>(s.ep->last_stats().inter_node_bytes);
    s.ep->set_topology(1, true);
    double phase[5];
    const auto two = forwards(s, 15, phase);
    timed(st, [&] { s.ep->forward(s.y.view(), s.x); });
    report_phases(st, phase);
    st.counters["inter_node_bytes_flat_rank0"] = flat_bytes;
    st.counters["inter_node_bytes_two_level_rank0"] = static_cast<double>(s.ep->last_stats().inter_node_bytes);
    st.counters["exposed_exchange_flat_ms"] = flat.second * 1e3;
    st.counters["exposed_exchange_two_level_ms"] = two.second * 1e3;
    st.counters["metadata_bytes_rank0"] = static_cast<double>(s.ep->last_stats().metadata_bytes);
    s.ep->set_topology(1, false);
}

void BM_Exchange(benchmark::State& st) {
    setup& s = shared(32);
    double phase[5];
    const auto f = forwards(s, 20, phase);
    timed(st, [&] { s.ep->forward(s.y.view(), s.x); });
    report_phases(st, phase);
    const double bare = bare_exchange(s.ep->last_stats(), 20);
    st.counters["exposed_exchange_ms"] = f.second * 1e3;
    st.counters["bare_alltoallv_ms"] = bare * 1e3;
    st.counters["exchange_over_bare"] = f.second / bare;
    st.counters["metadata_bytes_rank0"] = static_cast<double>(s.ep->last_stats().metadata_bytes);
}

void BM_Forward(benchmark::State& st) { forward_with(st, moe::mpi::ep_protocol::counts); }
void BM_ForwardAllgather(benchmark::State& st) { forward_with(st, moe::mpi::ep_protocol::allgather); }

void BM_Experts(benchmark::State& st) {
    // The local experts on as many rows as this rank computed in the forward.
    setup& s = shared();
    const std::size_t F = s.F;
    const std::size_t rows = s.ep->last_stats().rank_rows[static_cast<std::size_t>(g_rank)];
    const std::size_t L = s.ep->local_experts().size();
    std::vector<float> a1(L * F * H), a3(L * F * H), a2(L * H * F);
    std::copy(s.w1.begin(), s.w1.begin() + static_cast<std::ptrdiff_t>(L * F * H), a1.begin());
    std::copy(s.w3.begin(), s.w3.begin() + static_cast<std::ptrdiff_t>(L * F * H), a3.begin());
    std::copy(s.w2.begin(), s.w2.begin() + static_cast<std::ptrdiff_t>(L * H * F), a2.begin());
    const auto packed = moe::kernels::pack_experts<moe::default_arch>(a1.data(), a3.data(), a2.data(), std::max<std::size_t>(1, L), H, F);
    moe::routing<float> r(rows, packed.num_experts(), 1, false);
    for (std::size_t t = 0; t < rows; ++t) r.indices[t] = static_cast<std::int32_t>(t % packed.num_experts());
    const auto plan = moe::make_plan(r);
    const auto xr = moe::synthetic_logits(rows, H, moe::skew{}, 5);
    moe::matrix<float> out(plan.num_rows(), H);
    moe::kernels::ffn_workspace ws;
    ws.reserve(moe::kernels::workspace_size(plan, packed).total());
    timed(st, [&] {
        if (rows) moe::kernels::expert_ffn(out.view(), moe::matrix_view<const float>(xr.view()), plan, packed, ws.data(), ws.size());
    });
}

void BM_Alltoall(benchmark::State& st) {
    // Two all-to-alls moving T * k rows of H floats spread evenly over the ranks.
    const std::size_t rows = T * 2;
    std::vector<float> send(rows * H, 1.0f), recv(rows * H);
    std::vector<int> counts(static_cast<std::size_t>(g_size), static_cast<int>(rows / static_cast<std::size_t>(g_size) * H)), displs(static_cast<std::size_t>(g_size));
    for (int r = 0; r < g_size; ++r) displs[static_cast<std::size_t>(r)] = r * counts[0];
    timed(st, [&] {
        MPI_Alltoallv(send.data(), counts.data(), displs.data(), MPI_FLOAT, recv.data(), counts.data(), displs.data(), MPI_FLOAT,
                      MPI_COMM_WORLD);
        MPI_Alltoallv(recv.data(), counts.data(), displs.data(), MPI_FLOAT, send.data(), counts.data(), displs.data(), MPI_FLOAT,
                      MPI_COMM_WORLD);
    });
    st.counters["bytes_per_rank"] = static_cast<double>(2 * rows * H * sizeof(float));
}

class null_reporter : public benchmark::BenchmarkReporter {
public:
    bool ReportContext(const Context&) override { return true; }
    void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

BENCHMARK(BM_Forward)->Name("BM_EP/forward")->Iterations(20)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ForwardAllgather)->Name("BM_EP/forward_allgather")->Iterations(20)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ForwardChunked)->Name("BM_EP/forward_chunked")->Iterations(10)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TwoLevel)->Name("BM_EP/forward_two_level")->Iterations(10)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Exchange)->Name("BM_EP/exchange")->Iterations(20)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Experts)->Name("BM_EP/experts")->Iterations(20)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Alltoall)->Name("BM_EP/alltoall")->Iterations(20)->UseManualTime()->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    benchmark::Initialize(&argc, argv);
    if (g_rank == 0) {
        benchmark::RunSpecifiedBenchmarks();
    } else {
        null_reporter quiet;
        benchmark::RunSpecifiedBenchmarks(&quiet);
    }
    benchmark::Shutdown();
    MPI_Finalize();
    return 0;
}
