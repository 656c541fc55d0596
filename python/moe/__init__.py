"""moe: Mixture-of-Experts token routing, capacity, losses and expert compute.

Python bindings of the header-only C++ library: the same code, the same numbers. Inputs are
NumPy arrays (float32 / float64 / float16; int32 / int64 indices) or PyTorch CPU tensors
(bfloat16 too), read in place where the layout allows; outputs are NumPy arrays, or torch
tensors when torch tensors came in. Config fields are keyword arguments named as the C++
fields; an argument left at None keeps the C++ default (or the preset's value). Compute
releases the GIL; ``threads=0`` (the default) uses every core, and results never depend on it.
Errors raise :class:`moe.Error` (a ``ValueError``) whose ``.id`` is the stable C++ ID.

    >>> import moe, numpy as np
    >>> r = moe.route(np.random.randn(4, 8).astype(np.float32), preset="mixtral")
    >>> r.indices.shape, r.weights.shape
    ((4, 2), (4, 2))

See docs/python.md for a worked example; ``moe.torch`` has autograd wrappers of the losses.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._errors import Error, fail
from . import _loader

variant, _core = _loader.load()
#: The C++ arch (xsimd) the loaded variant runs, e.g. "avx512bw", "avx2", "sse2".
arch: str = _core.arch
#: moe's version, from moe/config.hpp (the one place it is written).
__version__: str = _core.version

#: Router recipes by name (`route(preset=...)`).
preset_names: List[str] = list(_core.preset_names)
#: Policies `compare_policies` knows.
simulator_policies: List[str] = list(_core.simulator_policies)
#: Weight formats `MoeBlock` packs experts in.
weight_formats: str = _core.weight_format_names
RouterConfig = _core.RouterConfig
router_config_fields: List[str] = list(_core.router_config_fields)
DropConfig = _core.DropConfig
drop_config_fields: List[str] = list(_core.drop_config_fields)
BlockSpec = _core.BlockSpec
block_spec_fields: List[str] = list(_core.block_spec_fields)

__all__ = [
    "Error", "Routing", "RouterConfig", "router_config_fields", "DropConfig", "drop_config_fields", "BlockSpec",
    "block_spec_fields", "Plan", "MoeBlock", "GlobalLoadBalancer", "route", "router_config", "routing_from_arrays",
    "mask_tokens", "routing_stats", "expert_capacity", "apply_capacity", "fill_in", "make_plan", "padded_rows_per_expert",
    "to_vllm_layout", "gather", "combine", "measure", "device_loads", "apply_jitter", "add_gumbel_noise",
    "add_normal_noise", "rescore", "route_top_p", "route_expert_choice", "sinkhorn", "route_sinkhorn",
    "strip_null_experts", "mean_experts_per_token", "route_hash", "split_zero_experts", "aux_loss_routing",
    "load_balancing_loss", "sequence_load_balancing_loss", "z_loss", "importance_load_loss",
    "aux_loss_statistics", "update_expert_bias", "synthetic_logits", "gate", "measure_row_cost",
    "compare_policies", "policy_table", "load_block", "moe_layers", "preset_names", "simulator_policies",
    "rebalance_experts", "synthetic_trace", "transition_counts", "affinity_placement", "segment_routing_performance",
    "segment_cache_hit_rate", "simulate_cache", "write_record", "read_record", "compare_reduction",
]

# ---------------------------------------------------------------------------------------------
# Arrays in and out


def _torch():
    import sys

    return sys.modules.get("torch")


def _is_tensor(x) -> bool:
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def _in(x, name: str) -> Tuple[np.ndarray, bool, bool]:
    """(array, is_bfloat16_bits, came_as_torch). Tensors are read in place (no copy)."""
    if _is_tensor(x):
        torch = _torch()
        t = x.detach()
        if t.device.type != "cpu":
            raise fail("moe.python.device", f"{name} is on {t.device}; moe computes on CPU tensors (.cpu() first)")
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16), True, True
        return t.numpy(), False, True
    if isinstance(x, np.ndarray):
        return x, False, False
    return np.asarray(x), False, False


def _out(a, as_torch: bool):
    if a is None or not as_torch:
        return a
    return _torch().from_numpy(a if a.flags.writeable else a.copy())


def _plain(x, name: str) -> np.ndarray:
    """Small side inputs (bias, masks, placements): any array-like, tensors included."""
    if x is None:
        return None
    return _in(x, name)[0]


def _fields(**kw) -> Dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# Routing


class Routing:
    """A routing: for each of ``num_tokens`` tokens, ``top_k`` slots of (expert index, weight).

    ``indices`` [T, k] int32 (-1 = empty or dropped slot), ``weights`` [T, k] (float32, or
    float64 for float64 logits), ``scores`` [T, E] (the full scores, when kept, else None).
    The arrays are views of the C++ routing: writable, and alive as long as the Routing.
    """

    __slots__ = ("_r", "_torch")

    def __init__(self, core_routing, as_torch: bool = False):
        self._r = core_routing
        self._torch = as_torch

    @property
    def indices(self):
        return _out(self._r.indices, self._torch)

    @property
    def weights(self):
        return _out(self._r.weights, self._torch)

    @property
    def scores(self):
        return _out(self._r.scores, self._torch)

    @property
    def num_tokens(self) -> int:
        return self._r.num_tokens

    @property
    def num_experts(self) -> int:
        return self._r.num_experts

    @property
    def top_k(self) -> int:
        return self._r.top_k

    def tokens_per_expert(self):
        """Routed slots per expert ([E] int64; dropped slots not counted)."""
        return _out(self._r.tokens_per_expert(), self._torch)

    def copy(self) -> "Routing":
        return Routing(self._r.copy(), self._torch)

    def __repr__(self) -> str:
        w = "float64" if isinstance(self._r, _core.RoutingF64) else "float32"
        return f"moe.Routing(num_tokens={self.num_tokens}, num_experts={self.num_experts}, top_k={self.top_k}, weights={w})"


def _r(routing) -> Any:
    if isinstance(routing, Routing):
        return routing._r
    raise fail("moe.python.argument", f"expected a moe.Routing, got {type(routing).__name__}")


def router_config(preset: Optional[str] = None, **fields) -> Dict[str, Any]:
    """The full router config of ``preset`` with ``fields`` overriding it, as a dict
    (``moe.RouterConfig(preset=..., **fields)`` is the same as an object, with each field's
    documentation in ``help(moe.RouterConfig)``)."""
    return _core.router_config(_fields(preset=preset, **fields))


def route(logits, preset: Optional[str] = None, *, score: Optional[str] = None, top_k: Optional[int] = None,
          pre_softmax: Optional[bool] = None, select_on_logits: Optional[bool] = None, renorm: Optional[str] = None,
          renorm_eps: Optional[float] = None, scaling_factor: Optional[float] = None, num_groups: Optional[int] = None,
          group_top_k: Optional[int] = None, group_score_top_m: Optional[int] = None, mask: Optional[str] = None,
          weights_from_masked: Optional[bool] = None, keep_scores: Optional[bool] = None, bias=None,
          threads: int = 0, replay=None, replay_weights=None, ser: Optional[Tuple[int, float]] = None) -> Routing:
    """Routes router logits [T, E] (float32 / float64 / float16 / bfloat16) to their top-k experts.

    ``preset`` is a model family's recipe (``moe.preset_names``: "mixtral", "qwen3_moe",
    "deepseek_v3", "gpt_oss", "llama4", ...); the keyword fields override it. ``score`` is
    "softmax", "sigmoid" or "sqrtsoftplus"; ``renorm`` "none", "sum", "sum_eps" or "clamp";
    ``mask`` "neg_inf" or "zero" (group-limited routing); ``bias`` [E] is the selection-only
    bias (DeepSeek-V3's e_score_correction_bias). Weights are float32 (float64 for float64
    logits). Ties go to the lower expert index.

    ``replay`` [T, k] (integer, -1 = empty slot) routes to those experts instead of the top-k
    (RL routing replay); their weights are ``replay_weights`` [T, k] or, without it, recomputed
    from this router's scores exactly as it weighs its own top-k (so replaying a routing of this
    router gives its weights bit for bit). ``ser=(k_min, threshold)``: smart expert reduction
    after routing: keep each token's first ``k_min`` experts and those whose weight is at least
    ``threshold`` x its top weight, reweighed as the recipe does; dropped slots are -1.
    ``top_k`` below the preset's routes fewer experts per call.
    """
    a, bf16, as_torch = _in(logits, "logits")
    cfg = _fields(preset=preset, score=score, top_k=top_k, pre_softmax=pre_softmax, select_on_logits=select_on_logits,
                  renorm=renorm, renorm_eps=renorm_eps, scaling_factor=scaling_factor, num_groups=num_groups,
                  group_top_k=group_top_k, group_score_top_m=group_score_top_m, mask=mask,
                  weights_from_masked=weights_from_masked, keep_scores=keep_scores)
    k_min, thr = (0, 0.0) if ser is None else (int(ser[0]), float(ser[1]))
    if ser is not None and k_min < 1:
        raise fail("moe.selection.ser", f"k_min={k_min} must be >= 1 (ser=(k_min, threshold))")
    return Routing(_core.route(a, bf16, cfg, _plain(bias, "bias"), threads, _plain(replay, "replay"),
                               _plain(replay_weights, "replay_weights"), k_min, thr), as_torch)


def routing_stats(indices, num_experts: Optional[int] = None, *, scores=None, capacity: int = 0) -> Dict[str, Any]:
    """Routing statistics of ``indices`` [T, k] (one layer; -1 = empty slot) or [L, T, k] (a trace).

    One layer: a dict of ``load`` [E], ``routed``, ``mean_load``, ``max_over_mean``, ``cv``,
    ``jain`` (Jain's fairness index), ``load_entropy`` (nats), ``routing_entropy`` (mean per-token
    entropy of ``scores`` [T, E] normalised per row; NaN without scores), ``adjacent_overlap``
    (fraction of a token's experts the previous token also used), ``drop_rate`` (slots a
    per-expert ``capacity`` would drop; 0 without one). A trace: the same per layer as arrays
    (``load`` [L, E]), ``layer_overlap`` [L-1] (fraction of a token's layer-l experts it used in
    layer l-1) and ``total`` (the loads summed over layers). docs/research.md states each formula.
    """
    return _core.routing_stats(_plain(indices, "indices"), 0 if num_experts is None else int(num_experts),
                               _plain(scores, "scores"), int(capacity))


def routing_from_arrays(indices, weights, num_experts: int, *, scores=None) -> Routing:
    """A Routing from a framework's own top-k: ``indices`` [T, k] (-1 = empty), ``weights`` [T, k],
    optional ``scores`` [T, E]. float64 weights give a float64 routing."""
    w, _, as_torch = _in(weights, "weights")
    i = _plain(indices, "indices")
    return Routing(_core.routing_from_arrays(i, w, _plain(scores, "scores"), num_experts, w.dtype == np.float64), as_torch)


def mask_tokens(routing: Routing, valid) -> None:
    """Clears every slot of the tokens whose ``valid`` entry is 0 (padding), in place."""
    _core.mask_tokens(_r(routing), _plain(valid, "valid"))


def _capacity_fields(formula, factor, min_capacity, alignment):
    return _fields(formula=formula, factor=factor, min_capacity=min_capacity, alignment=alignment)


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, *, formula: Optional[str] = None,
                    factor: Optional[float] = None, min_capacity: Optional[int] = None, alignment: Optional[int] = None,
                    max_load: int = 0, slots_per_token: float = 0.0) -> int:
    """Slots per expert by a peer's formula: "megatron", "deepspeed", "deepspeed_topk", "tutel",
    "megablocks", "capacity_aware" or "dropless" (``max_load`` is the busiest expert's load,
    used by the formulas that need it)."""
    return _core.expert_capacity(_capacity_fields(formula, factor, min_capacity, alignment), num_tokens, num_experts,
                                 top_k, max_load, slots_per_token)


def apply_capacity(routing: Routing, config: Optional["DropConfig"] = None, *, formula: Optional[str] = None,
                   factor: Optional[float] = None, min_capacity: Optional[int] = None, alignment: Optional[int] = None,
                   policy: Optional[str] = None, renorm_after: Optional[str] = None, renorm_eps: Optional[float] = None,
                   seed: Optional[int] = None, reroute: Optional[bool] = None, placement=None,
                   per_expert=None) -> Dict[str, Any]:
    """Drops the slots over each expert's capacity, in place (dropped slots become index -1).

    ``policy``: "weight" (Megatron "probs"), "score", "position", "slot_major" (DeepSpeed,
    Tutel), "batch_prioritized" or "random" (seeded). ``reroute`` moves dropped slots to
    experts with room; ``per_expert`` gives each expert its own capacity; ``placement`` maps
    experts to devices for the reroute. Returns the report: capacity, capacities,
    load_before / load_after, dropped / rerouted / original (flat slot ids t * k + s). ``config``
    (a ``moe.DropConfig``) gives the fields the keywords do not.
    """
    d = config.to_dict() if config is not None else {}
    d |= _fields(formula=formula, factor=factor, min_capacity=min_capacity, alignment=alignment, policy=policy,
                renorm_after=renorm_after, renorm_eps=renorm_eps, seed=seed, reroute=reroute,
                placement=_plain(placement, "placement"), per_expert=_plain(per_expert, "per_expert"))
    return _core.apply_capacity(_r(routing), d)


def fill_in(routing: Routing, capacity: int) -> Tuple[Routing, Dict[str, Any]]:
    """Rectify-Router fill-in: dropped slots refilled with the token's next-best expert that has
    room (needs scores). Returns (new routing, {"filled", "load_after"})."""
    r, rep = _core.fill_in(_r(routing), capacity)
    return Routing(r, routing._torch), rep


#: A dispatch plan: rows grouped by expert (counts, offsets, row_token, row_slot, slot_row).
Plan = _core.Plan


def make_plan(routing: Routing, *, block: int = 1, rows_per_expert: int = 0) -> Plan:
    """Groups the routed slots by expert, each expert's rows padded to ``block`` (or to exactly
    ``rows_per_expert``, DeepSpeed's [E, C, H] buffers)."""
    return _core.make_plan(_r(routing), block, rows_per_expert)


