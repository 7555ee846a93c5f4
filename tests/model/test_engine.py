"""Sampling: the KV cache gives exactly what recomputing the whole context gives; stops, seeds and chat text."""
import pytest
import torch

from model.config import GPTConfig
from model.engine import Engine, generate
from model.gpt import GPT
from model.tokenizer import train_bpe


def make_model(seq_len: int = 16, vocab: int = 64, kv: int = 2) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=vocab, seq_len=seq_len, n_layer=2, n_embd=64, n_head=4, n_kv_head=kv, mlp_hidden=160)
    model = GPT(cfg)
    with torch.no_grad():  # sharpen the random model so greedy choices are far from ties
        model.lm_head.weight.mul_(20)
    return model.eval()


@torch.no_grad()
def naive_greedy(model: GPT, ids: list[int], n: int) -> list[int]:
    ids = list(ids)
    out = []
    for _ in range(n):
        logits, _ = model(torch.tensor([ids[-model.config.seq_len:]]))
        out.append(int(logits[0, -1].argmax()))
        ids.append(out[-1])
    return out


def test_kv_cache_generation_equals_naive_recomputation_token_for_token():
    model = make_model(seq_len=16)
    prompt = [1, 5, 9, 13, 2]
    # 30 new tokens run past seq_len=16, so the cropped-window path is covered too
    assert generate(model, prompt, 30) == naive_greedy(model, prompt, 30)


def test_cached_logits_match_full_forward_for_chunked_prefill():
    model = make_model(seq_len=32)
    ids = torch.randint(0, 64, (1, 20))
    full, _ = model(ids)
    cache = model.new_kv_cache()
    parts = [model(ids[:, a:b], kv_cache=cache)[0] for a, b in [(0, 7), (7, 8), (8, 20)]]
    assert cache.pos == 20
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-4)


def test_generation_stops_before_a_stop_token():
    model = make_model()
    prompt = [3, 4, 5]
    free = generate(model, prompt, 8)
    stop = free[3]
    cut = generate(model, prompt, 8, stop_ids=[stop])
    assert cut == free[: free.index(stop)]


def test_sampling_is_reproducible_with_a_seed_and_top_k_one_is_greedy():
    model = make_model()
    prompt = [7, 8]
    a = generate(model, prompt, 12, temperature=1.5, seed=123)
    assert a == generate(model, prompt, 12, temperature=1.5, seed=123)
    assert len(a) == 12 and all(0 <= t < 64 for t in a)
    assert generate(model, prompt, 12, temperature=1.0, top_k=1, seed=5) == generate(model, prompt, 12)


def test_generate_leaves_the_model_in_its_training_mode():
    model = make_model().train()
    generate(model, [1], 3)
    assert model.training


def test_engine_chat_returns_text_and_stream_chat_yields_the_same_text():
    tok = train_bpe(["hello there, how are you? I am fine, thank you."] * 10, vocab_size=300)
    torch.manual_seed(0)
    cfg = GPTConfig.from_depth(1, vocab_size=tok.vocab_size, seq_len=64, aspect_ratio=32, head_dim=16)
    engine = Engine(GPT(cfg), tok)
    messages = [{"role": "user", "content": "hello there"}]
    reply = engine.chat(messages, max_new_tokens=10, temperature=1.0, seed=0)
    assert isinstance(reply, str)
    assert "".join(engine.stream_chat(messages, max_new_tokens=10, temperature=1.0, seed=0)) == reply
    assert isinstance(engine.complete("how are", max_new_tokens=5), str)
    with pytest.raises(ValueError, match="last message must be from the user"):
        engine.chat([{"role": "assistant", "content": "hi"}])


