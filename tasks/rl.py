"""Stage `rl`: RL on verifiable tasks: the chat skills' own checks are the rewards (letter counting, small additions,
word problems), GRPO on k sampled answers per problem with a KL penalty to the starting model, or the seeds' rejection
sampling + SFT on the best correct answer; pass@1 and pass@k before and after on held-out problems never trained on.

Training problems are the ones the starting model solves at least once in k tries ("train where there is signal").
They never include a held-out problem, an `evals` item, or a user turn of the labels' val sets; the held-out problems
never include a user turn the earlier stages trained on.
"""

from __future__ import annotations

from pathlib import Path

from data.chat.labels import read_jsonl, write_jsonl
from data.chat.skills import build_skill, held_out_items, user_turns
from model.identity import IdentityConfig, copy_identity, load_identity
from model.rl_config import RLConfig
from tasks.core.posttrain import first_and_kept, link_copy, loop_reporter
from tasks.core.stage import StageRun, stage
from tasks.evals import EvalsConfig

# a held-out problem's seed: another stream than the training problems' (both are apart from the evals' items anyway)
HELD_OUT_SEED_OFFSET = 1_000_003


def problems(cfg: RLConfig, evals: EvalsConfig, labels: Path,
             identity: IdentityConfig | None = None) -> tuple[list[dict], list[dict]]:
    """(training problems, held-out problems) as eval items ({"id", "skill", "messages", "reference", "answer"}).

    Held out: drawn first, none a user turn of the training labels (conversations and comparisons). Training: drawn
    from another seed, none a held-out prompt, an `evals` item's prompt, or a user turn of the val labels."""
    def records(split: str) -> list[dict]:
        return [*read_jsonl(labels / f"conversations_{split}.jsonl"),
                *read_jsonl(labels / f"comparisons_{split}.jsonl")]

    train_records, val_records = records("train"), records("val")
    held = held_out_items(cfg.skills, cfg.eval_problems, cfg.seed + HELD_OUT_SEED_OFFSET, train_records,
                          identity=identity)
    scored = held_out_items(evals.skills, evals.items_per_task, evals.seed, train_records,  # the evals stage's items
                            identity=identity)
    exclude = {i["messages"][-1]["content"] for i in [*held, *scored]} | user_turns(val_records)
    train = [ex.as_item() for name in cfg.skills
             for ex in build_skill(name, identity=identity).examples(cfg.train_problems, cfg.seed,
                                                                     exclude_prompts=exclude)]
    return train, held


@stage("rl", cycle="weekly", inputs=("preference", "ingest_labels"), config={"rl": RLConfig, "evals": EvalsConfig},
       main_metric="pass@1_after", resumable=True)
