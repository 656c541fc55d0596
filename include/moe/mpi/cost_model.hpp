/// @file mpi/cost_model.hpp
/// A latency-bandwidth (alpha-beta) model of expert parallelism's exchange, measured on a
/// communicator and used to predict other rank counts and model shapes.
///
/// One all-to-all in which every rank sends `b` bytes to each of the other R - 1 ranks costs
///     alpha * (R - 1) + (R - 1) * b / beta
/// (R - 1 point-to-point exchanges, each a start-up cost plus its bytes at the link's rate;
/// the linear and pairwise algorithms MPI uses for large all-to-alls behave so). A forward of the
/// counts protocol with T tokens per rank, top-k, hidden H and `elem` bytes per value, with
/// uniform routing, moves T k (R - 1) / R rows out and as many back, and its metadata costs an
/// allreduce and an exscan (about log2 R start-ups each) and one all-to-all of counts:
///     dispatch + combine = 2 * [alpha (R - 1) + T k (R - 1) / R * H * elem / beta]
///                          + alpha (R - 1) + 2 alpha ceil(log2 R).
/// The bytes are what leave a rank; skewed routing moves more through the busiest rank, which
/// `predict_exchange` takes from the measured row counts instead of the uniform estimate.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "../config.hpp"

namespace moe::mpi {

/// alpha (seconds per point-to-point start-up) and beta (bytes per second per rank).
struct exchange_cost_model {
    double alpha = 0, beta = 1;

    /// One all-to-all in which each rank sends `bytes_per_peer` to every other rank.
    [[nodiscard]] double alltoall_seconds(std::size_t ranks, double bytes_per_peer) const {
        const double r1 = ranks > 1 ? static_cast<double>(ranks - 1) : 0.0;
        return alpha * r1 + r1 * bytes_per_peer / beta;
    }
    /// Bytes one rank sends to other ranks in one direction: T k (R - 1) / R rows of H values.
    [[nodiscard]] static double remote_bytes(std::size_t ranks, std::size_t tokens, std::size_t k, std::size_t hidden, std::size_t elem) {
        if (ranks < 2) return 0.0;
        return static_cast<double>(tokens) * static_cast<double>(k) * static_cast<double>(ranks - 1) / static_cast<double>(ranks) *
               static_cast<double>(hidden) * static_cast<double>(elem);
    }
    /// Dispatch + combine of one forward of the counts protocol (see the file comment).
    [[nodiscard]] double dispatch_combine_seconds(std::size_t ranks, std::size_t tokens, std::size_t k, std::size_t hidden,
                                                  std::size_t elem = sizeof(float)) const {
        if (ranks < 2) return 0.0;
        const double r1 = static_cast<double>(ranks - 1);
        const double rows = 2.0 * (alpha * r1 + remote_bytes(ranks, tokens, k, hidden, elem) / beta);
        return rows + alpha * r1 + 2.0 * alpha * std::ceil(std::log2(static_cast<double>(ranks)));
    }
    /// The same from a forward's measured row counts (rows this rank sent to each rank, the
    /// busiest rank's remote rows in `max_remote_rows`): what the model says that forward's
    /// exchange cost.
    [[nodiscard]] double predict_exchange(std::size_t ranks, std::size_t max_remote_rows, std::size_t hidden,
                                          std::size_t elem = sizeof(float)) const {
        if (ranks < 2) return 0.0;
        const double r1 = static_cast<double>(ranks - 1);
        return 2.0 * (alpha * r1 + static_cast<double>(max_remote_rows) * static_cast<double>(hidden) * static_cast<double>(elem) / beta) +
               alpha * r1 + 2.0 * alpha * std::ceil(std::log2(static_cast<double>(ranks)));
    }
    /// Routing metadata one rank sends per forward: the counts protocol's (allreduced loads, a
    /// count per (chunk, expert), ranking records only under capacity) against an allgather of
    /// every token's k indices and weights.
    [[nodiscard]] static double counts_metadata_bytes(std::size_t experts, std::size_t chunks = 1) {
        return static_cast<double>((experts + 2) * 8 + 16 + experts * chunks * 4);
    }
    [[nodiscard]] static double allgather_metadata_bytes(std::size_t ranks, std::size_t tokens, std::size_t k) {
        return static_cast<double>(ranks > 0 ? ranks - 1 : 0) * static_cast<double>(tokens * k * 8 + 4);
    }

    /// Measures alpha and beta on `comm` (collective): alpha from all-to-alls of one int,
    /// beta from all-to-alls of `bytes_per_peer` bytes; the slowest rank's mean of `reps`.
    [[nodiscard]] static exchange_cost_model measure(MPI_Comm comm, std::size_t bytes_per_peer = std::size_t(4) << 20, int reps = 20) {
        int size = 1;
        MPI_Comm_size(comm, &size);
        if (size < 2) MOE_THROW("moe.mpi.cost_model", "measuring the exchange needs at least 2 ranks, the communicator has ", size);
        const auto R = static_cast<std::size_t>(size);
        auto timed = [&](auto&& f) {
            f();  // warm-up
            double total = 0;
            for (int i = 0; i < reps; ++i) {
                MPI_Barrier(comm);
                const double t0 = MPI_Wtime();
                f();
                double dt = MPI_Wtime() - t0;
                MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, comm);
                total += dt;
            }
            return total / reps;
        };
        std::vector<int> small_s(R, 1), small_r(R);
        const double t_small = timed([&] { MPI_Alltoall(small_s.data(), 1, MPI_INT, small_r.data(), 1, MPI_INT, comm); });
        const std::size_t n = std::max<std::size_t>(1, bytes_per_peer);
        std::vector<char> big_s(n * R, 1), big_r(n * R);
        const double t_big = timed(
            [&] { MPI_Alltoall(big_s.data(), static_cast<int>(n), MPI_BYTE, big_r.data(), static_cast<int>(n), MPI_BYTE, comm); });
        exchange_cost_model m;
        const double r1 = static_cast<double>(R - 1);
        m.alpha = t_small / r1;
        m.beta = r1 * static_cast<double>(n) / std::max(1e-12, t_big - t_small);
        return m;
    }
};

}  // namespace moe::mpi
