"""Scaling laws: what a run will reach before paying for it.

Two fits over a sweep of small runs, each run (N parameters, D training tokens, final val loss L):
- Approach 3 of Hoffmann et al. 2022 (Chinchilla): the parametric law L(N, D) = E + A / N^alpha + B / D^beta,
  fitted as they did: minimise the Huber loss (delta 1e-3) between log L and log of the law, written as
  logsumexp(a - alpha log N, b - beta log D, e) with A = exp(a), B = exp(b), E = exp(e), by L-BFGS from a grid of
  starting points, the best fit kept. Intervals: a bootstrap over runs.
- Approach 2: IsoFLOP minima. For each compute budget C (runs of about equal C = 6 N D), a parabola in log N through
  the losses; its vertex is the loss-optimal N for that C; a power law N_opt = k C^a through the vertices.

The compute-optimal split of a budget C under the parametric law (Hoffmann et al., eq. 4):
    N_opt = G (C / 6)^(beta / (alpha + beta)),  D_opt = (C / 6) / N_opt,  G = (alpha A / (beta B))^(1 / (alpha + beta)),
and its tokens per parameter D_opt / N_opt (Chinchilla: ~20).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

FLOPS_PER_TOKEN_PARAM = 6  # forward and backward: C = 6 N D
HUBER_DELTA = 1e-3
# Hoffmann et al.'s grid of starting points (their appendix D.2) runs a, b over 0..25 by 5, e over -1..1 by 0.5 and
# alpha, beta over 0..2 by 0.5 (1,500 starts); a coarser grid over the same ranges here (108 starts, ~1 s on 2 cores)
START_GRID = {"a": (0.0, 6.0, 12.0), "b": (0.0, 6.0, 12.0), "e": (-1.0, 0.0, 1.0), "alpha": (0.25, 0.75),
              "beta": (0.25, 0.75)}


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    def optimal(self, flops: float) -> dict[str, float]:
        """The compute-optimal N and D for `flops` (C = 6 N D), their ratio and the loss there."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        n = g * (flops / FLOPS_PER_TOKEN_PARAM) ** (self.beta / (self.alpha + self.beta))
        d = flops / FLOPS_PER_TOKEN_PARAM / n
        return {"params": n, "tokens": d, "tokens_per_param": d / n, "loss": float(self.loss(n, d))}

    def tokens_for(self, params: float) -> float:
        """The compute-optimal training tokens for a model of `params`: the D of the budget whose N_opt is `params`."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        return (params / g) ** ((self.alpha + self.beta) / self.beta) / params

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


REACH = 100.0  # how many times its sweep's largest run's compute a fitted law's optimum is trusted to


def trusted_tokens(law: Law, params: float, sweep_flops: float, reach: float = REACH) -> float | None:
    """The compute-optimal tokens for `params` under `law`, or None when that run would cost more than `reach` times
    the largest run the law was fitted on (`sweep_flops`): that far out the optimum is an extrapolation nobody
    checked (a small alpha/beta mismatch on a short sweep puts it at thousands of tokens per parameter)."""
    tokens = law.tokens_for(params)
    return tokens if FLOPS_PER_TOKEN_PARAM * params * tokens <= reach * sweep_flops else None


def law_params(model) -> int:
    """N of the law for a GPT: the parameters that do matmuls, all but an untied input embedding (a table lookup), so
    that C = 6 N D is the training compute."""
    return model.num_params(exclude_embedding=not model.config.tie_embeddings)


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    small = np.abs(r) <= delta
    return np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
               delta: float) -> tuple[float, np.ndarray]:
    """The Huber loss of log L against the law's log, and its gradient in (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    z = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    pred = logsumexp(z, axis=0)
    r = pred - log_l
    slope = np.clip(r, -delta, delta)  # the Huber loss's derivative
    w = np.exp(z - pred) * slope  # softmax weights times it
    grad = np.array([w[0].sum(), w[1].sum(), w[2].sum(), -(w[0] * log_n).sum(), -(w[1] * log_d).sum()])
    return float(_huber(r, delta).sum()), grad


def fit_law(params: np.ndarray, tokens: np.ndarray, losses: np.ndarray, delta: float = HUBER_DELTA,
            starts: list[tuple[float, ...]] | None = None) -> Law:
    """Approach 3: the law with the least Huber loss on log L over L-BFGS runs from each start (a, b, e, alpha,
    beta); by default every point of START_GRID."""
    n, d, l_ = (np.asarray(x, dtype=np.float64) for x in (params, tokens, losses))
    if not (len(n) == len(d) == len(l_)) or len(n) < 5:
        raise ValueError(f"fit_law needs >= 5 runs with N, D and L each, got {len(n)}, {len(d)}, {len(l_)}")
    if (n <= 0).any() or (d <= 0).any() or (l_ <= 0).any():
        raise ValueError("fit_law: N, D and L must be positive")
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(l_)
    best = None
    for start in starts or itertools.product(*START_GRID.values()):
        found = minimize(_objective, np.array(start, dtype=np.float64), args=(log_n, log_d, log_l, delta),
                         jac=True, method="L-BFGS-B",
                         bounds=[(None, None), (None, None), (None, None), (0.0, 3.0), (0.0, 3.0)])
        if best is None or found.fun < best.fun:
            best = found
    a, b, e, alpha, beta = best.x
    return Law(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta))


