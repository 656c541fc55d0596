/// @file kernels/expert_set.hpp
/// Routed experts whose weight format is chosen per expert, at run time: groups of experts,
/// each packed in one format of the registry (`weight_formats`: f32, bf16, GGUF quants, int8,
/// int4, fp8, mxfp4, mixed pairs ...) and run by that format's kernel on its experts' rows of
/// the dispatch plan. It serves "hot experts in Q8_0, cold ones in Q4_K", checkpoints whose
/// experts differ in format, and one block type for every format named at run time
/// (`moe::block<Arch, kernels::per_expert>`).
///
/// Each row's result is the result of its group's format, bit for bit: the kernels compute a
/// row independently of the other rows of the plan (rows are quantized and accumulated
/// alone, in a fixed order), so a set of one group equals the single-format block, and a row
/// of expert e equals the row the block of e's format computes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../dispatch.hpp"
#include "../executor.hpp"
#include "../tensor.hpp"
#include "expert_ffn.hpp"
#include "formats.hpp"
#include "quant_ffn.hpp"

namespace moe::kernels {

/// Any executor behind one type: what the groups of an expert set run on (one indirect call
/// per task, so each format's kernel is compiled once, not once per executor type).
class executor_ref {
public:
    template <class E, class = std::enable_if_t<!std::is_same<std::decay_t<E>, executor_ref>::value>>
    explicit executor_ref(E& e) noexcept : self_(const_cast<void*>(static_cast<const void*>(&e))), call_(&call<E>) {}

    template <class F>
    void operator()(std::size_t n, F&& f) const {
        using Fn = std::remove_reference_t<F>;
        call_(self_, n, const_cast<void*>(static_cast<const void*>(&f)), [](void* p, std::size_t i) { (*static_cast<Fn*>(p))(i); });
    }

private:
    using task = void (*)(void*, std::size_t);
    template <class E>
    static void call(void* self, std::size_t n, void* f, task t) {
        (*static_cast<E*>(self))(n, [f, t](std::size_t i) { t(f, i); });
    }
    void* self_;
    void (*call_)(void*, std::size_t, void*, task);
};

/// The weight type of a block whose experts form an expert set: `moe::block<Arch, kernels::per_expert>`
/// takes each expert's format from `layer_options::expert_formats`, or a packed `expert_set`.
struct per_expert {};

/// The packed storage of format W: float types pack for the arch, the quantized formats do not.
template <class Arch, class W>
using packed_format_t = std::conditional_t<is_weight_type_v<W>, packed_experts<Arch, W>, packed_quant_experts<W>>;

/// Routed experts in per-expert formats. Build with `add` (packed groups) or `add_converted`
/// (float weights converted to a named format); every expert in exactly one group.
template <class Arch>
class expert_set {
public:
    /// One group: its format's name, its experts (the block's indices, in packed order), bytes.
    struct group_info {
        std::string format;
        std::vector<std::int32_t> experts;
        std::size_t expert_bytes = 0;  ///< packed bytes per expert of this group
        std::size_t up_bytes = 0;      ///< of those, the up panels (W1 and W3 interleaved)
        std::size_t down_bytes = 0;    ///< and the down panels (W2)
    };

    expert_set() = default;
    expert_set(std::size_t num_experts, std::size_t hidden, std::size_t ffn)
        : E_(num_experts), H_(hidden), F_(ffn), group_of_(num_experts, -1) {}

