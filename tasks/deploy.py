"""Stage `deploy`: the gate. The weekly cycle's trained model (the `rl` artifact's: after SFT, preference tuning
and RL, or as far as those stages are enabled) must not fall behind `assistant@production` on any task by more than
that task's tolerance, judged item by item on the same eval items so that sampling error is not read as a regression
(model/gate.py), and must clear the floors; if it passes it becomes a new `assistant` version and the alias moves;
otherwise production stays as it is and the report says why, task by task.

The tasks: each chat skill (share of held-out items right), each red-team family (share of attacks resisted, so a
rise in attack success is a drop) and the red team's benign twins (share answered, so a rise in over-refusal is a
drop). Production's answers are those stored with its version when they were given to the same items the same way,
otherwise it answers them again here."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from data.chat.labels import read_jsonl, write_jsonl
from data.evals.redteam import gate_results, rescored
from model.files import atomic_write_json
from model.gate import FAIL, TOO_FEW, DeployConfig, TaskVerdict, gate, passed, per_task
from tasks.core.stage import StageRun, stage
from tasks.core.tracking import registry_identity

# MLflow, torch and matplotlib are imported where used: declaring the stage stays fast (`factory` checks input first)

RESULTS_TAG = "eval_results"  # a version's per-item eval results: this path in the artifacts of its run
REDTEAM_TAG = "redteam_results"  # its scored red-team answers, likewise


def _stored(s: StageRun, current, tag: str) -> list[dict] | None:
    """Per-item results logged with production's version under `tag`, or None when they cannot be read."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from tasks.core.tracking import tracking_uri

    try:
        path = download_artifacts(run_id=current.run_id, artifact_path=current.tags[tag],
                                  tracking_uri=tracking_uri(s.workdir))
        return read_jsonl(Path(path))
    except (MlflowException, OSError) as exc:  # a pruned run: answering again costs time, not correctness
        s.log.warning(f"deploy: production v{current.version}'s stored {tag} are unreadable ({exc})")
        return None


def production_results(s: StageRun, current, evals) -> tuple[list[dict], str]:
    """Production's per-item results on the candidate's eval items, and where they come from: the results stored with
    its version when they were measured on the same items, otherwise production answers the items again here, so the
    gate pairs like with like."""
    from tasks.core import model_registry
    from tasks.evals import answer_items

    info = evals.manifest.get("info", {})
    items_hash, setup = info.get("items_hash"), info.get("answer_setup")
    # the same items, answered the same way (tools, index, token budget): otherwise production answers again
    if items_hash and current.tags.get("items_hash") == items_hash and current.tags.get("answer_setup") == setup \
            and current.tags.get(RESULTS_TAG) and (stored := _stored(s, current, RESULTS_TAG)) is not None:
        return stored, "stored"
    s.log.info(f"deploy: no stored results of production v{current.version} on these items; evaluating it on them")
    items = read_jsonl(evals.path / "items.jsonl")
    index = info.get("index_path")
    results, _ = answer_items(model_registry.model_dir(current), items, s.cfg, Path(index) if index else None)
    return results, "re-evaluated"


def production_redteam(s: StageRun, current, evals) -> tuple[list[dict], str]:
    """Production's scored answers to the candidate's red-team prompts: stored with its version when the prompts and
    the way of answering are the same, otherwise answered again here."""
    from model.evaluate import load_assistant
    from model.identity import load_identity, served
    from model.suites import run_redteam
    from tasks.core import model_registry
    from tasks.evals import redteam_files

    info = evals.manifest.get("info", {})
    prompts, setup = info.get("redteam_prompts_hash"), info.get("answer_setup")
    if prompts and current.tags.get("redteam_prompts_hash") == prompts and current.tags.get("answer_setup") == setup \
            and current.tags.get(REDTEAM_TAG) and (stored := _stored(s, current, REDTEAM_TAG)) is not None:
        return rescored(stored), "stored"  # the answers as given, scored as the candidate's are
    s.log.info(f"deploy: no stored red-team answers of production v{current.version}; asking it the prompts")
    folder = model_registry.model_dir(current)
    model, tok = load_assistant(folder)
    identity = load_identity(folder)
    index = info.get("index_path")
    result = run_redteam(model, tok, redteam_files(s.cfg.evals), s.cfg.evals.redteam_max_new_tokens,
                         served(identity),
                         s.cfg.tools.toolbox(Path(index) if index else None))
    return result.records, "re-evaluated"


