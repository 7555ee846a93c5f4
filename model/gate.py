"""The deploy gate's decision: does a candidate model fall behind production on some task by more than chance explains?

Both models answer the same eval items, so the comparison is paired per item: what varies between them is only the
items where one is right and the other wrong, and a task's verdict asks whether its drop is real.

How the difference's interval is computed, and why:
- 0/1 correctness (what the evals produce): Tango's score interval for a difference of paired proportions
  (Statistics in Medicine 17, 1998). It is deterministic (no seed, no samples), its coverage stays close to the
  nominal level even when almost no items change, and it handles a tolerance directly: the one-sided test of
  "candidate - production >= -tolerance" is "the upper bound is below -tolerance". At tolerance 0 it is McNemar's
  test. A paired bootstrap would also work, but with few changed items its percentile bound is too narrow (3 items
  flipping against the candidate out of 50 already read as a significant drop at alpha 0.05) and it needs a seed.
- Graded scores (anything other than 0/1): a paired percentile bootstrap of the mean difference, seeded, since no
  closed form fits every score distribution.
Both large-sample bounds still over-reject when only a handful of items differ, so a fail also needs the exact
one-sided sign test on the items that differ (McNemar's exact test for 0/1 data) to reject at alpha: with 3 of 3
changed items against the candidate that test gives p = 0.125, and the task does not fail on that.

Verdicts per task:
- `fail`: the candidate is below its floor (`min_score`), or it has at least `min_items` paired items and its drop is
  significant beyond the tolerance (upper bound of candidate - production < -tolerance, and the exact sign test
  rejects at alpha).
- `too_few_items`: fewer than `min_items` paired items; statistics cannot fail such a task, so it does not block
  the deploy, and the reason says the drop was not tested. Floors still apply (a floor failure is a `fail`).
- `pass`: otherwise, including a first model (no production) that clears its floors.
The interval shown for a task is [lower, upper], each end a one-sided (1 - alpha) bound, so (1 - 2 alpha) in all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

PASS, FAIL, TOO_FEW = "pass", "fail", "too_few_items"


class DeployConfig(BaseModel):
    """The `deploy` stage: which registered model and alias it moves, and the gate that decides whether it may."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = "assistant"
    alias: str = "production"
    tolerance: dict[str, float] = Field(
        default={"default": 0.05},
        description="How much each task's score may drop against production, beyond sampling error; "
        "'default' for the rest.",
    )
    min_score: dict[str, float] = Field(default={}, description="Absolute floors per task; also for a first model.")
    alpha: float = Field(
        0.05, gt=0, lt=0.5, description="A task fails only when its drop is significant at this one-sided level."
    )
    min_items: int = Field(
        20, ge=1, description="Below this many paired items a task cannot fail on statistics ('too few items')."
    )
    bootstrap_samples: int = Field(2000, ge=100, description="Resamples for graded (not 0/1) scores.")
    seed: int = Field(0, description="Seed of those resamples, so the same results give the same decision.")


@dataclass(frozen=True)
class TaskVerdict:
    """One task's comparison. `difference`, `low` and `high` are None without production items to pair with."""

    task: str
    n: int
    candidate: float
    production: float | None
    difference: float | None
    low: float | None
    high: float | None
    tolerance: float
    floor: float | None
    verdict: str
    reason: str

    def line(self) -> str:
        """One line for logs and reports: scores, difference with its interval, tolerance, n, verdict and reason."""
        if self.production is None:
            versus = f"{self.candidate:.3f} (no production)"
        else:
            versus = (
                f"{self.candidate:.3f} vs production {self.production:.3f}, difference {self.difference:+.3f} "
                f"[{self.low:+.3f}, {self.high:+.3f}]"
            )
        return f"{self.task}: {versus}, tolerance {self.tolerance:g}, n {self.n}: {self.verdict} ({self.reason})"


def per_task(results: list[dict], value: str = "correct") -> dict[str, dict[str, float]]:
    """{skill: {item id: score}} from eval results (each skill is one task of the gate). Items without an `id` are
    keyed by their position in the list, which pairs two lists only when both come from the same items file in the
    same order."""
    out: dict[str, dict[str, float]] = {}
    for i, r in enumerate(results):
        key = str(r.get("id", f"#{i}"))
        scores = out.setdefault(r["skill"], {})
        if key in scores:
            raise ValueError(f"item id {key!r} appears twice in skill {r['skill']!r}: pairs would be ambiguous")
        scores[key] = float(r[value])
    return out


def _tango_z(b: int, c: int, n: int, delta: float) -> float:
    """Tango's score statistic for H0: p_b - p_c = delta, where b items are right only for the candidate and c only
    for production, out of n. p_c is replaced by its maximum-likelihood estimate under H0 (a quadratic's root)."""
    B = (b + c) + delta * (b - c) - 2 * n * delta
    q = (B + math.sqrt(max(0.0, B * B + 8 * n * c * delta * (1 - delta)))) / (4 * n)
    var = n * (2 * q + delta - delta * delta)
    num = b - c - n * delta
    if var <= 1e-15:  # only at the edges, where the data either agree exactly with delta or rule it out
        return 0.0 if num == 0 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def _bisect(f, lo: float, hi: float) -> float:
    """The boundary between where f is true (at lo) and false (at hi)."""
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) else (lo, mid)
    return lo


