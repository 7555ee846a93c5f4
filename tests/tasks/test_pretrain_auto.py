"""`pretrain.steps: auto` with a scaling fit: the law's compute-optimal tokens near the sweep, 20 tokens/param (and
why) far outside it. The fit is the default sweep's on the tiny data: the law puts depth 4's optimum at ~3e10 tokens."""

import pytest

from model.scaling import Law
from tasks.pretrain import fitted_tokens

FIT = {"law": {"E": 1e-12, "A": 2.298e4, "B": 38.61, "alpha": 0.830, "beta": 0.149},
       "runs": [{"flops": 1.04e11}, {"flops": 7.65e12}]}


def test_a_size_near_the_sweep_trains_the_laws_optimum():
    tokens, why = fitted_tokens(FIT, 388_299, "the fit F")
    assert tokens == int(Law(**FIT["law"]).tokens_for(388_299))
    assert tokens / 388_299 == pytest.approx(84.6, rel=0.05)  # the law's parameters here are rounded
    assert why == f"{tokens / 388_299:.1f} tokens per (non-embedding) param from the fit F"


def test_a_size_whose_optimum_is_far_outside_the_sweep_falls_back_and_says_why():
    tokens, why = fitted_tokens(FIT, 1_328_256, "the fit F")
    assert tokens is None
    assert "over 100x its largest run (7.65e+12 FLOPs)" in why and "20 tokens/param" in why