def _is_build(version, artifact) -> bool:
    """Whether a registered version is that very build of the trained artifact (`--force` rebuilds a key anew)."""
    return version.tags.get("artifact_build_id") == artifact.build_id


def _external(cfg, workdir: Path, inputs: dict) -> dict:
    """The registry this acts on and the production version it decides against: after the alias moves, the same
    candidate meets a new production, so A -> B -> A is three decisions, not a cached first one. When production is
    this very candidate, the version it was decided against: a rerun after a deploy finds that decision again."""
    from tasks.core import model_registry
    from tasks.core.tracking import client

    current = model_registry.alias_version(client(workdir), cfg.deploy.model_name, cfg.deploy.alias)
    against = str(current.version) if current else None
    if current is not None and _is_build(current, inputs["rl"]):
        against = current.tags.get("decided_against") or None
    return {**registry_identity(cfg, workdir), "production": against}


def _shown(value: float | None) -> float | str:
    return "" if value is None else round(value, 3)


def _already_production(s: StageRun, current) -> dict:
    """The candidate is the model production already serves (this config deployed it last): nothing to decide."""
    cfg = s.cfg.deploy
    verdict = f"{cfg.model_name} v{current.version} (@{cfg.alias}) is already this model: nothing to deploy"
    decision = {"passed": True, "production_before": str(current.version), "production_after": str(current.version),
                "production_scores": "same model", "rows": [], "verdict": verdict}
    atomic_write_json(s.out / "decision.json", decision)
    s.log.info(f"deploy: {verdict}")
    s.mlflow.tags({"verdict": verdict})
    return {"counts": {"tasks": 0, "failed": 0, "too_few_items": 0},
            "metrics": {"deployed": 0, "production_version": int(current.version)}}


def rule(task: str) -> str:
    """What a gate task's score is, and so what its rule forbids."""
    if task == "redteam.benign.answered":
        return "over-refusal: share of benign twins answered (1 - over-refusal) may not drop"
    if task.startswith("redteam."):
        return "red team: share of attacks resisted (1 - ASR) may not drop"
    if task == "refusal":
        return "hallucination: share of questions about invented subjects refused (1 - confident rate) may not drop"
    return "capability: share of held-out items right may not drop"


def _table_row(v: TaskVerdict) -> dict:
    interval = "" if v.low is None else f"[{v.low:+.3f}, {v.high:+.3f}]"
    return {
        "task": v.task,
        "rule": rule(v.task),
        "n": v.n,
        "candidate": _shown(v.candidate),
        "production": _shown(v.production),
        "difference": _shown(v.difference),
        "interval": interval,
        "tolerance": v.tolerance,
        "floor": _shown(v.floor),
        "verdict": v.verdict,
        "reason": v.reason,
    }


def arena_matches(s: StageRun, production: list[dict], production_attacks: list[dict] | None) -> list[dict]:
    """Candidate ("a") against production ("b") on the same prompts: the skill items judged by their checks, the
    red team's benign twins (open questions) by this week's reward model, unless the candidate was trained against
    that very model (preference.method rlhf), which would make it judge in its own favour. A reward model that
    fails to judge costs its matches, never the deploy."""
    from data.evals.redteam import conversation
    from model.arena import check_matches, reward_matches

    evals = s.inputs["evals"]
    found = check_matches("candidate", "production", read_jsonl(evals.path / "results.jsonl"), production)
    reward_dir = s.inputs["reward_model"].path / "reward"
    if not (production_attacks and (evals.path / "redteam.jsonl").exists() and reward_dir.is_dir()):
        return found
    pref = s.cfg.preference
    if pref.enabled and pref.method == "rlhf":
        s.log.info("deploy: arena: the candidate was tuned against this week's reward model; it does not judge")
        return found
    try:
        from model.preference import RewardModel, encode_answer

        judge = RewardModel.load(reward_dir)
        seq_len = judge.trunk.config.seq_len
        theirs = {r["id"]: r["response"] for r in production_attacks if r["expect"] == "answer"}
        open_ = [(f"redteam/{r['id']}", conversation(r), r["response"], theirs[r["id"]])
                 for r in read_jsonl(evals.path / "redteam.jsonl") if r["expect"] == "answer" and r["id"] in theirs]
        # an answer too long for the judge's context cannot be scored: its match is left out
        open_ = [m for m in open_ if all(encode_answer(judge.tok, m[1], a, seq_len) for a in m[2:])]
        judged = reward_matches("candidate", "production", open_, judge.score)
    except (OSError, ValueError, RuntimeError) as exc:
        s.log.warning(f"deploy: arena: the reward model could not judge ({type(exc).__name__}: {exc}); its matches "
                      "are left out")
        return found
    judge_id = f"reward_model/{s.inputs['reward_model'].key}"
    return found + [{**m, "judge": judge_id} for m in judged]


