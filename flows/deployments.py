"""prefect.yaml, written from the stage registry (`factory deployments --write`): the cycles on their schedules and one
deployment per stage, each named for what it runs, so the UI's deployment list (sorted by name) reads as the cycles
first and then `rerun-<stage>` for each stage. A test checks that the committed file is what this writes."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core import registry

ROOT = Path(__file__).resolve().parents[1]
CYCLES = [  # (deployment, entrypoint, description, cron)
    ("cycle-yearly", "flows/cycles.py:yearly_cycle", "yearly", "0 0 1 1 *"),
    ("cycle-weekly", "flows/cycles.py:weekly_cycle", "weekly", "0 0 * * 1"),
    ("cycle-all", "flows/cycles.py:pipeline", None, None),
]
ON_DEMAND = [  # (deployment, entrypoint, description): flows besides the cycles and stages
    ("scaling-sweep", "flows/scaling.py:scaling_sweep",
     "Scaling-law sweep over the yearly token shards: pretrain depths x token budgets (each a cached pretrain "
     "artifact), fit L(N, D) with intervals and the IsoFLOP minima, and check a forecast by training it"),
]

HEADER = """\
# Written by `factory deployments --write` from the stage registry (tasks/): edit the stage modules, not this file.
# Prefect deployments: both cycles on cron schedules, both together on demand, and every stage on its own
# (`stage-<name>/rerun-<name>`, with that stage's settings as a typed form), on the `local` process pool.
#   prefect work-pool create local --type process
#   prefect --no-prompt deploy --all
#   prefect worker start --pool local        (from this directory)
name: llm-factory
prefect-version: 3.8.0

# Flow runs start in the directory the worker was started from (the repository root).
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{ $PWD }}"

definitions:
  work_pool: &local
    name: local
    work_queue_name: default
  params: &params
    preset: tiny
    workdir: ./work

deployments:
"""


def _cycle_description(cycle: str | None) -> str:
    if cycle is None:
        return "Both cycles, yearly then weekly (no schedule: run on demand)"
    stages = registry.cycle(cycle)
    return f"{cycle.capitalize()} cycle: {' -> '.join(stages)}"


def render() -> str:
    """The text of prefect.yaml for the stages registered now."""
    lines = [HEADER.rstrip("\n")]
    for name, entrypoint, cycle, cron in CYCLES:
        lines += [f"  - name: {name}", f"    entrypoint: {entrypoint}",
                  f"    description: {json.dumps(_cycle_description(cycle))}", "    parameters: *params"]
        if cron:
            lines += ["    schedules:", f"      - cron: {json.dumps(cron)}", "        timezone: UTC"]
        lines.append("    work_pool: *local")
    for name, spec in registry.stages().items():
        what = spec.description or f"the {name} stage"
        description = f"Rerun {name} ({what.rstrip('.')}) from a form of its settings (empty: the preset's), " \
                      "then what follows"
        lines += [f"  - name: rerun-{name}", f"    entrypoint: flows/stages.py:{name}",
                  f"    description: {json.dumps(description)}", "    parameters: *params", "    work_pool: *local"]
    for name, entrypoint, description in ON_DEMAND:
        lines += [f"  - name: {name}", f"    entrypoint: {entrypoint}", f"    description: {json.dumps(description)}",
                  "    parameters: *params", "    work_pool: *local"]
    return "\n".join(lines) + "\n"


def write(path: Path = ROOT / "prefect.yaml") -> bool:
    """Write prefect.yaml if it differs; True when it changed."""
    from model.files import atomic_write_text

    text = render()
    if path.exists() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True
