"""Learning from comparisons: the pairwise and DPO losses, answer log-probs, the reward model, DPO, RLHF's wiring,
resume after a crash and the win rate."""

import math

import pytest
import torch

import model.preference as pref
from model.chat import render_prompt
from model.checkpoint import save_model
from model.config import GPTConfig
from model.gpt import GPT
from model.preference import (
    PreferenceConfig,
    RewardConfig,
    RewardModel,
    answer_logprobs,
    bradley_terry_loss,
    collate,
    dpo_loss,
    encode_answer,
    train_dpo,
    train_reward_model,
    train_rlhf,
    win_rate,
)
from model.tokenizer import train_bpe

WORDS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "house", "piano", "garden", "candle", "rocket", "forest",
         "bridge", "castle", "pencil", "mirror", "window", "basket", "silver", "jungle", "planet", "violin", "dragon",
         "orange", "meadow", "anchor", "button", "carpet", "desert", "engine", "falcon", "ginger", "harbor", "island",
         "jacket", "kettle", "ladder", "magnet", "needle", "oyster"]


def toy_pairs(words):
    """A preference the reward model and DPO can learn from a few examples and apply to unseen words: the labelers
    like a thing called good, not bad."""
    return [{"prompt": f"Tell me about the {w}.", "chosen": f"The {w} is good.", "rejected": f"The {w} is bad."}
            for w in words]


TRAIN, VAL = toy_pairs(WORDS[:30]), toy_pairs(WORDS[30:])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    """A random micro "SFT model" with a BPE tokenizer trained on the toy texts, saved as the finetune stage does."""
    texts = [f"{p['prompt']} {p['chosen']} {p['rejected']}" for p in TRAIN + VAL] * 3
    tok = train_bpe(texts, vocab_size=320)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sft")
    save_model(GPT(GPTConfig(vocab_size=tok.vocab_size, seq_len=64, n_layer=2, n_embd=32, n_head=2, n_kv_head=2,
                             mlp_hidden=64)), folder)
    tok.save(folder / "tokenizer.json")
    return folder


def load(sft_dir):
    from model.evaluate import load_assistant

    return load_assistant(sft_dir, "cpu")


def test_the_pairwise_loss_matches_the_hand_computed_value():
    # pair 1: margin 2 -> -log sigmoid(2) = log(1 + e^-2) = 0.126928; pair 2: margin 0 -> log 2 = 0.693147
    loss = bradley_terry_loss(torch.tensor([2.0, 0.5]), torch.tensor([0.0, 0.5]))
    assert float(loss) == pytest.approx((0.126928 + 0.693147) / 2, abs=1e-6)


def test_the_dpo_loss_and_implicit_rewards_match_the_hand_computed_values():
    # beta 0.1. pair 1: chosen 0.1 * (-10 - -11) = 0.1, rejected 0.1 * (-12 - -11) = -0.1, margin 0.2,
    #   loss log(1 + e^-0.2) = 0.598139. pair 2: chosen 0.1 * (-5 - -4) = -0.1, rejected 0.1 * (-5 - -6) = 0.1,
    #   margin -0.2, loss log(1 + e^0.2) = 0.798139. Mean 0.698139.
    loss, chosen, rejected = dpo_loss(torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -5.0]),
                                      torch.tensor([-11.0, -4.0]), torch.tensor([-11.0, -6.0]), beta=0.1)
    assert float(loss) == pytest.approx(0.698139, abs=1e-6)
    assert chosen.tolist() == pytest.approx([0.1, -0.1]) and rejected.tolist() == pytest.approx([-0.1, 0.1])


def test_answer_logprobs_sum_the_answer_tokens_only(sft_dir):
    model, tok = load(sft_dir)
    short = encode_answer(tok, "Tell me about the apple.", "The apple is good.", 64)
    long = encode_answer(tok, [{"role": "user", "content": "Tell me, please, about the big red river."}],
                         "The river is bad.", 64)
    got = answer_logprobs(model, collate([short, long], tok.pad_id))
    for (ids, start), value in zip((short, long), got, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids]))[0][0], dim=-1)
        by_hand = sum(float(logp[pos - 1, ids[pos]]) for pos in range(start, len(ids)))  # answer + <|assistant_end|>
        assert float(value) == pytest.approx(by_hand, abs=1e-4)
    assert short[0][short[1] - 1] == tok.special_id("<|assistant_start|>")
    assert short[0][-1] == tok.special_id("<|assistant_end|>")


