"""Content-keyed stage artifacts: `<root>/<stage>/<key>/` with `manifest.json` written last.

The key hashes the stage name, its code (tasks/core/code.py), its config sections and the build ids of its inputs,
so a rebuilt input (`--force`) gives every downstream stage a new key, while an unchanged rerun finds every artifact
again.
No manifest means incomplete: such a directory is never reused.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from model.files import atomic_write_json

MANIFEST = "manifest.json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def stage_key(stage: str, code: str, config: dict, inputs: dict[str, str]) -> str:
    """Short content hash of everything that determines a stage's output."""
    blob = json.dumps({"stage": stage, "code": code, "config": config, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Artifact:
    """A complete stage output: where it is and what its manifest says."""

    stage: str
    key: str
    path: Path
    manifest: dict = field(default_factory=dict)

    @property
    def build_id(self) -> str:
        return self.manifest["build_id"]

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})

    @property
    def counts(self) -> dict:
        return self.manifest.get("counts", {})

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)


class ArtifactStore:
    """A local artifact root (fsspec URLs are future work; see README)."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def load(self, stage: str, key: str) -> Artifact | None:
        """The complete artifact for this key, or None (missing or incomplete)."""
        path = self.path(stage, key)
        manifest = path / MANIFEST
        if not manifest.is_file():
            return None
        return Artifact(stage, key, path, json.loads(manifest.read_text()))

    def state(self, stage: str, key: str) -> str:
        path = self.path(stage, key)
        if (path / MANIFEST).is_file():
            return "done"
        return "incomplete" if path.exists() else "missing"

    def prepare(self, stage: str, key: str, keep_partial: bool) -> Path:
        """An empty (or, for resumable stages, partially built) directory to build into."""
        path = self.path(stage, key)
        (path / MANIFEST).unlink(missing_ok=True)
        if path.exists() and not keep_partial:
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, stage: str, key: str, manifest: dict) -> Artifact:
        """Write the manifest last: from this moment the artifact is complete and reusable."""
        path = self.path(stage, key)
        manifest = {
            "stage": stage,
            "key": key,
            "build_id": uuid.uuid4().hex[:12],
            "created": now_iso(),
            "versions": versions(),
            **manifest,
        }
        atomic_write_json(path / MANIFEST, manifest)
        return Artifact(stage, key, path, manifest)

    def list_keys(self, stage: str) -> list[str]:
        folder = self.root / stage
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("llm-factory", "tokenizers", "prefect", "mlflow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
