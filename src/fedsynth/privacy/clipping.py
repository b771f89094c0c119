"""Per-sample gradient clipping for dense nets in one backward pass ("ghost" clipping).

For a linear layer y = W a + b applied to one vector per record, record i's gradient is
∇W_i = g_i a_iᵀ and ∇b_i = g_i, with g_i = ∂ℓ_i/∂y_i. Hence, without materialising ∇W_i,

    ‖∇_i‖² = Σ_layers ‖g_i‖² (‖a_i‖² + 1)                   (Goodfellow 2015; Li et al. 2022)

and the clipped sum is a single matrix product per layer:

    Σ_i c_i ∇W_i = (c ⊙ G)ᵀ A,   Σ_i c_i ∇b_i = Σ_i c_i g_i,   c_i = min(1, C / (‖∇_i‖ + 1e-6)).

This writes the clipped *sum* into ``p.grad``; Opacus' ``DPOptimizerFastGradientClipping`` then
adds N(0, σ²C²), divides by the expected batch size and informs the accountant — the same
mechanism as Opacus' own ghost clipping, which needs two backward passes where this needs one.
It is cross-checked against Opacus' per-sample (hooks) clipping in ``tests/test_dp_training.py``.

:class:`PerSampleClipper` is the general path for any layer Opacus has a per-sample rule for
(Conv2d, GroupNorm, ...): Opacus' hooks materialise every record's gradient, this clips and sums.
"""

from __future__ import annotations

import torch
from torch import nn


class GhostClipper:
    """Attach to a module whose trainable parameters all live in ``nn.Linear`` layers."""

    def __init__(self, module: nn.Module, max_grad_norm: float) -> None:
        self.layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
        covered = {id(p) for m in self.layers for p in m.parameters()}
        others = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in covered]
        if others:
            raise ValueError(f"GhostClipper supports only Linear layers; other parameters: {others}")
        self.max_grad_norm = max_grad_norm
        self._acts: list[torch.Tensor] = []
        self._outs: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]
        self._order: list[nn.Linear] = []

    def _hook(self, mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if not torch.is_grad_enabled():  # sampling / evaluation passes are not training steps
            return
        self._order.append(mod)  # type: ignore[arg-type]
        self._acts.append(inp[0].detach())
        self._outs.append(out)

    def clear(self) -> None:
        self._acts.clear()
        self._outs.clear()
        self._order.clear()

    def clip_and_sum(self, loss_per_sample: torch.Tensor) -> torch.Tensor:
        """Backward through ``loss_per_sample`` (shape (B,)), write clipped sums to ``.grad``.

        Returns the per-sample gradient norms before clipping.
        """
        if not self._outs:
            raise RuntimeError("no forward pass recorded since the last clip")
        if len({id(m) for m in self._order}) != len(self._order):
            raise RuntimeError("a Linear layer was applied twice in one forward: ghost norms need one use")
        grads = torch.autograd.grad(loss_per_sample.sum(), self._outs)
        sq = torch.zeros(loss_per_sample.shape[0], dtype=loss_per_sample.dtype)
        for a, g in zip(self._acts, grads, strict=True):
            sq = sq + g.pow(2).sum(1) * (a.pow(2).sum(1) + 1.0)
        norms = sq.sqrt()
        coef = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for layer in self.layers:
            layer.weight.grad = torch.zeros_like(layer.weight)
            if layer.bias is not None:
                layer.bias.grad = torch.zeros_like(layer.bias)
        for layer, a, g in zip(self._order, self._acts, grads, strict=True):
            cg = g * coef[:, None]
            layer.weight.grad += cg.T @ a  # type: ignore[operator]
            if layer.bias is not None:
                layer.bias.grad += cg.sum(0)  # type: ignore[operator]
        self.clear()
        return norms.detach()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class PerSampleClipper:
    """Opacus per-sample gradients (hooks) → the clipped per-sample *sum* in ``.grad``.

    ``c_i = min(1, C / (‖∇ℓ_i‖ + 1e-6))`` with the norm over all trainable parameters;
    ``p.grad = Σ_i c_i ∇_p ℓ_i``. DPSGD's optimizer then adds the noise and averages."""

    def __init__(self, module: nn.Module, max_grad_norm: float, *, functorch: bool = False) -> None:
        from opacus import GradSampleModule

        self.gsm = GradSampleModule(module, batch_first=True, loss_reduction="sum", force_functorch=functorch)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.max_grad_norm = max_grad_norm

    def clip_and_sum(self, loss_per_sample: torch.Tensor) -> torch.Tensor:
        loss_per_sample.sum().backward()
        gs: list[torch.Tensor] = []
        sq = torch.zeros(loss_per_sample.shape[0], dtype=loss_per_sample.dtype, device=loss_per_sample.device)
        for p in self.params:
            g = p.grad_sample  # type: ignore[attr-defined]
            if g is None:
                raise RuntimeError("a parameter got no per-sample gradient (unsupported layer?)")
            gs.append(g.flatten(1))
            sq = sq + gs[-1].pow(2).sum(1)
        norms = sq.sqrt()
        coef = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for p, g in zip(self.params, gs, strict=True):
            p.grad = (coef @ g).view_as(p)
            p.grad_sample = None  # type: ignore[attr-defined]
        return norms.detach()

    def remove(self) -> None:
        self.gsm._close()  # removes the hooks and the grad_sample attributes