    /// Adds experts `ids` packed in W (pw holds ids.size() experts, in the order of ids).
    /// Throws [moe.kernels.experts] for an id outside [0, E) or already in a group, and for
    /// packed shapes unlike the set's.
    template <class W>
    void add(std::vector<std::int32_t> ids, packed_format_t<Arch, W> pw, std::string format = format_traits<W>::name) {
        if (pw.num_experts() != ids.size() || pw.hidden() != H_ || pw.ffn() != F_)
            MOE_THROW("moe.kernels.experts", format, ": packed experts are ", pw.num_experts(), " x ", pw.hidden(), " x ", pw.ffn(),
                      " for ", ids.size(), " experts of hidden ", H_, ", ffn ", F_);
        for (std::int32_t e : ids) {
            if (e < 0 || static_cast<std::size_t>(e) >= E_) MOE_THROW("moe.kernels.experts", "expert ", e, " outside [0, ", E_, ")");
            if (group_of_[static_cast<std::size_t>(e)] >= 0)
                MOE_THROW("moe.kernels.experts", "expert ", e, " is already in the group of ",
                          groups_[static_cast<std::size_t>(group_of_[static_cast<std::size_t>(e)])].info.format);
        }
        std::vector<bool> seen(E_, false);  // ids repeated within one call
        for (std::int32_t e : ids) {
            if (seen[static_cast<std::size_t>(e)]) MOE_THROW("moe.kernels.experts", "expert ", e, " is listed twice for ", format);
            seen[static_cast<std::size_t>(e)] = true;
        }
        entry g;
        for (std::size_t j = 0; j < ids.size(); ++j) group_of_[static_cast<std::size_t>(ids[j])] = static_cast<std::int32_t>(groups_.size());
        assigned_ += ids.size();
        g.info.format = std::move(format);
        g.info.experts = std::move(ids);
        g.info.expert_bytes = pw.expert_bytes();
        g.info.up_bytes = pw.expert_up_bytes();
        g.info.down_bytes = pw.expert_down_bytes();
        using P = packed_format_t<Arch, W>;
        g.packed = std::make_shared<const P>(std::move(pw));
        g.workspace = [](const void* p, const dispatch_plan& plan) { return workspace_size(plan, *static_cast<const P*>(p)).total(); };
        g.run = [](const void* p, matrix_view<float> rows, matrix_view<const float> x, const dispatch_plan& plan, void* ws,
                   std::size_t ws_bytes, executor_ref exec, const ffn_extras& extras) {
            const P& packed = *static_cast<const P*>(p);
            if constexpr (is_weight_type_v<W>) expert_ffn(rows, x, plan, packed, ws, ws_bytes, exec, ffn_tiling{}, extras);
            else quant_expert_ffn<Arch>(rows, x, plan, packed, ws, ws_bytes, exec, extras);
        };
        groups_.push_back(std::move(g));
    }

    [[nodiscard]] std::size_t num_experts() const noexcept { return E_; }
    [[nodiscard]] std::size_t hidden() const noexcept { return H_; }
    [[nodiscard]] std::size_t ffn() const noexcept { return F_; }
    [[nodiscard]] std::size_t num_groups() const noexcept { return groups_.size(); }
    [[nodiscard]] const group_info& group(std::size_t g) const { return groups_.at(g).info; }
    /// The format of expert e ("" before it is added).
    [[nodiscard]] std::string format_of(std::size_t e) const {
        return e < E_ && group_of_[e] >= 0 ? groups_[static_cast<std::size_t>(group_of_[e])].info.format : std::string();
    }
    /// Packed bytes of expert e (what a decode step streams when e is active).
    [[nodiscard]] std::size_t expert_bytes(std::size_t e) const {
        return e < E_ && group_of_[e] >= 0 ? groups_[static_cast<std::size_t>(group_of_[e])].info.expert_bytes : 0;
    }
    /// Mean packed bytes per expert.
    [[nodiscard]] std::size_t expert_bytes() const noexcept { return E_ ? bytes() / E_ : 0; }
    /// Packed bytes of all experts.
    [[nodiscard]] std::size_t bytes() const noexcept {
        std::size_t b = 0;
        for (const auto& g : groups_) b += g.info.expert_bytes * g.info.experts.size();
        return b;
    }
    /// Throws [moe.kernels.experts] "expert E has no format" unless every expert is in a group.
    void validate() const {
        for (std::size_t e = 0; e < E_; ++e)
            if (group_of_[e] < 0) MOE_THROW("moe.kernels.experts", "expert ", e, " of ", E_, " has no format (add it to a group)");
    }

