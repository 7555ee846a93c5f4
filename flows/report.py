"""`factory report MODEL`: one markdown page about a registered model: where it came from, every metric its evals
measured with its interval and its change against production (or, for production itself, against the version it
was decided against), the gate's verdict, and sample answers."""

from __future__ import annotations

import json
from pathlib import Path

from data.chat.labels import read_jsonl
from data.evals.redteam import summarize, wilson
from model.gate import paired_difference, per_task


def measured(evals_dir: Path | None, tags: dict) -> dict[str, dict]:
    """{metric: {"value", "low", "high", "n"}} from an evals artifact (intervals from its per-item results), or from
    the version's `metric.*` tags (no intervals) when the artifact is gone."""
    out: dict[str, dict] = {}
    for key, value in tags.items():
        if key.startswith("metric."):
            try:
                out[key.removeprefix("metric.")] = {"value": float(value)}
            except ValueError:
                continue
    if evals_dir is None or not (evals_dir / "manifest.json").is_file():
        return out
    manifest = json.loads((evals_dir / "manifest.json").read_text())
    out |= {k: {"value": v} for k, v in manifest.get("metrics", {}).items() if isinstance(v, (int, float))}
    if (evals_dir / "results.jsonl").is_file():
        results = read_jsonl(evals_dir / "results.jsonl")
        for skill in dict.fromkeys(r["skill"] for r in results):
            done = [r for r in results if r["skill"] == skill]
            right = sum(bool(r["correct"]) for r in done)
            low, high = wilson(right, len(done))
            out[f"score.{skill}"] = {"value": right / len(done), "low": low, "high": high, "n": len(done)}
    if (evals_dir / "redteam.jsonl").is_file():
        rows, _ = summarize(read_jsonl(evals_dir / "redteam.jsonl"))
        for row in rows:
            name = "redteam.asr" if row["family"] == "all" else f"redteam.asr.{row['family']}"
            if row["asr"] is not None:
                out[name] = {"value": row["asr"], "low": row["asr_low"], "high": row["asr_high"], "n": row["attacks"]}
            if row["family"] == "all" and row["over_refusal"] is not None:
                out["redteam.over_refusal"] = {"value": row["over_refusal"], "low": row["over_refusal_low"],
                                               "high": row["over_refusal_high"], "n": row["benign"]}
    return out


def per_item(evals_dir: Path | None) -> dict[str, dict[str, float]]:
    """{metric: {item id: 0 or 1}} for the metrics measured item by item: `score.<skill>` (right), `redteam.asr` and
    `redteam.asr.<family>` (the attack succeeded), `redteam.over_refusal` (a benign twin refused). Two models' items
    with the same id are the same prompt, so their difference can be paired."""
    out: dict[str, dict[str, float]] = {}
    if evals_dir is None:
        return out
    if (evals_dir / "results.jsonl").is_file():  # keyed as the gate keys them
        out |= {f"score.{skill}": scores for skill, scores in per_task(read_jsonl(evals_dir / "results.jsonl")).items()}
    if (evals_dir / "redteam.jsonl").is_file():
        for r in read_jsonl(evals_dir / "redteam.jsonl"):
            if r.get("attack_success") is not None:
                for name in ("redteam.asr", f"redteam.asr.{r['family']}"):
                    out.setdefault(name, {})[r["id"]] = float(bool(r["attack_success"]))
            if r.get("over_refusal") is not None:
                out.setdefault("redteam.over_refusal", {})[r["id"]] = float(bool(r["over_refusal"]))
    return out


def change(a: dict | None, b: dict | None, mine: dict[str, float] | None, theirs: dict[str, float] | None) -> str:
    """This model's value minus the other's: paired over the items both were asked, with its 95% interval (Tango's
    score interval, as the gate computes it), when they share any; otherwise the plain difference, marked unpaired."""
    shared = sorted(set(mine or {}) & set(theirs or {}))
    if shared:
        diff, low, high, _ = paired_difference([mine[k] for k in shared], [theirs[k] for k in shared], alpha=0.025)
        return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}] (paired n {len(shared)})"
    if a is None or b is None:
        return ""
    return f"{a['value'] - b['value']:+.3f} (unpaired)"


def _cell(m: dict | None) -> str:
    if m is None:
        return ""
    text = f"{m['value']:.3f}"
    if "low" in m:
        text += f" [{m['low']:.3f}, {m['high']:.3f}]"
    return text + (f" (n {m['n']})" if "n" in m else "")