padded_rows_per_expert = _core.padded_rows_per_expert


def to_vllm_layout(plan: Plan) -> Dict[str, Any]:
    """vLLM's fused-MoE layout: sorted_token_ids, expert_ids (per block), num_tokens_post_pad."""
    return _core.to_vllm_layout(plan)


def gather(x, plan: Plan, *, threads: int = 0):
    """The expert-major rows [plan.num_rows, H] of tokens ``x`` [T, H] (padding rows zero)."""
    a, _, as_torch = _in(x, "x")
    return _out(_core.gather(a, plan, threads), as_torch)


def combine(out, plan: Plan, routing: Routing, *, threads: int = 0):
    """y[t] = sum_s weight(t, s) * out[row of (t, s)]: expert outputs [rows, H] back to tokens."""
    a, _, as_torch = _in(out, "out")
    return _out(_core.combine(a, plan, _r(routing), threads), as_torch)


def measure(routing: Routing, report: Optional[Dict[str, Any]] = None, plan: Optional[Plan] = None) -> Dict[str, Any]:
    """Load metrics: load, mean/max load, max_over_mean, cv, routed, dropped, drop_rate,
    drops_by_decile, padding_fraction (with a plan)."""
    return _core.measure(_r(routing), report, plan)


def device_loads(routing: Routing, placement):
    """Routed slots per device, ``placement[e]`` = expert e's device."""
    return _core.device_loads(_r(routing), _plain(placement, "placement"))


