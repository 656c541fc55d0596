// Selection policies: top-p, expert choice, Sinkhorn, hash routing, null and zero experts.
#include "common.hpp"

namespace moe_py {

namespace {

moe::top_p_config top_p_of(const py::dict& d) {
    dict_reader rd{d, "route_top_p", {}};
    moe::top_p_config c;
    rd.get("p", c.p);
    rd.get_size("min_k", c.min_k);
    rd.get_size("max_k", c.max_k);
    rd.get_enum("score", c.score, moe::parse_score_function);
    rd.get_enum("renorm", c.renorm, moe::parse_renormalize);
    rd.get("renorm_eps", c.renorm_eps);
    rd.get("scaling_factor", c.scaling_factor);
    rd.get("keep_scores", c.keep_scores);
    rd.finish();
    return c;
}

moe::expert_choice_config expert_choice_of(const py::dict& d) {
    dict_reader rd{d, "route_expert_choice", {}};
    moe::expert_choice_config c;
    rd.get_size("capacity", c.capacity);
    rd.get("capacity_factor", c.capacity_factor);
    rd.get_enum("score", c.score, moe::parse_score_function);
    rd.get("keep_scores", c.keep_scores);
    rd.finish();
    return c;
}

}  // namespace

void bind_selection(py::module_& m) {
    m.def("route_top_p", [](const py::array& logits, bool bf16, const py::dict& d) {
        const auto cfg = top_p_of(d);
        return visit_logits(logits, bf16, "logits", [&](auto in) {
            py::gil_scoped_release nogil;
            auto r = moe::route_top_p(in.view, cfg);
            py::gil_scoped_acquire gil;
            return wrap(std::move(r));
        });
    });
    m.def("route_expert_choice", [](const py::array& logits, bool bf16, const py::dict& d) {
        const auto cfg = expert_choice_of(d);
        return visit_logits(logits, bf16, "logits", [&](auto in) {
            py::gil_scoped_release nogil;
            auto r = moe::route_expert_choice(in.view, cfg);
            py::gil_scoped_acquire gil;
            return wrap(std::move(r));
        });
    });
    m.def("sinkhorn", [](const py::array& cost, double tol, std::size_t max_iterations) {
        return visit_loss_logits(cost, "cost", [&](auto in) {
            moe::matrix<double> out(in.view.rows, in.view.cols);
            moe::sinkhorn_info info;
            {
                py::gil_scoped_release nogil;
                info = moe::sinkhorn(in.view, out.view(), tol, max_iterations);
            }
            py::dict d;
            d["iterations"] = info.iterations;
            d["converged"] = info.converged;
            return py::make_tuple(matrix_array(std::move(out)), d);
        });
    });
    m.def("route_sinkhorn", [](const py::array& logits, std::size_t top_k, double tol) {
        return visit_loss_logits(logits, "logits", [&](auto in) {
            moe::sinkhorn_info info;
            py::object r;
            {
                py::gil_scoped_release nogil;
                auto rt = moe::route_sinkhorn(in.view, top_k, tol, &info);
                py::gil_scoped_acquire gil;
                r = wrap(std::move(rt));
            }
            py::dict d;
            d["iterations"] = info.iterations;
            d["converged"] = info.converged;
            return py::make_tuple(r, d);
        });
    });
    m.def("strip_null_experts", [](py::object r, std::size_t num_real) {
        return visit_routing(r, [&](auto& rt) { return wrap(moe::strip_null_experts(rt, num_real)); });
    });
    m.def("mean_experts_per_token", [](py::object r) {
        return visit_routing(r, [&](auto& rt) { return moe::mean_experts_per_token(rt); });
    });
    m.def("route_hash", [](const py::array& logits, const py::handle& token_ids, const py::array& table, const py::dict& cfg_d) {
        const moe::router_config cfg = router_config_of(cfg_d);
        if (kind_of(logits) != elem::f32) MOE_THROW("moe.python.dtype", "route_hash: logits must be float32, got ", dtype_name(logits));
        const auto in = matrix_of<float>(logits, "logits");
        const auto ids = vector_of<std::int64_t>(token_ids, "token_ids");
        py::array_t<std::int32_t, py::array::c_style | py::array::forcecast> tab(table);
        if (!(kind_of(table) == elem::i32 || kind_of(table) == elem::i64) || tab.ndim() != 2)
            MOE_THROW("moe.python.dtype", "route_hash: table must be a 2-D integer array [vocab, k]");
        const moe::matrix_view<const std::int32_t> tv(tab.data(), static_cast<std::size_t>(tab.shape(0)), static_cast<std::size_t>(tab.shape(1)));
        return wrap(moe::route_hash(in.view, ids, tv, cfg));
    });
    m.def("split_zero_experts", [](py::object r, std::size_t num_real, const std::string& type, const py::object& x) {
        if (!py::isinstance<py_routing<float>>(r)) MOE_THROW("moe.python.dtype", "split_zero_experts: the routing must have float32 weights");
        auto& rt = r.cast<py_routing<float>&>().r;
        moe::zero_expert_type ty;
        if (type == "zero") ty = moe::zero_expert_type::zero;
        else if (type == "identity") ty = moe::zero_expert_type::identity;
        else MOE_THROW("moe.router.zero_experts", "unknown zero expert type '", type, "' (expected zero or identity)");
        if (ty == moe::zero_expert_type::zero) {
            const std::size_t n = moe::split_zero_experts(rt, num_real, ty, {}, {});
            return py::make_tuple(n, py::none());
        }
        if (x.is_none()) MOE_THROW("moe.router.zero_experts", "identity zero experts need x (tokens x hidden)");
        const py::array xa = py::array::ensure(x);
        if (kind_of(xa) != elem::f32) MOE_THROW("moe.python.dtype", "split_zero_experts: x must be float32, got ", dtype_name(xa));
        const auto xi = matrix_of<float>(xa, "x");
        moe::matrix<float> yz(xi.view.rows, xi.view.cols);
        const std::size_t n = moe::split_zero_experts(rt, num_real, ty, xi.view, yz.view());
        return py::make_tuple(n, py::object(matrix_array(std::move(yz))));
    });
}

}  // namespace moe_py
