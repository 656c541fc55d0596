// Load-balancing losses with their gradients, z-loss, importance/load loss, the global-batch
// balancer and the aux-loss-free bias update.
#include "common.hpp"

namespace moe_py {

namespace {

moe::aux_loss_variant parse_variant(const std::string& s) {
    for (auto v : {moe::aux_loss_variant::megatron, moe::aux_loss_variant::hf_mixtral, moe::aux_loss_variant::deepspeed})
        if (s == moe::to_string(v)) return v;
    MOE_THROW("moe.losses.variant", "unknown load-balancing normalisation '", s, "' (expected megatron, hf_mixtral or deepspeed)");
}

moe::aux_loss_config aux_config_of(const py::dict& d) {
    dict_reader rd{d, "load_balancing_loss", {}};
    moe::aux_loss_config c;
    rd.get_enum("normalization", c.variant, parse_variant);
    rd.get_enum("score", c.score, moe::parse_score_function);
    rd.get_size("top_k", c.top_k);
    rd.get("coeff", c.coeff);
    rd.get_size("num_null_experts", c.num_null_experts);
    rd.finish();
    return c;
}

py::dict terms_dict(const moe::aux_loss_terms& t) {
    py::dict d;
    d["prob_sum"] = to_array(std::vector<double>(t.prob_sum));
    d["counts"] = to_array(std::vector<double>(t.counts));
    d["tokens"] = t.tokens;
    d["slots"] = t.slots;
    d["routed_tokens"] = t.routed_tokens;
    d["top_k"] = t.top_k;
    return d;
}

moe::aux_loss_terms terms_of(const py::dict& d) {
    moe::aux_loss_terms t;
    t.prob_sum = vector_of<double>(d["prob_sum"], "terms['prob_sum']");
    t.counts = vector_of<double>(d["counts"], "terms['counts']", static_cast<std::ptrdiff_t>(t.prob_sum.size()));
    t.tokens = d["tokens"].cast<double>();
    t.slots = d["slots"].cast<double>();
    t.routed_tokens = d["routed_tokens"].cast<double>();
    t.top_k = d["top_k"].cast<std::size_t>();
    return t;
}

/// (value, gradient or None): `f(logits view, grad view)` returns the loss.
template <class F>
py::tuple with_grad(const py::array& logits, bool want_grad, F&& f) {
    return visit_loss_logits(logits, "logits", [&](auto in) {
        using T = std::remove_const_t<std::remove_reference_t<decltype(*in.view.data)>>;
        moe::matrix<T> g(want_grad ? in.view.rows : 0, want_grad ? in.view.cols : 0);
        double v = 0;
        {
            py::gil_scoped_release nogil;
            v = f(in.view, want_grad ? g.view() : moe::matrix_view<T>{});
        }
        return py::make_tuple(v, want_grad ? py::object(matrix_array(std::move(g))) : py::object(py::none()));
    });
}

class py_balancer {
public:
    explicit py_balancer(const py::dict& d) : b_(aux_config_of(d)) {}
    void add(const py::array& logits, py::object r, const py::object& valid) {
        visit_loss_logits(logits, "logits", [&](auto in) {
            const auto mask = mask_of(valid, in.view.rows);
            visit_routing(r, [&](auto& rt) { b_.add(in.view, rt, moe::vector_view<std::uint8_t>(mask)); });
        });
    }
    void merge(const py::dict& t) { b_.merge(terms_of(t)); }
    double loss() const { return b_.loss(); }
    py::array gradient(const py::array& logits, const py::object& valid) const {
        return visit_loss_logits(logits, "logits", [&](auto in) {
            using T = std::remove_const_t<std::remove_reference_t<decltype(*in.view.data)>>;
            const auto mask = mask_of(valid, in.view.rows);
            moe::matrix<T> g(in.view.rows, in.view.cols);
            b_.gradient(in.view, g.view(), moe::vector_view<std::uint8_t>(mask));
            return matrix_array(std::move(g));
        });
    }
    void reset() { b_.reset(); }
    py::dict terms() const { return terms_dict(b_.terms()); }

private:
    moe::global_load_balancer b_;
};

}  // namespace

/// The token mask for logits `a` (rows = its first dimension), read while the GIL is held.
std::vector<std::uint8_t> rows_mask(const py::object& valid, const py::array& a) {
    return mask_of(valid, a.ndim() >= 1 ? static_cast<std::size_t>(a.shape(0)) : 0);
}

void bind_losses(py::module_& m) {
    m.def("aux_loss_routing", [](const py::array& logits, std::size_t top_k, const std::string& score) {
        const auto f = moe::parse_score_function(score);
        return visit_loss_logits(logits, "logits", [&](auto in) { return wrap(moe::aux_loss_routing(in.view, top_k, f)); });
    });
    m.def("load_balancing_loss", [](const py::array& logits, py::object r, const py::dict& cfg_d, const py::object& valid, bool grad) {
        const auto cfg = aux_config_of(cfg_d);
        const auto mask = rows_mask(valid, logits);
        return visit_routing(r, [&](auto& rt) {
            return with_grad(logits, grad, [&](auto lv, auto gv) {
                return moe::load_balancing_loss(lv, rt, cfg, moe::vector_view<std::uint8_t>(mask), gv);
            });
        });
    });
    m.def("sequence_load_balancing_loss", [](const py::array& logits, py::object r, std::size_t seq_len, const py::dict& cfg_d,
                                             const py::object& valid, bool grad) {
        const auto cfg = aux_config_of(cfg_d);
        const auto mask = rows_mask(valid, logits);
        return visit_routing(r, [&](auto& rt) {
            return with_grad(logits, grad, [&](auto lv, auto gv) {
                return moe::sequence_load_balancing_loss(lv, rt, seq_len, cfg, moe::vector_view<std::uint8_t>(mask), gv);
            });
        });
    });
    m.def("z_loss", [](const py::array& logits, double coeff, const py::object& valid, bool grad) {
        const auto mask = rows_mask(valid, logits);
        return with_grad(logits, grad, [&](auto lv, auto gv) { return moe::z_loss(lv, coeff, moe::vector_view<std::uint8_t>(mask), gv); });
    });
    m.def("importance_load_loss", [](const py::array& logits, const py::array& noisy, py::object r, double gate_noise, bool grad) {
        return visit_routing(r, [&](auto& rt) {
            return with_grad(logits, grad, [&](auto lv, auto gv) -> double {
                using T = std::remove_const_t<std::remove_reference_t<decltype(*lv.data)>>;
                py::gil_scoped_acquire gil;
                if (kind_of(noisy) != kind_of(logits))
                    MOE_THROW("moe.python.dtype", "noisy_logits must have the dtype of logits (", dtype_name(logits), "), got ", dtype_name(noisy));
                const auto nv = matrix_of<T>(noisy, "noisy_logits");
                py::gil_scoped_release nogil;
                return moe::importance_load_loss(lv, nv.view, rt, gate_noise, gv);
            });
        });
    });
    m.def("aux_loss_statistics", [](const py::array& logits, py::object r, const py::dict& cfg_d, const py::object& valid) {
        const auto cfg = aux_config_of(cfg_d);
        const auto mask = rows_mask(valid, logits);
        return visit_loss_logits(logits, "logits", [&](auto in) {
            return visit_routing(r, [&](auto& rt) {
                return terms_dict(moe::aux_loss_statistics(in.view, rt, cfg, moe::vector_view<std::uint8_t>(mask)));
            });
        });
    });
    m.def("aux_loss_value", [](const py::dict& terms, const py::dict& cfg_d) {
        return moe::aux_loss_value(terms_of(terms), aux_config_of(cfg_d));
    });
    py::class_<py_balancer>(m, "GlobalLoadBalancer")
        .def(py::init<const py::dict&>())
        .def("add", &py_balancer::add)
        .def("merge", &py_balancer::merge)
        .def("loss", &py_balancer::loss)
        .def("gradient", &py_balancer::gradient)
        .def("reset", &py_balancer::reset)
        .def("terms", &py_balancer::terms);
    m.def("update_expert_bias", [](const py::handle& bias, const py::handle& tokens_per_expert, float rate) {
        auto b = vector_of<float>(bias, "bias");
        const auto n = vector_of<std::int64_t>(tokens_per_expert, "tokens_per_expert");
        std::vector<std::size_t> counts(n.size());
        for (std::size_t e = 0; e < n.size(); ++e) {
            if (n[e] < 0) MOE_THROW("moe.losses.bias", "tokens_per_expert holds ", n[e], " at expert ", e, " (counts are >= 0)");
            counts[e] = static_cast<std::size_t>(n[e]);
        }
        moe::update_expert_bias(b, counts, rate);
        return to_array(std::move(b));
    });
}

}  // namespace moe_py