def _start(law: Law) -> tuple[float, ...]:
    return (math.log(law.A), math.log(law.B), math.log(law.E), law.alpha, law.beta)


def bootstrap_law(params, tokens, losses, samples: int = 200, seed: int = 0, level: float = 0.95,
                  flops: float | None = None) -> dict[str, tuple[float, float]]:
    """Percentile intervals of E, A, B, alpha, beta and beta / (alpha + beta) over refits on runs drawn with
    replacement (a draw with fewer than 5 distinct runs is drawn again); with `flops`, also of the compute-optimal
    tokens per parameter at that budget."""
    n, d, l_ = (np.asarray(x, dtype=np.float64) for x in (params, tokens, losses))
    # each refit starts from the whole sweep's fit and a few grid points, not the whole grid: the same basin, 1/50
    # of the time
    starts = [_start(fit_law(n, d, l_)), (0.0, 0.0, 0.0, 0.5, 0.5), (5.0, 5.0, 0.0, 0.3, 0.3),
              (10.0, 10.0, 0.5, 1.0, 1.0)]
    rng = np.random.default_rng(seed)
    fits: list[Law] = []
    while len(fits) < samples:
        pick = rng.integers(0, len(n), len(n))
        if len(set(pick.tolist())) < 5:
            continue
        fits.append(fit_law(n[pick], d[pick], l_[pick], starts=starts))
    tail = (1 - level) / 2 * 100
    out = {}
    for key in ("E", "A", "B", "alpha", "beta"):
        values = np.array([getattr(f, key) for f in fits])
        out[key] = (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
    derived = {"params_exponent": [f.beta / (f.alpha + f.beta) for f in fits]}
    if flops:
        derived["tokens_per_param"] = [f.optimal(flops)["tokens_per_param"] for f in fits]
    for key, values in derived.items():
        out[key] = (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
    return out


def isoflop_minima(params, tokens, losses, rel_tol: float = 0.1) -> list[dict[str, float]]:
    """Approach 2: runs grouped by compute (C = 6 N D within `rel_tol` of the group's first), and for each group of 3+
    runs the vertex of a parabola in log N through their losses: {"flops", "params", "loss", "runs"}. A group whose
    parabola has no minimum between its smallest and largest N is left out (a vertex outside is an extrapolation)."""
    n, d, l_ = (np.asarray(x, dtype=np.float64) for x in (params, tokens, losses))
    flops = FLOPS_PER_TOKEN_PARAM * n * d
    order = np.argsort(flops)
    groups: list[list[int]] = []
    for i in order:
        if groups and abs(flops[i] / flops[groups[-1][0]] - 1) <= rel_tol:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    out = []
    for group in groups:
        if len(group) < 3:
            continue
        x, y = np.log(n[group]), l_[group]
        c2, c1, c0 = np.polyfit(x, y, 2)
        vertex = -c1 / (2 * c2) if c2 > 0 else math.inf
        if not x.min() < vertex < x.max():  # no minimum among the sizes tried: loss still falls (or rises) with N
            continue
        out.append({"flops": float(np.mean(flops[group])), "params": float(math.exp(vertex)),
                    "loss": float(c0 + c1 * vertex + c2 * vertex * vertex), "runs": len(group)})
    return out


def isoflop_slices(params, tokens, losses, levels: int = 4, min_sizes: int = 3):
    """IsoFLOP slices read off a grid of sizes x token budgets (approach 1's envelope, used for approach 2): each
    size's loss interpolated linearly in log C between its runs, at `levels` budgets log-spaced over the compute
    range that `min_sizes`+ sizes span. Returns (params, tokens, losses) of the interpolated points, C = 6 N D exact
    within each level, for isoflop_minima."""
    n, d, l_ = (np.asarray(x, dtype=np.float64) for x in (params, tokens, losses))
    log_c = np.log(FLOPS_PER_TOKEN_PARAM * n * d)
    sizes = sorted(set(n.tolist()))
    spans = {s: (log_c[n == s].min(), log_c[n == s].max()) for s in sizes}
    candidates = np.linspace(log_c.min(), log_c.max(), 8 * levels)
    covered = [c for c in candidates if sum(lo <= c <= hi for lo, hi in spans.values()) >= min_sizes]
    if not covered:
        return np.empty(0), np.empty(0), np.empty(0)
    out: list[tuple[float, float, float]] = []
    picks = np.unique(np.round(np.linspace(0, len(covered) - 1, levels)).astype(int))
    for c in (covered[i] for i in picks):  # levels among the covered budgets, so each has min_sizes+ sizes
        for s in sizes:
            lo, hi = spans[s]
            if lo <= c <= hi and lo < hi:
                order = np.argsort(log_c[n == s])
                loss = float(np.interp(c, log_c[n == s][order], l_[n == s][order]))
                out.append((s, math.exp(c) / FLOPS_PER_TOKEN_PARAM / s, loss))
    return tuple(np.array(col) for col in zip(*out, strict=True))


def power_law(xs, ys) -> tuple[float, float]:
    """(k, a) of y = k x^a, least squares in log-log."""
    a, log_k = np.polyfit(np.log(np.asarray(xs, dtype=np.float64)), np.log(np.asarray(ys, dtype=np.float64)), 1)
    return float(math.exp(log_k)), float(a)
