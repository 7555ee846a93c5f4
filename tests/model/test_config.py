"""Sizing rules: the one-knob model shape (GPTConfig.from_depth), the Chinchilla token budget, the compute-optimal
batch (batch_tokens) and the steps / gradient accumulation that training_budget derives from them."""
import math

import pytest

from model.config import GPTConfig, batch_tokens, chinchilla_tokens, training_budget

SIZES = [2_000_000, 124_000_000, 1_000_000_000]


@pytest.mark.parametrize("n_params", SIZES)
@pytest.mark.parametrize("seq_len, micro_batch, world", [(1024, 8, 1), (1024, 8, 8), (256, 4, 3), (2048, 1, 2)])
def test_training_budget_covers_the_chinchilla_tokens_within_one_step(n_params, seq_len, micro_batch, world):
    steps, grad_accum = training_budget(n_params, seq_len, micro_batch, world)
    per_step = grad_accum * micro_batch * seq_len * world
    assert steps >= 1 and grad_accum >= 1
    assert chinchilla_tokens(n_params) == 20 * n_params
    assert steps * per_step >= 20 * n_params
    assert steps * per_step - 20 * n_params < per_step  # one step fewer would fall short


def test_training_budget_takes_an_explicit_token_count():
    steps, grad_accum = training_budget(124_000_000, seq_len=1024, micro_batch=8, tokens=10_000_000)
    per_step = grad_accum * 8 * 1024
    assert steps * per_step >= 10_000_000 > (steps - 1) * per_step


def test_batch_tokens_is_a_power_of_two_that_grows_with_model_size():
    sizes = [batch_tokens(n, chinchilla_tokens(n)) for n in SIZES]
    for b in sizes:
        assert b > 0 and b & (b - 1) == 0
    assert sizes[0] < sizes[1] < sizes[2]
    assert sizes == [2**14, 2**18, 2**20]  # ~16K, ~256K, ~1M tokens, as documented


def test_grad_accum_shrinks_as_the_world_grows_and_the_global_batch_stays():
    accums = [training_budget(124_000_000, 1024, 8, world)[1] for world in (1, 2, 4, 8)]
    assert accums == [32, 16, 8, 4]
    global_batches = {a * 8 * 1024 * w for a, w in zip(accums, (1, 2, 4, 8), strict=True)}
    assert global_batches == {batch_tokens(124_000_000, 20 * 124_000_000)}
    assert training_budget(2_000_000, 1024, 8, world=64)[1] == 1  # never below one micro-batch


@pytest.mark.parametrize("depth", [1, 4, 12, 20, 32])
def test_from_depth_widths_follow_depth_times_aspect_ratio(depth):
    c = GPTConfig.from_depth(depth, vocab_size=1000, seq_len=128)
    assert c.n_layer == depth and c.n_embd == depth * 64 and c.head_dim == 64 and c.n_head == depth
    assert c.n_kv_head == c.n_head and c.mlp_hidden % 32 == 0 and 0 <= c.mlp_hidden - 8 * c.n_embd / 3 < 32
    wide = GPTConfig.from_depth(depth, vocab_size=1000, seq_len=128, aspect_ratio=96, head_dim=32)
    assert wide.n_embd == depth * 96 and wide.n_head == depth * 3
    odd = GPTConfig.from_depth(depth, vocab_size=1000, seq_len=128, aspect_ratio=40, head_dim=64)
    assert odd.n_embd == math.ceil(depth * 40 / 64) * 64 and odd.n_embd >= depth * 40  # rounded up to whole heads


def test_a_fixed_grad_accum_keeps_the_token_budget_in_the_steps():
    n_params = 20_000_000
    steps, accum = training_budget(n_params, 1024, 8, grad_accum=1)
    assert accum == 1
    assert steps * 8 * 1024 >= chinchilla_tokens(n_params) > (steps - 1) * 8 * 1024
