/// @file mpi/expert_parallel.hpp
/// Expert parallelism over MPI: experts are placed on ranks, tokens travel to the ranks that own
/// their experts with MPI_Alltoallv and come back for the weighted sum. Optional: only this
/// header needs MPI (found by CMake as `moe::mpi` when MPI is installed).
///
/// Each rank gates and routes its own tokens. The routings are then allgathered (indices,
/// weights and, where a policy ranks by them, scores: a few bytes per token against the H floats
/// a token row costs), so every rank applies the same capacity plan to the global batch: capacity
/// from global counts, drops, reroute and fill-in decided exactly as one process would decide
/// them. Rows then move once to their experts' ranks and once back; every row is computed by the
/// same kernels and summed in slot order, so the output equals the single-process layer
/// (`moe::block` on the concatenated tokens) bit for bit.
///
/// Two protocols give the same bits. `allgather` (above) gives every rank the global routing.
/// `counts` (the default where it applies) keeps metadata to what a rank's own tokens need:
/// per-expert loads are allreduced (E numbers) for the capacity, slots of over-full experts send
/// a small ranking record (policy key, global slot index) to the expert's owner, which keeps its
/// C best exactly as one process would rank them and returns a keep flag per record; then the
/// kept rows travel with per-(rank, expert) counts. Metadata per rank is O(local tokens x k + E),
/// not O(global tokens). Reroute, fill-in, placement-aware reroute and least-loaded replicas
/// need other experts' room or the global order, and use `allgather`.
///
/// Under `counts`, rows move as MPI datatypes over x's rows and the experts' outputs (no packing
/// copies; a rank's own rows do not move at all), optionally in chunks pipelined with the
/// experts (`set_chunks`) and in two levels across nodes (`set_topology`). See
/// docs/expert_parallel.md for the protocols, the measurements and mpi/cost_model.hpp.
///
/// Replicas: with a `replica_placement` (placement.hpp, e.g. EPLB's), a logical expert lives on
/// several ranks; after the capacity stage (over logical experts, as one process decides it)
/// each routed slot goes to one replica by the chosen `replica_policy`, computed identically on
/// every rank from the global routing. Each replica runs its logical expert's weights, so the
/// output is still the single-process layer's, bit for bit.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../capacity.hpp"
#include "../dispatch.hpp"
#include "../executor.hpp"
#include "../gate.hpp"
#include "../kernels/expert_ffn.hpp"
#include "../block.hpp"
#include "../losses.hpp"
#include "../metrics.hpp"
#include "../placement.hpp"
#include "../router.hpp"

namespace moe::mpi {

/// Expert -> rank.
struct placement {
    std::vector<std::int32_t> owner;

    /// Expert e on rank e * ranks / E (contiguous blocks).
    [[nodiscard]] static placement contiguous(std::size_t num_experts, int ranks) {
        placement p;
        for (std::size_t e = 0; e < num_experts; ++e)
            p.owner.push_back(static_cast<std::int32_t>(e * static_cast<std::size_t>(ranks) / num_experts));
        return p;
    }
};

/// What one forward moved and how the work spread over ranks.
struct ep_stats {
    std::size_t rows_sent = 0;      ///< token rows this rank sent to other ranks' experts
    std::size_t rows_received = 0;  ///< token rows other ranks sent to this rank's experts
    std::size_t bytes_on_wire = 0;  ///< bytes this rank sent to other ranks (rows there and outputs back)
    std::vector<std::size_t> rank_rows;  ///< expert rows computed by each rank (global)
    double max_over_mean = 0;            ///< straggler across ranks: max / mean of rank_rows
    std::size_t dropped = 0, rerouted = 0;  ///< global, from the capacity stage
    /// Placement-aware reroute only: bytes of rows that plain reroute would have sent to another
    /// rank and that stayed on their rank instead (global, both directions).
    std::size_t bytes_saved = 0;
    /// Bytes of routing metadata this rank sent (routings, counts, ranking records, flags):
    /// O(local tokens x k + E) under the counts protocol, O(global tokens x k) under allgather.
    std::size_t metadata_bytes = 0;
    bool counts_protocol = false;  ///< which protocol ran
    /// With a topology (set_topology): bytes this rank sent to ranks on other nodes (rows and
    /// outputs). The two-level exchange sends a token's row across once per node, not per slot.
    std::size_t inter_node_bytes = 0;
    /// Where this rank's forward spent its time (MPI_Wtime, seconds): gate + route; dispatch
    /// (capacity metadata, row packing, the all-to-all to the experts' owners); the local
    /// experts; return (the outputs' all-to-all back); combine (the weighted sum). A wait for a
    /// slower rank shows in the collective that waits. Counts protocol only.
    double route_s = 0, dispatch_s = 0, experts_s = 0, return_s = 0, combine_s = 0;
    /// Rows this rank sent to / received from each rank in the dispatch (its own included):
    /// the counts of the bare MPI_Alltoallv that moves the same bytes (the flat exchange only).
    std::vector<int> send_rows, recv_rows;
};

/// How ranks agree on the capacity plan (see the file comment).
enum class ep_protocol { automatic, allgather, counts };

namespace detail {

/// Checks `ok` on every rank; if any rank is not ok, every rank throws [id] naming the first.
inline void agree(MPI_Comm comm, bool ok, const char* id, const std::string& what) {
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int first_bad = ok ? size : rank;
    MPI_Allreduce(MPI_IN_PLACE, &first_bad, 1, MPI_INT, MPI_MIN, comm);
    if (first_bad < size) MOE_THROW(id, "rank ", first_bad, ": ", what);
}

template <class T>
MPI_Datatype mpi_type();
template <>
inline MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
inline MPI_Datatype mpi_type<std::int32_t>() { return MPI_INT32_T; }
template <>
inline MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

/// Allgatherv of `per` values per token, tokens in rank order.
template <class T>
void allgather_tokens(MPI_Comm comm, const T* local, std::size_t local_tokens, std::size_t per,
                      const std::vector<int>& tokens_of, std::vector<T>& out) {
    const int size = static_cast<int>(tokens_of.size());
    std::vector<int> counts(size), displs(size);
    int total = 0;
    for (int r = 0; r < size; ++r) {
        counts[r] = tokens_of[r] * static_cast<int>(per);
        displs[r] = total;
        total += counts[r];
    }
    out.resize(static_cast<std::size_t>(total));
    MPI_Allgatherv(local, static_cast<int>(local_tokens * per), mpi_type<T>(), out.data(), counts.data(), displs.data(),
                   mpi_type<T>(), comm);
}

/// The MPI datatypes of one forward's exchange, committed as they are made and freed together.
/// Rows are H floats; a datatype lists rows of a buffer by byte offset, so MPI moves rows where
/// they lie and nobody packs them by hand.
class type_pool {
public:
    type_pool() = default;
    type_pool(const type_pool&) = delete;
    type_pool& operator=(const type_pool&) = delete;
    type_pool(type_pool&& o) noexcept { *this = std::move(o); }
    type_pool& operator=(type_pool&& o) noexcept {  // only between forwards: nothing in flight
        if (this != &o) {
            release();
            std::swap(owned_, o.owned_);
            std::swap(row_, o.row_);
            std::swap(row_bytes_, o.row_bytes_);
        }
        return *this;
    }
    ~type_pool() { release(); }

    /// Frees what the last forward made; rows of `H` floats from now on.
    void reset(std::size_t H) {
        release();
        MPI_Type_contiguous(static_cast<int>(H), MPI_FLOAT, &row_);
        MPI_Type_commit(&row_);
        row_bytes_ = static_cast<MPI_Aint>(H * sizeof(float));
    }
    [[nodiscard]] MPI_Datatype row() const noexcept { return row_; }
    /// Single rows at row indices rows[0, n) of a buffer whose rows are `stride` floats apart.
    MPI_Datatype rows_at(const std::int32_t* rows, std::size_t n, std::size_t stride) {
        at_.resize(n);
        for (std::size_t j = 0; j < n; ++j) at_[j] = static_cast<MPI_Aint>(static_cast<std::size_t>(rows[j]) * stride * sizeof(float));
        MPI_Datatype t;
        MPI_Type_create_hindexed_block(static_cast<int>(n), 1, at_.data(), row_, &t);
        return keep(t);
    }
    /// n consecutive rows from row `first`.
    MPI_Datatype run(std::size_t first, std::size_t n) {
        const MPI_Aint at = static_cast<MPI_Aint>(first) * row_bytes_;
        MPI_Datatype t;
        MPI_Type_create_hindexed_block(1, static_cast<int>(n), &at, row_, &t);
        return keep(t);
    }
    /// Runs of lens[j] rows from row first[j].
    MPI_Datatype runs(const std::vector<std::size_t>& first, const std::vector<int>& lens) {
        at_.resize(first.size());
        for (std::size_t j = 0; j < first.size(); ++j) at_[j] = static_cast<MPI_Aint>(first[j]) * row_bytes_;
        MPI_Datatype t;
        MPI_Type_create_hindexed(static_cast<int>(first.size()), lens.data(), at_.data(), row_, &t);
        return keep(t);
    }
    void release() {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) {
            for (MPI_Datatype& t : owned_) MPI_Type_free(&t);
            if (row_ != MPI_DATATYPE_NULL) MPI_Type_free(&row_);
        }
        owned_.clear();
        row_ = MPI_DATATYPE_NULL;
    }

private:
    MPI_Datatype keep(MPI_Datatype t) {
        MPI_Type_commit(&t);
        owned_.push_back(t);
        return t;
    }
    MPI_Datatype row_ = MPI_DATATYPE_NULL;
    MPI_Aint row_bytes_ = 0;
    std::vector<MPI_Datatype> owned_;
    std::vector<MPI_Aint> at_;
};

/// A communicator this library made, freed with it (unless MPI is finalized by then).
struct comm_handle {
    MPI_Comm comm = MPI_COMM_NULL;
    comm_handle() = default;
    comm_handle(const comm_handle&) = delete;
    comm_handle& operator=(const comm_handle&) = delete;
    comm_handle(comm_handle&& o) noexcept { std::swap(comm, o.comm); }
    comm_handle& operator=(comm_handle&& o) noexcept {
        std::swap(comm, o.comm);
        return *this;
    }
    ~comm_handle() { reset(); }
    void reset(MPI_Comm c = MPI_COMM_NULL) {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized && comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
        comm = c;
    }
};

/// One all-to-all of rows between the ranks of `comm` described by datatypes: per peer, one
/// datatype to send (or none) and one to receive (or none).
struct typed_alltoall {
    std::vector<MPI_Datatype> send, recv;
    std::vector<int> sc, rc, zeros;
    void reset(std::size_t peers, MPI_Datatype row) {
        send.assign(peers, row);
        recv.assign(peers, row);
        sc.assign(peers, 0);
        rc.assign(peers, 0);
        zeros.assign(peers, 0);
    }
    void run(const void* sbuf, void* rbuf, MPI_Comm comm) {
        MPI_Alltoallw(sbuf, sc.data(), zeros.data(), send.data(), rbuf, rc.data(), zeros.data(), recv.data(), comm);
    }
    /// Non-blocking: the arrays must stay as they are until the request completes.
    void start(const void* sbuf, void* rbuf, MPI_Comm comm, MPI_Request* req) {
        MPI_Ialltoallw(sbuf, sc.data(), zeros.data(), send.data(), rbuf, rc.data(), zeros.data(), recv.data(), comm, req);
    }
};

/// The row exchange of the counts protocol, in chunks. For each (chunk, peer): the rows sent and
/// received and where they sit. Rows go out as datatypes over the caller's rows and come back
/// the same way from the experts' outputs. Chunk c uses MPI_Ialltoallw so that chunk c + 1's
/// rows travel while chunk c computes.
class chunked_exchange {
public:
    struct block {
        std::size_t row;  ///< first row in the experts' output buffer
        int rows;
    };
    std::vector<int> send_rows, recv_rows;        ///< [chunk * ranks + peer]
    std::vector<std::size_t> send_off, recv_off;  ///< first row: in send (= return) order / in the receive buffer

