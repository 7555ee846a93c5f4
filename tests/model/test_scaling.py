"""Scaling-law fits on sweeps whose true law is known: Chinchilla's approach 3 and the IsoFLOP minima."""

import numpy as np
import pytest

from model.scaling import Law, bootstrap_law, fit_law, isoflop_minima, isoflop_slices, power_law, trusted_tokens

# Hoffmann et al.'s published approach-3 fit
CHINCHILLA = Law(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
N = np.repeat([1e6, 3e6, 1e7, 3e7, 1e8], 4)
D = np.tile([2e7, 6e7, 2e8, 6e8], 5)


def noisy(sigma: float, seed: int = 0) -> np.ndarray:
    return CHINCHILLA.loss(N, D) * np.exp(np.random.default_rng(seed).normal(0, sigma, len(N)))


def test_the_fit_recovers_a_known_law_and_its_compute_optimal_split():
    fit = fit_law(N, D, CHINCHILLA.loss(N, D))
    for key, value in CHINCHILLA.as_dict().items():
        assert getattr(fit, key) == pytest.approx(value, rel=0.01), key
    truth, found = CHINCHILLA.optimal(1e21), fit.optimal(1e21)
    assert found["tokens_per_param"] == pytest.approx(truth["tokens_per_param"], rel=0.01)


def test_the_optimum_spends_the_budget_and_beats_its_neighbours():
    best = CHINCHILLA.optimal(1e20)
    assert 6 * best["params"] * best["tokens"] == pytest.approx(1e20)
    for scale in (0.5, 2.0):  # the same compute, split otherwise
        n = best["params"] * scale
        assert CHINCHILLA.loss(n, 1e20 / 6 / n) > best["loss"]


def test_tokens_for_a_size_is_the_optimum_whose_size_it_is():
    for budget in (1e18, 1e21):
        best = CHINCHILLA.optimal(budget)
        assert CHINCHILLA.tokens_for(best["params"]) == pytest.approx(best["tokens"], rel=1e-9)


def test_tokens_are_trusted_only_within_a_reach_of_the_sweep():
    n = 1e8
    tokens = CHINCHILLA.tokens_for(n)
    cost = 6 * n * tokens
    assert trusted_tokens(CHINCHILLA, n, sweep_flops=cost / 50) == pytest.approx(tokens)
    assert trusted_tokens(CHINCHILLA, n, sweep_flops=cost / 200) is None
    assert trusted_tokens(CHINCHILLA, n, sweep_flops=cost / 200, reach=1000) == pytest.approx(tokens)


def test_a_noisy_sweep_forecasts_a_run_ten_times_larger_within_3_percent():
    fit = fit_law(N, D, noisy(0.005))
    assert fit.loss(1e9, 2e10) == pytest.approx(CHINCHILLA.loss(1e9, 2e10), rel=0.03)


def test_bootstrap_intervals_bracket_the_fit_and_narrow_with_less_noise():
    widths = []
    for sigma in (0.002, 0.02):
        losses = noisy(sigma)
        fit, intervals = fit_law(N, D, losses), bootstrap_law(N, D, losses, samples=30)
        assert intervals["alpha"][0] <= fit.alpha <= intervals["alpha"][1]
        assert intervals["params_exponent"][0] < intervals["params_exponent"][1]
        widths.append(intervals["params_exponent"][1] - intervals["params_exponent"][0])
    assert widths[0] < widths[1]


def test_isoflop_minima_follow_the_laws_optimum():
    budgets = [1e16, 1e17, 1e18]
    n = np.array([CHINCHILLA.optimal(c)["params"] * s for c in budgets for s in (0.25, 0.5, 1, 2, 4)])
    c = np.repeat(budgets, 5)
    d = c / 6 / n
    minima = isoflop_minima(n, d, CHINCHILLA.loss(n, d))
    assert [m["runs"] for m in minima] == [5, 5, 5]
    for m, budget in zip(minima, budgets, strict=True):
        assert m["params"] == pytest.approx(CHINCHILLA.optimal(budget)["params"], rel=0.15)
    _, exponent = power_law([m["flops"] for m in minima], [m["params"] for m in minima])
    assert exponent == pytest.approx(CHINCHILLA.beta / (CHINCHILLA.alpha + CHINCHILLA.beta), abs=0.03)


def test_isoflop_slices_read_off_a_grid_find_the_optimum():
    """A grid of sizes x token budgets (no two runs of equal compute): each size's curve interpolated at shared
    budgets gives IsoFLOP minima near the law's optimum."""
    n = np.repeat(np.geomspace(3e6, 3e8, 7), 9)
    d = np.tile(np.geomspace(3e7, 3e10, 9), 7)
    sliced = isoflop_slices(n, d, CHINCHILLA.loss(n, d), levels=4)
    flops = 6 * sliced[0] * sliced[1]
    assert len(set(np.round(np.log(flops), 6))) == 4  # each level's points share one budget exactly
    minima = isoflop_minima(*sliced)
    assert len(minima) >= 3
    for m in minima:
        assert m["params"] == pytest.approx(CHINCHILLA.optimal(m["flops"])["params"], rel=0.3)
    assert isoflop_slices(n[:9], d[:9], CHINCHILLA.loss(n[:9], d[:9]))[0].size == 0  # one size: no slice


def test_too_few_runs_or_a_non_positive_value_is_refused():
    with pytest.raises(ValueError, match=">= 5 runs"):
        fit_law(N[:4], D[:4], CHINCHILLA.loss(N[:4], D[:4]))
    with pytest.raises(ValueError, match="positive"):
        fit_law(N, D, -CHINCHILLA.loss(N, D))