# ---------------------------------------------------------------------------------------------
# Noise


def _noise(fn, x, name, *args):
    a, _, as_torch = _in(x, name)
    return _out(fn(a, *args), as_torch)


def apply_jitter(x, eps: float, *, seed: int = 0, threads: int = 0):
    """x * U(1 - eps, 1 + eps), seeded (Switch's input jitter); returns a new array."""
    return _noise(_core.apply_jitter, x, "x", eps, seed, threads)


def add_gumbel_noise(logits, *, seed: int = 0, threads: int = 0):
    """logits + Gumbel(0, 1) noise, seeded; returns a new array."""
    return _noise(_core.add_gumbel_noise, logits, "logits", seed, threads)


def add_normal_noise(logits, stddev: float, *, seed: int = 0, threads: int = 0):
    """logits + N(0, stddev^2), seeded; returns a new array."""
    return _noise(_core.add_normal_noise, logits, "logits", stddev, seed, threads)


def rescore(routing: Routing, clean_logits, preset: Optional[str] = None, **fields) -> None:
    """Recomputes the routing's weights from the clean (noise-free) logits, keeping the
    experts the noisy logits selected (noisy top-k gating), in place."""
    _core.rescore(_r(routing), _plain(clean_logits, "clean_logits"), _fields(preset=preset, **fields))


