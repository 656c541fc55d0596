"""PyTorch autograd wrappers of moe's router losses: the forward value and the backward
gradient are moe's (analytic) ones, so ``loss.backward()`` works in a training script.

    import moe.torch
    aux = moe.torch.load_balancing_loss(logits, top_k=2, normalization="megatron")
    z = moe.torch.z_loss(logits)
    (task_loss + 1e-2 * aux + 1e-3 * z).backward()

Logits are [T, E] CPU tensors; float32 and float64 are computed as they are, float16 and
bfloat16 in float32 (the gradient comes back in the logits' dtype). The losses are scalars
of the logits' dtype. Counts (which experts each token picked) are not differentiable, as in
every peer: the gradient flows through the probabilities.
"""
from __future__ import annotations

from typing import Optional

import torch as _t

import moe as _moe

__all__ = ["load_balancing_loss", "sequence_load_balancing_loss", "z_loss"]


def _work(logits: _t.Tensor) -> _t.Tensor:
    x = logits.detach()
    if x.device.type != "cpu":
        raise _moe.fail("moe.python.device", f"logits are on {x.device}; moe computes on CPU tensors")
    return x if x.dtype in (_t.float32, _t.float64) else x.float()


def _routing(x: _t.Tensor, routing, indices, top_k, score):
    """The routing whose counts enter: given, from a framework's own top-k indices, or (None)
    Megatron's plain top-k of the loss scores, formed by moe."""
    if routing is not None:
        return routing
    if indices is not None:
        idx = indices.detach().cpu() if isinstance(indices, _t.Tensor) else indices
        return _moe.routing_from_arrays(idx, _t.ones(idx.shape, dtype=_t.float32), x.shape[1])
    return None


class _Loss(_t.autograd.Function):
    @staticmethod
    def forward(ctx, logits, fn):
        value, grad = fn(_work(logits))
        ctx.save_for_backward(grad.to(logits.dtype))
        return _t.tensor(value, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return g * grad, None


def load_balancing_loss(logits: _t.Tensor, *, top_k: Optional[int] = None, normalization: str = "megatron",
                        score: str = "softmax", coeff: float = 1.0, routing=None, indices: Optional[_t.Tensor] = None,
                        num_null_experts: int = 0, valid: Optional[_t.Tensor] = None) -> _t.Tensor:
    """Switch / GShard load-balancing loss with moe's gradient.

    ``normalization``: "megatron", "hf_mixtral" or "deepspeed" (see moe.load_balancing_loss).
    Counts come from ``routing`` (a moe.Routing), from ``indices`` ([T, k] expert ids your
    router picked, -1 = none), or else from the top-``top_k`` of the loss scores (Megatron).
    """
    def fn(x):
        r = _routing(x, routing, indices, top_k, score)
        return _moe.load_balancing_loss(x, r, top_k=top_k, normalization=normalization, score=score, coeff=coeff,
                                        num_null_experts=num_null_experts, valid=valid, grad=True)
    return _Loss.apply(logits, fn)


def sequence_load_balancing_loss(logits: _t.Tensor, *, seq_len: int, top_k: Optional[int] = None,
                                 normalization: str = "megatron", score: str = "softmax", coeff: float = 1.0,
                                 routing=None, indices: Optional[_t.Tensor] = None, valid: Optional[_t.Tensor] = None
                                 ) -> _t.Tensor:
    """The per-sequence load-balancing loss (Megatron seq_aux_loss, DeepSeek-V3), averaged over
    the sequences of ``seq_len`` consecutive rows."""
    def fn(x):
        r = _routing(x, routing, indices, top_k, score)
        return _moe.sequence_load_balancing_loss(x, r, seq_len=seq_len, top_k=top_k, normalization=normalization,
                                                 score=score, coeff=coeff, valid=valid, grad=True)
    return _Loss.apply(logits, fn)


def z_loss(logits: _t.Tensor, *, coeff: float = 1.0, valid: Optional[_t.Tensor] = None) -> _t.Tensor:
    """Router z-loss (ST-MoE): coeff * mean_t logsumexp(logits_t)^2, with moe's gradient."""
    return _Loss.apply(logits, lambda x: _moe.z_loss(x, coeff=coeff, valid=valid, grad=True))
