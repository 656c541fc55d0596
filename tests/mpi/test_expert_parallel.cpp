// Expert parallelism over MPI, run by ctest under `mpirun -np 2` and `-np 4`: the expert-parallel
// layer must equal the single-process layer (`moe::block` on the concatenated tokens) bit
// for bit, for float and quantized (int8, fp8) experts, for dropless, capacity drop, reroute, placement-aware reroute and an uneven placement,
// with a rank that has no tokens, and with replicas (EPLB placement, both replica policies),
// each under both protocols (allgather, counts: every drop policy, renormalised after the drop)
// where they apply, with the counts protocol's metadata bounded by the local tokens, in one
// piece and chunked, flat and two-level over fake nodes (1, 2, all ranks per node) and the
// shared-memory node, and a rank whose expert receives nothing;
// the global load-balancing loss over ranks must equal the
// single-process accumulator; a malformed placement on one rank must fail on every rank.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <moe/moe.hpp>
#include <moe/mpi/cost_model.hpp>
#include <moe/mpi/expert_parallel.hpp>
#include <moe/analysis/synthetic.hpp>

namespace {

int rank = 0, size = 1, failures = 0, checks = 0;

void check(bool ok, const std::string& what) {
    ++checks;
    if (!ok) {
        ++failures;
        std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what.c_str());
    }
}

constexpr std::size_t E = 8, H = 40, F = 56;

struct weights {
    std::vector<float> router, w1, w3, w2;
    weights() {
        moe::splitmix64 rng(42);
        router.resize(E * H);
        for (auto& v : router) v = static_cast<float>(rng.normal() * 0.3);
        for (auto* v : {&w1, &w3, &w2}) {
            v->resize(E * H * F);
            for (auto& x : *v) x = static_cast<float>(rng.uniform() - 0.5) * 0.4f;
        }
    }
};

/// Uneven token counts; the last rank gets none.
std::vector<std::size_t> token_counts() {
    std::vector<std::size_t> n(static_cast<std::size_t>(size));
    for (int r = 0; r < size; ++r) n[static_cast<std::size_t>(r)] = r + 1 == size ? 0 : 9 + 7 * static_cast<std::size_t>(r);
    return n;
}