# ---------------------------------------------------------------------------------------------
# Selection policies


def route_top_p(logits, *, p: Optional[float] = None, min_k: Optional[int] = None, max_k: Optional[int] = None,
                score: Optional[str] = None, renorm: Optional[str] = None, renorm_eps: Optional[float] = None,
                scaling_factor: Optional[float] = None, keep_scores: Optional[bool] = None) -> Routing:
    """Dynamic k: each token takes experts in score order until their sum reaches ``p``
    (at least ``min_k``, at most ``max_k``); unused slots are -1."""
    a, bf16, as_torch = _in(logits, "logits")
    d = _fields(p=p, min_k=min_k, max_k=max_k, score=score, renorm=renorm, renorm_eps=renorm_eps,
                scaling_factor=scaling_factor, keep_scores=keep_scores)
    return Routing(_core.route_top_p(a, bf16, d), as_torch)


def route_expert_choice(logits, *, capacity: Optional[int] = None, capacity_factor: Optional[float] = None,
                        score: Optional[str] = None, keep_scores: Optional[bool] = None) -> Routing:
    """Expert choice (Zhou et al.): each expert takes its ``capacity`` best tokens (default
    T * capacity_factor / E); the routing's k is the largest count any token got."""
    a, bf16, as_torch = _in(logits, "logits")
    d = _fields(capacity=capacity, capacity_factor=capacity_factor, score=score, keep_scores=keep_scores)
    return Routing(_core.route_expert_choice(a, bf16, d), as_torch)


def sinkhorn(cost, *, tol: float = 1e-4, max_iterations: int = 10000):
    """Sinkhorn-Knopp balancing of exp(cost) [T, E]: returns (plan [T, E] float64, info dict)."""
    a, _, as_torch = _in(cost, "cost")
    out, info = _core.sinkhorn(a, tol, max_iterations)
    return _out(out, as_torch), info


def route_sinkhorn(logits, top_k: int, *, tol: float = 1e-4):
    """Megatron's Sinkhorn routing: top-k on the balanced plan, weights from sigmoid(logits).
    Returns (Routing, info)."""
    a, _, as_torch = _in(logits, "logits")
    r, info = _core.route_sinkhorn(a, top_k, tol)
    return Routing(r, as_torch), info


def strip_null_experts(routing: Routing, num_real: int) -> Routing:
    """AdaMoE: slots on the null experts (indices >= num_real) become empty (-1)."""
    return Routing(_core.strip_null_experts(_r(routing), num_real), routing._torch)


def mean_experts_per_token(routing: Routing) -> float:
    return _core.mean_experts_per_token(_r(routing))


def route_hash(logits, token_ids, table, preset: Optional[str] = None, **fields) -> Routing:
    """Hash routing (Roller et al.): token ``token_ids[t]`` goes to experts ``table[id]``; the
    weights come from the logits by the router config."""
    a, _, as_torch = _in(logits, "logits")
    return Routing(_core.route_hash(a, _plain(token_ids, "token_ids"), _plain(table, "table"),
                                    _fields(preset=preset, **fields)), as_torch)


def split_zero_experts(routing: Routing, num_real: int, type: str = "zero", x=None):
    """Zero-computation experts (MoE++ / LongCat): slots on experts >= num_real are removed from
    the routing; "identity" experts return their weighted input. Returns (count, y_zero or None)."""
    n, y = _core.split_zero_experts(_r(routing), num_real, type, _plain(x, "x"))
    return n, _out(y, routing._torch)


# ---------------------------------------------------------------------------------------------
# Losses


def _loss_cfg(normalization, score, top_k, coeff, num_null_experts):
    return _fields(normalization=normalization, score=score, top_k=top_k, coeff=coeff, num_null_experts=num_null_experts)


def aux_loss_routing(logits, top_k: int, *, score: str = "softmax") -> Routing:
    """The routing Megatron's aux loss counts: the plain top-k of the loss scores, ungrouped,
    without the selection bias."""
    a, _, as_torch = _in(logits, "logits")
    return Routing(_core.aux_loss_routing(a, top_k, score), as_torch)


