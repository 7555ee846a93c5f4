"""Metrics: token-weighted mean loss, bits per byte with special tokens left out, multiple-choice log-probs, and an
assistant's answers to eval items checked by their skills."""
import math

import pytest
import torch
import torch.nn.functional as F

from model.checkpoint import save_model
from model.config import GPTConfig
from model.evaluate import bits_per_byte, choice_logprobs, load_assistant, mean_loss, run_items
from model.gpt import GPT
from model.tokenizer import train_bpe

V = 40


def make_model(uniform: bool = False) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, seq_len=24, n_layer=1, n_embd=32, n_head=2, n_kv_head=2, mlp_hidden=96))
    if uniform:  # all logits 0: every token has log-prob -ln V
        with torch.no_grad():
            model.lm_head.weight.zero_()
    return model


def test_mean_loss_weights_batches_by_their_target_tokens():
    model = make_model()
    a, b = torch.randint(0, V, (1, 20)), torch.randint(0, V, (3, 5))
    la, lb = model(a, a)[1].item(), model(b, b)[1].item()
    assert mean_loss(model, [(a, a), (b, b)]) == pytest.approx((20 * la + 15 * lb) / 35, rel=1e-5)


def test_mean_loss_respects_the_mask():
    model = make_model(uniform=True)
    x = torch.randint(0, V, (2, 10))
    mask = torch.zeros(2, 10)
    mask[:, :3] = 1
    assert mean_loss(model, [(x, x, mask)]) == pytest.approx(math.log(V), rel=1e-5)
    with pytest.raises(ValueError, match="no target tokens"):
        mean_loss(model, [(x, x, torch.zeros(2, 10))])


def test_bits_per_byte_of_a_uniform_model_is_log2_vocab_per_counted_byte():
    model = make_model(uniform=True)
    token_bytes = torch.tensor([0] * 4 + [1, 2, 3] * 12)  # ids 0-3 are "specials"
    y = torch.tensor([[0, 4, 5, 6, 1, 7]])  # 4 counted targets: 1 + 2 + 3 + 1 bytes
    expected = 4 * math.log2(V) / 7
    assert bits_per_byte(model, [(y, y)], token_bytes) == pytest.approx(expected, rel=1e-5)


def test_bits_per_byte_matches_a_direct_computation():
    model = make_model()
    token_bytes = torch.randint(0, 4, (V,))
    x, y = torch.randint(0, V, (2, 12)), torch.randint(0, V, (2, 12))
    logits, _ = model(x)
    ce = F.cross_entropy(logits.view(-1, V), y.view(-1), reduction="none")
    b = token_bytes[y.view(-1)]
    expected = (ce[b > 0].sum() / (math.log(2) * b.sum())).item()
    assert bits_per_byte(model, [(x, y)], token_bytes) == pytest.approx(expected, rel=1e-5)


def test_choice_logprobs_sum_the_continuation_tokens_given_bos_and_context():
    tok = train_bpe(["the cat sat on the mat. the dog sat on the log."] * 5, vocab_size=290)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(1, vocab_size=tok.vocab_size, seq_len=32, aspect_ratio=32, head_dim=16))
    scores = choice_logprobs(model, tok, "the cat sat on the", [" mat", " log."])
    prefix = [tok.bos_id] + tok.encode("the cat sat on the")
    for choice, score in zip([" mat", " log."], scores, strict=True):
        cont = tok.encode(choice)
        ids = torch.tensor([prefix + cont])
        logp = torch.log_softmax(model(ids)[0][0], dim=-1)
        direct = sum(logp[len(prefix) - 1 + j, t].item() for j, t in enumerate(cont))
        assert score == pytest.approx(direct, rel=1e-4)


def parrot(vocab_size: int, token: int) -> GPT:
    """A model that answers `token` after any input: one residual dimension is held at a constant (no block writes
    to it), the final norm keeps only that dimension, and only `token`'s lm_head row reads it."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, seq_len=64, n_layer=1, n_embd=32, n_head=2, n_kv_head=2,
                          mlp_hidden=64, tie_embeddings=False))
    with torch.no_grad():
        model.embed_tokens.weight[:, 0] = 10.0
        for block in model.layers:
            block.self_attn.o_proj.weight[0] = 0.0
            block.mlp.down_proj.weight[0] = 0.0
        model.norm.weight.zero_()
        model.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[token, 0] = 1.0
    return model


def test_run_items_answers_greedily_and_scores_each_skill_by_its_check(tmp_path):
    tok = train_bpe(["the cat sat on the mat. the dog sat on the log."] * 5, vocab_size=290)
    (cat,) = tok.encode(" cat")
    save_model(parrot(tok.vocab_size, cat), tmp_path)
    tok.save(tmp_path / "tokenizer.json")
    model, tok = load_assistant(tmp_path, device="cpu")
    assert not model.training
    ask = [{"role": "user", "content": "Where did the cat sit?"}]
    items = [
        {"id": "a", "skill": "crawl_qa", "messages": ask, "reference": "The cat, the cat."},
        {"id": "b", "skill": "crawl_qa", "messages": ask, "reference": "Photosynthesis happens in green leaves."},
        {"id": "c", "skill": "identity", "messages": ask, "reference": "Factory"},
    ]
    results, scores = run_items(model, tok, items, max_new_tokens=4)
    assert [r["response"] for r in results] == [" cat cat cat cat"] * 3
    assert [r["correct"] for r in results] == [True, False, False]
    assert results[0]["reference"] == "The cat, the cat." and results[0]["id"] == "a"  # items come back whole
    assert list(scores.items()) == [("score.crawl_qa", 0.5), ("score.identity", 0.0)]


def test_eval_items_longer_than_the_context_are_answered_as_a_chat_would_be():
    """A prompt leaving too little room is answered on the sliding window (not refused), the others in a batch,
    and every answer is the one Engine.chat gives."""
    from model.config import GPTConfig
    from model.engine import Engine
    from model.evaluate import run_items
    from model.tokenizer import train_bpe

    tok = train_bpe(["What is 2 + 2? It is 4. " * 50], vocab_size=300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, seq_len=32, n_layer=1, n_embd=32, n_head=2, n_kv_head=2,
                          mlp_hidden=64)).eval()
    items = [{"id": str(i), "skill": "arithmetic", "answer": "4", "reference": "4",
              "messages": [{"role": "user", "content": text}]}
             for i, text in enumerate(["What is 2 + 2?", "What is 2 + 2? " * 6])]
    results, _ = run_items(model, tok, items, max_new_tokens=12)
    engine = Engine(model, tok)
    assert [r["response"] for r in results] == [engine.chat(i["messages"], max_new_tokens=12) for i in items]