def test_after_memorizing_a_conversation_chat_answers_and_stops_at_assistant_end(tmp_path):
    from model.chat import render_conversation
    from model.trainer import TrainConfig, train

    convo = [{"role": "user", "content": "What is the capital of France?"},
             {"role": "assistant", "content": "The capital of France is Paris."}]
    tok = train_bpe(["What is the capital of France? The capital of France is Paris."] * 5, vocab_size=300)
    ids, mask = render_conversation(tok, convo, max_len=64)
    x, y, m = (torch.tensor([t]) for t in (ids[:-1], ids[1:], mask[1:]))
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, vocab_size=tok.vocab_size, seq_len=64, aspect_ratio=32, head_dim=16))
    cfg = TrainConfig(steps=40, batch_size=1, lr=1e-2, warmup_steps=3, eval_every=0, ckpt_every=0, log_every=40)
    train(model, cfg, lambda i: (x, y, m), None, tmp_path)
    assert Engine(model, tok).chat(convo[:1], max_new_tokens=30) == "The capital of France is Paris."


def random_prompts(n: int, vocab: int = 64, seed: int = 0) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[1] + [rng.randrange(vocab) for _ in range(rng.randint(1, 12))] for _ in range(n)]


def test_batched_greedy_answers_equal_single_generation_whatever_the_company():
    from model.engine import BatchGenerator, GenRequest

    model = make_model(seq_len=48)
    prompts = random_prompts(32)
    alone = [generate(model, p, 20) for p in prompts]
    engine = BatchGenerator(model, max_batch=32)
    together = engine.run([GenRequest(p, 20) for p in prompts])
    assert [r.tokens for r in together] == alone
    # requests of different lengths leave and join mid-batch: a small batch keeps recycling slots
    small = BatchGenerator(model, max_batch=5)
    mixed = small.run([GenRequest(p, 5 + i % 15) for i, p in enumerate(prompts)])
    assert all(r.tokens == alone[i][: len(r.tokens)] for i, r in enumerate(mixed))
    assert all(r.finish_reason == "length" and len(r.tokens) == 5 + i % 15 for i, r in enumerate(mixed))


def test_batched_sampling_with_a_seed_is_the_same_alone_or_batched():
    from model.engine import BatchGenerator, GenRequest

    model = make_model(seq_len=48)
    prompts = random_prompts(8, seed=1)
    engine = BatchGenerator(model, max_batch=8)

    def req(i, p):
        return GenRequest(p, 15, temperature=1.2, top_p=0.9, top_k=20, seed=i)

    alone = [engine.run([req(i, p)])[0].tokens for i, p in enumerate(prompts)]
    assert [r.tokens for r in engine.run([req(i, p) for i, p in enumerate(prompts)])] == alone
    assert len({tuple(t) for t in alone}) > 1


def test_batched_requests_stop_at_stop_tokens_at_the_context_end_and_when_cancelled():
    from model.engine import BatchGenerator, GenRequest

    model = make_model(seq_len=16)
    free = generate(model, [1, 2, 3], 8)
    engine = BatchGenerator(model, max_batch=4)
    stop = GenRequest([1, 2, 3], 8, stop_ids=frozenset({free[2]}))
    full = GenRequest([1, 2, 3], 100)
    seen = []

    def cancel_after_two(req, token):
        seen.append(token)
        if len(seen) == 2:
            req.finish("cancelled")

    cancelled = GenRequest([1, 2, 3], 100, on_token=cancel_after_two)
    engine.run([stop, full, cancelled])
    assert stop.finish_reason == "stop" and stop.tokens == free[: free.index(free[2])]
    assert full.finish_reason == "length" and len(full.tokens) == 16 - 3  # the context is full
    assert cancelled.finish_reason == "cancelled" and cancelled.tokens == seen == free[:2]
    assert engine.idle() and not engine.running


def test_a_vanishing_temperature_is_greedy_instead_of_failing_the_batch():
    from model.engine import BatchGenerator, GenRequest

    model = make_model(seq_len=32)
    engine = BatchGenerator(model, max_batch=2)
    tiny, plain = engine.run([GenRequest([1, 2, 3], 6, temperature=1e-300, seed=1), GenRequest([1, 2, 3], 6)])
    assert tiny.finish_reason == plain.finish_reason == "length" and tiny.tokens == plain.tokens