    void reset(std::size_t chunks, std::size_t ranks) {
        C_ = chunks;
        R_ = ranks;
        send_rows.assign(C_ * R_, 0);
        recv_rows.assign(C_ * R_, 0);
        send_off.assign(C_ * R_, 0);
        recv_off.assign(C_ * R_, 0);
    }

    /// Datatypes of every (chunk, peer) but `self`: out, x's rows of the slots
    /// send_slot[send_off, +send_rows) (slot i = token i / k) into recv; back, `blocks` of
    /// `ordered` into back at send_off.
    void build(matrix_view<const float> x, const std::vector<std::int32_t>& send_slot, std::size_t k, std::size_t H, float* recv,
               float* ordered, float* back, const std::vector<std::vector<block>>& blocks, std::size_t self) {
        xbase_ = x.data;
        recv_ = recv;
        ordered_ = ordered;
        back_ = back;
        pool_.reset(H);
        out_.resize(C_);
        ret_.resize(C_);
        for (std::size_t c = 0; c < C_; ++c) {
            out_[c].reset(R_, pool_.row());
            ret_[c].reset(R_, pool_.row());
        }
        std::vector<std::int32_t> tok;
        std::vector<std::size_t> first;
        std::vector<int> lens;
        for (std::size_t i = 0; i < C_ * R_; ++i) {
            const std::size_t c = i / R_, p = i % R_;
            if (p == self) continue;  // this rank's own rows do not move (the caller computes them in place)
            if (send_rows[i] > 0) {
                tok.resize(static_cast<std::size_t>(send_rows[i]));
                for (std::size_t j = 0; j < tok.size(); ++j)
                    tok[j] = static_cast<std::int32_t>(static_cast<std::size_t>(send_slot[send_off[i] + j]) / k);
                out_[c].send[p] = pool_.rows_at(tok.data(), tok.size(), x.stride);
                out_[c].sc[p] = 1;
                ret_[c].recv[p] = pool_.run(send_off[i], static_cast<std::size_t>(send_rows[i]));
                ret_[c].rc[p] = 1;
            }
            if (recv_rows[i] > 0) {
                out_[c].recv[p] = pool_.run(recv_off[i], static_cast<std::size_t>(recv_rows[i]));
                out_[c].rc[p] = 1;
                first.clear();
                lens.clear();
                for (const block& b : blocks[i]) {
                    first.push_back(b.row);
                    lens.push_back(b.rows);
                }
                ret_[c].send[p] = pool_.runs(first, lens);
                ret_[c].sc[p] = 1;
            }
        }
        dreq_.assign(C_, MPI_REQUEST_NULL);
        rreq_.assign(C_, MPI_REQUEST_NULL);
    }
    /// Chunk c's rows out / outputs back: blocking with one chunk (nothing to overlap with, and
    /// the blocking collective is the faster one), else started and waited for later.
    void post_dispatch(std::size_t c, MPI_Comm comm) {
        if (C_ == 1) out_[c].run(xbase_, recv_, comm);
        else out_[c].start(xbase_, recv_, comm, &dreq_[c]);
    }
    void wait_dispatch(std::size_t c) { MPI_Wait(&dreq_[c], MPI_STATUS_IGNORE); }
    void post_return(std::size_t c, MPI_Comm comm) {
        if (C_ == 1) ret_[c].run(ordered_, back_, comm);
        else ret_[c].start(ordered_, back_, comm, &rreq_[c]);
    }
    /// Lets requests in flight advance (MPI progresses non-blocking collectives inside MPI calls).
    void progress() {
        int done = 0;
        MPI_Testall(static_cast<int>(dreq_.size()), dreq_.data(), &done, MPI_STATUSES_IGNORE);
        MPI_Testall(static_cast<int>(rreq_.size()), rreq_.data(), &done, MPI_STATUSES_IGNORE);
    }
    void wait_all_returns() {
        MPI_Waitall(static_cast<int>(rreq_.size()), rreq_.data(), MPI_STATUSES_IGNORE);
        pool_.release();
    }

private:
    std::size_t C_ = 0, R_ = 0;
    const float* xbase_ = nullptr;
    float *recv_ = nullptr, *ordered_ = nullptr, *back_ = nullptr;
    type_pool pool_;
    std::vector<typed_alltoall> out_, ret_;  ///< per chunk: rows out, outputs back
    std::vector<MPI_Request> dreq_, rreq_;
};

}  // namespace detail

/// The global-batch load-balancing loss terms over all ranks: each rank's terms, summed by
/// MPI_Allreduce (counts, P sums, tokens, slots, routed tokens). Feed them to `aux_loss_value` or
/// `global_load_balancer::merge`.
inline aux_loss_terms allreduce_terms(MPI_Comm comm, const aux_loss_terms& local) {
    aux_loss_terms g = local;
    const int E = static_cast<int>(local.prob_sum.size());
    MPI_Allreduce(MPI_IN_PLACE, g.prob_sum.data(), E, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, g.counts.data(), E, MPI_DOUBLE, MPI_SUM, comm);
    double scalars[3] = {local.tokens, local.slots, local.routed_tokens};
    MPI_Allreduce(MPI_IN_PLACE, scalars, 3, MPI_DOUBLE, MPI_SUM, comm);
    g.tokens = scalars[0];
    g.slots = scalars[1];
    g.routed_tokens = scalars[2];
    return g;
}

/// The MoE block (`moe::block`, plain SwiGLU experts in any weight format W) with its experts
/// spread over the ranks of `comm`.
template <class Arch = default_arch, class W = float>
class expert_parallel_block {
    using experts_t = stages::experts<Arch, W>;

public:
    /// The element type of the expert weights the constructors take: W for float types, float
    /// for quantized formats (each rank quantizes its own experts with the format's reference
    /// quantizer, as `moe::block` does, so the outputs match it bit for bit).
    using source_type = typename experts_t::source;

    /// Every rank passes the same router weights, expert weights (E experts, HF layout; only
    /// this rank's experts are packed), placement and options. A malformed placement on any
    /// rank makes every rank throw [moe.mpi.placement].
    /// @param placement_aware  reroute overflow only to experts on the rank that would have
    ///                         received it (Rectify-Router intra-GPU rectification)
    expert_parallel_block(MPI_Comm comm, matrix_view<const float> router_w, const source_type* w1, const source_type* w3, const source_type* w2,
                          std::size_t ffn, const placement& pl, const layer_options& o = {}, bool placement_aware = false)
        : comm_(comm), opt_(o), E_(router_w.rows), H_(router_w.cols), F_(ffn), placement_aware_(placement_aware) {
        MPI_Comm_rank(comm_, &rank_);
        MPI_Comm_size(comm_, &size_);
        bool ok = pl.owner.size() == E_;
        for (std::int32_t r : pl.owner) ok = ok && r >= 0 && r < size_;
        detail::agree(comm_, ok, "moe.mpi.placement",
                      "placement must map all " + std::to_string(E_) + " experts to ranks in [0, " + std::to_string(size_) +
                          ")");
        owner_ = pl.owner;
        P_ = E_;
        phy2log_.resize(E_);
        for (std::size_t e = 0; e < E_; ++e) phy2log_[e] = static_cast<std::int32_t>(e);
        init(router_w, w1, w3, w2);
    }

    /// With replicas: physical expert q of layer `layer` of `rp` runs on rank
    /// rp.device_of(q) (rp.num_devices must equal the communicator size) with the weights of
    /// logical expert rp.phy2log[q]; `policy` picks each slot's replica. Placement-aware
    /// reroute is not available here. Throws [moe.mpi.placement] on every rank for a placement
    /// that does not fit the layer or the communicator.
    expert_parallel_block(MPI_Comm comm, matrix_view<const float> router_w, const source_type* w1, const source_type* w3, const source_type* w2,
                          std::size_t ffn, const replica_placement& rp, std::size_t layer = 0,
                          replica_policy policy = replica_policy::round_robin, const layer_options& o = {})
        : comm_(comm), opt_(o), E_(router_w.rows), H_(router_w.cols), F_(ffn), placement_aware_(false) {
        MPI_Comm_rank(comm_, &rank_);
        MPI_Comm_size(comm_, &size_);
        const bool ok = rp.num_logical == E_ && rp.num_devices == static_cast<std::size_t>(size_) && layer < rp.num_layers &&
                        rp.phy2log.size() == rp.num_layers * rp.num_physical;
        detail::agree(comm_, ok, "moe.mpi.placement",
                      "replica placement must cover the " + std::to_string(E_) + " experts of layer " + std::to_string(layer) + " on " +
                          std::to_string(size_) + " ranks (it has " + std::to_string(rp.num_logical) + " experts, " +
                          std::to_string(rp.num_layers) + " layers, " + std::to_string(rp.num_devices) + " devices)");
        replicas_ = rp;
        replica_layer_ = layer;
        replica_policy_ = policy;
        replicated_ = true;
        P_ = rp.num_physical;
        owner_ = rp.physical_devices();
        phy2log_.assign(rp.phy2log.begin() + static_cast<std::ptrdiff_t>(layer * P_),
                        rp.phy2log.begin() + static_cast<std::ptrdiff_t>((layer + 1) * P_));
        init(router_w, w1, w3, w2);
    }

