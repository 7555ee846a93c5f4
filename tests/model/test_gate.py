"""The deploy gate's decision: paired per-item comparison, 'too few items', floors, first models."""

import math
from statistics import NormalDist

import pytest

from model.gate import FAIL, PASS, TOO_FEW, DeployConfig, gate, paired_difference, passed, per_task


def _items(values: list[float]) -> dict[str, float]:
    return {f"item-{i}": float(v) for i, v in enumerate(values)}


def _flipped(n: int, flips: int) -> tuple[dict[str, float], dict[str, float]]:
    """Production right on all n items; the candidate wrong on the first `flips` of them."""
    return _items([0] * flips + [1] * (n - flips)), _items([1] * n)


def test_one_flipped_item_of_fifty_is_noise_even_at_tolerance_zero():
    candidate, production = _flipped(50, 1)
    [v] = gate({"arithmetic": candidate}, {"arithmetic": production}, DeployConfig(tolerance={"default": 0.0}))
    assert v.verdict == PASS and passed([v])
    assert (v.n, v.candidate, v.production) == (50, 0.98, 1.0)
    assert v.difference == pytest.approx(-0.02)
    assert v.low < -0.02 and v.high > 0  # the interval holds both "a bit worse" and "no worse"
    assert "no drop beyond the tolerance" in v.reason


def test_twenty_of_fifty_flipped_is_a_real_drop():
    candidate, production = _flipped(50, 20)
    [v] = gate({"arithmetic": candidate}, {"arithmetic": production}, DeployConfig(tolerance={"default": 0.05}))
    assert v.verdict == FAIL and not passed([v])
    assert v.difference == pytest.approx(-0.4) and v.low < -0.4 < v.high < -0.05
    assert "significant drop" in v.reason
    # the same drop is allowed for a task whose tolerance covers it
    [v] = gate({"arithmetic": candidate}, {"arithmetic": production}, DeployConfig(tolerance={"arithmetic": 0.5}))
    assert v.verdict == PASS and v.tolerance == 0.5


def test_five_items_all_flipped_are_too_few_to_tell():
    candidate, production = _flipped(5, 5)
    [v] = gate({"identity": candidate}, {"identity": production}, DeployConfig(min_items=20))
    assert v.verdict == TOO_FEW and passed([v])
    assert v.n == 5 and v.difference == -1.0 and "too few items to tell (5 < 20)" in v.reason
    # it is min_items that holds the statistics back: the same five items fail once five are enough
    [v] = gate({"identity": candidate}, {"identity": production}, DeployConfig(min_items=5))
    assert v.verdict == FAIL


def test_floors_apply_to_a_task_with_too_few_items():
    candidate, production = _flipped(5, 5)
    [v] = gate({"identity": candidate}, {"identity": production}, DeployConfig(min_score={"identity": 0.5}))
    assert v.verdict == FAIL and "below floor 0.5" in v.reason and "too few items" in v.reason


def test_a_handful_of_changed_items_is_not_a_drop_even_when_the_bound_says_so():
    # 3 of 50 against the candidate: the large-sample bound is just below 0, the exact test gives p = 1/8
    candidate, production = _flipped(50, 3)
    [v] = gate({"spelling": candidate}, {"spelling": production}, DeployConfig(tolerance={"default": 0.0}))
    assert v.high < 0 and v.verdict == PASS and "p=0.12" in v.reason
    candidate, production = _flipped(50, 6)  # 6 of 6 against it: p = 1/64
    [v] = gate({"spelling": candidate}, {"spelling": production}, DeployConfig(tolerance={"default": 0.0}))
    assert v.verdict == FAIL


def test_first_model_failing_a_floor():
    verdicts = gate(
        {"identity": _items([1] * 10 + [0] * 10), "arithmetic": _items([1] * 20)},
        None,
        DeployConfig(min_score={"identity": 0.8}),
    )
    by_task = {v.task: v for v in verdicts}
    assert not passed(verdicts)
    assert by_task["identity"].verdict == FAIL and "0.500 below floor 0.8" in by_task["identity"].reason
    assert by_task["arithmetic"].verdict == PASS and by_task["arithmetic"].production is None