def record_matches(s: StageRun, matches: list[dict], candidate: str, production: str) -> list[dict]:
    """This decision's matches, under the players' names, into the workdir's arena ledger (those of an earlier run of
    the same decision replaced); returns the whole ledger."""
    ledger = arena_ledger(s.workdir)
    history = read_jsonl(ledger) if ledger.exists() else []
    # a rerun's matches take the place of the earlier ones, so the oldest model stays first (the rating anchor)
    at = next((i for i, m in enumerate(history) if m.get("decision") == s.key), len(history))
    named = {"candidate": candidate, "production": production}
    mine = [{**m, "a": named[m["a"]], "b": named[m["b"]], "decision": s.key} for m in matches]
    history = [m for m in history[:at] if m.get("decision") != s.key] + mine + \
        [m for m in history[at:] if m.get("decision") != s.key]
    write_jsonl(ledger, history)
    return history


def arena_ledger(workdir: Path) -> Path:
    """Every deploy decision's matches, the history the leaderboard is fitted on."""
    return Path(workdir) / "arena" / "matches.jsonl"


@stage("deploy", cycle="weekly", inputs=("evals", "rl", "reward_model"), config={"deploy": DeployConfig},
       main_metric="deployed", external=_external)
def deploy(s: StageRun) -> dict:
    from tasks.core import model_registry
    from tasks.core.plots import score_bars
    from tasks.core.tracking import client

    cfg = s.cfg.deploy
    evals, trained = s.inputs["evals"], s.inputs["rl"]
    candidate = read_jsonl(evals.path / "results.jsonl")
    attacks = evals.path / "redteam.jsonl"  # absent when evals.redteam is off
    if attacks.exists():
        candidate += gate_results(read_jsonl(attacks))
    c = client(s.workdir)
    current = model_registry.alias_version(c, cfg.model_name, cfg.alias)
    if current is not None and _is_build(current, trained):
        return _already_production(s, current)
    production, source, redteam_source, answers = [], "none", "none", None
    matches: list[dict] = []
    if current is not None:  # what production answered, beside the decision that compared against it
        production, source = production_results(s, current, evals)
        write_jsonl(s.out / "production_results.jsonl", production)
        if attacks.exists():
            answers, redteam_source = production_redteam(s, current, evals)
            write_jsonl(s.out / "production_redteam.jsonl", answers)
        matches = arena_matches(s, production, answers)
        if answers is not None:
            production = production + gate_results(answers)
    verdicts = gate(per_task(candidate), None if current is None else per_task(production), cfg)
    ok = passed(verdicts)
    before = str(current.version) if current else None
    decision = {
        "passed": ok,
        "production_before": before,
        "production_scores": source,
        "production_redteam": redteam_source,
        "alpha": cfg.alpha,
        "min_items": cfg.min_items,
        "rows": [{**asdict(v), "rule": rule(v.task)} for v in verdicts],
    }
    if ok:
        items_hash = evals.manifest.get("info", {}).get("items_hash", "")
        # the candidate's per-item results go with its version, so the next gate can pair against them unanswered
        s.mlflow.log_file(evals.path / "results.jsonl", "eval")
        if attacks.exists():
            s.mlflow.log_file(attacks, "eval")
        tags = {
            "artifact_key": trained.key,
            "artifact_build_id": trained.build_id,
            "artifact_path": str(trained.path),
            "decided_against": before or "",
            "items_hash": items_hash,
            "index_path": evals.manifest.get("info", {}).get("index_path", ""),
            "evals_path": str(evals.path),  # the report card reads the per-item results there
            "answer_setup": evals.manifest.get("info", {}).get("answer_setup", ""),
            RESULTS_TAG: "eval/results.jsonl",
            **({REDTEAM_TAG: "eval/redteam.jsonl",
                "redteam_prompts_hash": evals.manifest.get("info", {}).get("redteam_prompts_hash", "")}
               if attacks.exists() else {}),
            **{f"metric.{k}": v for k, v in evals.metrics.items()},
        }
        tags["trained_in_run"] = trained.manifest.get("mlflow_run_id", "")
        tags["prefect_flow_run_id"] = s.flow_run_id
        version = model_registry.register(c, cfg.model_name, trained.path / "model", s.mlflow.run_id, tags)
        decision["production_after"] = version
        verdict = f"deployed {cfg.model_name} v{version} to @{cfg.alias}" + (
            "" if current else " (first production model)"
        )
        too_few = [v.task for v in verdicts if v.verdict == TOO_FEW]
        if too_few:
            verdict += f"; too few items to tell for {', '.join(too_few)}"
    else:
        decision["production_after"] = decision["production_before"]
        failing = "; ".join(v.line() for v in verdicts if v.verdict == FAIL)
        where = f"stays at v{before}" if before else "stays empty"
        verdict = f"gate failed, {cfg.model_name}@{cfg.alias} {where}: {failing}"
    decision["verdict"] = verdict
    arena_metrics = {}
    if matches:
        name = f"{cfg.model_name} v"
        me = f"{name}{decision['production_after']}" if ok else f"rejected {trained.key}"
        arena_metrics = arena(s, decision, matches, me, f"{name}{before}")
    atomic_write_json(s.out / "decision.json", decision)
    if ok:  # the last side effect: a failure before it leaves production where it was
        model_registry.move_alias(c, cfg.model_name, cfg.alias, decision["production_after"])
    chart = score_bars(
        {v.task: v.candidate for v in verdicts},
        s.out / "gate.png",
        "deploy gate: candidate vs production",
        baseline={v.task: v.production for v in verdicts if v.production is not None} or None,
    )
    s.image("gate-chart", chart, verdict)
    s.table("gate", [_table_row(v) for v in verdicts], verdict)
    s.log.info("deploy: " + verdict + "".join(f"\n  {v.line()}" for v in verdicts))
    s.mlflow.tags({"verdict": verdict[:4000], "decision": json.dumps(decision)[:4000]})
    return {
        "counts": {
            "tasks": len(verdicts),
            "failed": sum(v.verdict == FAIL for v in verdicts),
            "too_few_items": sum(v.verdict == TOO_FEW for v in verdicts),
        },
        "metrics": {"deployed": int(ok), "production_version": int(decision["production_after"] or 0),
                    **arena_metrics},
    }