def rl(s: StageRun) -> dict:
    # torch- and matplotlib-using imports inside: declaring the stage stays fast (`factory` checks its input first)
    import copy
    import time

    from model.checkpoint import save_model
    from model.evaluate import load_assistant
    from model.rl import Guard, evaluate_passes, select_problems, train_grpo, train_rejection, verifiable_rewards
    from tasks.core.plots import metric_curves

    cfg: RLConfig = s.cfg.rl
    start = s.inputs["preference"].path / "model"
    if not cfg.enabled:
        link_copy(start, s.out / "model")
        s.log.info(f"rl: disabled; the model is {start}'s")
        return {"metrics": {}, "info": {"skipped": True}}

    started = time.perf_counter()
    train, held = problems(cfg, s.cfg.evals, s.inputs["ingest_labels"].path, load_identity(start))
    write_jsonl(s.out / "held_out.jsonl", held)
    policy, tok = load_assistant(start, cfg.torch_device())
    reference = copy.deepcopy(policy)  # the KL anchor: the starting model, frozen

    def reward_fn(items: list[dict], texts: list[str]) -> list[float]:
        return verifiable_rewards(items, texts, cfg.format_reward)

    kept, selection = train, {"problems_kept": len(train), "problems_dropped": 0}
    if cfg.select:
        kept, selection = select_problems(policy, tok, train, cfg.k, cfg.max_new_tokens, cfg.temperature, cfg.seed,
                                          reward_fn)
    write_jsonl(s.out / "train_problems.jsonl", kept)
    s.log.info(f"rl: {len(kept)} of {len(train)} training problems solved at least once in {cfg.k} samples; "
               f"{len(held)} held out")
    if not kept:
        s.log.warning("rl: the starting model solves none of the training problems; nothing to learn from")
        cfg, kept = cfg.model_copy(update={"steps": 0, "rounds": 0}), train  # evaluated once: before = after

    def evaluate() -> dict[str, float]:
        return evaluate_passes(policy, tok, held, cfg.eval_k, cfg.temperature, cfg.max_new_tokens,
                               seed=cfg.seed + HELD_OUT_SEED_OFFSET)

    total = cfg.rounds * cfg.sft_steps if cfg.mode == "rejection" else cfg.steps

    on_log = loop_reporter(s, total)
    guard = Guard(max_repetition=cfg.max_repetition, max_length_ratio=cfg.max_length_ratio, watch=())
    ckpt = s.out / "checkpoints"
    if cfg.mode == "grpo":
        result = train_grpo(policy, reference, tok, kept, reward_fn, cfg, ckpt, evaluate, guard, on_log)
    else:
        result = train_rejection(policy, tok, kept, reward_fn, cfg, ckpt, evaluate, guard, on_log)
    before, after = first_and_kept(result)
    if result["stopped"]:
        s.log.warning(f"rl: stopped: {result['stopped']}; kept the weights of step {result['rolled_back_to']}")

    save_model(policy.to("cpu"), s.out / "model")
    tok.save(s.out / "model" / "tokenizer.json")
    copy_identity(start, s.out / "model")  # who it was trained to be, as the model it started from says
    rows = _table(before, after, cfg.skills)
    s.table("pass-rates", rows, f"held-out pass@1 / pass@{cfg.eval_k} / greedy per skill, before and after RL")
    curves = metric_curves(result["history"], ["reward_mean", "kl", "pass@1", "pass@k", "repetition"],
                           s.out / "curves.png", f"rl ({cfg.mode}): training reward and KL, held-out pass rates")
    s.image("curves", curves, "rl: reward, KL and held-out pass rates per step")
    for row in rows:
        s.log.info(f"rl: {row['skill']}: pass@1 {row['pass@1 before']:.3f} -> {row['pass@1 after']:.3f}, "
                   f"pass@k {row['pass@k before']:.3f} -> {row['pass@k after']:.3f}")

    metrics: dict[str, float] = {}
    for when, values in (("before", before), ("after", after)):
        for name, value in values.items():
            if name.split(".")[0] in ("pass@1", "pass@k", "greedy"):
                base, _, skill = name.partition(".")
                metrics[f"{base}_{when}" + (f".{skill}" if skill else "")] = round(value, 4)
    metrics.update({"repetition_after": round(after["repetition"], 4),
                    "length_ratio_after": round(after.get("length_ratio", 0.0), 4),
                    "problems_kept": selection["problems_kept"], "problems_dropped": selection["problems_dropped"],
                    "seconds": round(time.perf_counter() - started, 1)})
    return {
        "counts": {"steps": result["steps"], "resumed_from_step": result["resumed_from_step"],
                   "train_problems": len(train), "held_out_problems": len(held)},
        "metrics": metrics,
        "info": {"mode": cfg.mode, "k": cfg.k, "eval_k": cfg.eval_k, "stopped": result["stopped"],
                 "rolled_back_to": result["rolled_back_to"], "start": str(start)},
    }


def _table(before: dict, after: dict, skills: list[str]) -> list[dict]:
    rows = []
    for skill in [*skills, None]:
        suffix = f".{skill}" if skill else ""
        if f"pass@1{suffix}" not in before:
            continue
        row = {"skill": skill or "all"}
        for name in ("pass@1", "pass@k", "greedy"):
            row[f"{name} before"] = round(before[name + suffix], 3)
            row[f"{name} after"] = round(after[name + suffix], 3)
        rows.append(row)
    return rows
