"""Run directory: artifact paths, atomic writes, hashes, the manifest, stage skipping and a lock.

Layout: `<run_dir>/manifest.json`, `<run_dir>/recipe.resolved.yaml`, one folder per stage.
A stage writes into a hidden staging folder that replaces its folder only once the stage
has succeeded, and the manifest is written last, so a killed stage never leaves an
artifact that looks valid.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from cann_distill.errors import ArtifactError, MissingInputError, StageError

MANIFEST = "manifest.json"
RESOLVED = "recipe.resolved.yaml"
MANIFEST_VERSION = 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; rename it over `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@dataclass
class StageRecord:
    """What the manifest remembers about one finished stage."""

    fingerprint: str
    inputs: dict[str, Any]
    outputs: dict[str, str]  # path relative to run dir -> sha256
    started: float
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("cann-distill", "torch", "timm", "onnx", "onnxruntime", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class RunDir:
    """Paths and bookkeeping for one run directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._hashes: dict[tuple[str, int, int], str] = {}

    def file_hash(self, path: Path) -> str:
        """sha256 of an artifact, computed once per file version for the life of this object.

        Checking whether stages are up to date walks the upstream chain again for every
        downstream stage; without this each walk would re-read every checkpoint.
        """
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    # ----------------------------------------------------------------- paths
    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    # ----------------------------------------------------------------- manifest
    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"version": MANIFEST_VERSION, "stages": {}}
        try:
            data = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{self.manifest_path}: corrupt manifest ({exc.msg}); delete it or rerun with --force") from None
        if not isinstance(data, dict) or "stages" not in data:
            raise ArtifactError(f"{self.manifest_path}: not a cann-distill manifest")
        return data

    def record(self, stage: str) -> Optional[StageRecord]:
        entry = self.read_manifest()["stages"].get(stage)
        return StageRecord(**entry) if entry else None

    def write_record(self, stage: str, rec: StageRecord) -> None:
        manifest = self.read_manifest()
        manifest["stages"][stage] = rec.__dict__
        write_json_atomic(self.manifest_path, manifest)

    def forget(self, stage: str) -> None:
        manifest = self.read_manifest()
        if manifest["stages"].pop(stage, None) is not None:
            write_json_atomic(self.manifest_path, manifest)

    def outputs_intact(self, rec: StageRecord) -> bool:
        """True when every recorded output exists and still has its recorded hash."""
        for rel, digest in rec.outputs.items():
            p = self.path(rel)
            if not p.is_file() or self.file_hash(p) != digest:
                return False
        return True

    def require(self, stage: str, rel: str, needed_by: str) -> tuple[Path, str]:
        """Path and hash of an artifact another stage produced; say which stage to run if missing."""
        rec = self.record(stage)
        if rec is None or rel not in rec.outputs:
            raise MissingInputError(f"{needed_by} needs {rel}, which the '{stage}' stage writes: run `cann-distill {stage}` first")
        p = self.path(rel)
        if not p.is_file():
            raise MissingInputError(f"{needed_by} needs {p}, which is missing: rerun `cann-distill {stage} --force`")
        digest = self.file_hash(p)
        if digest != rec.outputs[rel]:
            raise ArtifactError(f"{p}: hash does not match the manifest (modified or corrupt): rerun `cann-distill {stage} --force`")
        return p, digest

    # ----------------------------------------------------------------- staging
    @contextlib.contextmanager
    def staging(self, stage: str) -> Iterator[Path]:
        """A fresh folder to write a stage's outputs into; it replaces the stage folder on success."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stage}.", suffix=".staging", dir=self.root))
        try:
            yield tmp
            final = self.stage_dir(stage)
            old = None
            if final.exists():
                old = self.root / f".{stage}.{os.getpid()}.old"
                if old.exists():
                    shutil.rmtree(old)
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def clean_stale_staging(self) -> None:
        for p in self.root.glob(".*.staging"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".*.old"):
            shutil.rmtree(p, ignore_errors=True)

    # ----------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per run dir: a second concurrent command fails fast instead of corrupting it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StageError(f"{self.root} is in use by another cann-distill process") from None
            try:
                self.clean_stale_staging()
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def write_resolved_recipe(self, recipe_dict: dict[str, Any]) -> None:
        write_text_atomic(self.root / RESOLVED, yaml.safe_dump(recipe_dict, sort_keys=False))