    /// rows (plan rows x H) = each planned row's expert applied to its token of x, in the
    /// expert's format; the same contract as `expert_ffn` / `quant_expert_ffn` (`extras`' biases
    /// are indexed by the block's experts). Scratch is kept in the set between calls (one call
    /// at a time per set, as per block).
    template <class Executor>
    void run(matrix_view<float> rows, matrix_view<const float> x, const dispatch_plan& plan, ffn_workspace& ws, Executor&& exec,
             const ffn_extras& extras = {}) const {
        if (assigned_ != E_) validate();  // O(1) on the hot path; validate() names the expert
        if (plan.num_experts != E_ || plan.offsets.size() != E_ + 1)
            MOE_THROW("moe.kernels.shape", "plan has ", plan.num_experts, " experts, the expert set ", E_);
        if (rows.rows != plan.num_rows() || rows.cols != H_)
            MOE_THROW("moe.kernels.shape", "y_rows is ", rows.rows, " x ", rows.cols, ", expected ", plan.num_rows(), " x ", H_);
        const executor_ref ex(exec);
        if (groups_.size() == 1 && identity(groups_[0].info.experts)) {  // one format: the plan as it is
            const entry& g = groups_[0];
            ws.reserve(g.workspace(g.packed.get(), plan));
            g.run(g.packed.get(), rows, x, plan, ws.data(), ws.size(), ex, extras);
            return;
        }
        for (const entry& g : groups_) {
            // The group's experts as experts 0..n-1 of a plan of their own.
            const std::size_t n = g.info.experts.size();
            dispatch_plan& sub = scratch_.plan;
            sub.num_tokens = plan.num_tokens;
            sub.num_experts = n;
            sub.top_k = plan.top_k;
            sub.block = plan.block;
            sub.counts.resize(n);
            sub.offsets.assign(n + 1, 0);
            sub.row_token.clear();
            sub.row_slot.clear();
            sub.slot_row.clear();
            scratch_.row_of.clear();
            for (std::size_t j = 0; j < n; ++j) {
                const auto e = static_cast<std::size_t>(g.info.experts[j]);
                sub.counts[j] = plan.counts.empty() ? 0 : plan.counts[e];
                for (auto r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
                    sub.row_token.push_back(plan.row_token[static_cast<std::size_t>(r)]);
                    sub.row_slot.push_back(plan.row_slot.empty() ? -1 : plan.row_slot[static_cast<std::size_t>(r)]);
                    scratch_.row_of.push_back(r);
                }
                sub.offsets[j + 1] = static_cast<std::int32_t>(sub.row_token.size());
            }
            const std::size_t m = sub.row_token.size();
            if (m == 0) continue;
            if (scratch_.rows.size() < m * H_) scratch_.rows.resize(m * H_);
            ws.reserve(g.workspace(g.packed.get(), sub));
            ffn_extras ge = extras;
            ge.expert_ids = g.info.experts.data();
            const matrix_view<float> out(scratch_.rows.data(), m, H_);
            g.run(g.packed.get(), out, x, sub, ws.data(), ws.size(), ex, ge);
            for (std::size_t i = 0; i < m; ++i)
                std::memcpy(rows.row(static_cast<std::size_t>(scratch_.row_of[i])), out.row(i), H_ * sizeof(float));
        }
    }

private:
    struct entry {
        group_info info;
        std::shared_ptr<const void> packed;
        std::size_t (*workspace)(const void*, const dispatch_plan&) = nullptr;
        void (*run)(const void*, matrix_view<float>, matrix_view<const float>, const dispatch_plan&, void*, std::size_t, executor_ref,
                    const ffn_extras&) = nullptr;
    };
    struct run_scratch {
        dispatch_plan plan;
        std::vector<std::int32_t> row_of;
        std::vector<float> rows;
    };
    static bool identity(const std::vector<std::int32_t>& ids) {
        for (std::size_t j = 0; j < ids.size(); ++j)
            if (ids[j] != static_cast<std::int32_t>(j)) return false;
        return true;
    }