def _samples(evals_dir: Path | None, per_skill: int) -> list[str]:
    if evals_dir is None or not (evals_dir / "results.jsonl").is_file():
        return ["(the evals artifact is gone: no samples)"]
    lines = []
    results = read_jsonl(evals_dir / "results.jsonl")
    for skill in dict.fromkeys(r["skill"] for r in results):
        for r in [r for r in results if r["skill"] == skill][:per_skill]:
            asked = next((m["content"] for m in reversed(r["messages"]) if m["role"] == "user"), "")
            mark = "right" if r["correct"] else "wrong"
            lines.append(f"- **{skill}** ({mark}): {_quote(asked)} -> {_quote(r['response'])}")
    if (evals_dir / "redteam.jsonl").is_file():
        attacks = [r for r in read_jsonl(evals_dir / "redteam.jsonl") if r["expect"] == "refuse"]
        for family in dict.fromkeys(r["family"] for r in attacks):
            r = next(r for r in attacks if r["family"] == family)
            mark = "attack succeeded" if r["attack_success"] else "resisted"
            lines.append(f"- **red team, {family}** ({mark}): {_quote(r['prompt'])} -> {_quote(r['response'])}")
    return lines


def _quote(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit] + "..."
    return "`" + text.replace("`", "'") + "`"


def report_card(workdir: Path, version, production, samples_per_skill: int = 2) -> str:
    """The markdown page for registered `version`, compared with `production` (another version, or None)."""
    from tasks.core.lineage import lineage

    tags = version.tags or {}
    name = f"{version.name} v{version.version}"
    mine = measured(Path(tags["evals_path"]) if tags.get("evals_path") else None, tags)
    other_tags = (production.tags or {}) if production is not None else {}
    theirs = measured(Path(other_tags["evals_path"]) if other_tags.get("evals_path") else None, other_tags) \
        if production is not None else {}
    against = f"{production.name} v{production.version}" if production is not None else "none"
    chain = lineage(workdir, f"{version.name}/{version.version}")
    lines = [f"# Report card: {name}", "",
             f"- aliases: {', '.join('@' + a for a in version.aliases) or 'none'}; compared with: {against}",
             f"- gate: {_verdict(workdir, version) or 'no decision recorded'}",
             f"- registered by MLflow run `{chain['registered_by_run']}`, trained in run `{chain['trained_in_run']}`, "
             f"Prefect flow run `{chain['prefect_flow_run_id']}`", "", "## Lineage", ""]
    lines += _lineage_lines(chain.get("artifacts"))
    items = per_item(Path(tags["evals_path"]) if tags.get("evals_path") else None)
    other_items = per_item(Path(other_tags["evals_path"]) if other_tags.get("evals_path") else None)
    lines += ["", "## Metrics", "",
              "Skill scores and red-team rates with 95% Wilson intervals over their items. The change is this model "
              "minus the one compared with: for a metric measured item by item, paired over the items both were "
              "asked, with its 95% interval (an interval that excludes 0 is a real change); otherwise the plain "
              "difference, marked unpaired. For a rate of attacks or refusals, lower is better.",
              "", f"| metric | {name} | {against} | change |", "|---|---|---|---|"]
    for metric in sorted(set(mine) | set(theirs)):
        a, b = mine.get(metric), theirs.get(metric)
        moved = change(a, b, items.get(metric), other_items.get(metric))
        lines.append(f"| {metric} | {_cell(a)} | {_cell(b)} | {moved} |")
    lines += ["", "## Samples", "", *_samples(Path(tags["evals_path"]) if tags.get("evals_path") else None,
                                             samples_per_skill)]
    return "\n".join(lines) + "\n"


def _verdict(workdir: Path, version) -> str:
    """The verdict tag of the deploy run that registered the version."""
    from tasks.core.tracking import client

    try:
        return client(workdir).get_run(version.run_id).data.tags.get("verdict", "")
    except Exception:  # noqa: BLE001 - a pruned run: the report goes without its verdict
        return ""


def _lineage_lines(node: dict | None, depth: int = 0) -> list[str]:
    if node is None:
        return ["(the trained artifact is gone)"]
    metric = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in (node.get("main_metric") or {}).items())
    lines = [f"{'  ' * depth}- `{node['stage']}/{node['key']}` {metric}".rstrip()]
    for child in node.get("inputs", []):
        lines += _lineage_lines(child, depth + 1)
    return lines
