"""Stage `preference`: the SFT model tuned on the labelers' comparisons, by DPO against the frozen SFT model or by RLHF
against the reward model (GRPO, a KL penalty, a guard against reward hacking); `win_rate` against the SFT model on
held-out prompts, judged by the skills' checks where they apply and by the reward model elsewhere."""

from __future__ import annotations

import math
from pathlib import Path

from model.identity import copy_identity, load_identity
from model.preference_config import PreferenceConfig
from tasks.core.posttrain import comparisons, eval_rows, first_and_kept, link_copy, loop_reporter
from tasks.core.stage import StageRun, stage

CURVES = {"dpo": ["loss", "val_loss", "reward_margin", "pref_accuracy"],
          "rlhf": ["reward_mean", "kl", "kl_greedy", "rm_score", "pref_accuracy", "task_score", "repetition",
                   "length_ratio"]}


def _check(cfg, workdir: Path) -> None:
    pref = cfg.preference
    if pref.enabled and pref.method == "rlhf" and not cfg.reward_model.enabled:
        raise ValueError("preference.method rlhf needs a reward model, but reward_model.enabled is false: "
                         "enable it or use preference.method dpo")


def _before_after(result: dict, names: tuple[str, ...]) -> dict[str, float]:
    """The kept weights' evaluation's `name` and the first one's as `name_before`."""
    first, last = first_and_kept(result)
    out = {}
    for name in names:
        if name in last:
            out[name], out[f"{name}_before"] = last[name], first[name]
    return out


@stage("preference", cycle="weekly", inputs=("finetune", "reward_model", "ingest_labels"),
       config={"preference": PreferenceConfig}, main_metric="win_rate", resumable=True, check=_check)
def preference(s: StageRun) -> dict:
    cfg = s.cfg.preference
    sft_dir = s.inputs["finetune"].path / "model"
    if not cfg.enabled:
        link_copy(sft_dir, s.out / "model")
        s.log.info("preference: disabled (preference.enabled false); its model is the SFT model")
        return {"metrics": {}, "info": {"skipped": True}}
    _check(s.cfg, s.workdir)
    # torch- and matplotlib-using imports inside: declaring the stage stays fast
    from data.chat.labels import read_jsonl
    from data.chat.skills import held_out_items
    from model.checkpoint import load_model, save_model
    from model.evaluate import load_assistant
    from model.preference import RewardModel, pair_items, train_dpo, train_rlhf, win_rate
    from tasks.core.plots import metric_curves

    device = cfg.torch_device()
    labels = s.inputs["ingest_labels"].path
    train, val = comparisons(labels)
    if not train:
        link_copy(sft_dir, s.out / "model")
        s.log.warning("preference: the labels hold no comparisons this week: its model is the SFT model")
        return {"metrics": {}, "info": {"skipped": True, "why": "no comparisons"}}
    policy, tok = load_assistant(sft_dir, device)
    reference = load_model(sft_dir, device)
    reward_dir = s.inputs["reward_model"].path / "reward"
    reward = RewardModel.load(reward_dir, device) if (reward_dir / "config.json").exists() else None
    # held out: no prompt a user turn of the conversations or comparisons trained on
    training = [*read_jsonl(labels / "conversations_train.jsonl"), *train]
    eval_items = held_out_items(cfg.eval_skills, cfg.eval_items, cfg.eval_seed, training,
                                identity=load_identity(sft_dir))
    on_log = loop_reporter(s, cfg.steps)
    s.log.info(f"preference: {cfg.method} on {len(train)} comparisons ({len(val)} held out), {cfg.steps} steps")
    if cfg.method == "dpo":
        result = train_dpo(policy, reference, tok, train, val, cfg, s.out / "checkpoints", on_log)
        metrics = _before_after(result, ("reward_margin", "pref_accuracy"))
    else:
        if reward is None:
            raise ValueError(f"preference: rlhf needs the reward model, and {reward_dir} holds none")
        result = train_rlhf(policy, reference, reward, tok, train, val, eval_items, cfg, s.out / "checkpoints", on_log)
        metrics = _before_after(result, ("rm_score", "pref_accuracy", "task_score"))
        last = first_and_kept(result)[1]
        metrics.update({k: last[k] for k in ("kl_greedy", "repetition", "length_ratio") if k in last})
        metrics["stopped"] = int(result["stopped"] is not None)
        if result["rolled_back_to"] is not None:
            metrics["rolled_back_to"] = result["rolled_back_to"]
    save_model(policy, s.out / "model")
    tok.save(s.out / "model" / "tokenizer.json")
    copy_identity(sft_dir, s.out / "model")  # who it was trained to be, as the model it started from says

    judged = win_rate(policy, reference, tok, [*eval_items, *pair_items(val)], reward, cfg.max_new_tokens)
    metrics.update({k: v for k, v in judged.items() if k.startswith("win_rate") and not math.isnan(v)})
    metrics["seconds"] = result["seconds"]
    s.table("evaluations", eval_rows(result["evals"]), f"preference ({cfg.method}) on held-out data, per evaluation")
    rows = [{"judge": judge, **{k: None if k == "win_rate" and math.isnan(counts[k]) else counts[k]
                                for k in ("win_rate", "wins", "ties", "losses", "judged")}}
            for judge, counts in {"all": judged, **judged["by_judge"]}.items()]
    s.table("win-rate", rows, "greedy answers against the SFT model's on held-out prompts, per judge")
    if result["history"]:
        curve = metric_curves(result["history"], CURVES[cfg.method], s.out / "curves.png", f"preference ({cfg.method})")
        s.image("curves", curve, f"preference ({cfg.method}) training curves")
    if result["stopped"]:
        s.log.warning(f"preference: stopped, {result['stopped']}; the model is step {result['rolled_back_to']}'s")
    s.log.info(f"preference: win rate {judged['win_rate']:.3f} against the SFT model ({judged['wins']} won, "
               f"{judged['ties']} tied, {judged['losses']} lost)")
    return {
        "counts": {"pairs": result.get("pairs", len(train)), "val_pairs": len(val), "win_rate_items": judged["judged"],
                   "steps": result["steps"], "resumed_from_step": result["resumed_from_step"]},
        "metrics": metrics,
        "info": {"method": cfg.method, "stopped": result["stopped"],
                 "win_rate_counts": {k: judged[k] for k in ("wins", "ties", "losses", "judged", "unjudged")}},
    }