def _loss(fn, logits, grad, *args):
    a, _, as_torch = _in(logits, "logits")
    value, g = fn(a, *args, grad)
    return (value, _out(g, as_torch)) if grad else value


def _loss_routing(logits, routing, top_k, score):
    if routing is not None:
        return _r(routing)
    if not top_k:
        raise fail("moe.losses.routing", "pass routing= (the top-k before any drop) or top_k= (Megatron's aux-loss routing)")
    return _r(aux_loss_routing(logits, top_k, score=score or "softmax"))


def load_balancing_loss(logits, routing: Optional[Routing] = None, *, top_k: Optional[int] = None,
                        normalization: str = "megatron", score: Optional[str] = None, coeff: Optional[float] = None,
                        num_null_experts: Optional[int] = None, valid=None, grad: bool = False):
    """Switch / GShard load-balancing loss of logits [T, E] (float32 / float64).

    ``normalization``: "megatron" (E / (k T^2) sum_e P_e n_e), "hf_mixtral" (k times that,
    HF's load_balancing_loss_func) or "deepspeed" (first-choice counts). Counts come from
    ``routing`` (the top-k before any drop), or, without it, from the plain top-``top_k`` of
    the loss scores (Megatron). ``score``: "softmax" (P = softmax), "sigmoid" or
    "sqrtsoftplus" (P = s / (sum + 1e-20), Megatron's compute_routing_scores_for_aux_loss).
    ``valid`` masks padding tokens. With ``grad=True`` returns (value, d value / d logits)."""
    r = _loss_routing(logits, routing, top_k, score)
    return _loss(lambda a, g: _core.load_balancing_loss(a, r, _loss_cfg(normalization, score, top_k, coeff, num_null_experts),
                                                        _plain(valid, "valid"), g), logits, grad)


def sequence_load_balancing_loss(logits, routing: Optional[Routing] = None, *, seq_len: int, top_k: Optional[int] = None,
                                 normalization: str = "megatron", score: Optional[str] = None,
                                 coeff: Optional[float] = None, num_null_experts: Optional[int] = None, valid=None,
                                 grad: bool = False):
    """The load-balancing loss of each sequence of ``seq_len`` rows, averaged (Megatron
    seq_aux_loss, DeepSeek-V3's sequence-wise loss). Arguments as `load_balancing_loss`."""
    r = _loss_routing(logits, routing, top_k, score)
    cfg = _loss_cfg(normalization, score, top_k, coeff, num_null_experts)
    return _loss(lambda a, g: _core.sequence_load_balancing_loss(a, r, seq_len, cfg, _plain(valid, "valid"), g), logits, grad)


def z_loss(logits, *, coeff: float = 1.0, valid=None, grad: bool = False):
    """Router z-loss (ST-MoE): coeff * mean_t logsumexp(logits_t)^2; (value, grad) with grad=True."""
    return _loss(lambda a, g: _core.z_loss(a, coeff, _plain(valid, "valid"), g), logits, grad)


def importance_load_loss(logits, noisy_logits, routing: Routing, *, gate_noise: float, grad: bool = False):
    """Importance + load loss (Shazeer et al. 2017; Tutel's load_importance_loss)."""
    noisy = _plain(noisy_logits, "noisy_logits")
    return _loss(lambda a, g: _core.importance_load_loss(a, noisy, _r(routing), gate_noise, g), logits, grad)


def aux_loss_statistics(logits, routing: Routing, *, normalization: str = "megatron", score: Optional[str] = None,
                        top_k: Optional[int] = None, num_null_experts: Optional[int] = None, valid=None) -> Dict[str, Any]:
    """The terms the load-balancing loss is formed from (prob_sum, counts, tokens, ...); they add
    up across micro-batches and ranks."""
    return _core.aux_loss_statistics(_plain(logits, "logits"), _r(routing),
                                     _loss_cfg(normalization, score, top_k, None, num_null_experts), _plain(valid, "valid"))


class GlobalLoadBalancer:
    """Global-batch load-balancing loss (Qwen's "Demons in the Detail"; Megatron global aux loss):
    statistics accumulate over micro-batches (`add`) and ranks (`merge` of `terms()`) before the
    loss is formed; `gradient` gives one micro-batch's gradient under the global counts."""

    def __init__(self, *, normalization: str = "megatron", score: Optional[str] = None, top_k: Optional[int] = None,
                 coeff: Optional[float] = None, num_null_experts: Optional[int] = None):
        self._b = _core.GlobalLoadBalancer(_loss_cfg(normalization, score, top_k, coeff, num_null_experts))

    def add(self, logits, routing: Routing, *, valid=None) -> None:
        self._b.add(_plain(logits, "logits"), _r(routing), _plain(valid, "valid"))

    def merge(self, terms: Dict[str, Any]) -> None:
        self._b.merge(terms)

    def loss(self) -> float:
        return self._b.loss()

    def gradient(self, logits, *, valid=None):
        a, _, as_torch = _in(logits, "logits")
        return _out(self._b.gradient(a, _plain(valid, "valid")), as_torch)

    def reset(self) -> None:
        self._b.reset()

    def terms(self) -> Dict[str, Any]:
        return self._b.terms()