def arena(s: StageRun, decision: dict, matches: list[dict], candidate: str, production: str) -> dict[str, float]:
    """This decision's matches into the ledger, the leaderboard into the decision and the Prefect table
    `deploy-arena`; returns the metrics. A failure here is logged and costs the arena, not the deploy.

    The leaderboard is fitted on the matches judged by exact checks only. A reward model judges each week's pair
    apart (`reward_score`): it is retrained every week from that week's SFT model, and two weeks' judges need not
    agree (measured on the micro settings: on the same two models and the same open prompts, one week's reward model
    preferred the first 139 to 5, the next week's the second 128 to 16), so verdicts from different weeks do not
    belong in one rating."""
    from model.arena import leaderboard

    def score(found: list[dict]) -> float | None:
        return sum({"a": 1.0, "b": 0.0, "tie": 0.5}[m["winner"]] for m in found) / len(found) if found else None

    checked = [m for m in matches if m["judge"] == "check"]
    judged = [m for m in matches if m["judge"] != "check"]
    write_jsonl(s.out / "arena_matches.jsonl", matches)
    decision["arena"] = {"matches": len(matches), "by_judge": dict(Counter(m["judge"] for m in matches)),
                         "candidate_score": score(checked), "reward_score": score(judged)}
    metrics = {k: v for k, v in (("arena_score", score(checked)), ("arena_reward_score", score(judged)))
               if v is not None} | {"arena_matches": len(matches)}
    try:
        history = record_matches(s, matches, candidate, production)
        ranked = [m for m in history if m["judge"] == "check"]
        board = leaderboard(ranked, anchor=_first_player(ranked)) if ranked else []
    except (OSError, ValueError) as exc:
        s.log.warning(f"deploy: arena: the leaderboard could not be updated ({type(exc).__name__}: {exc})")
        return metrics
    decision["arena"]["leaderboard"] = board
    s.table("arena", board, f"arena: Bradley-Terry ratings (Elo scale) of every model that met in a deploy, from the "
            f"matches exact checks judged, with 95% bootstrap intervals; this candidate scored "
            f"{_shown(score(checked))} of {len(checked)} such matches against production (reward model: "
            f"{_shown(score(judged))} of {len(judged)})")
    return metrics


def _first_player(history: list[dict]) -> str:
    """The oldest model in the ledger (the anchor at 1000): production of its first decision."""
    return history[0]["b"]
