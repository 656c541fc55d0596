// The configuration structs moe takes from Python, each described once: a table of its fields
// (Python name, the member, a docstring). The dicts the functions take, the dicts they return,
// the classes (RouterConfig, DropConfig, BlockSpec: keyword constructors, properties with the
// docstrings in help(), to_dict, repr) and the `*_fields` lists tests/python compares with the
// stub all come from these tables.
#pragma once

#include <moe/block.hpp>
#include <moe/capacity.hpp>
#include <moe/router.hpp>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "common.hpp"

namespace moe_py {

/// fields<C>::each(f) calls f(key, get, doc) for every field, `get(c)` being the member.
template <class C>
struct fields;

template <>
struct fields<moe::router_config> {
    template <class F>
    static void each(F&& f) {
        f("score", [](auto& c) -> auto& { return c.score; }, "score function: softmax, sigmoid or sqrtsoftplus");
        f("top_k", [](auto& c) -> auto& { return c.top_k; }, "experts per token");
        f("pre_softmax", [](auto& c) -> auto& { return c.pre_softmax; },
          "softmax over all experts before top-k (true) or over the k selected logits (false)");
        f("select_on_logits", [](auto& c) -> auto& { return c.select_on_logits; },
          "select the top-k on the raw logits, then score the selected (Llama-4)");
        f("renorm", [](auto& c) -> auto& { return c.renorm; }, "renormalisation of the kept weights: none, sum, sum_eps or clamp");
        f("renorm_eps", [](auto& c) -> auto& { return c.renorm_eps; }, "epsilon of sum_eps (added to the sum) and clamp (floor of the sum)");
        f("scaling_factor", [](auto& c) -> auto& { return c.scaling_factor; }, "multiplies the final weights (DeepSeek's routed_scaling_factor)");
        f("num_groups", [](auto& c) -> auto& { return c.num_groups; }, "expert groups for group-limited routing (0 or 1: none)");
        f("group_top_k", [](auto& c) -> auto& { return c.group_top_k; }, "groups kept per token");
        f("group_score_top_m", [](auto& c) -> auto& { return c.group_score_top_m; }, "a group's score is the sum of its m best keys");
        f("mask", [](auto& c) -> auto& { return c.mask; }, "value of dropped groups' keys: neg_inf or zero");
        f("weights_from_masked", [](auto& c) -> auto& { return c.weights_from_masked; }, "weights taken from the masked scores (DeepSeek-V2)");
        f("keep_scores", [](auto& c) -> auto& { return c.keep_scores; }, "keep the full T x E scores in the routing");
    }
};

template <>
struct fields<moe::capacity_config> {
    template <class F>
    static void each(F&& f) {
        f("formula", [](auto& c) -> auto& { return c.formula; },
          "capacity formula: megatron, deepspeed, deepspeed_topk, tutel, megablocks, capacity_aware or dropless");
        f("factor", [](auto& c) -> auto& { return c.factor; }, "capacity factor");
        f("min_capacity", [](auto& c) -> auto& { return c.min_capacity; }, "lower bound on the capacity");
        f("alignment", [](auto& c) -> auto& { return c.alignment; }, "capacity rounded up to a multiple of this (0 or 1: none)");
    }
};

template <>
struct fields<moe::drop_config> {
    template <class F>
    static void each(F&& f) {
        fields<moe::capacity_config>::each([&](const char* key, auto get, const char* doc) {
            f(key, [get](auto& c) -> auto& { return get(c.capacity); }, doc);
        });
        f("policy", [](auto& c) -> auto& { return c.policy; },
          "which slots an over-full expert drops: weight, score, position, slot_major, batch_prioritized or random");
        f("renorm_after", [](auto& c) -> auto& { return c.renorm_after; }, "renormalise each token's kept weights after the drop");
        f("renorm_eps", [](auto& c) -> auto& { return c.renorm_eps; }, "epsilon of renorm_after");
        f("seed", [](auto& c) -> auto& { return c.seed; }, "seed of the random policy");
        f("reroute", [](auto& c) -> auto& { return c.reroute; }, "move overflowed slots to the token's next-best expert with room");
        f("placement", [](auto& c) -> auto& { return c.placement; }, "expert -> device; reroute stays on the device");
        f("per_expert", [](auto& c) -> auto& { return c.per_expert; }, "explicit capacity of each expert (replaces the formula)");
    }
};

template <>
struct fields<moe::block_spec> {
    template <class F>
    static void each(F&& f) {
        f("family", [](auto& c) -> auto& { return c.family; }, "the HF model_type or GGUF architecture (informational)");
        f("router", [](auto& c) -> auto& { return c.router; }, "the routing recipe (a RouterConfig or its dict)");
        f("num_experts", [](auto& c) -> auto& { return c.num_experts; }, "routed experts E");
        f("hidden", [](auto& c) -> auto& { return c.hidden; }, "hidden size H");
        f("ffn", [](auto& c) -> auto& { return c.ffn; }, "expert ffn size F");
        f("shared_ffn", [](auto& c) -> auto& { return c.shared_ffn; }, "shared expert ffn size (0: none)");
        f("zero_experts", [](auto& c) -> auto& { return c.zero_experts; }, "identity experts after the E real ones (LongCat-Flash)");
        f("activation", [](auto& c) -> auto& { return c.activation; }, "expert activation: swiglu, swiglu_oai or swiglu_clamp");
        f("swiglu_alpha", [](auto& c) -> auto& { return c.swiglu_alpha; }, "swiglu_oai's alpha");
        f("swiglu_limit", [](auto& c) -> auto& { return c.swiglu_limit; }, "the clamp of swiglu_oai and swiglu_clamp");
        f("router_bias", [](auto& c) -> auto& { return c.router_bias; }, "the router linear has a bias (GPT-OSS)");
        f("selection_bias", [](auto& c) -> auto& { return c.selection_bias; }, "a selection-only bias (e_score_correction_bias)");
        f("expert_bias", [](auto& c) -> auto& { return c.expert_bias; }, "the experts have biases b1, b3, b2 (GPT-OSS)");
        f("weight_on_input", [](auto& c) -> auto& { return c.weight_on_input; }, "the routing weight scales the expert's input (Llama-4)");
        f("shared", [](auto& c) -> auto& { return c.shared; }, "the shared expert's gate: none or sigmoid");
    }
};

moe::router_config router_config_of(const py::dict& d);
py::dict dict_of(const moe::router_config& c);

namespace detail {

inline const char* name_of(moe::group_mask m) { return m == moe::group_mask::zero ? "zero" : "neg_inf"; }
inline const char* name_of(moe::kernels::ffn_activation a) {
    return a == moe::kernels::ffn_activation::swiglu_oai ? "swiglu_oai" : a == moe::kernels::ffn_activation::swiglu_clamp ? "swiglu_clamp" : "swiglu";
}
inline const char* name_of(moe::shared_gate g) { return g == moe::shared_gate::sigmoid ? "sigmoid" : "none"; }
inline moe::kernels::ffn_activation parse_activation(const std::string& a) {
    if (a == "swiglu") return moe::kernels::ffn_activation::swiglu;
    if (a == "swiglu_oai") return moe::kernels::ffn_activation::swiglu_oai;
    if (a == "swiglu_clamp") return moe::kernels::ffn_activation::swiglu_clamp;
    MOE_THROW("moe.models.spec", "unknown activation '", a, "' (expected swiglu, swiglu_oai or swiglu_clamp)");
}
inline moe::shared_gate parse_shared_gate(const std::string& g) {
    if (g == "none") return moe::shared_gate::none;
    if (g == "sigmoid") return moe::shared_gate::sigmoid;
    MOE_THROW("moe.models.spec", "unknown shared gate '", g, "' (expected none or sigmoid)");
}

/// [] or () (no experts listed: an integer array of length 0 whatever its inferred dtype).
inline bool is_empty_list(const py::handle& h) {
    return (py::isinstance<py::list>(h) || py::isinstance<py::tuple>(h)) && py::len(h) == 0;
}

template <class T>
py::object to_py(const T& v) {
    if constexpr (std::is_same<T, moe::score_function>::value || std::is_same<T, moe::renormalize>::value ||
                  std::is_same<T, moe::capacity_formula>::value || std::is_same<T, moe::drop_policy>::value)
        return py::str(moe::to_string(v));
    else if constexpr (std::is_enum<T>::value)
        return py::str(name_of(v));
    else if constexpr (std::is_same<T, moe::router_config>::value)
        return dict_of(v);
    else
        return py::cast(v);
}

template <class T>
void read_field(dict_reader& rd, const char* key, T& v) {
    if constexpr (std::is_same<T, moe::score_function>::value)
        rd.get_enum(key, v, moe::parse_score_function);
    else if constexpr (std::is_same<T, moe::renormalize>::value)
        rd.get_enum(key, v, moe::parse_renormalize);
    else if constexpr (std::is_same<T, moe::group_mask>::value)
        rd.get_enum(key, v, parse_mask);
    else if constexpr (std::is_same<T, moe::capacity_formula>::value)
        rd.get_enum(key, v, moe::parse_capacity_formula);
    else if constexpr (std::is_same<T, moe::drop_policy>::value)
        rd.get_enum(key, v, moe::parse_drop_policy);
    else if constexpr (std::is_same<T, moe::kernels::ffn_activation>::value)
        rd.get_enum(key, v, parse_activation);
    else if constexpr (std::is_same<T, moe::shared_gate>::value)
        rd.get_enum(key, v, parse_shared_gate);
    else if constexpr (std::is_same<T, std::size_t>::value)
        rd.get_size(key, v);
    else if constexpr (std::is_same<T, moe::router_config>::value) {
        if (!rd.has(key)) return;
        const py::object o = rd.d[key];
        v = py::isinstance<moe::router_config>(o) ? o.cast<moe::router_config>() : router_config_of(o.cast<py::dict>());
    } else if constexpr (std::is_same<T, std::vector<std::size_t>>::value) {
        if (!rd.has(key)) return;
        if (is_empty_list(rd.d[key])) {
            v.clear();
            return;
        }
        const auto x = vector_of<std::int64_t>(rd.d[key], key);
        for (auto e : x)
            if (e < 0) MOE_THROW("moe.python.argument", key, " holds ", e, " (capacities are >= 0)");
        v.assign(x.begin(), x.end());
    } else if constexpr (std::is_same<T, std::vector<std::int32_t>>::value) {
        if (!rd.has(key)) return;
        v = is_empty_list(rd.d[key]) ? std::vector<std::int32_t>{} : vector_of<std::int32_t>(rd.d[key], key);
    } else {
        rd.get(key, v);
    }
}

}  // namespace detail

/// The fields of `d` read into `c` (the others keep c's values); throws for unknown keys,
/// naming `what`.
template <class C>
C config_of(const py::dict& d, const char* what, C c = C{}) {
    dict_reader rd{d, what, {}};
    fields<C>::each([&](const char* key, auto get, const char*) { detail::read_field(rd, key, get(c)); });
    rd.finish();
    return c;
}

/// Every field as a dict (the form the functions take).
template <class C>
py::dict config_dict(const C& c) {
    py::dict d;
    fields<C>::each([&](const char* key, auto get, const char*) { d[key] = detail::to_py(get(c)); });
    return d;
}

/// A config from a dict or an instance of its class.
template <class C>
C config_from(const py::object& o, const char* what) {
    if (py::isinstance<C>(o)) return o.cast<C>();
    return config_of<C>(o.cast<py::dict>(), what);
}

/// The class of C named `name`: a keyword constructor (`of` reads the keywords), each field a
/// property with its docstring, to_dict and repr; `<fields_attr>` lists the field names.
template <class C>
py::class_<C> bind_config(py::module_& m, const char* name, const char* doc, C (*of)(const py::dict&), const char* init_doc,
                          const char* fields_attr) {
    py::class_<C> cls(m, name, doc);
    cls.def(py::init([of](py::kwargs kw) {
                py::dict d;
                for (auto item : kw) d[item.first] = item.second;
                return of(d);
            }),
            init_doc);
    const std::string cname = name;
    py::list names;
    fields<C>::each([&](const char* key, auto get, const char* fdoc) {
        using T = std::remove_reference_t<decltype(get(std::declval<C&>()))>;
        const std::string k = key;
        cls.def_property(
            key, [get](const C& c) { return detail::to_py(get(c)); },
            [get, k, cname](C& c, py::object v) {
                py::dict d;
                d[k.c_str()] = v;
                dict_reader rd{d, cname.c_str(), {}};
                T out = get(c);
                detail::read_field(rd, k.c_str(), out);
                get(c) = out;
            },
            fdoc);
        names.append(key);
    });
    cls.def("to_dict", [](const C& c) { return config_dict(c); }, "The fields as a dict (the form the functions take).");
    cls.def("__repr__", [cname](const C& c) { return cname + "(" + std::string(py::repr(config_dict(c))) + ")"; });
    m.attr(fields_attr) = names;
    return cls;
}

}  // namespace moe_py