def update_expert_bias(bias, tokens_per_expert, *, rate: float = 1e-3):
    """Aux-loss-free balancing (DeepSeek-V3): bias_e += rate * sign(mean(n) - n_e), in float32.
    Updates ``bias`` in place when it is a float32 array or tensor, and returns the new bias."""
    new = _core.update_expert_bias(_plain(bias, "bias"), _plain(tokens_per_expert, "tokens_per_expert"), rate)
    if _is_tensor(bias) and bias.dtype == _torch().float32:
        with _torch().no_grad():
            bias.copy_(_torch().from_numpy(new))
        return bias
    if isinstance(bias, np.ndarray) and bias.dtype == np.float32 and bias.flags.writeable:
        bias[...] = new
        return bias
    return new


# ---------------------------------------------------------------------------------------------
# Layers


class MoeBlock:
    """A model family's MoE block: router linear, the family's routing recipe, routed experts
    packed in ``format`` (``moe.weight_formats``: "f32", "bf16", "q4_k", "fp8", "mxfp4", ...),
    optional shared expert. ``spec`` (a dict as `load_block` returns it, or a ``moe.BlockSpec``)
    and ``weights`` (float32 in the HF layouts: router_w [E, H], w1 / w3 [E, F, H], w2 [E, H, F],
    ...). ``format`` may also be a list of names, one per routed expert (hot experts in "q8_0",
    cold ones in "q4_k": each expert runs in its own format, each row bit-identical to the block
    of its expert's format). ``capacity`` (a ``moe.DropConfig`` or a dict of `apply_capacity`'s
    keywords) turns on token dropping."""

    def __init__(self, spec: Union[Dict[str, Any], "BlockSpec"], weights: Dict[str, Any], *,
                 format: Union[str, Sequence[str]] = "f32",
                 capacity: Union[Dict[str, Any], "DropConfig", None] = None, fill_in: bool = False):
        w = {k: _plain(v, k) for k, v in weights.items()}
        self._b = _core.MoeBlock(spec, w, format, capacity, fill_in)
        self._torch = False

    @classmethod
    def from_checkpoint(cls, path: str, layer: Optional[int] = None, *, format: str = "file",
                        capacity: Union[Dict[str, Any], "DropConfig", None] = None, fill_in: bool = False) -> "MoeBlock":
        """Layer ``layer`` (default: the first MoE layer) of an HF folder or a .gguf file. With
        ``format="file"`` the routed experts keep the format they are stored in where moe runs it
        without a float copy (every GGUF type of ``weight_formats``, mixed layers such as
        Q4_K_M's "q4_k+q6_k", FP8 and GPT-OSS MXFP4 checkpoints; ``block.format`` says which), else
        float32; any other format converts them."""
        b = cls.__new__(cls)
        b._b = _core.MoeBlock.from_checkpoint(path, -1 if layer is None else layer, format, capacity, fill_in)
        b._torch = False
        return b

    def forward(self, x, *, threads: int = 0, replay=None, replay_weights=None):
        """y [T, H] = the block applied to hidden states x [T, H] (float32). ``replay`` [T, k]
        (and optionally ``replay_weights`` [T, k]) replays a recorded routing, as `moe.route` does."""
        a, _, as_torch = _in(x, "x")
        self._torch = as_torch
        return _out(self._b.forward(a, threads, _plain(replay, "replay"), _plain(replay_weights, "replay_weights")), as_torch)

    def set_reduction(self, top_k: Optional[int] = None, *, ser: Optional[Tuple[int, float]] = None) -> None:
        """Routes fewer experts from the next forward on: ``top_k`` below the recipe's (None: the
        recipe's), ``ser=(k_min, threshold)`` smart expert reduction (None: off)."""
        k_min, thr = (0, 0.0) if ser is None else (int(ser[0]), float(ser[1]))
        if ser is not None and k_min < 1:
            raise fail("moe.selection.ser", f"k_min={k_min} must be >= 1 (ser=(k_min, threshold))")
        self._b.set_reduction(0 if top_k is None else int(top_k), k_min, thr)

    __call__ = forward

    def last_routing(self) -> Routing:
        return Routing(self._b.last_routing(), self._torch)

    def last_logits(self):
        return _out(self._b.last_logits(), self._torch)

    def last_capacity(self) -> Dict[str, Any]:
        return self._b.last_capacity()

    @property
    def spec(self) -> Dict[str, Any]:
        return self._b.spec

    @property
    def format(self) -> str:
        return self._b.format

    @property
    def expert_bytes(self) -> int:
        """Bytes of one packed expert (what an offloading cache moves)."""
        return self._b.expert_bytes


def load_block(path: str, layer: Optional[int] = None, *, experts: bool = True):
    """(spec, weights) of MoE layer ``layer`` (default: the first) of a Hugging Face folder or a
    .gguf file; weights float32 in the HF layouts. ``experts=False`` loads the router only.
    A file that loads but routes unlike the HF model (a DeepSeek GGUF converted before llama.cpp
    wrote the group keys) gives a ``UserWarning`` starting "[moe.models.legacy]"."""
    return _core.load_block(path, -1 if layer is None else layer, experts)


def moe_layers(path: str) -> List[int]:
    """The MoE layers of a checkpoint (dense layers left out)."""
    return _core.moe_layers(path)


# ---------------------------------------------------------------------------------------------
# Data, gate, policy comparison