    std::size_t E_ = 0, H_ = 0, F_ = 0;
    std::vector<std::int32_t> group_of_;
    std::size_t assigned_ = 0;  ///< experts in a group (each in at most one)
    std::vector<entry> groups_;
    mutable run_scratch scratch_;
};

/// Adds experts `ids` to `set`, converted to format `wf` from float32 weights that
/// `fetch(e, w1, w3, w2)` writes one expert at a time (expert e of the block, in the order of
/// `ids`: w1, w3 F x H, w2 H x F, row-major): the format's reference quantizer, or the float
/// type's rounding (bf16 / f16 round to nearest even). A quantized format holds the packed
/// experts plus one expert's float32 and quantized copies (each expert is packed into the
/// set's buffer before the next is read; a loader can read each expert's rows from its file
/// as it goes: `models::checkpoint::expert_floats`); a float format gathers the experts in its
/// own type. `List`: the formats it may name (each one's kernel is compiled; a program that
/// needs a few names fewer).
template <class List = weight_formats, class Arch, class Fetch>
void add_converted_from(expert_set<Arch>& set, std::vector<std::int32_t> ids, const weight_format& wf, Fetch&& fetch,
                        const pack_options& o = {}) {
    const std::size_t H = set.hidden(), F = set.ffn(), n = ids.size(), up = F * H, down = H * F;
    if (n == 0) return;
    for (std::int32_t e : ids)
        if (e < 0 || static_cast<std::size_t>(e) >= set.num_experts())
            MOE_THROW("moe.kernels.experts", "expert ", e, " outside [0, ", set.num_experts(), ")");
    moe::detail::visit_in(wf.name, [&](auto tag) {
        using W = decltype(tag);
        std::vector<float> f1(up), f3(up), f2(down);
        if constexpr (is_weight_type_v<W>) {
            // Each expert converted and packed straight into the set's buffer, as below: the
            // packed experts plus one expert's float32 and converted copies are resident.
            if (H == 0 || F == 0)
                MOE_THROW("moe.kernels.shape", "experts=", n, ", hidden=", H, ", ffn=", F, ": every dimension must be >= 1");
            packed_experts<Arch, W> pw(n, H, F, o);
            std::vector<W> g1(up), g3(up), g2(down);
            for (std::size_t j = 0; j < n; ++j) {
                fetch(static_cast<std::size_t>(ids[j]), f1.data(), f3.data(), f2.data());
                std::transform(f1.begin(), f1.end(), g1.begin(), [](float v) { return W(v); });
                std::transform(f3.begin(), f3.end(), g3.begin(), [](float v) { return W(v); });
                std::transform(f2.begin(), f2.end(), g2.begin(), [](float v) { return W(v); });
                detail::pack_float_expert(pw, j, g1.data(), g3.data(), g2.data());
            }
            set.template add<W>(std::move(ids), std::move(pw), wf.to_string());
        } else {
            // Each expert quantized and packed straight into the set's buffer: the packed
            // experts plus one expert's float32 and quantized copies are resident, never a
            // second copy of all of them.
            packed_quant_experts<W> pw(n, H, F, wf.params, o);
            for (std::size_t j = 0; j < n; ++j) {
                const auto e = static_cast<std::size_t>(ids[j]);
                fetch(e, f1.data(), f3.data(), f2.data());
                const quantized_experts<W> one = quantize_experts<W>(f1.data(), f3.data(), f2.data(), 1, H, F, wf.params);
                const formats::quant_view v1 = formats::view_of(one.w1[0]), v3 = formats::view_of(one.w3[0]),
                                          v2 = formats::view_of(one.w2[0]);
                detail::check_view<formats::up_format_t<W>>("w1", e, v1, F, H, wf.params);
                detail::check_view<formats::up_format_t<W>>("w3", e, v3, F, H, wf.params);
                detail::check_view<formats::down_format_t<W>>("w2", e, v2, H, F, wf.params);
                detail::pack_expert(pw, j, v1, v3, v2, 1);
            }
            set.template add<W>(std::move(ids), std::move(pw), wf.to_string());
        }
    }, List{});
}

/// Adds experts `ids` of float weights (w1, w3: E x F x H; w2: E x H x F, all E experts of
/// the block) to `set`, converted to format `wf` (add_converted_from).
template <class List = weight_formats, class Arch>
void add_converted(expert_set<Arch>& set, std::vector<std::int32_t> ids, const weight_format& wf, const float* w1, const float* w3,
                   const float* w2, const pack_options& o = {}) {
    const std::size_t up = set.ffn() * set.hidden(), down = up;
    add_converted_from<List>(set, std::move(ids), wf, [&](std::size_t e, float* a, float* b, float* c) {  // e checked against E
        std::copy_n(w1 + e * up, up, a);
        std::copy_n(w3 + e * up, up, b);
        std::copy_n(w2 + e * down, down, c);
    }, o);
}

/// An expert set from one format name per expert (`names`: E names, such as "q4_k" or
/// "int4:64"): experts of one name form one group, groups in the order their names first
/// appear, each converted from the float weights by `add_converted<List>`. Throws
/// [moe.kernels.experts] unless `names` has E entries, and the registry's error for a name
/// outside `List`.
template <class List = weight_formats, class Arch = default_arch>
expert_set<Arch> make_expert_set(const std::vector<std::string>& names, std::size_t E, std::size_t H, std::size_t F, const float* w1,
                                 const float* w3, const float* w2, const pack_options& o = {}) {
    if (names.size() != E) MOE_THROW("moe.kernels.experts", names.size(), " format names for ", E, " experts");
    expert_set<Arch> s(E, H, F);
    std::vector<bool> done(E, false);
    for (std::size_t e = 0; e < E; ++e) {
        if (done[e]) continue;
        std::vector<std::int32_t> ids;
        for (std::size_t j = e; j < E; ++j)
            if (!done[j] && names[j] == names[e]) {
                ids.push_back(static_cast<std::int32_t>(j));
                done[j] = true;
            }
        add_converted<List>(s, std::move(ids), parse_weight_format(names[e]), w1, w3, w2, o);
    }
    return s;
}

}  // namespace moe::kernels