    /// y_local (T_local x H) = the layer applied to this rank's tokens x_local (T_local x H).
    /// Collective: every rank of the communicator calls it (T_local may be 0).
    template <class Executor = serial_executor>
    void forward(matrix_view<float> y, matrix_view<const float> x, Executor&& exec = {}) {
        const std::size_t T = x.rows, k = opt_.router.top_k;
        if (x.cols != H_ || y.cols != H_ || y.rows != T)
            MOE_THROW("moe.layer.shape", "x is ", x.rows, " x ", x.cols, ", y ", y.rows, " x ", y.cols, "; hidden=", H_);
        if (protocol_ != ep_protocol::allgather && counts_supported()) {
            forward_counts(y, x, exec);
            return;
        }
        // 1. Gate and route the local tokens.
        logits_.resize(T * E_);
        routing<float> local(T, E_, k, opt_.router.keep_scores);
        if (T > 0) stages::gate_route<Arch>(local, logits_, x, gate_, {}, opt_.router, {}, router_ws_, exec);
        // 2. Allgather the routings (token order = rank order = the concatenated batch).
        int t_local = static_cast<int>(T);
        tokens_of_.assign(static_cast<std::size_t>(size_), 0);
        MPI_Allgather(&t_local, 1, MPI_INT, tokens_of_.data(), 1, MPI_INT, comm_);
        std::size_t T_all = 0, first = 0;
        for (int r = 0; r < size_; ++r) {
            if (r < rank_) first += static_cast<std::size_t>(tokens_of_[static_cast<std::size_t>(r)]);
            T_all += static_cast<std::size_t>(tokens_of_[static_cast<std::size_t>(r)]);
        }
        routing<float> g(T_all, E_, k, false);
        detail::allgather_tokens(comm_, local.indices.data(), T, k, tokens_of_, g.indices);
        detail::allgather_tokens(comm_, local.weights.data(), T, k, tokens_of_, g.weights);
        if (opt_.router.keep_scores) detail::allgather_tokens(comm_, local.scores.data(), T, E_, tokens_of_, g.scores);
        // 3. The capacity plan of the global batch, identical on every rank.
        stats_ = ep_stats{};
        stats_.metadata_bytes = static_cast<std::size_t>(size_ - 1) *
                                (sizeof(int) + T * k * (sizeof(std::int32_t) + sizeof(float)) + (opt_.router.keep_scores ? T * E_ * sizeof(float) : 0));
        if (opt_.capacity) {
            routing<float> plain;
            if (placement_aware_) plain = g;
            const capacity_report rep = apply_capacity(g, opt_.drop);
            stats_.dropped = rep.dropped.size();
            stats_.rerouted = rep.rerouted.size();
            if (opt_.fill_in) g = fill_in(g, rep.capacity);
            if (placement_aware_) {
                drop_config d = opt_.drop;
                d.placement.clear();
                apply_capacity(plain, d);
                stats_.bytes_saved = cross_rank_rows(plain) > cross_rank_rows(g)
                                         ? 2 * (cross_rank_rows(plain) - cross_rank_rows(g)) * H_ * sizeof(float)
                                         : 0;
            }
        }
        // Replicas: each slot to one replica of its expert (the same choice on every rank).
        routing<float> gp;
        if (replicated_) gp = to_physical(g, replicas_, replica_layer_, replica_policy_);
        const routing<float>& gr = replicated_ ? gp : g;
        const dispatch_plan plan = make_plan(gr);
        const std::size_t kk = g.top_k;  // fill-in may widen the routing
        auto token_rank = [&](std::size_t t) {
            std::size_t acc = 0;
            for (int r = 0; r < size_; ++r) {
                acc += static_cast<std::size_t>(tokens_of_[static_cast<std::size_t>(r)]);
                if (t < acc) return r;
            }
            return size_ - 1;
        };
        std::vector<int> tok_rank(T_all);
        for (std::size_t t = 0; t < T_all; ++t) tok_rank[t] = token_rank(t);
        // 4. Rows each rank sends to each rank, in the receiver's plan order.
        std::vector<int> send_counts(static_cast<std::size_t>(size_), 0), recv_counts(static_cast<std::size_t>(size_), 0);
        stats_.rank_rows.assign(static_cast<std::size_t>(size_), 0);
        for (std::size_t e = 0; e < P_; ++e) {
            const int q = owner_[e];
            for (auto r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
                const int p = tok_rank[static_cast<std::size_t>(plan.row_token[static_cast<std::size_t>(r)])];
                ++stats_.rank_rows[static_cast<std::size_t>(q)];
                if (p == rank_) ++send_counts[static_cast<std::size_t>(q)];
                if (q == rank_) ++recv_counts[static_cast<std::size_t>(p)];
            }
        }
        std::vector<int> sdispl(static_cast<std::size_t>(size_) + 1, 0), rdispl(static_cast<std::size_t>(size_) + 1, 0);
        for (int r = 0; r < size_; ++r) {
            sdispl[static_cast<std::size_t>(r) + 1] = sdispl[static_cast<std::size_t>(r)] + send_counts[static_cast<std::size_t>(r)];
            rdispl[static_cast<std::size_t>(r) + 1] = rdispl[static_cast<std::size_t>(r)] + recv_counts[static_cast<std::size_t>(r)];
        }
        const std::size_t n_send = static_cast<std::size_t>(sdispl.back()), n_recv = static_cast<std::size_t>(rdispl.back());
        send_.resize(n_send * H_);
        recv_.resize(n_recv * H_);
        // Pack: for each destination q in order, its experts' rows whose token is ours.
        std::vector<int> fill(static_cast<std::size_t>(size_), 0);
        std::vector<std::int32_t> send_slot(n_send);  // (t_local * kk + s) of each sent row
        for (std::size_t e = 0; e < P_; ++e) {
            const int q = owner_[e];
            for (auto r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
                const std::size_t t = static_cast<std::size_t>(plan.row_token[static_cast<std::size_t>(r)]);
                if (tok_rank[t] != rank_) continue;
                const std::size_t pos = static_cast<std::size_t>(sdispl[static_cast<std::size_t>(q)] + fill[static_cast<std::size_t>(q)]++);
                std::copy(x.row(t - first), x.row(t - first) + H_, send_.begin() + static_cast<std::ptrdiff_t>(pos * H_));
                send_slot[pos] = static_cast<std::int32_t>((t - first) * kk + static_cast<std::size_t>(plan.row_slot[static_cast<std::size_t>(r)]));
            }
        }
        alltoallv_rows(send_.data(), send_counts, sdispl, recv_.data(), recv_counts, rdispl);
        for (int r = 0; r < size_; ++r)
            if (r != rank_) {
                stats_.rows_sent += static_cast<std::size_t>(send_counts[static_cast<std::size_t>(r)]);
                stats_.rows_received += static_cast<std::size_t>(recv_counts[static_cast<std::size_t>(r)]);
            }
        // 5. The local experts on the received rows, in local plan order (expert, then rows).
        dispatch_plan lp;
        const std::size_t L = local_experts_.size();
        lp.num_experts = L;
        lp.top_k = 1;
        lp.offsets.assign(L + 1, 0);
        lp.counts.assign(L, 0);
        std::vector<int> from(static_cast<std::size_t>(size_), 0);
        for (std::size_t i = 0; i < L; ++i) {
            const std::size_t e = local_experts_[i];
            for (auto r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
                const int p = tok_rank[static_cast<std::size_t>(plan.row_token[static_cast<std::size_t>(r)])];
                lp.row_token.push_back(rdispl[static_cast<std::size_t>(p)] + from[static_cast<std::size_t>(p)]++);
                lp.row_slot.push_back(0);
            }
            lp.counts[i] = static_cast<std::int32_t>(lp.row_token.size()) - lp.offsets[i];
            lp.offsets[i + 1] = static_cast<std::int32_t>(lp.row_token.size());
        }
        lp.num_tokens = n_recv;
        run_local_experts(lp, exec);
        // 6. Outputs go back the way the rows came (same counts, reversed).
        back_.resize(n_send * H_);
        alltoallv_rows(out_.data(), recv_counts, rdispl, back_.data(), send_counts, sdispl);
        for (int r = 0; r < size_; ++r)
            if (r != rank_)
                stats_.bytes_on_wire += (static_cast<std::size_t>(send_counts[static_cast<std::size_t>(r)]) +
                                         static_cast<std::size_t>(recv_counts[static_cast<std::size_t>(r)])) *
                                        H_ * sizeof(float);
        // 7. Combine this rank's tokens in slot order, exactly as the single-process layer does.
        routing<float> mine(T, E_, kk, false);
        std::copy(g.indices.begin() + static_cast<std::ptrdiff_t>(first * kk), g.indices.begin() + static_cast<std::ptrdiff_t>((first + T) * kk),
                  mine.indices.begin());
        std::copy(g.weights.begin() + static_cast<std::ptrdiff_t>(first * kk), g.weights.begin() + static_cast<std::ptrdiff_t>((first + T) * kk),
                  mine.weights.begin());
        dispatch_plan cp;
        cp.num_tokens = T;
        cp.num_experts = 1;
        cp.top_k = kk;
        cp.offsets = {0, static_cast<std::int32_t>(n_send)};
        cp.slot_row.assign(T * kk, -1);
        for (std::size_t i = 0; i < n_send; ++i) cp.slot_row[static_cast<std::size_t>(send_slot[i])] = static_cast<std::int32_t>(i);
        combine<Arch>(y, matrix_view<const float>(back_.data(), n_send, H_), cp, mine, exec);
        stats_.max_over_mean = rank_balance(stats_.rank_rows);
        local_ = mine;
        last_ = std::move(g);
    }

