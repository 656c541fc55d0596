// MoE blocks: a model family's block (spec + float weights) packed in any weight format moe
// runs, its forward pass, and the checkpoint loader (HF folders and GGUF files).
#include <moe/models/checkpoint.hpp>
#include <moe/block.hpp>

#include "common.hpp"

namespace moe_py {

namespace {

/// One block whatever its weight format (the format is chosen at run time).
class block_base {
public:
    virtual ~block_base() = default;
    virtual void forward(moe::matrix_view<float> y, moe::matrix_view<const float> x, const py_executor& ex) = 0;
    [[nodiscard]] virtual const moe::routing<float>& last_routing() const = 0;
    [[nodiscard]] virtual moe::matrix_view<const float> last_logits() const = 0;
    [[nodiscard]] virtual const moe::capacity_report& last_capacity() const = 0;
    [[nodiscard]] virtual const moe::block_spec& spec() const = 0;
    [[nodiscard]] virtual std::size_t expert_bytes() const = 0;
    [[nodiscard]] virtual std::size_t packed_bytes() const = 0;
};

template <class W>
class block_impl final : public block_base {
public:
    block_impl(const moe::block_spec& s, const moe::block_weights& w, const moe::layer_options& o) : b_(s, w, o) {}
    void forward(moe::matrix_view<float> y, moe::matrix_view<const float> x, const py_executor& ex) override { b_.forward(y, x, ex); }
    const moe::routing<float>& last_routing() const override { return b_.last_routing(); }
    moe::matrix_view<const float> last_logits() const override { return b_.last_logits(); }
    const moe::capacity_report& last_capacity() const override { return b_.last_capacity(); }
    const moe::block_spec& spec() const override { return b_.spec(); }
    std::size_t expert_bytes() const override { return b_.packed_experts().expert_bytes(); }
    std::size_t packed_bytes() const override { return b_.packed_experts().bytes(); }

private:
    moe::block<moe::default_arch, W> b_;
};

moe::block_spec spec_of(const py::dict& d) {
    dict_reader rd{d, "block spec", {}};
    moe::block_spec s;
    rd.get("family", s.family);
    if (rd.has("router")) s.router = router_config_of(d["router"].cast<py::dict>());
    rd.get_size("num_experts", s.num_experts);
    rd.get_size("hidden", s.hidden);
    rd.get_size("ffn", s.ffn);
    rd.get_size("shared_ffn", s.shared_ffn);
    rd.get_size("zero_experts", s.zero_experts);
    rd.get_enum("activation", s.activation, [](const std::string& a) {
        if (a == "swiglu") return moe::kernels::ffn_activation::swiglu;
        if (a == "swiglu_oai") return moe::kernels::ffn_activation::swiglu_oai;
        if (a == "swiglu_clamp") return moe::kernels::ffn_activation::swiglu_clamp;
        MOE_THROW("moe.models.spec", "unknown activation '", a, "' (expected swiglu, swiglu_oai or swiglu_clamp)");
    });
    rd.get("swiglu_alpha", s.swiglu_alpha);
    rd.get("swiglu_limit", s.swiglu_limit);
    rd.get("router_bias", s.router_bias);
    rd.get("selection_bias", s.selection_bias);
    rd.get("expert_bias", s.expert_bias);
    rd.get("weight_on_input", s.weight_on_input);
    rd.get_enum("shared", s.shared, [](const std::string& g) {
        if (g == "none") return moe::shared_gate::none;
        if (g == "sigmoid") return moe::shared_gate::sigmoid;
        MOE_THROW("moe.models.spec", "unknown shared gate '", g, "' (expected none or sigmoid)");
    });
    rd.finish();
    return s;
}

py::dict dict_of(const moe::block_spec& s) {
    py::dict d;
    d["family"] = s.family;
    d["router"] = moe_py::dict_of(s.router);
    d["num_experts"] = s.num_experts;
    d["hidden"] = s.hidden;
    d["ffn"] = s.ffn;
    d["shared_ffn"] = s.shared_ffn;
    d["zero_experts"] = s.zero_experts;
    d["activation"] = s.activation == moe::kernels::ffn_activation::swiglu_oai     ? "swiglu_oai"
                      : s.activation == moe::kernels::ffn_activation::swiglu_clamp ? "swiglu_clamp"
                                                                                   : "swiglu";
    d["swiglu_alpha"] = s.swiglu_alpha;
    d["swiglu_limit"] = s.swiglu_limit;
    d["router_bias"] = s.router_bias;
    d["selection_bias"] = s.selection_bias;
    d["expert_bias"] = s.expert_bias;
    d["weight_on_input"] = s.weight_on_input;
    d["shared"] = s.shared == moe::shared_gate::sigmoid ? "sigmoid" : "none";
    return d;
}

/// The weight fields of block_weights, in one table for both directions.
template <class Wts, class F>
void for_each_weight(Wts& w, F&& f) {
    f("router_w", w.router_w);
    f("router_b", w.router_b);
    f("selection_bias", w.selection_bias);
    f("w1", w.w1);
    f("w3", w.w3);
    f("w2", w.w2);
    f("b1", w.b1);
    f("b3", w.b3);
    f("b2", w.b2);
    f("s1", w.s1);
    f("s3", w.s3);
    f("s2", w.s2);
    f("s_gate", w.s_gate);
}

/// float32 arrays of any shape, flattened in C order (block_weights' HF layouts).
moe::block_weights weights_of(const py::dict& d) {
    dict_reader rd{d, "block weights", {}};
    moe::block_weights w;
    for_each_weight(w, [&](const char* name, std::vector<float>& v) {
        if (!rd.has(name)) return;
        py::array a = py::array::ensure(d[name]);
        if (!a || kind_of(a) != elem::f32)
            MOE_THROW("moe.python.dtype", "weights['", name, "'] must be a float32 array, got ",
                      a ? dtype_name(a) : py::repr(d[name]).cast<std::string>());
        v = vector_of<float>(a.attr("reshape")(-1), name);
    });
    rd.finish();
    return w;
}

py::dict weights_dict(moe::block_weights&& w, const moe::block_spec& s) {
    const auto E = static_cast<py::ssize_t>(s.num_experts), H = static_cast<py::ssize_t>(s.hidden),
               F = static_cast<py::ssize_t>(s.ffn), Fs = static_cast<py::ssize_t>(s.shared_ffn);
    auto shape_of = [&](const std::string& n) -> std::vector<py::ssize_t> {
        if (n == "router_w") return {E, H};
        if (n == "w1" || n == "w3") return {E, F, H};
        if (n == "w2") return {E, H, F};
        if (n == "b1" || n == "b3") return {E, F};
        if (n == "b2") return {E, H};
        if (n == "s1" || n == "s3") return {Fs, H};
        if (n == "s2") return {H, Fs};
        return {-1};
    };
    py::dict d;
    for_each_weight(w, [&](const char* name, std::vector<float>& v) {
        if (v.empty()) return;
        auto shape = shape_of(name);
        if (shape[0] < 0) shape[0] = static_cast<py::ssize_t>(v.size());
        d[name] = to_array(std::move(v), shape);
    });
    return d;
}

class py_block {
public:
    py_block(const py::dict& spec, const py::dict& weights, const std::string& format, const py::object& capacity, bool fill_in) {
        const auto s = spec_of(spec);
        const auto w = weights_of(weights);
        const auto fmt = moe::kernels::parse_weight_format(format);
        moe::layer_options o;
        o.format = fmt.params;
        if (!capacity.is_none()) {
            o.capacity = true;
            o.drop = drop_config_of(capacity.cast<py::dict>());
        }
        o.fill_in = fill_in;
        format_ = fmt.to_string();
        py::gil_scoped_release nogil;
        b_ = moe::kernels::visit_format(fmt, [&](auto tag) -> std::unique_ptr<block_base> {
            return std::make_unique<block_impl<decltype(tag)>>(s, w, o);
        });
    }
    py::array forward(const py::array& x, int threads) {
        const py_executor ex = executor(threads);
        if (kind_of(x) != elem::f32) MOE_THROW("moe.python.dtype", "x must be float32, got ", dtype_name(x));
        const auto xi = matrix_of<float>(x, "x");
        if (xi.view.cols != b_->spec().hidden)
            MOE_THROW("moe.python.shape", "x has ", xi.view.cols, " columns, the block's hidden size is ", b_->spec().hidden);
        moe::matrix<float> y(xi.view.rows, xi.view.cols);
        {
            py::gil_scoped_release nogil;
            b_->forward(y.view(), xi.view, ex);
        }
        return matrix_array(std::move(y));
    }
    py::object last_routing() const { return wrap(moe::routing<float>(b_->last_routing())); }
    py::array last_logits() const {
        const auto l = b_->last_logits();
        moe::matrix<float> out(l.rows, l.cols);
        for (std::size_t t = 0; t < l.rows; ++t) std::copy(l.row(t), l.row(t) + l.cols, out.row(t));
        return matrix_array(std::move(out));
    }
    py::dict last_capacity() const {
        const auto& r = b_->last_capacity();
        py::dict d;
        d["capacity"] = r.capacity;
        d["dropped"] = to_array(std::vector<std::int32_t>(r.dropped));
        d["rerouted"] = to_array(std::vector<std::int32_t>(r.rerouted));
        d["load_before"] = counts_array(r.load_before);
        d["load_after"] = counts_array(r.load_after);
        return d;
    }
    py::dict spec() const { return dict_of(b_->spec()); }
    const std::string& format() const { return format_; }
    std::size_t expert_bytes() const { return b_->expert_bytes(); }
    std::size_t packed_bytes() const { return b_->packed_bytes(); }

private:
    std::unique_ptr<block_base> b_;
    std::string format_;
};

}  // namespace

void bind_layer(py::module_& m) {
    py::class_<py_block>(m, "MoeBlock")
        .def(py::init<const py::dict&, const py::dict&, const std::string&, const py::object&, bool>())
        .def("forward", &py_block::forward)
        .def("last_routing", &py_block::last_routing)
        .def("last_logits", &py_block::last_logits)
        .def("last_capacity", &py_block::last_capacity)
        .def_property_readonly("spec", &py_block::spec)
        .def_property_readonly("format", &py_block::format)
        .def_property_readonly("expert_bytes", &py_block::expert_bytes)
        .def_property_readonly("packed_bytes", &py_block::packed_bytes);
    m.attr("weight_format_names") = moe::kernels::weight_format_names;
    m.def("load_block", [](const std::string& path, long long layer, bool experts) {
        moe::models::loaded_block b;
        {
            py::gil_scoped_release nogil;
            const moe::models::checkpoint ck(path);
            std::size_t L = 0;
            if (layer < 0) {
                const auto layers = ck.moe_layers();
                if (layers.empty()) MOE_THROW("moe.models.layer", path, " has no MoE layer");
                L = layers[0];
            } else {
                L = static_cast<std::size_t>(layer);
            }
            b = ck.load(L, experts);
        }
        py::dict s = dict_of(b.spec);
        return py::make_tuple(s, weights_dict(std::move(b.weights), b.spec));
    });
    m.def("moe_layers", [](const std::string& path) {
        py::gil_scoped_release nogil;
        return moe::models::checkpoint(path).moe_layers();
    });
}

}  // namespace moe_py