def test_a_long_prompt_is_cut_from_the_left_and_the_answer_kept(sft_dir):
    _, tok = load(sft_dir)
    prompt = " ".join(f"Tell me about the {w}." for w in WORDS)
    ids, start = encode_answer(tok, prompt, "The apple is good.", 40)
    answer = tok.encode("The apple is good.") + [tok.special_id("<|assistant_end|>")]
    full = render_prompt(tok, [{"role": "user", "content": prompt}])
    assert len(ids) == 40 and ids[start:] == answer
    assert ids[0] == tok.bos_id and ids[1:start] == full[len(full) - (start - 1):]  # the prompt's end survives
    assert encode_answer(tok, "Hi", " ".join(WORDS), 8) is None  # the answer alone does not fit: dropped


def test_a_saved_reward_model_loads_and_scores_the_same(sft_dir, tmp_path):
    trunk, tok = load(sft_dir)
    rm = RewardModel(trunk, tok)
    torch.nn.init.normal_(rm.head.weight)
    prompts, answers = ["Tell me about the apple.", "Tell me about the stone."], ["The apple is good.", "Bad."]
    rm.save(tmp_path / "rm")
    again = RewardModel.load(tmp_path / "rm")
    assert again.score(prompts, answers) == rm.score(prompts, answers)
    assert len(set(rm.score(prompts, answers))) == 2
    assert rm.score(prompts, answers, batch_size=1) == pytest.approx(rm.score(prompts, answers), abs=1e-5)


RM_CFG = RewardConfig(steps=30, lr=3e-3, batch_size=8, warmup_steps=2, eval_every=10, ckpt_every=10, device="cpu")


def test_a_micro_reward_model_learns_a_preference_that_holds_on_unseen_pairs(sft_dir, tmp_path):
    rm, result = train_reward_model(sft_dir, TRAIN, VAL, RM_CFG, tmp_path / "ckpt")
    before, after = result["evals"][0][1], result["evals"][-1][1]
    assert before["pref_accuracy"] == 0.5  # an untrained head scores every answer 0: all ties
    assert after["pref_accuracy"] > 0.8 and after["val_loss"] < before["val_loss"]
    good, bad = rm.score(["Tell me about the kettle."] * 2, ["The kettle is good.", "The kettle is bad."])
    assert good > bad


class Crash(Exception):
    pass


def crash(step, metrics):
    """on_log that crashes the run after its 6th step's log, past the step-4 checkpoint and the step-5 evaluation."""
    if step == 6 and "loss" in metrics:
        raise Crash


def test_a_reward_model_run_resumes_after_a_crash_and_ends_bitwise_equal(sft_dir, tmp_path):
    cfg = RM_CFG.model_copy(update={"steps": 10, "eval_every": 5, "ckpt_every": 4, "log_every": 1})
    with pytest.raises(Crash):
        train_reward_model(sft_dir, TRAIN, VAL, cfg, tmp_path / "b", on_log=crash)
    resumed, result = train_reward_model(sft_dir, TRAIN, VAL, cfg, tmp_path / "b")
    uninterrupted, _ = train_reward_model(sft_dir, TRAIN, VAL, cfg, tmp_path / "c")
    assert result["resumed_from_step"] == 5 and result["steps"] == 10  # the last checkpoint: the step-5 evaluation
    assert [step for step, _ in result["evals"]] == [0, 5, 10]
    for a, b in zip(uninterrupted.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    start = load(sft_dir)[0].state_dict()
    assert not torch.equal(start["norm.weight"], resumed.trunk.state_dict()["norm.weight"])  # it did train


def test_a_dpo_run_resumes_after_a_crash_and_ends_bitwise_equal(sft_dir, tmp_path):
    cfg = PreferenceConfig(steps=10, lr=3e-3, batch_size=8, warmup_steps=2, eval_every=5, ckpt_every=4, log_every=1,
                           device="cpu")

    def run(folder, on_log=None):
        policy, tok = load(sft_dir)
        return policy, train_dpo(policy, load(sft_dir)[0], tok, TRAIN, VAL, cfg, tmp_path / folder, on_log)

    with pytest.raises(Crash):
        run("b", crash)
    resumed, result = run("b")
    uninterrupted, _ = run("c")
    assert result["resumed_from_step"] == 5 and [step for step, _ in result["evals"]] == [0, 5, 10]
    for a, b in zip(uninterrupted.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_dpo_on_a_toy_makes_the_held_out_margin_positive(sft_dir, tmp_path):
    policy, tok = load(sft_dir)
    reference, _ = load(sft_dir)
    cfg = PreferenceConfig(steps=20, lr=3e-3, batch_size=8, warmup_steps=2, eval_every=10, device="cpu")
    result = train_dpo(policy, reference, tok, TRAIN, VAL, cfg, tmp_path / "ckpt")
    before, after = result["evals"][0][1], result["evals"][-1][1]
    assert before["reward_margin"] == 0.0 and before["pref_accuracy"] == 0.5  # the policy starts as the reference
    assert after["reward_margin"] > 0 and after["pref_accuracy"] > 0.8
    untouched = load(sft_dir)[0].state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), untouched, strict=True))