template <class W = float>
void run_case(const std::string& name, const weights& w, const moe::matrix<float>& x_all, const moe::mpi::placement& pl,
              moe::layer_options o, bool placement_aware) {
    const auto counts = token_counts();
    std::size_t first = 0;
    for (int r = 0; r < rank; ++r) first += counts[static_cast<std::size_t>(r)];
    const std::size_t T = counts[static_cast<std::size_t>(rank)];
    // Single process: the same options; placement-aware reroute is reroute within the placement.
    moe::layer_options so = o;
    if (placement_aware) so.drop.placement = pl.owner;
    moe::block<moe::default_arch, W> single(moe::view(w.router.data(), E, H), w.w1.data(), w.w3.data(), w.w2.data(), F, so);
    moe::matrix<float> y_ref(x_all.rows, H);
    single.forward(y_ref.view(), x_all);
    const auto& ref = single.last_routing();
    moe::mpi::expert_parallel_block<moe::default_arch, W> ep(MPI_COMM_WORLD, moe::view(w.router.data(), E, H), w.w1.data(),
                                                             w.w3.data(), w.w2.data(), F, pl, o, placement_aware);
    const bool counts_ok = !placement_aware && !(o.capacity && (o.drop.reroute || o.fill_in));
    // allgather; counts in one piece; counts pipelined in 3 chunks and in more chunks than
    // some ranks have tokens (empty chunks); the two-level exchange over fake nodes of 1, 2 and
    // all ranks and over the shared-memory node (0), each after the flat exchange on the same
    // nodes (inter-node bytes compared).
    struct run {
        moe::mpi::ep_protocol protocol;
        std::size_t chunks;
        int ranks_per_node;  // -1: no topology
        bool hierarchical;
    };
    std::vector<run> runs = {{moe::mpi::ep_protocol::allgather, 1, -1, false},
                             {moe::mpi::ep_protocol::counts, 1, -1, false},
                             {moe::mpi::ep_protocol::counts, 3, -1, false},
                             {moe::mpi::ep_protocol::counts, 40, -1, false}};
    for (int rpn : {1, 2, size, 0})
        if (rpn == 0 || size % rpn == 0)
            for (bool h : {false, true}) runs.push_back({moe::mpi::ep_protocol::counts, 1, rpn, h});
    std::size_t flat_inter = 0;
    for (const auto& [protocol, chunks, rpn, hier] : runs) {
        const bool counts_run = protocol == moe::mpi::ep_protocol::counts;
        std::string tag = name + (counts_run ? " [counts, " + std::to_string(chunks) + " chunks" : " [allgather");
        if (rpn >= 0) tag += std::string(hier ? ", two-level" : ", flat") + " over nodes of " + (rpn ? std::to_string(rpn) : std::string("shm"));
        tag += "]";
        if (counts_run && !counts_ok && (chunks > 1 || rpn >= 0)) continue;
        if (rpn >= 0) ep.set_topology(rpn, hier);
        if (counts_run && !counts_ok) {
            std::string err;
            try {
                ep.set_protocol(protocol);
            } catch (const moe::error& e) {
                err = e.id();
            }
            check(err == "moe.mpi.protocol", tag + ": counts protocol accepted options it cannot serve");
            continue;
        }
        ep.set_protocol(protocol);
        ep.set_chunks(chunks);
        moe::matrix<float> x(T, H), y(T, H, -1.0f);
        if (T) std::memcpy(x.values.data(), x_all.row(first), T * H * sizeof(float));
        ep.forward(y.view(), x, moe::serial_executor{});
        check(T == 0 || std::memcmp(y.values.data(), y_ref.row(first), T * H * sizeof(float)) == 0,
              tag + ": output differs from the single-process layer");
        const auto& loc = ep.last_local_routing();
        check(std::equal(loc.indices.begin(), loc.indices.end(), ref.indices.begin() + static_cast<std::ptrdiff_t>(first * ref.top_k)) &&
                  std::equal(loc.weights.begin(), loc.weights.end(), ref.weights.begin() + static_cast<std::ptrdiff_t>(first * ref.top_k)),
              tag + ": local routing differs from the single-process slice");
        if (!counts_run) check(ep.last_global_routing().indices == ref.indices, tag + ": global routing differs");
        const auto& st = ep.last_stats();
        check(st.counts_protocol == counts_run, tag + ": protocol flag");
        std::size_t rows = 0;
        for (auto v : st.rank_rows) rows += v;
        std::size_t routed = 0;
        for (auto i : ref.indices) routed += i >= 0;
        check(rows == routed, tag + ": rank rows do not add up to the routed slots");
        // Over all ranks (relays send their node-mates' outputs): a row crosses nodes once per
        // (token, node) instead of once per slot, outputs once per slot either way.
        unsigned long long sums[3] = {st.inter_node_bytes, st.metadata_bytes, T};
        MPI_Allreduce(MPI_IN_PLACE, sums, 3, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
        if (rpn >= 0 && !hier) flat_inter = sums[0];
        if (rpn >= 0 && hier) {
            check(sums[0] <= flat_inter, tag + ": more inter-node bytes than the flat exchange: " + std::to_string(sums[0]) + " > " +
                                             std::to_string(flat_inter));
            // records {token, k experts} to relays and {source, token, k experts} to owners, and
            // the capacity stage's ranking records: O(tokens x k)
            check(sums[1] <= sums[2] * 2 * (((2 + 1) + (2 + 2)) * 4 + 40) + static_cast<unsigned long long>(size) * (64 + (E + 2) * 8 + 16 * size),
                  tag + ": metadata over all ranks grows past O(tokens x k): " + std::to_string(sums[1]));
        }
        if (rpn == size || rpn == 0) check(st.inter_node_bytes == 0, tag + ": one node, yet bytes crossed nodes");
        if (counts_run && !o.capacity && rpn < 0)  // the cost model's metadata figure bounds the real one
            check(static_cast<double>(st.metadata_bytes) <= moe::mpi::exchange_cost_model::counts_metadata_bytes(E, chunks),
                  tag + ": metadata above the cost model's figure");
        if (name.rfind("idle", 0) == 0) check(st.rank_rows[0] == 0, tag + ": rank 0's expert should receive nothing");
        if (counts_run && !hier)  // O(local tokens x k + E + ranks), whatever the other ranks hold
            check(st.metadata_bytes <= T * 2 * 40 + (E + 2) * 8 + 2 * E * 4 * chunks + static_cast<std::size_t>(size) * 8 + 64,
                  tag + ": metadata grows past O(local tokens x k + E): " + std::to_string(st.metadata_bytes));
        if (rank == 0)
            std::printf("%-40s max/mean rank load %.3f, rank 0 sent %zu rows, %zu bytes on the wire, %zu metadata bytes, dropped %zu, "
                        "rerouted %zu, saved %zu bytes\n",
                        tag.c_str(), st.max_over_mean, st.rows_sent, st.bytes_on_wire, st.metadata_bytes, st.dropped, st.rerouted, st.bytes_saved);
    }
}

/// The same with replicas: EPLB's placement of the batch's loads, one device per rank.
void run_replica_case(const std::string& name, const weights& w, const moe::matrix<float>& x_all, const moe::replica_placement& rp,
                      moe::replica_policy policy, const moe::layer_options& o) {
    const auto counts = token_counts();
    std::size_t first = 0;
    for (int r = 0; r < rank; ++r) first += counts[static_cast<std::size_t>(r)];
    const std::size_t T = counts[static_cast<std::size_t>(rank)];
    moe::block<moe::default_arch, float> single(moe::view(w.router.data(), E, H), w.w1.data(), w.w3.data(),
                                                           w.w2.data(), F, o);
    moe::matrix<float> y_ref(x_all.rows, H);
    single.forward(y_ref.view(), x_all);
    moe::mpi::expert_parallel_block<moe::default_arch, float> ep(MPI_COMM_WORLD, moe::view(w.router.data(), E, H), w.w1.data(),
                                                                 w.w3.data(), w.w2.data(), F, rp, 0, policy, o);
    // Round-robin replicas without reroute ride on the counts protocol (flat, chunked, two-level);
    // least-loaded replicas and reroute need the global order and must refuse it.
    const bool counts_ok = policy == moe::replica_policy::round_robin && !(o.capacity && o.drop.reroute);
    std::string err;
    try {
        ep.set_protocol(moe::mpi::ep_protocol::counts);
    } catch (const moe::error& e) {
        err = e.id();
    }
    check(err == (counts_ok ? "" : "moe.mpi.protocol"), name + ": counts protocol " + (counts_ok ? "refused" : "accepted"));
    struct run {
        moe::mpi::ep_protocol protocol;
        std::size_t chunks;
        int ranks_per_node;
    };
    std::vector<run> runs = {{moe::mpi::ep_protocol::allgather, 1, -1}};
    if (counts_ok) runs.insert(runs.end(), {{moe::mpi::ep_protocol::counts, 1, -1}, {moe::mpi::ep_protocol::counts, 3, -1}, {moe::mpi::ep_protocol::counts, 1, 1}});
    moe::matrix<float> x(T, H);
    if (T) std::memcpy(x.values.data(), x_all.row(first), T * H * sizeof(float));
    for (const auto& [protocol, chunks, rpn] : runs) {
        const std::string tag = name + (protocol == moe::mpi::ep_protocol::counts ? " [counts, " + std::to_string(chunks) + " chunks" +
                                                                                        (rpn >= 0 ? ", two-level]" : "]")
                                                                                  : std::string(" [allgather]"));
        ep.set_protocol(protocol);
        ep.set_chunks(chunks);
        if (rpn >= 0) ep.set_topology(rpn);
        moe::matrix<float> y(T, H, -1.0f);
        ep.forward(y.view(), x, moe::serial_executor{});
        check(T == 0 || std::memcmp(y.values.data(), y_ref.row(first), T * H * sizeof(float)) == 0, tag + ": output differs from the single-process layer");
        if (protocol == moe::mpi::ep_protocol::allgather)
            check(ep.last_global_routing().indices == single.last_routing().indices, tag + ": global routing differs");
        const auto& loc = ep.last_local_routing();
        const auto& ref = single.last_routing();
        check(std::equal(loc.indices.begin(), loc.indices.end(), ref.indices.begin() + static_cast<std::ptrdiff_t>(first * ref.top_k)),
              tag + ": local routing differs from the single-process slice");
        std::size_t rows = 0, routed = 0;
        for (auto v : ep.last_stats().rank_rows) rows += v;
        for (auto i : ref.indices) routed += i >= 0;
        check(rows == routed, tag + ": rank rows do not add up to the routed slots");
        if (rank == 0) std::printf("%-48s max/mean rank load %.3f, rank 0 sent %zu rows\n", tag.c_str(), ep.last_stats().max_over_mean, ep.last_stats().rows_sent);
    }
    // This rank holds the replicas the placement gives it.
    std::size_t mine = 0;
    for (std::size_t q = 0; q < rp.num_physical; ++q) mine += rp.device_of(q) == rank;
    check(ep.local_experts().size() == mine, name + ": local replicas");
}

}  // namespace

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const weights w;
    std::size_t T_all = 0;
    for (auto n : token_counts()) T_all += n;
    const moe::matrix<float> x_all = moe::synthetic_logits(T_all, H, moe::skew{}, 3);
    const auto contiguous = moe::mpi::placement::contiguous(E, size);
    try {
        run_case("dropless", w, x_all, contiguous, {}, false);
        moe::layer_options drop;
        drop.capacity = true;
        drop.drop.capacity.factor = 0.75;
        run_case("capacity drop (cf 0.75)", w, x_all, contiguous, drop, false);
        moe::layer_options reroute = drop;
        reroute.drop.capacity.factor = 1.0;
        reroute.drop.reroute = true;
        run_case("reroute (cf 1.0)", w, x_all, contiguous, reroute, false);
        run_case("placement-aware reroute", w, x_all, contiguous, reroute, true);
        {  // Expert 7 never wins (its logit is -100 on every token) and is alone on rank 0:
           // a rank that has tokens and whose expert receives nothing.
            weights w7 = w;
            std::fill(w7.router.begin() + 7 * H, w7.router.end(), 0.0f);
            w7.router[7 * H] = -100.0f;
            moe::matrix<float> x7 = x_all;
            for (std::size_t t = 0; t < x7.rows; ++t) x7(t, 0) = 1.0f;
            moe::mpi::placement idle;
            for (std::size_t e = 0; e < E; ++e)
                idle.owner.push_back(e == 7 || size == 1 ? 0 : static_cast<std::int32_t>(1 + e % static_cast<std::size_t>(size - 1)));
            run_case("idle experts on rank 0", w7, x7, idle, {}, false);
            run_case("idle experts on rank 0, drop", w7, x7, idle, drop, false);
        }
        moe::mpi::placement uneven;  // experts 0..5 on rank 0, the rest one each on the others
        for (std::size_t e = 0; e < E; ++e)
            uneven.owner.push_back(e < 6 || size == 1 ? 0 : static_cast<std::int32_t>(1 + (e - 6) % static_cast<std::size_t>(size - 1)));
        run_case("uneven placement, drop", w, x_all, uneven, drop, false);
        // Quantized experts: each rank quantizes its own experts as the single-process block does.
        run_case<moe::kernels::formats::int8>("int8 experts, drop", w, x_all, contiguous, drop, false);
        run_case<moe::kernels::formats::int8>("int8 experts, reroute", w, x_all, contiguous, reroute, false);
        run_case<moe::kernels::formats::fp8>("fp8 experts, uneven placement", w, x_all, uneven, {}, false);
        for (auto policy : {moe::drop_policy::position, moe::drop_policy::slot_major, moe::drop_policy::score,
                            moe::drop_policy::batch_prioritized, moe::drop_policy::random}) {
            moe::layer_options p = drop;
            p.drop.policy = policy;
            p.drop.seed = 11;
            if (policy == moe::drop_policy::slot_major) {  // DeepSpeed: renormalise what is kept
                p.drop.renorm_after = moe::renormalize::clamp;
                p.drop.renorm_eps = 1.1920929e-07f;
            }
            run_case(std::string("drop ") + moe::to_string(policy), w, x_all, contiguous, p, false);
        }

        // Replicas: EPLB over the batch's own loads, E + ranks physical experts, one device per rank.
        {
            const moe::matrix<float> lg = moe::gate(x_all.view(), moe::view(w.router.data(), E, H));
            const auto load = moe::route(lg, moe::presets::mixtral()).tokens_per_expert();
            std::vector<float> lf(load.begin(), load.end());
            const auto rp = moe::rebalance_experts(moe::matrix_view<const float>(lf.data(), 1, E), (E / static_cast<std::size_t>(size) + 1) * static_cast<std::size_t>(size), 1, 1,
                                                   static_cast<std::size_t>(size));
            run_replica_case("replicas, round robin", w, x_all, rp, moe::replica_policy::round_robin, {});
            run_replica_case("replicas, round robin, drop", w, x_all, rp, moe::replica_policy::round_robin, drop);
            run_replica_case("replicas, least loaded, drop", w, x_all, rp, moe::replica_policy::least_loaded, drop);
            run_replica_case("replicas, reroute", w, x_all, rp, moe::replica_policy::round_robin, reroute);
            // A placement for another number of ranks fails on every rank.
            const auto wrong = moe::rebalance_experts(moe::matrix_view<const float>(lf.data(), 1, E), 2 * (E / static_cast<std::size_t>(size) + 1) * static_cast<std::size_t>(size), 1, 1, 2 * static_cast<std::size_t>(size));
            std::string err;
            try {
                moe::mpi::expert_parallel_block<moe::default_arch, float> bad(MPI_COMM_WORLD, moe::view(w.router.data(), E, H), w.w1.data(),
                                                                              w.w3.data(), w.w2.data(), F, wrong);
            } catch (const moe::error& e) {
                err = e.what();
            }
            check(err.rfind("[moe.mpi.placement] rank 0: replica placement must cover the 8 experts of layer 0 on " + std::to_string(size) +
                                " ranks",
                            0) == 0,
                  "replica placement for the wrong rank count: '" + err + "'");
        }

        // The exchange cost model: the formula as documented, and a measurement that is sane.
        {
            moe::mpi::exchange_cost_model m;
            m.alpha = 1e-6;
            m.beta = 1e9;
            // 2 * (3 alpha + 100 * 2 * 3/4 rows * 1000 * 4 bytes / beta) + 3 alpha + 2 * 2 alpha
            check(std::fabs(m.dispatch_combine_seconds(4, 100, 2, 1000) - 1.213e-3) < 1e-12, "cost model formula");
            check(m.predict_exchange(4, 150, 1000) == m.dispatch_combine_seconds(4, 100, 2, 1000), "cost model: uniform rows");
            check(m.dispatch_combine_seconds(8, 100, 2, 1000) > m.dispatch_combine_seconds(4, 100, 2, 1000) &&
                      m.dispatch_combine_seconds(1, 100, 2, 1000) == 0.0,
                  "cost model grows with ranks, zero on one rank");
            check(moe::mpi::exchange_cost_model::allgather_metadata_bytes(256, 4096, 8) > 1000 * moe::mpi::exchange_cost_model::counts_metadata_bytes(256),
                  "allgather metadata grows with the global batch");
            const auto got = moe::mpi::exchange_cost_model::measure(MPI_COMM_WORLD, 1 << 16, 3);
            check(got.alpha > 0 && got.beta > 0 && std::isfinite(got.alpha) && std::isfinite(got.beta), "measured alpha, beta");
        }

        // Global-batch load-balancing loss: each rank's terms, allreduced, against one process.
        const auto counts = token_counts();
        std::size_t first = 0;
        for (int r = 0; r < rank; ++r) first += counts[static_cast<std::size_t>(r)];
        const moe::matrix<float> logits_all = moe::gate(x_all.view(), moe::view(w.router.data(), E, H));
        const moe::matrix_view<const float> mine(logits_all.row(first), counts[static_cast<std::size_t>(rank)], E);
        const auto cfg = moe::presets::mixtral();
        const auto terms = moe::mpi::allreduce_terms(MPI_COMM_WORLD, moe::aux_loss_statistics(mine, moe::route(mine, cfg), {}));
        moe::global_load_balancer acc;
        acc.add(logits_all, moe::route(logits_all, cfg));
        const double a = moe::aux_loss_value(terms, {}), b = acc.loss();
        check(std::fabs(a - b) <= 1e-12 * std::fabs(b), "global LBL over ranks differs from the accumulator");
        if (rank == 0) std::printf("global load-balancing loss over ranks %.15f, one process %.15f\n", a, b);
    } catch (const moe::error& e) {
        check(false, std::string("unexpected error: ") + e.what());
    }

    // A malformed placement on one rank: every rank gets the same error, nobody hangs.
    moe::mpi::placement bad = contiguous;
    if (rank == size - 1) bad.owner[0] = size;
    std::string err;
    try {
        moe::mpi::expert_parallel_block<moe::default_arch, float> ep(MPI_COMM_WORLD, moe::view(w.router.data(), E, H), w.w1.data(),
                                                                     w.w3.data(), w.w2.data(), F, bad);
    } catch (const moe::error& e) {
        err = e.what();
    }
    check(err == "[moe.mpi.placement] rank " + std::to_string(size - 1) + ": placement must map all 8 experts to ranks in [0, " +
                     std::to_string(size) + ")",
          "malformed placement error: '" + err + "'");

    // Topology errors, on every rank: fake nodes that do not divide the ranks; chunks with the
    // two-level exchange.
    {
        moe::mpi::expert_parallel_block<moe::default_arch, float> ep(MPI_COMM_WORLD, moe::view(w.router.data(), E, H), w.w1.data(),
                                                                     w.w3.data(), w.w2.data(), F, contiguous);
        std::string e1, e2;
        try {
            ep.set_topology(size + 1);
        } catch (const moe::error& e) {
            e1 = e.what();
        }
        check(e1 == "[moe.mpi.topology] rank 0: " + std::to_string(size + 1) + " ranks per node do not divide " + std::to_string(size) + " ranks",
              "topology error: '" + e1 + "'");
        ep.set_topology(1);
        ep.set_chunks(2);
        moe::matrix<float> x(3, H, 0.5f), y(3, H);
        try {
            ep.forward(y.view(), x);
        } catch (const moe::error& e) {
            e2 = e.what();
        }
        check(e2 == "[moe.mpi.topology] the two-level exchange runs in one chunk; set_chunks(1) or set_topology(n, false)",
              "chunks with the two-level exchange: '" + e2 + "'");
    }

    int total = failures;
    MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        std::printf(total == 0 ? "expert-parallel: all %d checks passed on %d ranks\n" : "expert-parallel: %d failures\n",
                    total == 0 ? checks : total, size);
    MPI_Finalize();
    return total == 0 ? 0 : 1;
}
