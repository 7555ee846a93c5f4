"""RL on sampled answers: group advantages, the k3 KL, the GRPO loss's direction, the rewards of RL answers, pass@k,
the degeneration detector and the guard (also on a crafted reward-hacking run), and resuming after a crash."""
import math
import random

import pytest
import torch

from data.chat.skills import build_skill
from model.config import GPTConfig
from model.gpt import GPT
from model.posttrain import _checkpoints
from model.rl import (
    Guard,
    RLConfig,
    Rollout,
    answer_logprobs,
    degeneration,
    evaluate_passes,
    format_reward,
    group_advantages,
    grpo_loss,
    kl_penalty,
    pass_at_k,
    repetition,
    sample_groups,
    select_problems,
    train_grpo,
    train_rejection,
    verifiable_rewards,
)
from model.tokenizer import train_bpe
from tests.models import TEXT

PROMPTS = [{"skill": "arithmetic", "reference": 42, "messages": [{"role": "user", "content": f"What is {a} + 30?"}]}
           for a in (12, 3, 7, 9)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return train_bpe([TEXT], vocab_size=400)


def micro_policy(tok, the_logit: float = 0.0, end_logit: float = 0.0, seed: int = 0) -> GPT:
    """One layer, 32 wide. the_logit > 0 biases it towards ' the' (end_logit: towards ending the answer): hidden
    dimension 0 is held large by the embeddings, and only those rows of the unembedding read it."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, seq_len=64, n_layer=1, n_embd=32, n_head=2, n_kv_head=1,
                          mlp_hidden=64))
    with torch.no_grad():
        model.embed_tokens.weight[:, 0] = 4.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[tok.encode(" the")[0], 0] = the_logit
        model.lm_head.weight[tok.special_id("<|assistant_end|>"), 0] = end_logit
    return model


def rollout(tok, answer: str, reward: float = 0.0, end: bool = True) -> Rollout:
    ids = tok.encode(answer) + ([tok.special_id("<|assistant_end|>")] if end else [])
    prompt = [tok.bos_id, *tok.encode("What is 12 + 30?")]
    return Rollout(PROMPTS[0], prompt, ids, answer, "stop" if end else "length", reward)


# ------------------------------------------------------------------------------------------ advantages and KL


def test_group_advantages_normalise_each_group_by_its_population_std():
    adv = group_advantages(torch.tensor([[1.0, 0, 0, 1], [2.0, 2, 2, 2], [1.0, 0, 0, 0]]))
    assert adv[0].tolist() == pytest.approx([1, -1, -1, 1], abs=1e-5)
    assert adv[1].tolist() == [0, 0, 0, 0]  # all equal: no signal, exactly
    # mean 0.25, population std sqrt(0.25 * 0.75) = 0.4330
    assert adv[2].tolist() == pytest.approx([0.75 / 0.4330127, -0.25 / 0.4330127, -0.25 / 0.4330127,
                                             -0.25 / 0.4330127], abs=1e-4)


def test_the_k3_kl_penalty_matches_hand_computed_values_and_is_never_negative():
    half, quarter = math.log(0.5), math.log(0.25)
    kl = kl_penalty(torch.tensor([half, quarter, half]), torch.tensor([quarter, half, half]))
    # ref - logp = ln 1/2: 0.5 + 0.6931 - 1; ln 2: 2 - 0.6931 - 1; equal: 0
    assert kl.tolist() == pytest.approx([0.193147, 0.306853, 0.0], abs=1e-5)
    g = torch.Generator().manual_seed(0)
    assert (kl_penalty(torch.randn(1000, generator=g), torch.randn(1000, generator=g)) >= 0).all()


# ------------------------------------------------------------------------------------------ the GRPO loss


def test_a_grpo_step_raises_the_positive_advantage_answer_and_lowers_the_other(tok):
    policy = micro_policy(tok)
    good, bad = rollout(tok, "12 + 30 = 42.\nAnswer: 42", 1.0), rollout(tok, "the the the", 0.0)
    groups = [[good, bad]]
    adv = group_advantages(torch.tensor([[1.0, 0.0]]))
    before, _ = answer_logprobs(policy, [good, bad], tok.pad_id)
    loss, metrics = grpo_loss(policy, None, groups, adv, kl_coef=0.0, pad_id=tok.pad_id)
    loss.backward()
    with torch.no_grad():
        for p in policy.parameters():
            p -= 0.05 * p.grad
        after, mask = answer_logprobs(policy, [good, bad], tok.pad_id)
        new_loss, _ = grpo_loss(policy, None, groups, adv, kl_coef=0.0, pad_id=tok.pad_id)
    gain = ((after - before) * mask).sum(1) / mask.sum(1)
    assert gain[0] > 0 > gain[1]
    assert new_loss < loss
    assert metrics["reward_mean"] == 0.5 and metrics["reward_std"] == 0.5 and metrics["zero_adv_groups"] == 0.0
    assert metrics["answer_tokens"] == (len(good.answer_ids) + len(bad.answer_ids)) / 2


def test_the_kl_term_is_zero_against_itself_and_grows_as_the_policy_moves(tok):
    policy, reference = micro_policy(tok), micro_policy(tok)
    groups = [[rollout(tok, "42"), rollout(tok, "41")]]
    zero = torch.zeros(1, 2)
    loss, metrics = grpo_loss(policy, reference, groups, zero, kl_coef=0.1, pad_id=tok.pad_id)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6) and float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    assert metrics["zero_adv_groups"] == 1.0
    with torch.no_grad():
        policy.lm_head.weight.add_(0.3 * torch.randn_like(policy.lm_head.weight))
    loss, metrics = grpo_loss(policy, reference, groups, zero, kl_coef=0.1, pad_id=tok.pad_id)
    assert metrics["kl"] > 0.01 and float(loss.detach()) == pytest.approx(0.1 * metrics["kl"], rel=1e-5)


# ------------------------------------------------------------------------------------------ rewards


def test_rl_answers_earn_the_skills_reward_only_when_correct_and_the_format_bonus_when_asked():
    rng = random.Random(0)
    for name in ("letter_count", "arithmetic"):
        ex = build_skill(name).example(rng)
        item, wrong = ex.as_item(), build_skill(name).wrong_answer(ex, rng)[0]
        texts = [ex.answer, wrong, "I am not sure.", ""]
        assert verifiable_rewards([item] * 4, texts) == [1.0, 0.0, 0.0, 0.0]
        assert verifiable_rewards([item] * 4, texts, format_weight=0.1) == pytest.approx([1.1, 0.1, 0.0, 0.0])
    assert format_reward("3 + 4 = 7.\nAnswer: 7") == 1.0
    assert format_reward("Answer: -3 ") == 1.0
    assert format_reward("The answer is 7") == 0.0
    assert format_reward("Answer: 7 and then some") == 0.0


def test_sampled_answers_keep_their_stop_token_and_sample_the_same_batched_or_alone(tok):
    policy = micro_policy(tok)
    end = tok.special_id("<|assistant_end|>")
    groups = sample_groups(policy, tok, PROMPTS, k=3, max_new_tokens=10, temperature=1.0, seed=5)
    alone = sample_groups(policy, tok, PROMPTS[2:3], k=3, max_new_tokens=10, temperature=1.0, seed=5)
    assert [len(g) for g in groups] == [3, 3, 3, 3]
    flat = [r for g in groups for r in g]
    assert {r.finish_reason for r in flat} <= {"stop", "length"}
    for r in flat:
        assert (r.answer_ids[-1:] == [end]) == (r.finish_reason == "stop" and tok.bos_id not in r.answer_ids)
        assert r.text == tok.decode([t for t in r.answer_ids if t not in (end, tok.bos_id)], skip_special_tokens=True)
    assert len({tuple(r.answer_ids) for r in flat}) > 3  # sampled, not all the same
    # item index 0 of the lone call has other seeds than item 2 of the batch; same index, same samples
    again = sample_groups(policy, tok, [PROMPTS[0], PROMPTS[1], PROMPTS[2]], k=3, max_new_tokens=10, temperature=1.0,
                          seed=5)
    assert [r.answer_ids for r in again[2]] == [r.answer_ids for r in groups[2]]
    assert [r.answer_ids for r in alone[0]] == [r.answer_ids for r in groups[0]]


# ------------------------------------------------------------------------------------------ pass@k, degeneration


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(3, 2, 2) == 1.0 and pass_at_k(8, 1, 8) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_degeneration_scores_the_the_the_high_and_a_normal_answer_low():
    assert repetition("the the the the") == 1.0
    assert repetition("Spelled out: b-a-n-a-n-a. The letter 'a' appears 3 times.\nAnswer: 3") == 0.0
    assert repetition("I like it. I like it. I like it.") > 0.5  # repeated 3-grams without repeated neighbours
    d = degeneration(["the the the the", "12 + 30 = 42. Answer: 42"], reference_lengths=[3, 5])
    assert d["repetition"] == pytest.approx(0.5)
    assert d["mean_length"] == (4 + 7) / 2 and d["length_ratio"] == pytest.approx(5.5 / 4)
    assert "length_ratio" not in degeneration(["a b"])


# ------------------------------------------------------------------------------------------ the guard


def test_the_guard_stops_a_reward_that_climbs_while_preference_accuracy_falls():
    guard = Guard(max_pref_drop=0.05)
    start = (0, {"reward": 0.1, "pref_accuracy": 0.80, "repetition": 0.0})
    assert guard([start]) is None
    assert guard([start, (10, {"reward": 0.5, "pref_accuracy": 0.82})]) is None  # both rise
    assert guard([start, (10, {"reward": 0.5, "pref_accuracy": 0.77})]) is None  # within tolerance
    reason = guard([start, (10, {"reward": 0.5, "pref_accuracy": 0.70})])
    assert reason and "pref_accuracy" in reason and "0.800 -> 0.700" in reason
    assert guard([start, (10, {"reward": 0.05, "pref_accuracy": 0.70})]) is None  # reward fell too: not gaming
    tasks = Guard(reward_key="reward", watch=("task_score",), max_task_drop=0.1)
    assert "task_score" in tasks([(0, {"reward": 0, "task_score": 0.5}), (5, {"reward": 1, "task_score": 0.3})])


def test_the_guard_stops_degenerate_answers_whatever_the_reward():
    guard = Guard(max_repetition=0.5, max_length_ratio=3.0)
    start = (0, {"reward": 0.5, "repetition": 0.0, "length_ratio": 1.0})
    assert "repeat" in guard([start, (5, {"reward": 0.1, "repetition": 0.8, "length_ratio": 1.0})])
    assert "length" in guard([start, (5, {"reward": 0.1, "repetition": 0.1, "length_ratio": 4.0})])
    assert guard([start, (5, {"reward": 0.9, "repetition": 0.1, "length_ratio": 1.2})]) is None


def the_share(items, texts):
    """A gameable reward: pays for saying 'the', so the policy learns 'the the the the'."""
    return [sum(w == "the" for w in t.split()) / max(1, len(t.split())) for t in texts]


def grpo_cfg(**kw) -> RLConfig:
    base = dict(steps=6, lr=3e-3, warmup_steps=0, k=4, prompts_per_step=2, max_new_tokens=10, kl_coef=0.05,
                eval_every=2, ckpt_every=2, log_every=1, device="cpu")
    return RLConfig(**{**base, **kw})


def test_the_guard_stops_a_reward_hacking_run_and_keeps_the_last_accepted_weights(tok, tmp_path):
    # answers that end (only a finished answer earns a reward) and lean towards ' the'
    policy, reference = micro_policy(tok, the_logit=0.7, end_logit=0.5), micro_policy(tok, the_logit=0.7, end_logit=0.5)

    def evaluate():
        groups = sample_groups(policy, tok, PROMPTS, 4, 10, 1.0, seed=99)
        texts = [r.text for g in groups for r in g]
        return {"reward": sum(the_share(None, texts)) / len(texts), **degeneration(texts)}

    cfg = grpo_cfg(steps=20, eval_every=4, ckpt_every=4, lr=2e-2, kl_coef=0.0, min_lr_ratio=1.0)
    result = train_grpo(policy, reference, tok, PROMPTS, the_share, cfg, tmp_path, evaluate, Guard(), None)
    assert result["stopped"] and "repeat" in result["stopped"]
    evals = dict(result["evals"])
    good = result["rolled_back_to"]
    last = max(evals)
    assert result["steps"] == last < cfg.steps and good == max(s for s in evals if s < last)
    assert evals[good]["repetition"] <= 0.5 < evals[last]["repetition"]
    assert evals[last]["reward"] > evals[0]["reward"]  # it was gaming the reward
    saved = torch.load(tmp_path / f"step_{good:06d}.pt", weights_only=False)["model"]
    assert all(torch.equal(saved[k], v) for k, v in policy.state_dict().items())
    stopped = torch.load(_checkpoints(tmp_path)[-1][1], weights_only=False)
    assert stopped["loop"]["stopped"] and all(torch.equal(stopped["model"][k], v)
                                              for k, v in policy.state_dict().items())


# ------------------------------------------------------------------------------------------ resume, select, modes


class Crash(RuntimeError):
    pass


def test_a_grpo_run_resumed_after_a_crash_ends_with_the_same_weights(tok, tmp_path):
    cfg = grpo_cfg()
    whole = micro_policy(tok, 1.0)
    train_grpo(whole, micro_policy(tok, 1.0), tok, PROMPTS, the_share, cfg, tmp_path / "a")

    calls = 0

    def crashing(items, texts):
        nonlocal calls
        calls += 1
        if calls == 4:  # step 4 (checkpoint at step 2)
            raise Crash
        return the_share(items, texts)

    with pytest.raises(Crash):
        train_grpo(micro_policy(tok, 1.0), micro_policy(tok, 1.0), tok, PROMPTS, crashing, cfg, tmp_path / "b")
    resumed = micro_policy(tok, 1.0)
    result = train_grpo(resumed, micro_policy(tok, 1.0), tok, PROMPTS, the_share, cfg, tmp_path / "b")
    assert result["resumed_from_step"] == 2 and result["steps"] == cfg.steps
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(),
                                                  strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(),
                                                      micro_policy(tok, 1.0).state_dict().values(), strict=True))


def test_rejection_sampling_finetunes_on_the_best_answer_and_resumes_the_same(tok, tmp_path):
    cfg = grpo_cfg(mode="rejection", rounds=2, sft_steps=3, sft_batch_size=2, sft_lr=3e-3, ckpt_every=2, eval_every=0)
    whole = micro_policy(tok, 0.7, 0.7)
    res = train_rejection(whole, tok, PROMPTS, lambda i, t: [float("the" in x.split()) for x in t], cfg,
                          tmp_path / "a")
    assert res["steps"] == 6
    chosen = (tmp_path / "a" / "round_000.json").read_text()
    assert '"assistant"' in chosen and " the" in chosen
    assert not all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(),
                                                      micro_policy(tok, 0.7, 0.7).state_dict().values(), strict=True))

    calls = 0

    def crashing(items, texts):
        nonlocal calls
        calls += 1
        if calls == 2:  # the second round's sampling
            raise Crash
        return [float("the" in x.split()) for x in texts]

    with pytest.raises(Crash):
        train_rejection(micro_policy(tok, 0.7, 0.7), tok, PROMPTS, crashing, cfg, tmp_path / "b")
    resumed = micro_policy(tok, 0.7, 0.7)
    train_rejection(resumed, tok, PROMPTS, lambda i, t: [float("the" in x.split()) for x in t], cfg, tmp_path / "b")
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(),
                                                  strict=True))


def test_select_problems_keeps_what_is_solved_once_in_k_and_evaluate_passes_counts_pass_at_k(tok):
    policy = micro_policy(tok, 0.5)
    items = [{**p, "id": str(i)} for i, p in enumerate(PROMPTS)]
    said_the = lambda its, texts: [float("the" in t.split()) for t in texts]  # noqa: E731
    kept, stats = select_problems(policy, tok, items, 4, 10, 1.0, seed=3, reward_fn=said_the)
    groups = sample_groups(policy, tok, items, 4, 10, 1.0, seed=3)
    solved = [i for i, g in zip(items, groups, strict=True) if any("the" in r.text.split() for r in g)]
    assert kept == solved and stats["problems_kept"] + stats["problems_dropped"] == 4
    assert 0 < stats["problems_kept"] < 4  # the crafted case has both kinds
    out = evaluate_passes(policy, tok, items, 4, 1.0, 10, seed=3)  # nothing says 42: every pass rate is 0
    assert out["pass@1"] == out["pass@k"] == out["greedy"] == out["pass@1.arithmetic"] == 0.0
    assert {"repetition", "mean_length", "length_ratio"} <= set(out)


def test_rl_config_rejects_unknown_skills():
    with pytest.raises(ValueError, match="unknown"):
        RLConfig(skills=["letter_count", "juggling"])


def test_the_guard_judges_degeneration_against_where_the_model_started():
    guard = Guard(max_repetition=0.5, max_length_ratio=2.0, watch=())
    repetitive_from_the_start = [(0, {"repetition": 0.7, "length_ratio": 2.5}), (10, {"repetition": 0.7,
                                                                                     "length_ratio": 2.5})]
    assert guard(repetitive_from_the_start) is None
    worse = [*repetitive_from_the_start, (20, {"repetition": 0.9, "length_ratio": 2.5})]
    assert "repeat" in guard(worse)