def _score_interval(b: int, c: int, n: int, alpha: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf(1 - alpha)
    diff = (b - c) / n
    high = 1.0 if _tango_z(b, c, n, 1.0) >= -z else _bisect(lambda d: _tango_z(b, c, n, d) >= -z, diff, 1.0)
    low = -1.0 if _tango_z(b, c, n, -1.0) <= z else _bisect(lambda d: _tango_z(b, c, n, d) <= z, diff, -1.0)
    return low, high


def _bootstrap_interval(d: np.ndarray, alpha: float, samples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(samples, len(d)))].mean(axis=1)
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def sign_test_p(worse: int, better: int) -> float:
    """Exact one-sided p-value that the candidate is worse: P(X >= worse) for X ~ Binomial(worse + better, 1/2)."""
    m = worse + better
    return sum(math.comb(m, k) for k in range(worse, m + 1)) / 2**m


def paired_difference(
    candidate: list[float], production: list[float], alpha: float, samples: int = 2000, seed: int = 0
) -> tuple[float, float, float, float]:
    """(mean of candidate - production, lower bound, upper bound, sign-test p that the candidate is worse) over
    paired scores; each bound is one-sided at 1 - alpha."""
    d = np.asarray(candidate, dtype=float) - np.asarray(production, dtype=float)
    if len(d) == 0:
        raise ValueError("no paired items to compare")
    better, worse = int((d > 0).sum()), int((d < 0).sum())
    binary = all(v in (0.0, 1.0) for v in (*candidate, *production))
    if binary:
        low, high = _score_interval(better, worse, len(d), alpha)
    else:
        low, high = _bootstrap_interval(d, alpha, samples, seed)
    return float(d.mean()), low, high, sign_test_p(worse, better)


def judge(
    task: str, candidate: dict[str, float], production: dict[str, float] | None, cfg: DeployConfig
) -> TaskVerdict:
    """One task's verdict from per-item scores keyed by item id (production None: nothing to compare against)."""
    if not candidate:
        raise ValueError(f"task {task!r} has no candidate items")
    tolerance = cfg.tolerance.get(task, cfg.tolerance.get("default", 0.0))
    floor = cfg.min_score.get(task)
    score = sum(candidate.values()) / len(candidate)
    below_floor = f"{score:.3f} below floor {floor:g}" if floor is not None and score < floor else ""
    paired = [k for k in candidate if k in (production or {})]
    row = dict(task=task, candidate=score, tolerance=tolerance, floor=floor)
    if not paired:
        why = "first model, no production to compare" if production is None else "production has no items of it"
        return TaskVerdict(
            **row, n=0, production=None, difference=None, low=None, high=None,
            verdict=FAIL if below_floor else PASS, reason="; ".join(filter(None, [below_floor, why])),
        )  # fmt: skip
    prod = [production[k] for k in paired]
    diff, low, high, p = paired_difference(
        [candidate[k] for k in paired], prod, cfg.alpha, cfg.bootstrap_samples, cfg.seed
    )
    n = len(paired)
    limit = f"{-tolerance:+.3f}" if tolerance else "0"  # "-0" would read as a typo
    if n < cfg.min_items:
        verdict, why = TOO_FEW, f"too few items to tell ({n} < {cfg.min_items}), the difference is not tested"
    elif high < -tolerance and p < cfg.alpha:
        verdict, why = FAIL, f"significant drop: upper bound {high:+.3f} < {limit} (sign test p={p:.2g})"
    elif high < -tolerance:
        verdict, why = PASS, f"upper bound {high:+.3f} < {limit} but too few items differ (sign test p={p:.2g})"
    else:
        verdict, why = PASS, f"no drop beyond the tolerance: upper bound {high:+.3f} >= {limit}"
    if len(paired) < len(candidate):
        why += f"; {len(candidate) - len(paired)} items without a production result left out"
    return TaskVerdict(
        **row, n=n, production=sum(prod) / n, difference=diff, low=low, high=high,
        verdict=FAIL if below_floor else verdict, reason="; ".join(filter(None, [below_floor, why])),
    )  # fmt: skip


def gate(
    candidate: dict[str, dict[str, float]], production: dict[str, dict[str, float]] | None, cfg: DeployConfig
) -> list[TaskVerdict]:
    """A verdict per candidate task, from {task: {item id: score}} of both models (production None for a first
    model). The candidate may deploy when no verdict is `fail` (see `passed`)."""
    return [
        judge(task, candidate[task], None if production is None else production.get(task, {}), cfg)
        for task in sorted(candidate)
    ]


def passed(verdicts: list[TaskVerdict]) -> bool:
    return all(v.verdict != FAIL for v in verdicts)
