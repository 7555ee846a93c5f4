"""The pipeline DAG: every stage registered, in dependency order, and the closure of what a stage needs."""

from __future__ import annotations

from tasks import (  # noqa: F401  (importing a stage module registers it)
    collect_misbehaviors,
    crawl,
    deploy,
    eval_base,
    evals,
    finetune,
    ingest_labels,
    preprocess,
    pretrain,
    register_base,
    tokenize,
    train_tokenizer,
)
from tasks.core.stage import STAGES

YEARLY = ["crawl", "preprocess", "train_tokenizer", "tokenize", "pretrain", "eval_base", "register_base"]
WEEKLY = ["ingest_labels", "finetune", "evals", "deploy", "collect_misbehaviors"]
ORDER = YEARLY + WEEKLY
assert set(ORDER) == set(STAGES), "every registered stage has a place in the DAG"


def upstream(names: list[str]) -> list[str]:
    """`names` and everything they need, in run order."""
    needed: set[str] = set()

    def visit(name: str) -> None:
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r} (stages: {', '.join(ORDER)})")
        if name not in needed:
            needed.add(name)
            for dep in STAGES[name].inputs:
                visit(dep)

    for name in names:
        visit(name)
    return [n for n in ORDER if n in needed]


def downstream(name: str) -> list[str]:
    """Stages that (transitively) consume `name`, in run order."""
    found = {name}
    for n in ORDER:
        if any(dep in found for dep in STAGES[n].inputs):
            found.add(n)
    return [n for n in ORDER if n in found and n != name]
