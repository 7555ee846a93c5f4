"""Optimizers for pretraining: Muon (momentum orthogonalized by Newton-Schulz, after Keller Jordan's Muon and
nanochat) for the transformer blocks' matrices, AdamW for everything else, in ONE optimizer object, so the trainer's
schedule, gradient clipping and checkpoints (state_dict / load_state_dict) treat it like torch's AdamW.

Learning-rate contract: every param group may hold `lr_scale` (default 1.0). A schedule that sets the learning rate
each step must set `group["lr"] = s(t) * group.get("lr_scale", 1.0)` for every group; the optimizer itself reads
only `group["lr"]`. build_optimizer("muon") gives the Muon group lr_scale = muon_lr / lr, so one schedule drives
the Muon group at ~0.02 and the AdamW groups at the configured lr (~3e-3).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn as nn

# Quintic Newton-Schulz coefficients from Keller Jordan's Muon: chosen to push every singular value in (0, 1] to
# roughly [0.7, 1.2] in 5 steps (fast, not exact: an exact orthogonalization does not train better).
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(grad: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximate the orthogonal polar factor U V^T of a 2-D `grad` (U S V^T its SVD), same shape and dtype.

    Runs in bfloat16 on CUDA (the iteration is stable in it, and fast) and float32 elsewhere. The input is divided by
    its Frobenius norm first, so every singular value starts <= 1; a tall matrix is transposed so the iterated
    product X X^T is the smaller of the two Gram matrices.
    """
    if grad.ndim != 2:
        raise ValueError(f"newton_schulz: expected a 2-D matrix, got shape {tuple(grad.shape)}")
    a, b, c = NS_COEFFS
    x = grad.bfloat16() if grad.is_cuda else grad.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.mT
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.mT
    return x.to(grad.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D matrices, plus AdamW for the param groups flagged `use_muon: False` (nanochat's "MuonAdamW").

    Muon group (the default): momentum buffer m <- momentum*m + (1-momentum)*g; the update is the Nesterov look-ahead
    g + momentum*(m - g) (or m), orthogonalized by `ns_steps` of newton_schulz, scaled by max(1, rows/cols)**0.5 so
    tall matrices get per-element steps comparable to wide ones; then p <- p*(1 - lr*weight_decay) - lr*update.
    AdamW group: torch.optim.AdamW's math (bias-corrected moments, decoupled weight decay) with its `betas`, `eps`.

    Group keys: lr, weight_decay, lr_scale (read by the schedule, see the module docstring), use_muon; Muon: momentum,
    nesterov, ns_steps; AdamW: betas, eps. Gradients are used as they are, so under DDP (gradients already
    all-reduced) every rank computes the same step with no extra communication.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 0.02,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8):
        if lr < 0:
            raise ValueError(f"Muon: lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Muon: momentum must be in [0, 1), got {momentum}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, weight_decay=weight_decay,
                        betas=tuple(betas), eps=eps, use_muon=True, lr_scale=1.0)
        super().__init__(params, defaults)
        for i, group in enumerate(self.param_groups):
            if group["use_muon"]:
                bad = [tuple(p.shape) for p in group["params"] if p.ndim != 2]
                if bad:
                    raise ValueError(f"Muon: param group {i} (use_muon=True) holds non-matrix params of shapes {bad};"
                                     f" put them in a group with use_muon=False (AdamW)")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1.0 - momentum)
            update = grad.lerp(buf, momentum) if group["nesterov"] else buf
            update = newton_schulz(update, group["ns_steps"])
            update = update * max(1.0, p.size(0) / p.size(1)) ** 0.5
            if wd:
                p.mul_(1.0 - lr * wd)
            p.add_(update, alpha=-lr)

    def _adamw_step(self, group: dict[str, Any]) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1.0 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            bias1, bias2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
            denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(eps)
            if wd:
                p.mul_(1.0 - lr * wd)
            p.addcdiv_(exp_avg, denom, value=-lr / bias1)


def muon_param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable params into (Muon matrices, AdamW decayed, AdamW not decayed).

    Muon takes the 2-D weights inside the transformer blocks (names containing `layers.`). The embedding and lm_head
    are lookups/classifiers, not hidden-to-hidden maps, so they stay on AdamW (lm_head decayed, the embedding not,
    as in GPT.configure_optimizer); so do all 1-D params (norm gains), undecayed. A tied lm_head is the embedding.
    """
    matrices, decay, no_decay = [], [], []
    for name, p in model.named_parameters():  # named_parameters yields a tied weight once
        if not p.requires_grad:
            continue
        if p.ndim == 2 and "layers." in name:
            matrices.append(p)
        elif p.ndim >= 2 and "embed_tokens" not in name:
            decay.append(p)
        else:
            no_decay.append(p)
    return matrices, decay, no_decay


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.95), muon_lr: float = 0.02) -> torch.optim.Optimizer:
    """The optimizer for `model` by name, as one object.

    "adamw": exactly model.configure_optimizer(lr, weight_decay, betas) (no lr_scale keys).
    "muon": Muon on the blocks' matrices (starting lr muon_lr, lr_scale = muon_lr / lr, weight_decay) and AdamW on
    the rest (lr, lr_scale 1.0, betas; weight_decay on lm_head only), see muon_param_groups.
    """
    if name == "adamw":
        return model.configure_optimizer(lr, weight_decay, betas)
    if name != "muon":
        raise ValueError(f"build_optimizer: name must be 'adamw' or 'muon', got {name!r}")
    if lr <= 0:
        raise ValueError(f"build_optimizer: lr must be > 0 (the Muon group's lr_scale is muon_lr / lr), got {lr}")
    matrices, decay, no_decay = muon_param_groups(model)
    if not matrices:
        raise ValueError("build_optimizer('muon'): the model has no 2-D params under `layers.` for Muon")
    groups = [{"params": matrices, "use_muon": True, "lr": muon_lr, "lr_scale": muon_lr / lr,
               "weight_decay": weight_decay},
              {"params": decay, "use_muon": False, "lr": lr, "weight_decay": weight_decay},
              {"params": no_decay, "use_muon": False, "lr": lr, "weight_decay": 0.0}]
    return Muon([g for g in groups if g["params"]], lr=lr, betas=betas)
