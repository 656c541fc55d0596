// MoE blocks: a model family's block (spec + float weights) packed in any weight format moe
// runs, its forward pass, and the checkpoint loader (HF folders and GGUF files).
#include <moe/models/checkpoint.hpp>
#include <moe/block.hpp>

#include "common.hpp"
#include "config_fields.hpp"

namespace moe_py {

namespace {

/// Every block of the extension: routed experts in per-expert formats (one group for one format).
using set_t = moe::kernels::expert_set<moe::default_arch>;
using block_t = moe::block<moe::default_arch, moe::kernels::per_expert>;

/// The capacity switches of a block from Python's arguments.
moe::layer_options options(const py::object& capacity, bool fill_in) {
    moe::layer_options o;
    if (!capacity.is_none()) {
        o.capacity = true;
        o.drop = config_from<moe::drop_config>(capacity, "apply_capacity");
    }
    o.fill_in = fill_in;
    return o;
}

moe::block_spec spec_of(const py::dict& d) { return config_of<moe::block_spec>(d, "block spec"); }

py::dict dict_of(const moe::block_spec& s) { return config_dict(s); }

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
    /// `format`: one format's name, or a list of names, one per routed expert. Every block is
    /// an expert set (one group for one format: no extra work), so that each format's kernel is
    /// compiled once into the extension.
    py_block(const py::object& spec, const py::dict& weights, const py::object& format, const py::object& capacity, bool fill_in) {
        const auto s = config_from<moe::block_spec>(spec, "block spec");
        const auto w = weights_of(weights);
        moe::layer_options o = options(capacity, fill_in);
        if (py::isinstance<py::str>(format)) {
            o.expert_formats.push_back(moe::kernels::parse_weight_format(format.cast<std::string>()).to_string());
        } else {
            if (!py::isinstance<py::sequence>(format))
                MOE_THROW("moe.python.type", "format must be a str or a list of str, got ", py::repr(format).cast<std::string>());
            for (const auto& f : format.cast<py::sequence>()) {
                if (!py::isinstance<py::str>(f))
                    MOE_THROW("moe.python.type", "format list entries must be str, got ", py::repr(f).cast<std::string>());
                o.expert_formats.push_back(moe::kernels::parse_weight_format(f.cast<std::string>()).to_string());
            }
        }
        for (std::size_t i = 0; i < o.expert_formats.size(); ++i) format_ += (i ? "," : "") + o.expert_formats[i];
        py::gil_scoped_release nogil;
        b_ = std::make_unique<block_t>(s, w, o);
    }
    /// Layer `layer` (< 0: the first MoE layer) of a checkpoint, its routed experts in `format`:
    /// "file" keeps the format they are stored in where moe reads it in place (else f32).
    static py_block from_checkpoint(const std::string& path, long long layer, const std::string& format, const py::object& capacity,
                                    bool fill_in) {
        py_block pb;
        const moe::layer_options o = options(capacity, fill_in);
        std::vector<std::string> warnings;  // issued as Python warnings once the GIL is back
        {
            py::gil_scoped_release nogil;
            moe::models::checkpoint ck(path);
            ck.set_warnings([&](const std::string& msg) { warnings.push_back(msg); });
            std::size_t L = static_cast<std::size_t>(layer);
            if (layer < 0) {
                const auto layers = ck.moe_layers();
                if (layers.empty()) MOE_THROW("moe.models.layer", path, " has no MoE layer");
                L = layers[0];
            }
            const std::string stored = format == "file" ? ck.expert_format(L) : std::string();
            const auto fmt = moe::kernels::parse_weight_format(format != "file" ? format : stored.empty() ? "f32" : stored);
            pb.format_ = fmt.to_string();
            const moe::models::loaded_block b = ck.load_without_experts(L);
            const auto& sp = b.spec;
            std::vector<std::int32_t> all(sp.num_experts);
            for (std::size_t e = 0; e < all.size(); ++e) all[e] = static_cast<std::int32_t>(e);
            set_t set(sp.num_experts, sp.hidden, sp.ffn);
            if (stored.empty()) {
                // One expert in float32 at a time (from a GGUF file, each expert's own rows).
                const auto rd = ck.expert_floats(L);
                moe::kernels::add_converted_from(set, all, fmt, [&](std::size_t e, float* w1, float* w3, float* w2) { rd.read(e, w1, w3, w2); },
                                                 o.packing);
            } else {
                moe::kernels::visit_format(fmt, [&](auto tag) {
                    using W = decltype(tag);
                    if constexpr (!moe::kernels::is_weight_type_v<W>) set.add<W>(all, ck.pack_experts<W>(L, o.packing), pb.format_);
                });
            }
            pb.b_ = std::make_unique<block_t>(b.spec, b.weights, std::move(set), o);
        }
        for (const std::string& w : warnings)
            if (PyErr_WarnEx(PyExc_UserWarning, w.c_str(), 2) != 0) throw py::error_already_set();
        return pb;
    }
    py::array forward(const py::array& x, int threads, const py::object& replay, const py::object& replay_weights) {
        const py_executor ex = executor(threads);
        if (kind_of(x) != elem::f32) MOE_THROW("moe.python.dtype", "x must be float32, got ", dtype_name(x));
        const auto xi = matrix_of<float>(x, "x");
        if (xi.view.cols != b_->spec().hidden)
            MOE_THROW("moe.python.shape", "x has ", xi.view.cols, " columns, the block's hidden size is ", b_->spec().hidden);
        moe::matrix<float> y(xi.view.rows, xi.view.cols);
        if (!replay.is_none()) {
            const int_matrix idx = int_matrix_of(replay, "replay");
            std::vector<float> w;
            std::size_t wr = 0, wc = 0;
            if (!replay_weights.is_none()) {
                py::array wa = py::array::ensure(replay_weights);
                if (!wa || wa.ndim() != 2) MOE_THROW("moe.python.shape", "replay_weights must be a 2-D array [T, k]");
                py::array_t<float, py::array::c_style | py::array::forcecast> c(wa);
                w.assign(c.data(), c.data() + c.size());
                wr = static_cast<std::size_t>(wa.shape(0));
                wc = static_cast<std::size_t>(wa.shape(1));
            }
            py::gil_scoped_release nogil;
            b_->forward_replay(y.view(), xi.view, idx.view(), moe::matrix_view<const float>(w.empty() ? nullptr : w.data(), wr, wc), ex);
            return matrix_array(std::move(y));
        }
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
    void set_reduction(std::size_t top_k, std::size_t k_min, double threshold) { b_->set_reduction(top_k, moe::ser_config{k_min, threshold}); }
    py::dict spec() const { return dict_of(b_->spec()); }
    const std::string& format() const { return format_; }
    std::size_t expert_bytes() const { return b_->packed_experts().expert_bytes(); }
    std::size_t packed_bytes() const { return b_->packed_experts().bytes(); }

private:
    py_block() = default;
    std::unique_ptr<block_t> b_;
    std::string format_;
};

}  // namespace

void bind_layer(py::module_& m) {
    bind_config<moe::block_spec>(m, "BlockSpec",
                                 "A model family's MoE block structure and routing recipe (moe::block_spec), as load_block "
                                 "returns it. BlockSpec(**fields).",
                                 spec_of, "BlockSpec(**fields)", "block_spec_fields")
        .def("validate", [](const moe::block_spec& s) { s.validate(); }, "Throws moe.Error for an inconsistent spec.");
    py::class_<py_block>(m, "MoeBlock")
        .def(py::init<const py::object&, const py::dict&, const py::object&, const py::object&, bool>())
        .def_static("from_checkpoint", &py_block::from_checkpoint)
        .def("forward", &py_block::forward)
        .def("set_reduction", &py_block::set_reduction)
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
        std::vector<std::string> warnings;  // issued as Python warnings once the GIL is back
        {
            py::gil_scoped_release nogil;
            moe::models::checkpoint ck(path);
            ck.set_warnings([&](const std::string& msg) { warnings.push_back(msg); });
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
        for (const std::string& w : warnings)
            if (PyErr_WarnEx(PyExc_UserWarning, w.c_str(), 2) != 0) throw py::error_already_set();
        py::dict s = dict_of(b.spec);
        return py::make_tuple(s, weights_dict(std::move(b.weights), b.spec));
    });
    m.def("moe_layers", [](const std::string& path) {
        py::gil_scoped_release nogil;
        return moe::models::checkpoint(path).moe_layers();
    });
}

}  // namespace moe_py