def synthetic_logits(num_tokens: int, num_experts: int, *, skew: str = "uniform", seed: int = 0) -> np.ndarray:
    """Seeded router logits [T, E] float32 with a popularity skew: "uniform", "zipf:S", "dirichlet:A"."""
    return _core.synthetic_logits(num_tokens, num_experts, skew, seed)


def gate(x, w, b=None, *, threads: int = 0):
    """Router logits x w^T (+ b): x [T, H], w [E, H] float32, moe's packed gate kernel."""
    a, _, as_torch = _in(x, "x")
    return _out(_core.gate(a, _plain(w, "w"), _plain(b, "b"), threads), as_torch)


def measure_row_cost(hidden: int, ffn: int) -> float:
    """Seconds per routed row of one SwiGLU expert of this size, measured here."""
    return _core.measure_row_cost(hidden, ffn)


def compare_policies(logits, policies: Optional[Sequence[str]] = None, preset: Optional[str] = None, *,
                     block: int = 1, bias_steps: int = 200, row_cost: float = 0.0, **fields) -> List[Dict[str, Any]]:
    """Runs routing / capacity policies (``moe.simulator_policies``, default all) on the same
    logits [T, E] and returns one dict per policy: drop_rate, rerouted, max_load,
    max_over_mean, cv, padding_fraction, aux_loss, z_loss, experts_per_token, us_per_token,
    model_ms / balanced_ms (with ``row_cost``, see `measure_row_cost`) and load. The router
    is ``preset`` with ``fields``. `policy_table` turns the rows into a structured array."""
    a = _plain(logits, "logits")
    names = list(policies) if policies is not None else list(simulator_policies)
    return _core.compare_policies(a, _fields(preset=preset, **fields), names, block, bias_steps, row_cost)


def policy_table(rows: List[Dict[str, Any]]) -> np.ndarray:
    """The rows of `compare_policies` as a NumPy structured array (one record per policy)."""
    scalar = [k for k in rows[0] if k not in ("policy", "load")] if rows else []
    width = max((len(r["policy"]) for r in rows), default=1)
    dt = [("policy", f"U{width}")] + [(k, np.int64 if isinstance(rows[0][k], int) else np.float64) for k in scalar]
    return np.array([tuple([r["policy"]] + [r[k] for k in scalar]) for r in rows], dtype=dt)


# ---------------------------------------------------------------------------------------------
# Placement and offloading (traces are [L, T, k] integer arrays of expert indices, -1 = empty)


def rebalance_experts(loads, num_replicas: int, num_groups: int = 1, num_nodes: int = 1, num_devices: int = 1) -> Dict[str, Any]:
    """DeepSeek EPLB: replicate hot experts and pack the replicas onto devices, per layer.

    ``loads`` [L, E] (or [E]) expert loads. Returns EPLB's arrays: ``phy2log`` [L, R],
    ``log2phy`` [L, E, max replicas] (-1 padded), ``logcnt`` [L, E], and ``phyrank`` [L, R].
    Hierarchical when ``num_groups`` divides over ``num_nodes``, global otherwise."""
    return _core.rebalance_experts(_plain(loads, "loads"), num_replicas, num_groups, num_nodes, num_devices)


def synthetic_trace(num_layers: int, num_tokens: int, num_experts: int, top_k: int, *, affinity: float = 4.0,
                    skew: str = "uniform", seed: int = 0) -> np.ndarray:
    """A seeded [L, T, k] trace whose layer-(l+1) experts are drawn near each token's layer-l
    experts (``affinity`` 0 = independent layers)."""
    return _core.synthetic_trace(num_layers, num_tokens, num_experts, top_k, affinity, skew, seed)


def transition_counts(trace, num_experts: int) -> np.ndarray:
    """[L-1, E, E]: tokens with expert a in layer l and b in layer l+1 (ExFlow's P(b | a) unnormalised)."""
    return _core.transition_counts(_plain(trace, "trace"), num_experts)


def affinity_placement(trace, num_experts: int, num_devices: int) -> Dict[str, Any]:
    """Places every layer's experts (E / D per device) to keep a token's consecutive experts on
    one device. Returns ``devices`` [L, E] and the layer-to-layer crossing fraction, with the
    contiguous placement's for comparison."""
    return _core.affinity_placement(_plain(trace, "trace"), num_experts, num_devices)


def segment_routing_performance(trace, num_experts: int, *, layer: int = 0, segment: int = 16) -> Dict[str, Any]:
    """SRP(L) of one layer: the best F1 of covering each segment of L tokens with one fixed
    expert set (experts with >= theta activations); also the threshold, precision, recall."""
    return _core.segment_routing_performance(_plain(trace, "trace"), num_experts, layer, segment)


def segment_cache_hit_rate(trace, num_experts: int, cache_size: int, *, layer: int = 0, segment: int = 16) -> float:
    """SCH(L, m) of one layer: hit rate of a cache of m experts holding each segment's m most
    activated experts."""
    return _core.segment_cache_hit_rate(_plain(trace, "trace"), num_experts, layer, segment, cache_size)


def simulate_cache(trace, num_experts: int, cache_size: int, *, policy: str = "lru", prefetch_width: int = 0,
                   expert_bytes: float = 0.0) -> Dict[str, Any]:
    """One cache of ``cache_size`` experts per layer over the trace (tokens in order, layers in
    order): ``policy`` "lru", "lfu", "belady" (optimal) or "prefetch" (next layer's predicted
    experts, from the trace's transition counts). Returns hits, loads, prefetches, hit_rate and
    bytes_per_token for experts of ``expert_bytes``."""
    return _core.simulate_cache(_plain(trace, "trace"), num_experts, cache_size, policy, prefetch_width, expert_bytes)