ITEMS = [{"id": f"a{n}", "skill": "arithmetic", "messages": [{"role": "user", "content": f"What is {n} + 1?"}],
          "reference": n + 1} for n in range(4)] + [
    {"id": f"free{n}", "messages": [{"role": "user", "content": f"Tell me about the {w}."}]}
    for n, w in enumerate(("apple", "river"))]


class ScoreByLength:
    """A stand-in reward model: longer answers score higher."""

    def score(self, prompts, answers):
        return [float(len(a)) for a in answers]


def test_the_win_rate_judges_by_checks_or_the_reward_model_and_counts_ties_half(monkeypatch):
    policy, reference = object(), object()
    answers = {policy: ["Answer: 1", "Answer: 2", "Answer: 9", "Answer: 9", "long answer", "same"],
               reference: ["Answer: 9", "Answer: 2", "Answer: 3", "Answer: 8", "short", "same"]}
    monkeypatch.setattr(pref, "greedy_answers", lambda model, tok, items, n: answers[model][:len(items)])
    result = win_rate(policy, reference, None, ITEMS, ScoreByLength())
    # checks: win (right vs wrong), tie (both right), loss (wrong vs right), tie (both wrong) = 2 / 4
    # reward model: win (longer), tie (same) = 1.5 / 2; together 3.5 / 6
    assert result["win_rate_checks"] == 0.5 and result["win_rate_rm"] == 0.75
    assert result["win_rate"] == pytest.approx(3.5 / 6)
    assert (result["wins"], result["ties"], result["losses"], result["unjudged"]) == (2, 3, 1, 0)
    alone = win_rate(policy, reference, None, ITEMS, None)  # no reward model: the free-form prompts go unjudged
    assert alone["win_rate"] == 0.5 and alone["unjudged"] == 2 and math.isnan(alone["win_rate_rm"])


def test_rlhf_reports_its_held_out_numbers_against_the_sft_model(sft_dir, tmp_path):
    policy, tok = load(sft_dir)
    reference, _ = load(sft_dir)
    rm = RewardModel(load(sft_dir)[0], tok)
    items = ITEMS[:2]
    cfg = PreferenceConfig(method="rlhf", steps=2, eval_every=1, k=2, prompts_per_step=2, max_new_tokens=8,
                           device="cpu")
    result = train_rlhf(policy, reference, rm, tok, TRAIN[:4], VAL[:4], items, cfg, tmp_path / "a")
    assert result["steps"] == 2 and result["stopped"] is None
    names = set(result["evals"][-1][1])
    assert {"rm_score", "pref_accuracy", "reward_margin", "task_score", "kl_greedy", "repetition",
            "length_ratio"} <= names

    # the length guard compares with the SFT model's own answers: the policy starts as that model, so ratio 1
    assert result["evals"][0][1]["length_ratio"] == 1.0 and result["evals"][0][1]["kl_greedy"] == 0.0
