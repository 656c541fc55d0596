// Router, capacity, dispatch, metrics, noise, gate, synthetic logits and the policy simulator.
#include <moe/gate.hpp>
#include <moe/analysis/policy_compare.hpp>
#include <moe/analysis/synthetic.hpp>

#include <type_traits>
#include <utility>

#include "common.hpp"
#include "config_fields.hpp"

namespace moe_py {

moe::group_mask parse_mask(const std::string& s) {
    if (s == "neg_inf") return moe::group_mask::neg_inf;
    if (s == "zero") return moe::group_mask::zero;
    MOE_THROW("moe.config.group_mask", "unknown group mask '", s, "' (expected neg_inf or zero)");
}

moe::router_config router_config_of(const py::dict& d) {
    moe::router_config c;
    py::dict fields_only;
    for (auto item : d)
        if (py::str(item.first).cast<std::string>() != "preset") fields_only[item.first] = item.second;
    if (d.contains("preset") && !d["preset"].is_none()) c = moe::presets::by_name(py::str(d["preset"]).cast<std::string>());
    return config_of(fields_only, "router", c);
}

py::dict dict_of(const moe::router_config& c) { return config_dict(c); }

/// moe.RouterConfig, moe.DropConfig: the C++ structs with their fields as properties.
void bind_configs(py::module_& m) {
    bind_config<moe::router_config>(m, "RouterConfig",
                                    "A router recipe (moe::router_config). RouterConfig(preset=None, **fields): the preset's "
                                    "config with the given fields overriding it.",
                                    router_config_of, "RouterConfig(preset=None, **fields)", "router_config_fields")
        .def("validate", [](const moe::router_config& c, std::size_t num_experts) { c.validate(num_experts); },
             "Throws moe.Error for a config that cannot route num_experts experts.", py::arg("num_experts"));
    bind_config<moe::drop_config>(m, "DropConfig",
                                  "Capacity and drop policy (moe::drop_config): apply_capacity's keywords, MoeBlock's capacity. "
                                  "DropConfig(**fields).",
                                  drop_config_of, "DropConfig(**fields)", "drop_config_fields");
}

moe::capacity_config capacity_config_of(const py::dict& d) { return config_of<moe::capacity_config>(d, "capacity"); }

moe::drop_config drop_config_of(const py::dict& d) { return config_of<moe::drop_config>(d, "apply_capacity"); }

std::vector<std::uint8_t> mask_of(const py::object& valid, std::size_t tokens) {
    if (valid.is_none()) return {};
    const auto v = vector_of<std::int64_t>(valid, "valid", static_cast<std::ptrdiff_t>(tokens));
    std::vector<std::uint8_t> out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = v[i] != 0;
    return out;
}

namespace {

py::dict report_dict(moe::capacity_report&& r) {
    py::dict d;
    d["capacity"] = r.capacity;
    d["capacities"] = counts_array(r.capacities);
    d["load_before"] = counts_array(r.load_before);
    d["load_after"] = counts_array(r.load_after);
    d["dropped"] = to_array(std::move(r.dropped));
    d["rerouted"] = to_array(std::move(r.rerouted));
    d["original"] = to_array(std::move(r.original));
    d["reroute_rounds"] = r.reroute_rounds;
    return d;
}

/// The capacity report back from its dict (measure() takes the drops from it).
moe::capacity_report report_of(const py::dict& d) {
    moe::capacity_report r;
    if (d.contains("dropped")) r.dropped = vector_of<std::int32_t>(d["dropped"], "report['dropped']");
    if (d.contains("capacity")) r.capacity = d["capacity"].cast<std::size_t>();
    return r;
}

template <class W>
void bind_routing_class(py::module_& m, const char* name) {
    using R = py_routing<W>;
    py::class_<R>(m, name)
        .def(py::init([](std::size_t T, std::size_t E, std::size_t k, bool scores) {
                 return R{moe::routing<W>(T, E, k, scores)};
             }),
             py::arg("num_tokens"), py::arg("num_experts"), py::arg("top_k"), py::arg("keep_scores") = false)
        .def_property_readonly("num_tokens", [](const R& r) { return r.r.num_tokens; })
        .def_property_readonly("num_experts", [](const R& r) { return r.r.num_experts; })
        .def_property_readonly("top_k", [](const R& r) { return r.r.top_k; })
        .def_property_readonly("indices",
                               [](py::object self) {
                                   auto& r = self.cast<R&>().r;
                                   return py::array_t<std::int32_t>({static_cast<py::ssize_t>(r.num_tokens), static_cast<py::ssize_t>(r.top_k)},
                                                                    r.indices.data(), self);
                               })
        .def_property_readonly("weights",
                               [](py::object self) {
                                   auto& r = self.cast<R&>().r;
                                   return view_of(r.weights, {static_cast<py::ssize_t>(r.num_tokens), static_cast<py::ssize_t>(r.top_k)}, self);
                               })
        .def_property_readonly("scores",
                               [](py::object self) -> py::object {
                                   auto& r = self.cast<R&>().r;
                                   if (r.scores.empty() && r.num_tokens * r.num_experts > 0) return py::none();
                                   return view_of(r.scores, {static_cast<py::ssize_t>(r.num_tokens), static_cast<py::ssize_t>(r.num_experts)}, self);
                               })
        .def("tokens_per_expert", [](const R& r) { return counts_array(r.r.tokens_per_expert()); })
        .def("copy", [](const R& r) { return R{r.r}; })
        .def("set_scores", [](R& r, bool on) { r.r.scores.assign(on ? r.r.num_tokens * r.r.num_experts : 0, W(0)); });
}

/// Routing from user arrays (e.g. a framework's own top-k): indices [T, k] (-1 = empty slot),
/// weights [T, k], optional scores [T, E].
template <class W>
py::object routing_from(const py::handle& idx, const py::handle& w, const py::object& scores, std::size_t E) {
    py::array ia = py::array::ensure(idx), wa = py::array::ensure(w);
    if (!ia || ia.ndim() != 2) MOE_THROW("moe.python.shape", "indices must be a 2-D array [tokens, k]");
    if (!wa || wa.ndim() != 2 || wa.shape(0) != ia.shape(0) || wa.shape(1) != ia.shape(1))
        MOE_THROW("moe.python.shape", "weights must be 2-D with the shape of indices");
    const std::size_t T = static_cast<std::size_t>(ia.shape(0)), k = static_cast<std::size_t>(ia.shape(1));
    moe::routing<W> r(T, E, k, !scores.is_none());
    const auto iv = vector_of<std::int32_t>(ia.attr("reshape")(-1), "indices");
    const auto wv = vector_of<W>(wa.attr("reshape")(-1), "weights");
    for (std::size_t i = 0; i < iv.size(); ++i)
        if (iv[i] < -1 || iv[i] >= static_cast<std::int32_t>(E))
            MOE_THROW("moe.python.index", "indices hold ", iv[i], " at token ", i / std::max<std::size_t>(k, 1), ", outside [-1, ", E, ")");
    r.indices = iv;
    r.weights = wv;
    if (!scores.is_none()) {
        py::array sa = py::array::ensure(scores);
        if (!sa || sa.ndim() != 2 || static_cast<std::size_t>(sa.shape(0)) != T || static_cast<std::size_t>(sa.shape(1)) != E)
            MOE_THROW("moe.python.shape", "scores must be [tokens, num_experts] = [", T, ", ", E, "]");
        r.scores = vector_of<W>(sa.attr("reshape")(-1), "scores");
    }
    return wrap(std::move(r));
}

py::dict metrics_dict(const moe::load_metrics& m) {
    py::dict d;
    d["load"] = counts_array(m.load);
    d["mean_load"] = m.mean_load;
    d["max_load"] = m.max_load;
    d["max_over_mean"] = m.max_over_mean;
    d["cv"] = m.cv;
    d["routed"] = m.routed;
    d["dropped"] = m.dropped;
    d["drop_rate"] = m.drop_rate;
    d["drops_by_decile"] = counts_array(std::vector<std::size_t>(m.drops_by_decile.begin(), m.drops_by_decile.end()));
    d["padding_fraction"] = m.padding_fraction;
    return d;
}

/// Noise stages write into a copy of the input (float32 or float64), returned.
template <class F>
py::array noisy_copy(const py::array& a, const char* what, F&& f) {
    return visit_loss_logits(a, what, [&](auto in) {
        using T = std::remove_const_t<std::remove_reference_t<decltype(*in.view.data)>>;
        moe::matrix<T> out(in.view.rows, in.view.cols);
        for (std::size_t t = 0; t < in.view.rows; ++t) std::copy(in.view.row(t), in.view.row(t) + in.view.cols, out.row(t));
        {
            py::gil_scoped_release nogil;
            f(out.view());
        }
        return matrix_array(std::move(out));
    });
}

}  // namespace

void bind_routing(py::module_& m) {
    bind_configs(m);
    bind_routing_class<float>(m, "RoutingF32");
    bind_routing_class<double>(m, "RoutingF64");
    m.def("routing_from_arrays",
          [](const py::handle& idx, const py::handle& w, const py::object& scores, std::size_t E, bool f64) {
              return f64 ? routing_from<double>(idx, w, scores, E) : routing_from<float>(idx, w, scores, E);
          });

    m.attr("preset_names") = [] {
        py::list l;
        for (const char* n : moe::presets::preset_names) l.append(n);
        return l;
    }();
    m.def("router_config", [](const py::dict& d) { return dict_of(router_config_of(d)); });

    m.def("route", [](const py::array& logits, bool bf16, const py::dict& cfg_d, const py::object& bias, int threads,
                      const py::object& replay, const py::object& replay_weights, std::size_t ser_k_min, double ser_threshold) {
        const moe::router_config cfg = router_config_of(cfg_d);
        const py_executor ex = executor(threads);
        return visit_logits(logits, bf16, "logits", [&](auto in) -> py::object {
            using T = std::remove_const_t<std::remove_reference_t<decltype(*in.view.data)>>;
            using C = moe::compute_t<T>;
            std::vector<C> b;
            if (!bias.is_none()) b = vector_of<C>(bias, "bias");
            moe::routing<C> r(in.view.rows, in.view.cols, cfg.top_k, cfg.keep_scores);
            cfg.validate(in.view.cols);
            if (!replay.is_none()) {
                const int_matrix idx = int_matrix_of(replay, "replay");
                std::vector<C> w;
                std::size_t wr = 0, wc = 0;
                if (!replay_weights.is_none()) {
                    py::array wa = py::array::ensure(replay_weights);
                    if (!wa || wa.ndim() != 2) MOE_THROW("moe.python.shape", "replay_weights must be a 2-D array [T, k]");
                    const char kind = wa.dtype().kind();
                    if (kind != 'f' && kind != 'i' && kind != 'u')
                        MOE_THROW("moe.python.dtype", "replay_weights must be a float array, got ", dtype_name(wa));
                    py::array_t<C, py::array::c_style | py::array::forcecast> c(wa);
                    w.assign(c.data(), c.data() + c.size());
                    wr = static_cast<std::size_t>(wa.shape(0));
                    wc = static_cast<std::size_t>(wa.shape(1));
                }
                py::gil_scoped_release nogil;
                moe::replay_workspace<C> ws;
                moe::replay_into(r, in.view, cfg, idx.view(), moe::matrix_view<const C>(w.empty() ? nullptr : w.data(), wr, wc), ws, ex);
                return wrap(std::move(r));
            }
            {
                py::gil_scoped_release nogil;
                moe::router_workspace<C> ws;
                moe::route_into(r, in.view, cfg, moe::vector_view<C>(b), ws, ex);
                if (ser_k_min > 0) {
                    moe::replay_workspace<C> rws;
                    moe::reduce_experts(r, in.view, cfg, moe::ser_config{ser_k_min, ser_threshold}, rws, ex);
                }
            }
            return wrap(std::move(r));
        });
    });

    m.def("routing_stats", [](const py::handle& indices, std::size_t E, const py::object& scores, std::size_t capacity) {
        py::array a = py::array::ensure(indices);
        if (!a || (a.ndim() != 2 && a.ndim() != 3)) MOE_THROW("moe.python.shape", "indices must be [T, k] or [L, T, k]");
        const char kind = a.dtype().kind();
        if (kind != 'i' && kind != 'u') MOE_THROW("moe.python.dtype", "indices must be an integer array, got ", dtype_name(a));
        py::array_t<std::int64_t, py::array::c_style | py::array::forcecast> c(a);
        const std::size_t L = a.ndim() == 3 ? static_cast<std::size_t>(a.shape(0)) : 1;
        const std::size_t T = static_cast<std::size_t>(a.shape(a.ndim() - 2)), k = static_cast<std::size_t>(a.shape(a.ndim() - 1));
        std::int64_t hi = -1;
        for (py::ssize_t i = 0; i < c.size(); ++i) hi = std::max(hi, c.data()[i]);
        if (E == 0) E = static_cast<std::size_t>(std::max<std::int64_t>(hi + 1, 1));
        moe::routing_trace tr(L, T, E, k);
        for (py::ssize_t i = 0; i < c.size(); ++i) {
            const std::int64_t v = c.data()[i];
            if (v < -1 || v >= static_cast<std::int64_t>(E))
                MOE_THROW("moe.trace.index", "index ", v, " at position ", i, " is outside [-1, ", E, ")");
            tr.indices[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(v);
        }
        auto one = [](const moe::routing_statistics& s) {
            py::dict d;
            d["load"] = counts_array(s.load);
            d["routed"] = s.routed;
            d["mean_load"] = s.mean_load;
            d["max_over_mean"] = s.max_over_mean;
            d["cv"] = s.cv;
            d["jain"] = s.jain;
            d["load_entropy"] = s.load_entropy;
            d["routing_entropy"] = s.routing_entropy;
            d["adjacent_overlap"] = s.adjacent_overlap;
            d["capacity"] = s.capacity;
            d["drop_rate"] = s.drop_rate;
            return d;
        };
        if (a.ndim() == 2) {
            moe::routing<double> r(T, E, k, !scores.is_none());
            r.indices = tr.indices;
            if (!scores.is_none()) {
                py::array sa = py::array::ensure(scores);
                if (!sa || sa.ndim() != 2 || static_cast<std::size_t>(sa.shape(0)) != T || static_cast<std::size_t>(sa.shape(1)) != E)
                    MOE_THROW("moe.python.shape", "scores must be [T, E] = [", T, ", ", E, "]");
                py::array_t<double, py::array::c_style | py::array::forcecast> sc(sa);
                r.scores.assign(sc.data(), sc.data() + sc.size());
            }
            return py::object(one(moe::routing_stats(r, capacity)));
        }
        if (!scores.is_none()) MOE_THROW("moe.python.argument", "scores are taken for one layer's [T, k] indices only");
        const moe::trace_statistics s = moe::routing_stats(tr, capacity);
        py::dict d;
        std::vector<std::int64_t> load;
        std::vector<double> mom, cv, jain, ent, adj, drop;
        for (const auto& l : s.layers) {
            load.insert(load.end(), l.load.begin(), l.load.end());
            mom.push_back(l.max_over_mean);
            cv.push_back(l.cv);
            jain.push_back(l.jain);
            ent.push_back(l.load_entropy);
            adj.push_back(l.adjacent_overlap);
            drop.push_back(l.drop_rate);
        }
        d["load"] = to_array(std::move(load), {static_cast<py::ssize_t>(L), static_cast<py::ssize_t>(E)});
        d["max_over_mean"] = to_array(std::move(mom));
        d["cv"] = to_array(std::move(cv));
        d["jain"] = to_array(std::move(jain));
        d["load_entropy"] = to_array(std::move(ent));
        d["adjacent_overlap"] = to_array(std::move(adj));
        d["drop_rate"] = to_array(std::move(drop));
        d["layer_overlap"] = to_array(std::vector<double>(s.layer_overlap));
        d["total"] = one(s.total);
        return py::object(d);
    });

    m.def("mask_tokens", [](py::object r, const py::object& valid) {
        visit_routing(r, [&](auto& rt) { moe::mask_tokens(rt, mask_of(valid, rt.num_tokens)); });
    });

    m.def("expert_capacity", [](const py::dict& cap, std::size_t T, std::size_t E, std::size_t k, std::size_t max_load,
                                double slots_per_token) {
        return moe::expert_capacity(capacity_config_of(cap), T, E, k, max_load, slots_per_token);
    });
    m.def("apply_capacity", [](py::object r, const py::dict& d) {
        const moe::drop_config cfg = drop_config_of(d);
        return visit_routing(r, [&](auto& rt) {
            moe::capacity_report rep;
            {
                py::gil_scoped_release nogil;
                rep = moe::apply_capacity(rt, cfg);
            }
            return report_dict(std::move(rep));
        });
    });
    m.def("fill_in", [](py::object r, std::size_t capacity) {
        return visit_routing(r, [&](auto& rt) {
            moe::fill_in_report rep;
            auto out = moe::fill_in(rt, capacity, &rep);
            py::dict d;
            d["filled"] = rep.filled;
            d["load_after"] = counts_array(rep.load_after);
            return py::make_tuple(wrap(std::move(out)), d);
        });
    });

    py::class_<moe::dispatch_plan>(m, "Plan")
        .def_property_readonly("num_tokens", [](const moe::dispatch_plan& p) { return p.num_tokens; })
        .def_property_readonly("num_experts", [](const moe::dispatch_plan& p) { return p.num_experts; })
        .def_property_readonly("top_k", [](const moe::dispatch_plan& p) { return p.top_k; })
        .def_property_readonly("block", [](const moe::dispatch_plan& p) { return p.block; })
        .def_property_readonly("num_rows", &moe::dispatch_plan::num_rows)
        .def_property_readonly("padding_fraction", &moe::dispatch_plan::padding_fraction)
        .def_property_readonly("counts", [](py::object s) { auto& p = s.cast<moe::dispatch_plan&>(); return view_of(p.counts, {static_cast<py::ssize_t>(p.counts.size())}, s); })
        .def_property_readonly("offsets", [](py::object s) { auto& p = s.cast<moe::dispatch_plan&>(); return view_of(p.offsets, {static_cast<py::ssize_t>(p.offsets.size())}, s); })
        .def_property_readonly("row_token", [](py::object s) { auto& p = s.cast<moe::dispatch_plan&>(); return view_of(p.row_token, {static_cast<py::ssize_t>(p.row_token.size())}, s); })
        .def_property_readonly("row_slot", [](py::object s) { auto& p = s.cast<moe::dispatch_plan&>(); return view_of(p.row_slot, {static_cast<py::ssize_t>(p.row_slot.size())}, s); })
        .def_property_readonly("slot_row", [](py::object s) {
            auto& p = s.cast<moe::dispatch_plan&>();
            return view_of(p.slot_row, {static_cast<py::ssize_t>(p.num_tokens), static_cast<py::ssize_t>(p.top_k)}, s);
        });
    m.def("make_plan", [](py::object r, std::size_t block, std::size_t rows_per_expert) {
        return visit_routing(r, [&](auto& rt) { return moe::make_plan(rt, block, rows_per_expert); });
    });
    m.def("padded_rows_per_expert", &moe::padded_rows_per_expert, py::arg("capacity"), py::arg("num_tokens"),
          "Rows per expert of a pad-to-capacity plan: capacity, or num_tokens when that is smaller.");
    m.def("to_vllm_layout", [](const moe::dispatch_plan& p) {
        auto v = moe::to_vllm_layout(p);
        py::dict d;
        d["sorted_token_ids"] = to_array(std::move(v.sorted_token_ids));
        d["expert_ids"] = to_array(std::move(v.expert_ids));
        d["num_tokens_post_pad"] = v.num_tokens_post_pad;
        return d;
    });
    m.def("gather", [](const py::array& x, const moe::dispatch_plan& plan, int threads) {
        const py_executor ex = executor(threads);
        return visit_loss_logits(x, "x", [&](auto in) {
            using T = std::remove_const_t<std::remove_reference_t<decltype(*in.view.data)>>;
            moe::matrix<T> rows(plan.num_rows(), in.view.cols);
            {
                py::gil_scoped_release nogil;
                moe::gather(rows.view(), in.view, plan, ex);
            }
            return matrix_array(std::move(rows));
        });
    });
    m.def("combine", [](const py::array& out, const moe::dispatch_plan& plan, py::object r, int threads) {
        const py_executor ex = executor(threads);
        if (kind_of(out) != elem::f32) MOE_THROW("moe.python.dtype", "combine: expert output must be float32, got ", dtype_name(out));
        if (!py::isinstance<py_routing<float>>(r))
            MOE_THROW("moe.python.dtype", "combine: the routing must have float32 weights (route float32 logits)");
        const auto o = matrix_of<float>(out, "out");
        auto& rt = r.cast<py_routing<float>&>().r;
        moe::matrix<float> y(plan.num_tokens, o.view.cols);
        {
            py::gil_scoped_release nogil;
            moe::combine(y.view(), o.view, plan, rt, ex);
        }
        return matrix_array(std::move(y));
    });

    m.def("measure", [](py::object r, const py::object& report, const py::object& plan) {
        return visit_routing(r, [&](auto& rt) {
            moe::capacity_report rep;
            if (!report.is_none()) rep = report_of(report.cast<py::dict>());
            const moe::dispatch_plan* p = plan.is_none() ? nullptr : &plan.cast<const moe::dispatch_plan&>();
            return metrics_dict(moe::measure(rt, report.is_none() ? nullptr : &rep, p));
        });
    });
    m.def("device_loads", [](py::object r, const py::handle& placement) {
        const auto pl = vector_of<std::int32_t>(placement, "placement");
        return visit_routing(r, [&](auto& rt) { return counts_array(moe::device_loads(rt, pl)); });
    });

    m.def("apply_jitter", [](const py::array& x, double eps, std::uint64_t seed, int threads) {
        const py_executor ex = executor(threads);
        return noisy_copy(x, "x", [&](auto v) { moe::apply_jitter(v, eps, seed, ex); });
    });
    m.def("add_gumbel_noise", [](const py::array& x, std::uint64_t seed, int threads) {
        const py_executor ex = executor(threads);
        return noisy_copy(x, "logits", [&](auto v) { moe::add_gumbel_noise(v, seed, ex); });
    });
    m.def("add_normal_noise", [](const py::array& x, double stddev, std::uint64_t seed, int threads) {
        const py_executor ex = executor(threads);
        return noisy_copy(x, "logits", [&](auto v) { moe::add_normal_noise(v, stddev, seed, ex); });
    });
    m.def("rescore", [](py::object r, const py::array& clean, const py::dict& cfg_d) {
        const moe::router_config cfg = router_config_of(cfg_d);
        visit_loss_logits(clean, "clean_logits", [&](auto in) {
            using T = std::remove_const_t<std::remove_reference_t<decltype(*in.view.data)>>;
            if (!py::isinstance<py_routing<T>>(r))
                MOE_THROW("moe.python.dtype", "rescore: the routing's weights and the clean logits must have one float type");
            moe::rescore(r.cast<py_routing<T>&>().r, in.view, cfg);
        });
    });

    // Test hook: the address moe reads a logits array from (equal to the array's own data
    // pointer when it is read in place, not copied).
    m.def("_input_address", [](const py::array& a, bool bf16) {
        return visit_logits(a, bf16, "a", [](auto in) { return reinterpret_cast<std::uintptr_t>(in.view.data); });
    });

    m.def("synthetic_logits", [](std::size_t T, std::size_t E, const std::string& skew, std::uint64_t seed) {
        return matrix_array(moe::synthetic_logits(T, E, moe::skew::parse(skew), seed));
    });

    m.def("gate", [](const py::array& x, const py::array& w, const py::object& b, int threads) {
        const py_executor ex = executor(threads);
        if (kind_of(x) != elem::f32 || kind_of(w) != elem::f32)
            MOE_THROW("moe.python.dtype", "gate: x and w must be float32 (got ", dtype_name(x), ", ", dtype_name(w), ")");
        const auto xi = matrix_of<float>(x, "x"), wi = matrix_of<float>(w, "w");
        std::vector<float> bias;
        if (!b.is_none()) bias = vector_of<float>(b, "b", static_cast<std::ptrdiff_t>(wi.view.rows));
        if (xi.view.cols != wi.view.cols)
            MOE_THROW("moe.gate.shape", "x has ", xi.view.cols, " columns, w ", wi.view.cols, " (w is num_experts x hidden)");
        moe::matrix<float> out(xi.view.rows, wi.view.rows);
        {
            py::gil_scoped_release nogil;
            const moe::packed_gate g = moe::pack_gate(wi.view);
            moe::gate_into(out.view(), xi.view, g, moe::vector_view<float>(bias), ex);
        }
        return matrix_array(std::move(out));
    });

    m.attr("simulator_policies") = [] {
        py::list l;
        for (const char* n : moe::simulator_policies) l.append(n);
        return l;
    }();
    m.def("measure_row_cost", [](std::size_t H, std::size_t F) {
        py::gil_scoped_release nogil;
        return moe::measure_row_cost(H, F);
    });
    m.def("compare_policies", [](const py::array& logits, const py::dict& cfg_d, std::vector<std::string> names,
                                 std::size_t block, std::size_t bias_steps, double row_cost) {
        if (kind_of(logits) != elem::f32) MOE_THROW("moe.python.dtype", "compare_policies: logits must be float32, got ", dtype_name(logits));
        const auto in = matrix_of<float>(logits, "logits");
        moe::matrix<float> l(in.view.rows, in.view.cols);
        for (std::size_t t = 0; t < l.rows; ++t) std::copy(in.view.row(t), in.view.row(t) + l.cols, l.row(t));
        const moe::router_config cfg = router_config_of(cfg_d);
        moe::simulator_options o;
        o.block = block;
        o.bias_steps = bias_steps;
        o.row_cost = row_cost;
        std::vector<moe::policy_result> res;
        {
            py::gil_scoped_release nogil;
            res = moe::compare_policies(l, cfg, std::move(names), o);
        }
        py::list rows;
        for (auto& p : res) {
            py::dict d;
            d["policy"] = p.name;
            d["drop_rate"] = p.drop_rate;
            d["rerouted"] = p.rerouted;
            d["max_load"] = p.max_load;
            d["max_over_mean"] = p.max_over_mean;
            d["cv"] = p.cv;
            d["padding_fraction"] = p.padding;
            d["aux_loss"] = p.aux;
            d["z_loss"] = p.z;
            d["experts_per_token"] = p.experts_per_token;
            d["us_per_token"] = p.us_per_token;
            d["model_ms"] = p.model_ms;
            d["balanced_ms"] = p.ideal_ms;
            d["load"] = counts_array(p.load);
            rows.append(d);
        }
        return rows;
    });
}

}  // namespace moe_py
