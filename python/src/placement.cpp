// Placement and offloading: EPLB, multi-layer traces, transition counts, affinity placement,
// local routing consistency (SRP, SCH) and the expert cache simulator. Traces are [L, T, k]
// integer arrays of expert indices (-1 = empty) with their number of experts.
#include <moe/analysis/offload.hpp>
#include <moe/analysis/record.hpp>
#include <moe/placement.hpp>

#include "common.hpp"

namespace moe_py {

namespace {

moe::routing_trace trace_of(const py::handle& h, std::size_t num_experts) {
    py::array a = py::array::ensure(h);
    if (!a || a.ndim() != 3) MOE_THROW("moe.trace.shape", "a trace is a 3-D integer array [layers, tokens, k]");
    if (!(kind_of(a) == elem::i32 || kind_of(a) == elem::i64))
        MOE_THROW("moe.python.dtype", "trace indices must be int32 or int64, got ", dtype_name(a));
    moe::routing_trace tr(static_cast<std::size_t>(a.shape(0)), static_cast<std::size_t>(a.shape(1)), num_experts,
                          static_cast<std::size_t>(a.shape(2)));
    tr.indices = vector_of<std::int32_t>(a.attr("reshape")(-1), "trace");
    tr.validate();
    return tr;
}

py::array counts_of(const std::vector<moe::matrix<double>>& c, std::size_t E) {
    std::vector<double> flat;
    for (const auto& m : c) flat.insert(flat.end(), m.values.begin(), m.values.end());
    return to_array(std::move(flat), {static_cast<py::ssize_t>(c.size()), static_cast<py::ssize_t>(E), static_cast<py::ssize_t>(E)});
}

}  // namespace

void bind_placement(py::module_& m) {
    m.def("write_record", [](const std::string& dir, const py::handle& indices, const py::object& weights, const py::object& layers,
                             std::size_t E, const std::string& model, const std::string& recipe) {
        moe::routing_record r = [&] {
            const moe::routing_trace tr = trace_of(indices, E);
            moe::routing_record out;
            out.num_layers = tr.num_layers;
            out.num_tokens = tr.num_tokens;
            out.num_experts = E;
            out.top_k = tr.top_k;
            out.indices = tr.indices;
            return out;
        }();
        if (!weights.is_none()) {
            py::array w = py::array::ensure(weights);
            if (!w || w.ndim() != 3 || static_cast<std::size_t>(w.shape(0)) != r.num_layers ||
                static_cast<std::size_t>(w.shape(1)) != r.num_tokens || static_cast<std::size_t>(w.shape(2)) != r.top_k)
                MOE_THROW("moe.record.shape", "weights must be [L, T, k] = [", r.num_layers, ", ", r.num_tokens, ", ", r.top_k, "] like indices");
            r.weights = vector_of<float>(w.attr("reshape")(-1), "weights");
        }
        if (layers.is_none())
            for (std::size_t l = 0; l < r.num_layers; ++l) r.layers.push_back(l);
        else
            r.layers = layers.cast<std::vector<std::size_t>>();
        r.model = model;
        r.recipe = nlohmann::json::parse(recipe, nullptr, false);
        if (r.recipe.is_discarded() || !r.recipe.is_object()) MOE_THROW("moe.record.sidecar", "recipe must be a JSON object");
        {
            py::gil_scoped_release nogil;
            moe::write_record(dir, r);
        }
    });
    m.def("read_record", [](const std::string& dir) {
        moe::routing_record r;
        {
            py::gil_scoped_release nogil;
            r = moe::read_record(dir);
        }
        const auto L = static_cast<py::ssize_t>(r.num_layers), T = static_cast<py::ssize_t>(r.num_tokens),
                   k = static_cast<py::ssize_t>(r.top_k);
        py::dict d;
        d["indices"] = to_array(std::move(r.indices), {L, T, k});
        d["weights"] = r.weights.empty() ? py::object(py::none()) : py::object(to_array(std::move(r.weights), {L, T, k}));
        d["layers"] = r.layers;
        d["num_experts"] = r.num_experts;
        d["top_k"] = r.top_k;
        d["model"] = r.model;
        d["recipe"] = r.recipe.dump();
        return d;
    });
    m.def("rebalance_experts", [](const py::array& loads, std::size_t R, std::size_t G, std::size_t N, std::size_t D) {
        py::array a = loads.ndim() == 1 ? py::array(loads.attr("reshape")(1, -1)) : loads;
        if (a.dtype().kind() != 'f') a = py::array(py::module_::import("numpy").attr("asarray")(a, "float32"));
        py::array_t<float, py::array::c_style | py::array::forcecast> f(a);
        if (f.ndim() != 2) MOE_THROW("moe.python.shape", "loads must be [layers, experts] (or 1-D for one layer)");
        const moe::matrix_view<const float> v(f.data(), static_cast<std::size_t>(f.shape(0)), static_cast<std::size_t>(f.shape(1)));
        moe::replica_placement p;
        {
            py::gil_scoped_release nogil;
            p = moe::rebalance_experts(v, R, G, N, D);
        }
        const auto L = static_cast<py::ssize_t>(p.num_layers), P = static_cast<py::ssize_t>(p.num_physical),
                   E = static_cast<py::ssize_t>(p.num_logical), Rm = static_cast<py::ssize_t>(p.max_replicas);
        py::dict d;
        d["phy2log"] = to_array(std::move(p.phy2log), {L, P});
        d["log2phy"] = to_array(std::move(p.log2phy), {L, E, Rm});
        d["logcnt"] = to_array(std::move(p.logcnt), {L, E});
        d["phyrank"] = to_array(std::move(p.phyrank), {L, P});
        return d;
    });
    m.def("synthetic_trace", [](std::size_t L, std::size_t T, std::size_t E, std::size_t k, double affinity, const std::string& skew,
                                std::uint64_t seed) {
        const auto sk = moe::skew::parse(skew);
        moe::routing_trace tr;
        {
            py::gil_scoped_release nogil;
            tr = moe::synthetic_trace(L, T, E, k, affinity, sk, seed);
        }
        return to_array(std::move(tr.indices), {static_cast<py::ssize_t>(L), static_cast<py::ssize_t>(T), static_cast<py::ssize_t>(k)});
    });
    m.def("transition_counts", [](const py::handle& trace, std::size_t E) {
        return counts_of(moe::transition_counts(trace_of(trace, E)), E);
    });
    m.def("affinity_placement", [](const py::handle& trace, std::size_t E, std::size_t D) {
        const auto tr = trace_of(trace, E);
        moe::layered_placement p;
        moe::transition_traffic_report before, after;
        {
            py::gil_scoped_release nogil;
            p = moe::affinity_placement(moe::transition_counts(tr), tr.num_layers, E, D);
            after = moe::transition_traffic(tr, p);
            before = moe::transition_traffic(tr, moe::contiguous_layers(tr.num_layers, E, D));
        }
        py::dict d;
        d["devices"] = to_array(std::move(p.device), {static_cast<py::ssize_t>(tr.num_layers), static_cast<py::ssize_t>(E)});
        d["crossing_fraction"] = after.crossing_fraction();
        d["contiguous_crossing_fraction"] = before.crossing_fraction();
        return d;
    });
    m.def("segment_routing_performance", [](const py::handle& trace, std::size_t E, std::size_t layer, std::size_t seg_len) {
        const auto r = moe::segment_routing_performance(trace_of(trace, E), layer, seg_len);
        py::dict d;
        d["srp"] = r.srp;
        d["threshold"] = r.threshold;
        d["precision"] = r.precision;
        d["recall"] = r.recall;
        return d;
    });
    m.def("segment_cache_hit_rate", [](const py::handle& trace, std::size_t E, std::size_t layer, std::size_t seg_len, std::size_t cap) {
        return moe::segment_cache_hit_rate(trace_of(trace, E), layer, seg_len, cap);
    });
    m.def("simulate_cache", [](const py::handle& trace, std::size_t E, std::size_t cap, const std::string& policy, std::size_t width,
                               double expert_bytes) {
        const auto tr = trace_of(trace, E);
        const auto pol = moe::parse_cache_policy(policy);
        moe::cache_options o;
        o.prefetch_width = width;
        moe::cache_result r;
        {
            py::gil_scoped_release nogil;
            r = moe::simulate_cache(tr, cap, pol, o);
        }
        py::dict d;
        d["policy"] = policy;
        d["capacity"] = r.capacity;
        d["accesses"] = r.accesses;
        d["hits"] = r.hits;
        d["loads"] = r.loads;
        d["prefetches"] = r.prefetches;
        d["hit_rate"] = r.hit_rate();
        d["bytes_per_token"] = r.bytes_per_token(expert_bytes);
        return d;
    });
}

}  // namespace moe_py