    /// Chooses the protocol: `automatic` (counts where it applies), or either one explicitly.
    /// Throws [moe.mpi.protocol] for `counts` with options it cannot serve.
    void set_protocol(ep_protocol p) {
        if (p == ep_protocol::counts && !counts_supported())
            MOE_THROW("moe.mpi.protocol", "the counts protocol serves dropless and drop-only capacity, with round-robin replicas; reroute, "
                                          "fill-in, placement-aware reroute and least-loaded replicas use allgather");
        protocol_ = p;
    }
    [[nodiscard]] ep_protocol protocol() const noexcept { return protocol_; }
    /// Splits the row exchange of each forward of the counts protocol into `n` chunks pipelined
    /// with the experts: chunk c + 1's rows travel (MPI_Ialltoallw) while chunk c computes, and
    /// chunk c's outputs travel back while chunk c + 1 computes. A chunk is an equal part of
    /// each owner's (local expert, token) sequence: with at least n experts per rank, whole
    /// experts; with fewer, token ranges of them; an expert's weights are read about once
    /// either way. The results do not depend on `n`. Collective: every rank passes the same n (else every rank
    /// throws [moe.mpi.chunks]). The allgather protocol ignores it.
    void set_chunks(std::size_t n) {
        long long v[2] = {static_cast<long long>(n), -static_cast<long long>(n)};
        MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_LONG_LONG, MPI_MAX, comm_);
        if (n == 0 || v[0] != -v[1])
            MOE_THROW("moe.mpi.chunks", "chunks must be >= 1 and the same on every rank (this rank: ", n, ", largest: ", v[0], ")");
        chunks_ = n;
    }
    [[nodiscard]] std::size_t chunks() const noexcept { return chunks_; }

    /// Groups the ranks into nodes. With `hierarchical`, the counts protocol exchanges in two
    /// levels (the hierarchical dispatch of DeepEP and Tutel): a token's row crosses to another
    /// node once, to the rank there with the sender's local index, which forwards it to the
    /// ranks of its node that own the token's experts; outputs return the same way, one per
    /// slot (summing them on the way would change the rounding of the single-process layer).
    /// Without, the flat exchange runs and `ep_stats::inter_node_bytes` reports what crossed.
    /// @param ranks_per_node  0: the ranks that share memory (MPI_Comm_split_type with
    ///                        MPI_COMM_TYPE_SHARED); n > 0: n consecutive ranks per node, to
    ///                        try topologies on one machine
    /// Collective. Every node must have the same number of ranks, else every rank throws
    /// [moe.mpi.topology]; the two-level exchange runs one chunk (set_chunks > 1 throws then).
    void set_topology(int ranks_per_node, bool hierarchical = true) {
        const std::size_t R = static_cast<std::size_t>(size_), me = static_cast<std::size_t>(rank_);
        detail::agree(comm_, ranks_per_node >= 0 && (ranks_per_node == 0 || size_ % ranks_per_node == 0), "moe.mpi.topology",
                      std::to_string(ranks_per_node) + " ranks per node do not divide " + std::to_string(size_) + " ranks");
        MPI_Comm node = MPI_COMM_NULL;
        if (ranks_per_node > 0) MPI_Comm_split(comm_, rank_ / ranks_per_node, rank_, &node);
        else MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
        int g = 0, l = 0, leader = rank_;
        MPI_Comm_size(node, &g);
        MPI_Comm_rank(node, &l);
        MPI_Allreduce(MPI_IN_PLACE, &leader, 1, MPI_INT, MPI_MIN, node);
        int sizes[2] = {g, -g};
        MPI_Allreduce(MPI_IN_PLACE, sizes, 2, MPI_INT, MPI_MAX, comm_);
        if (sizes[0] != -sizes[1]) {
            MPI_Comm_free(&node);
            MOE_THROW("moe.mpi.topology", "nodes have between ", -sizes[1], " and ", sizes[0], " ranks; the two-level exchange needs equal nodes");
        }
        std::vector<int> info(2 * R);
        const int mine[2] = {leader, l};
        MPI_Allgather(mine, 2, MPI_INT, info.data(), 2, MPI_INT, comm_);
        std::vector<int> leaders;
        for (std::size_t r = 0; r < R; ++r) leaders.push_back(info[2 * r]);
        std::sort(leaders.begin(), leaders.end());
        leaders.erase(std::unique(leaders.begin(), leaders.end()), leaders.end());
        nodes_ = leaders.size();
        node_size_ = static_cast<std::size_t>(g);
        node_of_.resize(R);
        local_of_.resize(R);
        rank_at_.assign(R, 0);
        for (std::size_t r = 0; r < R; ++r) {
            node_of_[r] = static_cast<std::size_t>(std::lower_bound(leaders.begin(), leaders.end(), info[2 * r]) - leaders.begin());
            local_of_[r] = static_cast<std::size_t>(info[2 * r + 1]);
            rank_at_[node_of_[r] * node_size_ + local_of_[r]] = static_cast<int>(r);
        }
        MPI_Comm cross = MPI_COMM_NULL;
        MPI_Comm_split(comm_, l, static_cast<int>(node_of_[me]), &cross);
        node_.reset(node);
        cross_.reset(cross);
        // Experts in (node, local rank, expert) order, and where each node's experts begin.
        std::vector<std::size_t> order(P_);
        for (std::size_t e = 0; e < P_; ++e) order[e] = e;
        const auto key = [&](std::size_t e) {
            const auto r = static_cast<std::size_t>(owner_[e]);
            return node_of_[r] * node_size_ + local_of_[r];
        };
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return key(a) < key(b); });
        hpos_.resize(P_);
        nbeg_.assign(nodes_ + 1, P_);
        for (std::size_t i = P_; i-- > 0;) {
            hpos_[order[i]] = i;
            nbeg_[node_of_[static_cast<std::size_t>(owner_[order[i]])]] = i;
        }
        for (std::size_t n = nodes_; n-- > 0;) nbeg_[n] = std::min(nbeg_[n], nbeg_[n + 1]);
        hierarchical_ = hierarchical;
    }
    /// This rank's routing of the last forward, after the capacity stage (both protocols).
    [[nodiscard]] const routing<float>& last_local_routing() const noexcept { return local_; }

    [[nodiscard]] const ep_stats& last_stats() const noexcept { return stats_; }
    /// The global routing of the last forward (after the capacity stage), identical on every rank;
    /// the allgather protocol only (empty after a counts forward).
    [[nodiscard]] const routing<float>& last_global_routing() const noexcept { return last_; }
    [[nodiscard]] matrix_view<const float> last_local_logits() const noexcept {
        return {logits_.data(), logits_.size() / E_, E_};
    }
    [[nodiscard]] const std::vector<std::size_t>& local_experts() const noexcept { return local_experts_; }

