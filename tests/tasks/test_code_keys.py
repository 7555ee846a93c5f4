"""A stage's key follows its code: editing a module a stage uses rebuilds that stage (and, through input keys, what
follows), and nothing else."""

import shutil
import subprocess
import sys
from pathlib import Path

from tasks.core.code import module_files
from tasks.core.registry import stages

ROOT = Path(__file__).resolve().parents[2]
HASHES = "from tasks.core.code import code_hash; print(*(code_hash(f'tasks.{{n}}') for n in {names!r}))"


def hashes(root: Path, names: list[str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", HASHES.format(names=names)], cwd=root, env={"PYTHONPATH": str(root)},
                         capture_output=True, text=True, check=True).stdout.split()
    return dict(zip(names, out, strict=True))


def test_editing_a_filter_changes_the_code_of_preprocess_only(tmp_path):
    for package in ("data", "model", "tasks"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    names = ["crawl", "preprocess", "pretrain", "deploy", "evals"]
    before = hashes(tmp_path, names)
    with open(tmp_path / "data" / "cleaning" / "filters.py", "a") as f:
        f.write("\n# a changed threshold\n")
    after = hashes(tmp_path, names)
    assert [n for n in names if before[n] != after[n]] == ["preprocess"]


def test_every_stage_hashes_its_own_module_and_the_project_code_it_imports():
    for name, spec in stages().items():
        files = module_files(spec.module)
        assert spec.module in files, name
    assert "data.cleaning.filters" in module_files("tasks.preprocess")
    assert "model.trainer" in module_files("tasks.pretrain")
    assert "model.jobs" in module_files("tasks.pretrain")  # the builder the ranks import by name
    # the machinery that stores and tracks artifacts is not code a stage's output depends on
    assert "tasks.core.tracking" not in module_files("tasks.deploy")