# ---------------------------------------------------------------------------------------------
# Routing research: records of a forward's routing, expert reduction (docs/research.md)


def write_record(path: str, indices, weights=None, *, num_experts: Optional[int] = None,
                 layers: Optional[Sequence[int]] = None, model: str = "",
                 recipe: Union[str, Dict[str, Any], None] = None) -> None:
    """Writes a routing record into directory ``path``: ``indices`` [L, T, k] (-1 = empty slot)
    as indices.npy, ``weights`` [L, T, k] as weights.npy (optional), and record.json with
    ``layers`` (the model's layer ids, default 0..L-1), ``num_experts`` (default: the largest
    index + 1), ``model`` and ``recipe`` (a preset name or a dict of router fields), the tie
    rule and moe's version. The same files `moe-layer --record` writes and `--replay` reads."""
    idx = _plain(indices, "indices")
    if num_experts is None:
        num_experts = max(int(np.max(idx)) + 1, 1) if idx is not None and np.size(idx) else 1
    if isinstance(recipe, str):
        recipe = dict(router_config(recipe), preset=recipe)
    text = json.dumps(recipe if recipe is not None else {}, default=str)
    _core.write_record(str(path), idx, _plain(weights, "weights"), None if layers is None else [int(v) for v in layers],
                       int(num_experts), str(model), text)


def read_record(path: str) -> Dict[str, Any]:
    """The routing record in directory ``path`` (`write_record`, `moe-layer --record`), every
    file checked: a dict of ``indices`` [L, T, k] int32, ``weights`` [L, T, k] float32 or None,
    ``layers``, ``num_experts``, ``top_k``, ``model`` and ``recipe`` (a dict)."""
    d = _core.read_record(str(path))
    d["recipe"] = json.loads(d["recipe"])
    return d


def _reduction_policies(policies: Optional[Sequence[str]], k: int) -> List[Tuple[str, int, Optional[Tuple[int, float]]]]:
    if policies is None:
        policies = ["recipe"] + [f"top-{kk}" for kk in sorted({k - 1, k // 2}, reverse=True) if 1 <= kk < k]
        policies += [f"ser:1,{t}" for t in (0.1, 0.3, 0.5)] if k > 1 else []
    out = []
    for p in policies:
        if p == "recipe" or p == f"top-{k}":
            out.append((f"top-{k} (recipe)", 0, None))
        elif p.startswith("top-") and p[4:].isdigit():
            out.append((p, int(p[4:]), None))
        elif p.startswith("ser:") and p.count(",") == 1:
            km, thr = p[4:].split(",")
            try:
                out.append((p, 0, (int(km), float(thr))))
            except ValueError:
                raise fail("moe.python.policy", f"'{p}': expected ser:KMIN,T (e.g. ser:1,0.3)") from None
        else:
            raise fail("moe.python.policy", f"unknown reduction policy '{p}' (expected 'recipe', 'top-K' or 'ser:KMIN,T')")
    return out


def compare_reduction(block: "MoeBlock", x, policies: Optional[Sequence[str]] = None, *, threads: int = 0,
                      repeats: int = 3) -> List[Dict[str, Any]]:
    """The speed / quality trade-off of routing fewer experts on one block (`moe-layer
    --compare`'s table): for each policy ("recipe", "top-K" below the recipe's k,
    "ser:KMIN,T" smart expert reduction; default: the recipe, top-(k-1), top-(k/2), SER 1 with
    thresholds 0.1, 0.3, 0.5) one dict of ``policy``, ``experts_per_token`` (active routed
    experts), ``decode_bytes`` (expert weight bytes a one-token step reads: experts_per_token x
    ``block.expert_bytes``), ``ms`` (best of ``repeats`` forwards of x), ``rel_l2`` and
    ``max_abs`` (the output's change against the recipe's). `policy_table` makes it an array.
    The block routes the recipe's k afterwards."""
    k = int(block.spec["router"]["top_k"])
    xs = _plain(x, "x")
    rows, ref = [], None
    for name, top_k, ser in [("recipe", 0, None)] + _reduction_policies(policies, k):
        block.set_reduction(top_k or None, ser=ser)
        best, y = float("inf"), None
        for _ in range(max(1, int(repeats)) if name != "recipe" else 1):
            t0 = time.perf_counter()
            y = np.asarray(block.forward(xs, threads=threads), dtype=np.float64)
            best = min(best, (time.perf_counter() - t0) * 1e3)
        if name == "recipe":
            ref = y  # the reference output; its timed row is the policy list's own
            continue
        ept = float(np.count_nonzero(np.asarray(block.last_routing().indices) >= 0)) / max(1, xs.shape[0])
        d = y - ref
        den = float(np.sqrt(np.sum(ref * ref)))
        rows.append({"policy": name, "experts_per_token": ept, "decode_bytes": ept * block.expert_bytes, "ms": best,
                     "rel_l2": float(np.sqrt(np.sum(d * d))) / den if den > 0 else 0.0,
                     "max_abs": float(np.max(np.abs(d))) if d.size else 0.0})
    block.set_reduction()
    return rows