private:
    /// The local experts on the received rows (recv_, lp's order: expert, then rows), outputs
    /// scattered back into receive order in out_.
    template <class Executor>
    void run_local_experts(const dispatch_plan& lp, Executor&& exec) {
        const std::size_t n_recv = lp.num_tokens;
        out_.resize(n_recv * H_);
        if (local_experts_.empty() || n_recv == 0) return;
        ordered_.resize(n_recv * H_);
        experts_t::run(matrix_view<float>(ordered_.data(), n_recv, H_), matrix_view<const float>(recv_.data(), n_recv, H_), lp, experts_,
                       ws_, exec);
        for (std::size_t r = 0; r < n_recv; ++r)
            std::copy(ordered_.begin() + static_cast<std::ptrdiff_t>(r * H_), ordered_.begin() + static_cast<std::ptrdiff_t>((r + 1) * H_),
                      out_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(lp.row_token[r]) * H_));
    }

    /// max / mean of the rows each rank computed (the straggler across ranks).
    [[nodiscard]] double rank_balance(const std::vector<std::size_t>& rows) const {
        double mean = 0, mx = 0;
        for (std::size_t v : rows) {
            mean += static_cast<double>(v);
            mx = std::max(mx, static_cast<double>(v));
        }
        mean /= static_cast<double>(size_);
        return mean > 0 ? mx / mean : 0.0;
    }

    [[nodiscard]] bool counts_supported() const noexcept {
        return !(replicated_ && replica_policy_ != replica_policy::round_robin) && !placement_aware_ &&
               !(opt_.capacity && (opt_.drop.reroute || opt_.fill_in));
    }

    /// One slot's ranking record for its expert's owner: a desc, then b desc, then c asc, as
    /// apply_capacity ranks (see there); e = the expert, slot = its local index t * k + s.
    struct rank_record {
        double a, b;
        long long c;
        std::int32_t e, slot;
    };

    template <class Executor>
    void forward_counts(matrix_view<float> y, matrix_view<const float> x, Executor&& exec) {
        const std::size_t T = x.rows, k = opt_.router.top_k;
        if (hierarchical_ && chunks_ > 1)
            MOE_THROW("moe.mpi.topology", "the two-level exchange runs in one chunk; set_chunks(1) or set_topology(n, false)");
        stats_ = ep_stats{};
        stats_.counts_protocol = true;
        const double t_start = MPI_Wtime();
        // 1. Gate and route the local tokens.
        logits_.resize(T * E_);
        routing<float> loc(T, E_, k, opt_.router.keep_scores);
        if (T > 0) stages::gate_route<Arch>(loc, logits_, x, gate_, {}, opt_.router, {}, router_ws_, exec);
        const double t_routed = MPI_Wtime();
        // 2. Global loads per expert, routed slots, routed tokens and tokens: one allreduce.
        load_.assign(E_ + 3, 0);
        for (std::size_t t = 0; t < T; ++t) {
            long long n = 0;
            for (std::size_t s = 0; s < k; ++s)
                if (loc.index(t, s) >= 0) {
                    ++load_[static_cast<std::size_t>(loc.index(t, s))];
                    ++n;
                }
            load_[E_] += n;
            load_[E_ + 1] += n > 0;
        }
        load_[E_ + 2] = static_cast<long long>(T);
        MPI_Allreduce(MPI_IN_PLACE, load_.data(), static_cast<int>(E_ + 3), MPI_LONG_LONG, MPI_SUM, comm_);
        stats_.metadata_bytes += (E_ + 3) * sizeof(long long);
        kept_.assign(load_.begin(), load_.begin() + static_cast<std::ptrdiff_t>(E_));
        // 3. Capacity: owners rank the slots of over-full experts (global token order: this
        //    rank's first token from an exscan).
        long long first = 0;
        if (opt_.capacity || replicated_) {
            const long long t_local = static_cast<long long>(T);
            MPI_Exscan(&t_local, &first, 1, MPI_LONG_LONG, MPI_SUM, comm_);
            if (rank_ == 0) first = 0;
            stats_.metadata_bytes += sizeof(long long);
        }
        if (opt_.capacity) capacity_by_owners(loc, static_cast<std::size_t>(first), static_cast<std::size_t>(load_[E_ + 2]));
        // Each kept slot's plan expert: the logical expert, or with replicas its replica
        // (global token index modulo the replicas, as to_physical's round robin).
        phys_.resize(T * k);
        for (std::size_t i = 0; i < T * k; ++i) {
            const std::int32_t e = loc.indices[i];
            if (e < 0 || !replicated_) {
                phys_[i] = e;
                continue;
            }
            const auto n = static_cast<std::size_t>(replicas_.replicas(replica_layer_, static_cast<std::size_t>(e)));
            phys_[i] = replicas_.physical(replica_layer_, static_cast<std::size_t>(e), (static_cast<std::size_t>(first) + i / k) % n);
        }
        if (hierarchical_) {
            forward_hierarchical(y, x, loc, t_start, t_routed, exec);
            return;
        }
        // 4. Kept slots in (chunk, owner, expert, token) order: a counting sort by the bucket
        //    chunk * P + epos_[e] (experts ordered by owner, then index). This order is the
        //    send order and, on the way back, the order the outputs arrive in. Chunks cut each
        //    owner's (expert, token) sequence into equal parts, so that an expert's rows are
        //    split at most at a chunk boundary: its weights are read about once per forward,
        //    whatever the number of chunks (token chunks would read them once per chunk).
        const std::size_t R = static_cast<std::size_t>(size_), L = local_experts_.size(), C = chunks_, NB = C * P_;
        const auto bucket_of = [&](std::size_t i) {
            const auto e = static_cast<std::size_t>(phys_[i]);
            const auto q = static_cast<std::size_t>(owner_[e]);
            const std::size_t li = epos_[e] - ebeg_[q], nq = ebeg_[q + 1] - ebeg_[q];
            const std::size_t c = static_cast<std::size_t>((static_cast<unsigned long long>(li) * T + i / k) * C / (static_cast<unsigned long long>(nq) * T));
            return c * P_ + epos_[e];
        };
        bucket_.assign(NB + 1, 0);
        for (std::size_t i = 0; i < T * k; ++i)
            if (phys_[i] >= 0) ++bucket_[bucket_of(i) + 1];
        for (std::size_t b = 0; b < NB; ++b) bucket_[b + 1] += bucket_[b];
        const std::size_t n_send = bucket_[NB];
        send_slot_.resize(n_send);
        cursor_.assign(bucket_.begin(), bucket_.end() - 1);
        for (std::size_t i = 0; i < T * k; ++i)
            if (phys_[i] >= 0) send_slot_[cursor_[bucket_of(i)]++] = static_cast<std::int32_t>(i);
        // Per-(chunk, expert) counts to each owner: C x (its experts) ints, (chunk, expert) order.
        cnt_send_.clear();
        std::vector<int> cnt_sc(R), cnt_sd(R + 1, 0), cnt_rc(R), cnt_rd(R + 1, 0);
        for (std::size_t q = 0; q < R; ++q) {
            for (std::size_t c = 0; c < C; ++c)
                for (std::size_t j = ebeg_[q]; j < ebeg_[q + 1]; ++j)
                    cnt_send_.push_back(static_cast<int>(bucket_[c * P_ + j + 1] - bucket_[c * P_ + j]));
            cnt_sc[q] = static_cast<int>(C * (ebeg_[q + 1] - ebeg_[q]));
            cnt_sd[q + 1] = cnt_sd[q] + cnt_sc[q];
            cnt_rc[q] = static_cast<int>(C * L);
            cnt_rd[q + 1] = cnt_rd[q] + cnt_rc[q];
        }
        cnt_recv_.resize(static_cast<std::size_t>(cnt_rd[R]));
        MPI_Alltoallv(cnt_send_.data(), cnt_sc.data(), cnt_sd.data(), MPI_INT, cnt_recv_.data(), cnt_rc.data(), cnt_rd.data(), MPI_INT, comm_);
        stats_.metadata_bytes += static_cast<std::size_t>(cnt_sd[R] - cnt_sc[static_cast<std::size_t>(rank_)]) * sizeof(int);
        const auto cnt = [&](std::size_t p, std::size_t c, std::size_t i) { return cnt_recv_[(p * C + c) * L + i]; };
        // Rows per (chunk, peer) each way. Receive layout: chunk, then source rank, then local
        // expert, then the source's token order.
        ex_.reset(C, R);
        const auto self = static_cast<std::size_t>(rank_);
        std::size_t n_recv = 0;
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t p = 0; p < R; ++p) {
                ex_.send_rows[c * R + p] = static_cast<int>(bucket_[c * P_ + ebeg_[p + 1]] - bucket_[c * P_ + ebeg_[p]]);
                ex_.send_off[c * R + p] = bucket_[c * P_ + ebeg_[p]];
                int rows = 0;
                for (std::size_t i = 0; i < L && p != self; ++i) rows += cnt(p, c, i);
                ex_.recv_rows[c * R + p] = rows;  // this rank's own rows are not received: see below
                ex_.recv_off[c * R + p] = n_recv;
                n_recv += static_cast<std::size_t>(rows);
            }
        recv_.resize(n_recv * H_);
        ordered_.resize(n_recv * H_);
        back_.resize(n_send * H_);
        // Each chunk's plan of received rows: local expert, then source, then token; outputs
        // land in ordered_ in that order (chunk c's range is its receive range) and go back as
        // L blocks per source. This rank's own rows never move: their plan reads x and writes
        // straight into back_, where their outputs would have come back to.
        plans_.resize(C);
        self_plans_.resize(C);
        std::vector<std::size_t> at;  // per source: the next row of its receive range
        ret_blocks_.assign(C * R, {});
        for (std::size_t c = 0; c < C; ++c) {
            dispatch_plan& sp = self_plans_[c];
            sp = dispatch_plan{};
            sp.num_experts = L;
            sp.top_k = 1;
            sp.num_tokens = T;
            sp.offsets.assign(L + 1, 0);
            sp.counts.assign(L, 0);
            for (std::size_t i = 0; i < L; ++i) {
                const std::size_t b = c * P_ + epos_[local_experts_[i]];
                for (std::size_t j = bucket_[b]; j < bucket_[b + 1]; ++j) {
                    sp.row_token.push_back(static_cast<std::int32_t>(static_cast<std::size_t>(send_slot_[j]) / k));
                    sp.row_slot.push_back(0);
                }
                sp.counts[i] = static_cast<std::int32_t>(sp.row_token.size()) - sp.offsets[i];
                sp.offsets[i + 1] = static_cast<std::int32_t>(sp.row_token.size());
            }
        }
        for (std::size_t c = 0; c < C; ++c) {
            dispatch_plan& lp = plans_[c];
            lp = dispatch_plan{};
            lp.num_experts = L;
            lp.top_k = 1;
            lp.num_tokens = n_recv;
            lp.offsets.assign(L + 1, 0);
            lp.counts.assign(L, 0);
            const std::size_t base = ex_.recv_off[c * R];
            at.assign(ex_.recv_off.begin() + static_cast<std::ptrdiff_t>(c * R), ex_.recv_off.begin() + static_cast<std::ptrdiff_t>((c + 1) * R));
            for (std::size_t i = 0; i < L; ++i) {
                for (std::size_t p = 0; p < R; ++p) {
                    if (p == self) continue;
                    const int n = cnt(p, c, i);  // source p's rows of expert i: next in its receive range
                    if (n > 0) ret_blocks_[c * R + p].push_back({base + lp.row_token.size(), n});
                    for (int r = 0; r < n; ++r) {
                        lp.row_token.push_back(static_cast<std::int32_t>(at[p]++));
                        lp.row_slot.push_back(0);
                    }
                }
                lp.counts[i] = static_cast<std::int32_t>(lp.row_token.size()) - lp.offsets[i];
                lp.offsets[i + 1] = static_cast<std::int32_t>(lp.row_token.size());
            }
        }
        // 5. Per chunk: rows out (x's rows as they are, no packing copy), the local experts,
        //    outputs back; chunk c + 1's rows travel while chunk c computes.
        ex_.build(x, send_slot_, k, H_, recv_.data(), ordered_.data(), back_.data(), ret_blocks_, static_cast<std::size_t>(rank_));
        ex_.post_dispatch(0, comm_);
        double t_dispatched = 0, experts = 0, experts_before = 0;
        // The local experts on a plan's rows of `src`, outputs to `dst` in plan order: in one call,
        // or, while transfers are in flight (chunks > 1), one expert at a time with MPI progress
        // in between (MPI moves non-blocking collectives inside MPI calls).
        const auto run = [&](const dispatch_plan& lp, matrix_view<const float> src, float* dst, bool in_flight) {
            if (L == 0 || lp.num_rows() == 0) return;
            const double e0 = MPI_Wtime();
            if (!in_flight) {
                experts_t::run(matrix_view<float>(dst, lp.num_rows(), H_), src, lp, experts_, ws_, exec);
            } else {
                for (std::size_t i = 0; i < L; ++i) {
                    const auto b = static_cast<std::size_t>(lp.offsets[i]), n = static_cast<std::size_t>(lp.counts[i]);
                    if (n == 0) continue;
                    sub_.num_experts = L;
                    sub_.top_k = 1;
                    sub_.num_tokens = lp.num_tokens;
                    sub_.offsets.assign(L + 1, 0);
                    std::fill(sub_.offsets.begin() + static_cast<std::ptrdiff_t>(i) + 1, sub_.offsets.end(), static_cast<std::int32_t>(n));
                    sub_.counts.assign(L, 0);
                    sub_.counts[i] = static_cast<std::int32_t>(n);
                    sub_.row_token.assign(lp.row_token.begin() + static_cast<std::ptrdiff_t>(b), lp.row_token.begin() + static_cast<std::ptrdiff_t>(b + n));
                    sub_.row_slot.assign(n, 0);
                    experts_t::run(matrix_view<float>(dst + b * H_, n, H_), src, sub_, experts_, ws_, exec);
                    ex_.progress();
                }
            }
            experts += MPI_Wtime() - e0;
        };
        for (std::size_t c = 0; c < C; ++c) {
            if (c + 1 < C) ex_.post_dispatch(c + 1, comm_);
            run(self_plans_[c], x, back_.data() + ex_.send_off[c * R + self] * H_, C > 1);  // while rows travel
            ex_.wait_dispatch(c);
            if (c == 0) {
                t_dispatched = MPI_Wtime();
                experts_before = experts;
            }
            run(plans_[c], matrix_view<const float>(recv_.data(), n_recv, H_), ordered_.data() + ex_.recv_off[c * R] * H_, c + 1 < C);
            ex_.post_return(c, comm_);
            ex_.progress();
        }
        ex_.wait_all_returns();
        const double t_returned = MPI_Wtime();
        // Stats: rows per rank (O(ranks)), wire bytes.
        stats_.send_rows.assign(R, 0);
        stats_.recv_rows.assign(R, 0);
        for (std::size_t c = 0; c < C; ++c)
            for (std::size_t r = 0; r < R; ++r) {
                stats_.send_rows[r] += ex_.send_rows[c * R + r];
                stats_.recv_rows[r] += r == self ? ex_.send_rows[c * R + r] : ex_.recv_rows[c * R + r];
            }
        for (std::size_t r = 0; r < R; ++r)
            if (r != self) {
                const std::size_t moved = static_cast<std::size_t>(stats_.send_rows[r]) + static_cast<std::size_t>(stats_.recv_rows[r]);
                stats_.rows_sent += static_cast<std::size_t>(stats_.send_rows[r]);
                stats_.rows_received += static_cast<std::size_t>(stats_.recv_rows[r]);
                stats_.bytes_on_wire += moved * H_ * sizeof(float);
                if (!node_of_.empty() && node_of_[r] != node_of_[self]) stats_.inter_node_bytes += moved * H_ * sizeof(float);
            }
        // 6. The weighted sum in slot order, as the single-process layer.
        finish_counts(y, loc, n_send, n_recv + static_cast<std::size_t>(stats_.send_rows[self]), exec);
        stats_.route_s = t_routed - t_start;
        stats_.dispatch_s = t_dispatched - t_routed - experts_before;  // less the own rows' experts, which ran meanwhile
        stats_.experts_s = experts;
        stats_.return_s = (t_returned - t_routed) - stats_.dispatch_s - experts;
    }

    /// The two-level exchange (set_topology): rows cross nodes once per (token, node), to the
    /// rank of that node with the sender's local index, which forwards them to the ranks of its
    /// node that own the token's experts; outputs come back the same way, one per slot, so that
    /// the weighted sum runs in slot order as in the single-process layer.
    template <class Executor>
    void forward_hierarchical(matrix_view<float> y, matrix_view<const float> x, routing<float>& loc, double t_start, double t_routed,
                              Executor&& exec) {
        const std::size_t T = x.rows, k = loc.top_k, R = static_cast<std::size_t>(size_), N = nodes_, G = node_size_;
        const std::size_t me = static_cast<std::size_t>(rank_), my_node = node_of_[me], my_l = local_of_[me];
        const std::size_t rec1 = k + 1, rec2 = k + 2;  // records: {t, experts} to relays, {source, t, experts} to owners
        pool_.reset(H_);
        const auto ph = [&](std::size_t t, std::size_t s) { return phys_[t * k + s]; };  // plan (physical) expert of a slot
        const auto node_of_expert = [&](std::int32_t e) { return node_of_[static_cast<std::size_t>(owner_[static_cast<std::size_t>(e)])]; };
        // 1. This rank's slots in (node, local rank, expert, token) order: the order outputs come back in.
        bucket_.assign(P_ + 1, 0);
        for (std::size_t i = 0; i < T * k; ++i)
            if (phys_[i] >= 0) ++bucket_[hpos_[static_cast<std::size_t>(phys_[i])] + 1];
        for (std::size_t b = 0; b < P_; ++b) bucket_[b + 1] += bucket_[b];
        const std::size_t n_send = bucket_[P_];
        send_slot_.resize(n_send);
        cursor_.assign(bucket_.begin(), bucket_.end() - 1);
        for (std::size_t i = 0; i < T * k; ++i)
            if (phys_[i] >= 0) send_slot_[cursor_[hpos_[static_cast<std::size_t>(phys_[i])]]++] = static_cast<std::int32_t>(i);
        // 2. Across nodes: each token once per node that holds any of its experts, with a record
        //    of which of its experts are there (-1 elsewhere).
        std::vector<int> c1(N, 0);
        std::vector<std::size_t> o1(N + 1, 0);
        const auto token_nodes = [&](std::size_t t, auto&& f) {  // each distinct node of t's slots once
            for (std::size_t s = 0; s < k; ++s) {
                const std::int32_t e = ph(t, s);
                if (e < 0) continue;
                bool seen = false;
                for (std::size_t u = 0; u < s && !seen; ++u) seen = ph(t, u) >= 0 && node_of_expert(ph(t, u)) == node_of_expert(e);
                if (!seen) f(node_of_expert(e));
            }
        };
        for (std::size_t t = 0; t < T; ++t) token_nodes(t, [&](std::size_t n) { ++c1[n]; });
        for (std::size_t n = 0; n < N; ++n) o1[n + 1] = o1[n] + static_cast<std::size_t>(c1[n]);
        std::vector<std::int32_t> tok1(o1[N]), rec_s1(o1[N] * rec1, -1);
        {
            std::vector<std::size_t> cur(o1.begin(), o1.end() - 1);
            for (std::size_t t = 0; t < T; ++t)
                token_nodes(t, [&](std::size_t n) {
                    const std::size_t j = cur[n]++;
                    tok1[j] = static_cast<std::int32_t>(t);
                    rec_s1[j * rec1] = static_cast<std::int32_t>(t);
                    for (std::size_t s = 0; s < k; ++s)
                        if (ph(t, s) >= 0 && node_of_expert(ph(t, s)) == n) rec_s1[j * rec1 + 1 + s] = ph(t, s);
                });
        }
        const relay_hop h1 = hop(cross_.comm, c1, o1, tok1, rec_s1, rec1, x.data, x.stride, relay_);
        const std::vector<int>& r1 = h1.counts;
        const std::vector<std::size_t>& ro1 = h1.offsets;
        const std::vector<std::int32_t>& rec_r1 = h1.records;
        // 3. Inside the node: each relayed token to each rank of this node that owns one of its
        //    experts, with {source rank, token, its experts on that rank}.
        const auto rank_of = [&](std::size_t n, std::size_t l) { return static_cast<std::size_t>(rank_at_[n * G + l]); };
        std::vector<int> c2(G, 0), back_from(G * N, 0);  // back_from[g * N + n]: outputs g returns for node n's source
        std::vector<std::size_t> o2(G + 1, 0);
        const auto token_ranks = [&](std::size_t j, auto&& f) {  // each distinct local rank of relayed row j's experts once
            const std::int32_t* r = rec_r1.data() + j * rec1 + 1;
            for (std::size_t s = 0; s < k; ++s) {
                if (r[s] < 0) continue;
                const std::size_t g = local_of_[static_cast<std::size_t>(owner_[static_cast<std::size_t>(r[s])])];
                bool seen = false;
                for (std::size_t u = 0; u < s && !seen; ++u)
                    seen = r[u] >= 0 && local_of_[static_cast<std::size_t>(owner_[static_cast<std::size_t>(r[u])])] == g;
                if (!seen) f(g);
            }
        };
        for (std::size_t n = 0; n < N; ++n)
            for (std::size_t j = ro1[n]; j < ro1[n + 1]; ++j)
                token_ranks(j, [&](std::size_t g) {
                    ++c2[g];
                    const std::int32_t* r = rec_r1.data() + j * rec1 + 1;
                    for (std::size_t s = 0; s < k; ++s)
                        back_from[g * N + n] += r[s] >= 0 && local_of_[static_cast<std::size_t>(owner_[static_cast<std::size_t>(r[s])])] == g;
                });
        for (std::size_t g = 0; g < G; ++g) o2[g + 1] = o2[g] + static_cast<std::size_t>(c2[g]);
        std::vector<std::int32_t> row2(o2[G]), rec_s2(o2[G] * rec2, -1);
        {
            std::vector<std::size_t> cur(o2.begin(), o2.end() - 1);
            for (std::size_t n = 0; n < N; ++n)
                for (std::size_t j = ro1[n]; j < ro1[n + 1]; ++j)
                    token_ranks(j, [&](std::size_t g) {
                        const std::size_t i = cur[g]++;
                        const std::int32_t* r = rec_r1.data() + j * rec1;
                        row2[i] = static_cast<std::int32_t>(j);
                        rec_s2[i * rec2] = static_cast<std::int32_t>(rank_of(n, my_l));
                        rec_s2[i * rec2 + 1] = r[0];
                        for (std::size_t s = 0; s < k; ++s)
                            if (r[1 + s] >= 0 && local_of_[static_cast<std::size_t>(owner_[static_cast<std::size_t>(r[1 + s])])] == g)
                                rec_s2[i * rec2 + 2 + s] = r[1 + s];
                    });
        }
        const relay_hop h2 = hop(node_.comm, c2, o2, row2, rec_s2, rec2, relay_.data(), H_, recv_);
        const std::vector<int>& r2 = h2.counts;
        const std::vector<std::size_t>& ro2 = h2.offsets;
        const std::vector<std::int32_t>& rec_r2 = h2.records;
        const std::size_t n2 = ro2[G];
        stats_.metadata_bytes += (N + G) * sizeof(int) + (o1[N] - static_cast<std::size_t>(c1[my_node])) * rec1 * 4 +
                                 (o2[G] - static_cast<std::size_t>(c2[my_l])) * rec2 * 4;
        // 4. The local experts: rows by (local expert, source rank, token). Rows of one source
        //    come through one relay, in its token order, so a stable sort by source suffices.
        const std::size_t L = local_experts_.size();
        std::vector<std::size_t> by_src(R + 1, 0), order(n2);
        for (std::size_t i = 0; i < n2; ++i) ++by_src[static_cast<std::size_t>(rec_r2[i * rec2]) + 1];
        for (std::size_t p = 0; p < R; ++p) by_src[p + 1] += by_src[p];
        {
            std::vector<std::size_t> cur(by_src.begin(), by_src.end() - 1);
            for (std::size_t i = 0; i < n2; ++i) order[cur[static_cast<std::size_t>(rec_r2[i * rec2])]++] = i;
        }
        std::vector<std::size_t> run_first(L * R, 0);
        std::vector<int> run_len(L * R, 0);
        dispatch_plan lp;
        lp.num_experts = L;
        lp.top_k = 1;
        lp.num_tokens = n2;
        lp.offsets.assign(L + 1, 0);
        lp.counts.assign(L, 0);
        for (std::size_t i = 0; i < L; ++i) {
            const auto e = static_cast<std::int32_t>(local_experts_[i]);
            for (std::size_t p = 0; p < R; ++p) {
                run_first[i * R + p] = lp.row_token.size();
                for (std::size_t j = by_src[p]; j < by_src[p + 1]; ++j) {
                    const std::int32_t* r = rec_r2.data() + order[j] * rec2 + 2;
                    if (std::find(r, r + k, e) != r + k) {
                        lp.row_token.push_back(static_cast<std::int32_t>(order[j]));
                        lp.row_slot.push_back(0);
                    }
                }
                run_len[i * R + p] = static_cast<int>(lp.row_token.size() - run_first[i * R + p]);
            }
            lp.counts[i] = static_cast<std::int32_t>(lp.row_token.size()) - lp.offsets[i];
            lp.offsets[i + 1] = static_cast<std::int32_t>(lp.row_token.size());
        }
        const double t_dispatched = MPI_Wtime();
        const std::size_t rows = lp.num_rows();
        ordered_.resize(rows * H_);
        if (L > 0 && rows > 0) {
            experts_t::run(matrix_view<float>(ordered_.data(), rows, H_), matrix_view<const float>(recv_.data(), n2, H_), lp, experts_,
                           ws_, exec);
        }
        const double t_computed = MPI_Wtime();
        // 5. Outputs back inside the node, to the relay with the source's local index: by source
        //    node, then local expert, then token.
        std::vector<int> rb2(G, 0);
        for (std::size_t g = 0; g < G; ++g)
            for (std::size_t n = 0; n < N; ++n) rb2[g] += back_from[g * N + n];
        std::vector<std::size_t> rbo2(G + 1, 0);
        for (std::size_t g = 0; g < G; ++g) rbo2[g + 1] = rbo2[g] + static_cast<std::size_t>(rb2[g]);
        relay_back_.resize(rbo2[G] * H_);
        ta_.reset(G, pool_.row());
        std::vector<std::size_t> firsts;
        std::vector<int> lens;
        for (std::size_t g = 0; g < G; ++g) {
            firsts.clear();
            lens.clear();
            for (std::size_t n = 0; n < N; ++n)
                for (std::size_t i = 0; i < L; ++i) {
                    const std::size_t q = i * R + rank_of(n, g);
                    if (run_len[q] > 0) {
                        firsts.push_back(run_first[q]);
                        lens.push_back(run_len[q]);
                    }
                }
            if (!lens.empty()) {
                ta_.send[g] = pool_.runs(firsts, lens);
                ta_.sc[g] = 1;
            }
            if (rb2[g] > 0) {
                ta_.recv[g] = pool_.run(rbo2[g], static_cast<std::size_t>(rb2[g]));
                ta_.rc[g] = 1;
            }
        }
        ta_.run(ordered_.data(), relay_back_.data(), node_.comm);
        // 6. Across nodes to the sources: for each source node, the node's ranks in order, each
        //    its (expert, token) run: exactly the sender's (node, local rank, expert, token) order.
        back_.resize(n_send * H_);
        ta_.reset(N, pool_.row());
        for (std::size_t n = 0; n < N; ++n) {
            firsts.clear();
            lens.clear();
            std::size_t at = 0;
            for (std::size_t g = 0; g < G; ++g) {
                std::size_t off = rbo2[g];
                for (std::size_t m = 0; m < n; ++m) off += static_cast<std::size_t>(back_from[g * N + m]);
                if (back_from[g * N + n] > 0) {
                    firsts.push_back(off);
                    lens.push_back(back_from[g * N + n]);
                    at += static_cast<std::size_t>(back_from[g * N + n]);
                }
            }
            if (at > 0) {
                ta_.send[n] = pool_.runs(firsts, lens);
                ta_.sc[n] = 1;
            }
            const std::size_t b0 = bucket_[nbeg_[n]], b1 = bucket_[nbeg_[n + 1]];
            if (b1 > b0) {
                ta_.recv[n] = pool_.run(b0, b1 - b0);
                ta_.rc[n] = 1;
            }
        }
        ta_.run(relay_back_.data(), back_.data(), cross_.comm);
        const double t_returned = MPI_Wtime();
        // Wire and inter-node bytes this rank sent (rows out, outputs back; not to itself).
        const std::size_t row_b = H_ * sizeof(float);
        std::size_t cross_rows = 0, node_rows = 0;
        for (std::size_t n = 0; n < N; ++n)
            if (n != my_node) {
                cross_rows += static_cast<std::size_t>(c1[n]);
                for (std::size_t g = 0; g < G; ++g) cross_rows += static_cast<std::size_t>(back_from[g * N + n]);
            }
        for (std::size_t g = 0; g < G; ++g)
            if (g != my_l) node_rows += static_cast<std::size_t>(c2[g]) + static_cast<std::size_t>(rb2[g]);
        stats_.inter_node_bytes = cross_rows * row_b;
        for (std::size_t n = 0; n < N; ++n)
            if (n != my_node) {
                stats_.rows_sent += static_cast<std::size_t>(c1[n]);
                stats_.rows_received += static_cast<std::size_t>(r1[n]);
            }
        for (std::size_t g = 0; g < G; ++g)
            if (g != my_l) {
                stats_.rows_sent += static_cast<std::size_t>(c2[g]);
                stats_.rows_received += static_cast<std::size_t>(r2[g]);
            }
        stats_.bytes_on_wire = (cross_rows + node_rows) * row_b;
        pool_.release();
        finish_counts(y, loc, n_send, rows, exec);
        stats_.route_s = t_routed - t_start;
        stats_.dispatch_s = t_dispatched - t_routed;
        stats_.experts_s = t_computed - t_dispatched;
        stats_.return_s = t_returned - t_computed;
    }

    /// What one hop of the two-level exchange delivered: rows per peer, their offsets, records.
    struct relay_hop {
        std::vector<int> counts;
        std::vector<std::size_t> offsets;
        std::vector<std::int32_t> records;
    };
    /// One hop over `comm`: to each peer p, the c[p] rows of `src` listed in rows[o[p], o[p + 1])
    /// (`stride` floats apart), each with `per` ints of `rec`; the rows arrive in `dst`, in peer order.
    relay_hop hop(MPI_Comm comm, const std::vector<int>& c, const std::vector<std::size_t>& o, const std::vector<std::int32_t>& rows,
                  const std::vector<std::int32_t>& rec, std::size_t per, const float* src, std::size_t stride, std::vector<float>& dst) {
        const std::size_t n = c.size();
        relay_hop h;
        h.counts.resize(n);
        MPI_Alltoall(c.data(), 1, MPI_INT, h.counts.data(), 1, MPI_INT, comm);
        h.offsets.assign(n + 1, 0);
        for (std::size_t p = 0; p < n; ++p) h.offsets[p + 1] = h.offsets[p] + static_cast<std::size_t>(h.counts[p]);
        dst.resize(h.offsets[n] * H_);
        h.records.resize(h.offsets[n] * per);
        alltoallv_ints(rec.data(), c, o, h.records.data(), h.counts, h.offsets, per, comm);
        ta_.reset(n, pool_.row());
        for (std::size_t p = 0; p < n; ++p) {
            if (c[p] > 0) {
                ta_.send[p] = pool_.rows_at(rows.data() + o[p], static_cast<std::size_t>(c[p]), stride);
                ta_.sc[p] = 1;
            }
            if (h.counts[p] > 0) {
                ta_.recv[p] = pool_.run(h.offsets[p], static_cast<std::size_t>(h.counts[p]));
                ta_.rc[p] = 1;
            }
        }
        ta_.run(src, dst.data(), comm);
        return h;
    }

    /// Both exchanges' end: the weighted sum in slot order (outputs in back_ in send_slot_
    /// order), the rows each rank computed (its experts' kept loads), the routing kept for
    /// last_local_routing().
    template <class Executor>
    void finish_counts(matrix_view<float> y, routing<float>& loc, std::size_t n_send, std::size_t computed_rows, Executor&& exec) {
        const std::size_t T = loc.num_tokens, k = loc.top_k;
        const double t0 = MPI_Wtime();
        dispatch_plan cp;
        cp.num_tokens = T;
        cp.num_experts = 1;
        cp.top_k = k;
        cp.offsets = {0, static_cast<std::int32_t>(n_send)};
        cp.slot_row.assign(T * k, -1);
        for (std::size_t i = 0; i < n_send; ++i) cp.slot_row[static_cast<std::size_t>(send_slot_[i])] = static_cast<std::int32_t>(i);
        combine<Arch>(y, matrix_view<const float>(back_.data(), n_send, H_), cp, loc, exec);
        stats_.combine_s = MPI_Wtime() - t0;
        stats_.rank_rows.assign(static_cast<std::size_t>(size_), 0);
        if (replicated_) {  // a replica's rows depend on other ranks' tokens: gather them
            unsigned long long mine = computed_rows;
            std::vector<unsigned long long> all(static_cast<std::size_t>(size_));
            MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, all.data(), 1, MPI_UNSIGNED_LONG_LONG, comm_);
            stats_.rank_rows.assign(all.begin(), all.end());
        } else {
            for (std::size_t e = 0; e < E_; ++e) stats_.rank_rows[static_cast<std::size_t>(owner_[e])] += static_cast<std::size_t>(kept_[e]);
        }
        stats_.max_over_mean = rank_balance(stats_.rank_rows);
        local_ = std::move(loc);
        last_ = routing<float>{};
    }

    /// MPI_Alltoallv of `per` ints per item, counts and offsets in items.
    static void alltoallv_ints(const std::int32_t* send, const std::vector<int>& sc, const std::vector<std::size_t>& so, std::int32_t* recv,
                               const std::vector<int>& rc, const std::vector<std::size_t>& ro, std::size_t per, MPI_Comm comm) {
        const std::size_t n = sc.size();
        std::vector<int> a(n), b(n), c(n), d(n);
        for (std::size_t i = 0; i < n; ++i) {
            a[i] = sc[i] * static_cast<int>(per);
            b[i] = static_cast<int>(so[i] * per);
            c[i] = rc[i] * static_cast<int>(per);
            d[i] = static_cast<int>(ro[i] * per);
        }
        MPI_Alltoallv(send, a.data(), b.data(), MPI_INT32_T, recv, c.data(), d.data(), MPI_INT32_T, comm);
    }

    /// apply_capacity's decisions for this rank's slots, from global loads and the owners'
    /// rankings; `loc` loses its dropped slots (and is renormalised after, if configured).
    void capacity_by_owners(routing<float>& loc, std::size_t first, std::size_t T_all) {
        const std::size_t T = loc.num_tokens, k = loc.top_k, R = static_cast<std::size_t>(size_);
        const drop_config& cfg = opt_.drop;
        const std::vector<long long>& load = load_;  // global: per expert, routed slots, routed tokens
        std::size_t max_load = 0;
        for (std::size_t e = 0; e < E_; ++e) max_load = std::max(max_load, static_cast<std::size_t>(load[e]));
        const std::size_t routed = static_cast<std::size_t>(load[E_]), routed_tokens = static_cast<std::size_t>(load[E_ + 1]);
        const double spt = routed_tokens && routed != routed_tokens * k ? static_cast<double>(routed) / static_cast<double>(routed_tokens) : 0.0;
        std::size_t capacity = expert_capacity(cfg.capacity, T_all, E_, k, max_load, spt);
        if (cfg.renorm_after == renormalize::clamp && !(cfg.renorm_eps > 0.0f))
            MOE_THROW("moe.capacity.renorm_eps", "renormalize::clamp after the drop needs renorm_eps > 0");
        std::vector<std::size_t> cap(E_, capacity);
        if (!cfg.per_expert.empty()) {
            if (cfg.per_expert.size() != E_)
                MOE_THROW("moe.capacity.per_expert", "per_expert has ", cfg.per_expert.size(), " capacities, expected num_experts=", E_);
            cap = cfg.per_expert;
            capacity = *std::max_element(cap.begin(), cap.end());
        }
        if (capacity == 0 && max_load > 0)
            MOE_THROW("moe.capacity.zero", "capacity is 0 for every expert (", to_string(cfg.capacity.formula), ", factor ",
                      cfg.capacity.factor, ", ", T_all, " tokens, ", E_, " experts, k=", k, "): every slot would be dropped");
        for (std::size_t e = 0; e < E_; ++e) kept_[e] = std::min<long long>(load[e], static_cast<long long>(cap[e]));
        // Ranking records of the slots of over-full experts, to the experts' owners.
        std::vector<std::vector<rank_record>> out(R);
        for (std::size_t t = 0; t < T; ++t) {
            float best = -std::numeric_limits<float>::infinity();
            if (cfg.policy == drop_policy::batch_prioritized)
                for (std::size_t e = 0; e < E_; ++e) best = std::max(best, loc.score(t, e));
            for (std::size_t s = 0; s < k; ++s) {
                const std::int32_t e = loc.index(t, s);
                if (e < 0 || static_cast<std::size_t>(load[static_cast<std::size_t>(e)]) <= cap[static_cast<std::size_t>(e)]) continue;
                const std::size_t g = (first + t) * k + s;  // the global slot index
                rank_record rec{0.0, 0.0, static_cast<long long>(g), e, static_cast<std::int32_t>(t * k + s)};
                switch (cfg.policy) {
                    case drop_policy::weight: rec.a = static_cast<double>(loc.weight(t, s)); break;
                    case drop_policy::score: rec.a = static_cast<double>(loc.score(t, static_cast<std::size_t>(e))); break;
                    case drop_policy::random: rec.a = splitmix64(cfg.seed ^ (0x9E3779B97F4A7C15ull * (g + 1))).uniform(); break;
                    case drop_policy::position: break;
                    case drop_policy::slot_major:
                        rec.a = -static_cast<double>(s);
                        rec.c = static_cast<long long>(first + t);
                        break;
                    case drop_policy::batch_prioritized:
                        rec.a = -static_cast<double>(s);
                        rec.b = static_cast<double>(best);
                        rec.c = static_cast<long long>(first + t);
                        break;
                }
                out[static_cast<std::size_t>(ranker_[static_cast<std::size_t>(e)])].push_back(rec);
            }
        }
        std::vector<int> sc(R), sd(R + 1, 0), rc(R), rd(R + 1, 0);
        for (std::size_t q = 0; q < R; ++q) sc[q] = static_cast<int>(out[q].size());
        MPI_Alltoall(sc.data(), 1, MPI_INT, rc.data(), 1, MPI_INT, comm_);
        for (std::size_t q = 0; q < R; ++q) {
            sd[q + 1] = sd[q] + sc[q];
            rd[q + 1] = rd[q] + rc[q];
        }
        std::vector<rank_record> sendbuf, recvbuf(static_cast<std::size_t>(rd[R]));
        for (auto& v : out) sendbuf.insert(sendbuf.end(), v.begin(), v.end());
        std::vector<int> scb(R), sdb(R), rcb(R), rdb(R);
        const int rb = static_cast<int>(sizeof(rank_record));
        for (std::size_t q = 0; q < R; ++q) {
            scb[q] = sc[q] * rb;
            sdb[q] = sd[q] * rb;
            rcb[q] = rc[q] * rb;
            rdb[q] = rd[q] * rb;
        }
        MPI_Alltoallv(sendbuf.data(), scb.data(), sdb.data(), MPI_BYTE, recvbuf.data(), rcb.data(), rdb.data(), MPI_BYTE, comm_);
        stats_.metadata_bytes += R * sizeof(int) + (sendbuf.size() - out[static_cast<std::size_t>(rank_)].size()) * sizeof(rank_record);
        // The owner keeps each over-full expert's best cap[e] records, as apply_capacity would.
        std::vector<char> keep(recvbuf.size(), 1);
        std::vector<std::vector<std::size_t>> bucket(E_);
        for (std::size_t i = 0; i < recvbuf.size(); ++i) bucket[static_cast<std::size_t>(recvbuf[i].e)].push_back(i);
        const auto better = [&](std::size_t x, std::size_t z) {
            const rank_record &u = recvbuf[x], &v = recvbuf[z];
            if (u.a != v.a) return u.a > v.a;
            if (u.b != v.b) return u.b > v.b;
            return u.c < v.c;
        };
        for (std::size_t e = 0; e < E_; ++e) {
            auto& b = bucket[e];
            if (b.size() <= cap[e]) continue;  // cannot happen: the records are all of e's slots
            std::nth_element(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(cap[e]), b.end(), better);
            for (std::size_t j = cap[e]; j < b.size(); ++j) keep[b[j]] = 0;
        }
        // Flags back in the records' order; the token's rank drops what its owner did not keep.
        std::vector<char> flags(sendbuf.size());
        MPI_Alltoallv(keep.data(), rc.data(), rd.data(), MPI_CHAR, flags.data(), sc.data(), sd.data(), MPI_CHAR, comm_);
        stats_.metadata_bytes += recvbuf.size();
        unsigned long long dropped = 0;
        for (std::size_t i = 0; i < sendbuf.size(); ++i)
            if (!flags[i]) {
                const auto slot = static_cast<std::size_t>(sendbuf[i].slot);
                loc.indices[slot] = -1;
                loc.weights[slot] = 0.0f;
                ++dropped;
            }
        for (std::size_t t = 0; t < T && cfg.renorm_after != renormalize::none; ++t)
            moe::detail::renormalize_weights(cfg.renorm_after, cfg.renorm_eps, loc.weights.data() + t * k, k);
        MPI_Allreduce(MPI_IN_PLACE, &dropped, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, comm_);
        stats_.dropped = static_cast<std::size_t>(dropped);
    }

    /// Router, options and this rank's experts (physical experts in order, each packed with its
    /// logical expert's weights).
    void init(matrix_view<const float> router_w, const source_type* w1, const source_type* w3, const source_type* w2) {
        stages::fix_options(opt_, E_);
        if (placement_aware_) {
            if (!(opt_.capacity && opt_.drop.reroute))
                MOE_THROW("moe.mpi.options", "placement-aware reroute needs capacity with reroute");
            opt_.drop.placement = owner_;
        }
        gate_ = pack_gate<Arch>(router_w);
        for (std::size_t q = 0; q < P_; ++q)
            if (owner_[q] == rank_) local_experts_.push_back(q);
        ranker_.resize(E_);
        for (std::size_t e = 0; e < E_; ++e)
            ranker_[e] = replicated_ ? owner_[static_cast<std::size_t>(replicas_.physical(replica_layer_, e, 0))] : owner_[e];
        ebeg_.assign(static_cast<std::size_t>(size_) + 1, 0);
        for (std::size_t q = 0; q < P_; ++q) ++ebeg_[static_cast<std::size_t>(owner_[q]) + 1];
        for (std::size_t r = 0; r < static_cast<std::size_t>(size_); ++r) ebeg_[r + 1] += ebeg_[r];
        epos_.resize(P_);
        std::vector<std::size_t> next(ebeg_.begin(), ebeg_.end() - 1);
        for (std::size_t q = 0; q < P_; ++q) epos_[q] = next[static_cast<std::size_t>(owner_[q])]++;
        const std::size_t L = local_experts_.size();
        if (L > 0) {
            std::vector<source_type> a1(L * F_ * H_), a3(L * F_ * H_), a2(L * H_ * F_);
            for (std::size_t i = 0; i < L; ++i) {
                const auto e = static_cast<std::size_t>(phy2log_[local_experts_[i]]);
                std::copy(w1 + e * F_ * H_, w1 + (e + 1) * F_ * H_, a1.begin() + static_cast<std::ptrdiff_t>(i * F_ * H_));
                std::copy(w3 + e * F_ * H_, w3 + (e + 1) * F_ * H_, a3.begin() + static_cast<std::ptrdiff_t>(i * F_ * H_));
                std::copy(w2 + e * H_ * F_, w2 + (e + 1) * H_ * F_, a2.begin() + static_cast<std::ptrdiff_t>(i * H_ * F_));
            }
            experts_ = experts_t::pack(a1.data(), a3.data(), a2.data(), L, H_, F_, opt_);
        }
    }

    void alltoallv_rows(const float* send, const std::vector<int>& sc, const std::vector<int>& sd, float* recv,
                        const std::vector<int>& rc, const std::vector<int>& rd) {
        std::vector<int> scf(sc.size()), sdf(sc.size()), rcf(rc.size()), rdf(rc.size());
        const int h = static_cast<int>(H_);
        for (std::size_t r = 0; r < sc.size(); ++r) {
            scf[r] = sc[r] * h;
            sdf[r] = sd[r] * h;
            rcf[r] = rc[r] * h;
            rdf[r] = rd[r] * h;
        }
        MPI_Alltoallv(send, scf.data(), sdf.data(), MPI_FLOAT, recv, rcf.data(), rdf.data(), MPI_FLOAT, comm_);
    }
    /// Routed slots whose expert lives on another rank than the token.
    [[nodiscard]] std::size_t cross_rank_rows(const routing<float>& g) const {
        std::size_t n = 0, t0 = 0;
        for (int r = 0; r < size_; ++r) {
            const std::size_t nt = static_cast<std::size_t>(tokens_of_[static_cast<std::size_t>(r)]);
            for (std::size_t t = t0; t < t0 + nt; ++t)
                for (std::size_t s = 0; s < g.top_k; ++s) {
                    const std::int32_t e = g.index(t, s);
                    if (e >= 0 && owner_[static_cast<std::size_t>(e)] != r) ++n;
                }
            t0 += nt;
        }
        return n;
    }

    MPI_Comm comm_;
    int rank_ = 0, size_ = 1;
    layer_options opt_;
    std::size_t E_, H_, F_;
    bool placement_aware_;
    std::size_t P_ = 0;                  ///< experts of the plan: E, or the physical experts of a replica placement
    std::vector<std::int32_t> owner_;    ///< plan expert -> rank
    std::vector<std::int32_t> phy2log_;  ///< plan expert -> logical expert (weights)
    bool replicated_ = false;
    replica_placement replicas_;
    std::size_t replica_layer_ = 0;
    replica_policy replica_policy_ = replica_policy::round_robin;
    std::vector<std::size_t> local_experts_;
    packed_gate gate_;
    typename experts_t::packed experts_;
    kernels::ffn_workspace ws_;
    router_workspace<float> router_ws_;
    std::vector<float> logits_, send_, recv_, out_, back_, ordered_;
    std::vector<int> tokens_of_;
    std::size_t chunks_ = 1;
    std::vector<std::size_t> epos_, ebeg_;  ///< expert -> position in (owner, expert) order; owner -> first position
    std::vector<std::size_t> bucket_, cursor_;
    std::vector<std::int32_t> send_slot_;
    std::vector<int> cnt_send_, cnt_recv_;
    std::vector<dispatch_plan> plans_, self_plans_;
    // Topology (set_topology): nodes of equal size, the two-level exchange's buffers.
    bool hierarchical_ = false;
    std::size_t nodes_ = 0, node_size_ = 0;
    std::vector<std::size_t> node_of_, local_of_, hpos_, nbeg_;  ///< rank -> node, local index; expert -> (node, local, expert) position; node -> first position
    std::vector<int> rank_at_;                                    ///< node * node_size + local index -> rank
    detail::comm_handle node_, cross_;
    detail::type_pool pool_;
    detail::typed_alltoall ta_;
    std::vector<float> relay_, relay_back_;
    dispatch_plan sub_;
    std::vector<std::vector<detail::chunked_exchange::block>> ret_blocks_;
    detail::chunked_exchange ex_;
    ep_stats stats_;
    ep_protocol protocol_ = ep_protocol::automatic;
    routing<float> last_, local_;
    std::vector<std::int32_t> phys_;    ///< counts protocol: each slot's plan expert (-1: none)
    std::vector<std::int32_t> ranker_;  ///< logical expert -> the rank that ranks its slots under capacity (its first replica's)
    std::vector<long long> load_, kept_;  ///< counts protocol: global loads (+ slots, tokens, T); kept rows per expert
};

}  // namespace moe::mpi