def test_first_model_passing_its_floors():
    verdicts = gate({"identity": _items([1] * 18 + [0] * 2)}, None, DeployConfig(min_score={"identity": 0.8}))
    assert passed(verdicts) and verdicts[0].verdict == PASS and "first model" in verdicts[0].reason
    assert verdicts[0].difference is None and "no production" in verdicts[0].line()


def test_tolerance_zero_is_mcnemars_test():
    """At tolerance 0 the bound's decision is McNemar's: upper bound < 0 exactly when (c - b) / sqrt(b + c) > z."""
    z = NormalDist().inv_cdf(0.95)
    for better, worse in [(0, 3), (0, 2), (2, 7), (3, 7), (10, 22), (10, 19), (5, 5)]:
        n = 60
        cand = [1] * better + [0] * worse + [1] * (n - better - worse)
        prod = [0] * better + [1] * worse + [1] * (n - better - worse)
        _, _, high, _ = paired_difference(cand, prod, 0.05)
        assert (high < 0) == ((worse - better) / math.sqrt(better + worse) > z), (better, worse)


def test_items_pair_by_id_not_by_position():
    candidate, production = _flipped(30, 10)
    shuffled = dict(reversed(list(production.items())))
    shuffled["item-only-production-has"] = 0.0
    a = gate({"t": candidate}, {"t": production}, DeployConfig())[0]
    b = gate({"t": candidate}, {"t": shuffled}, DeployConfig())[0]
    assert a.n == b.n == 30 and a.verdict == b.verdict == FAIL
    assert (a.difference, a.low, a.high) == (b.difference, b.low, b.high)


def test_production_results_missing_for_some_items_are_left_out_and_said():
    candidate, production = _flipped(30, 0)
    del production["item-0"]
    [v] = gate({"t": candidate}, {"t": production}, DeployConfig())
    assert v.n == 29 and "1 items without a production result" in v.reason


def test_per_task_keys_by_id_or_position():
    results = [
        {"id": "a", "skill": "x", "correct": True},
        {"id": "b", "skill": "y", "correct": False},
        {"skill": "y", "correct": True},
    ]
    assert per_task(results) == {"x": {"a": 1.0}, "y": {"b": 0.0, "#2": 1.0}}
    with pytest.raises(ValueError, match="appears twice"):
        per_task([{"id": "a", "skill": "x", "correct": 1}, {"id": "a", "skill": "x", "correct": 0}])


def test_graded_scores_use_a_seeded_bootstrap():
    production = _items([0.8, 0.6, 0.9, 0.7] * 10)
    same = dict(production)
    worse = {k: v - 0.3 for k, v in production.items()}
    cfg = DeployConfig(tolerance={"default": 0.05}, bootstrap_samples=500, seed=3)
    [v] = gate({"qa": same}, {"qa": production}, cfg)
    assert v.verdict == PASS and v.low == v.high == 0.0
    [v1] = gate({"qa": worse}, {"qa": production}, cfg)
    [v2] = gate({"qa": worse}, {"qa": production}, cfg)
    assert v1.verdict == FAIL and v1.high == pytest.approx(-0.3) and (v1.low, v1.high) == (v2.low, v2.high)


def test_line_shows_difference_interval_tolerance_n_and_verdict():
    candidate, production = _flipped(50, 20)
    [v] = gate({"arithmetic": candidate}, {"arithmetic": production}, DeployConfig())
    line = v.line()
    assert line.startswith("arithmetic: 0.600 vs production 1.000, difference -0.400 [")
    assert f"{v.high:+.3f}]" in line and "tolerance 0.05, n 50: fail (significant drop" in line


def test_config_rejects_unknown_fields_and_bad_alpha():
    with pytest.raises(ValueError):
        DeployConfig(tolerence={"default": 0.1})
    with pytest.raises(ValueError):
        DeployConfig(alpha=0.7)
