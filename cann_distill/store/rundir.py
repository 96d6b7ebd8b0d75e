"""Run directory: artifact paths, atomic writes, hashes, the manifest, stage skipping and a lock.

Layout: `<run_dir>/manifest.json`, `<run_dir>/recipe.resolved.yaml`, one folder per stage.
A stage writes into a hidden staging folder that replaces its folder only once the stage
has succeeded, and the manifest is written last, so a killed stage never leaves an
artifact that looks valid.

Each stage's record is also kept on its own in `<run_dir>/.records/<stage>.json` (written
after the folder swap, before the manifest; removed with the manifest entry). When the
manifest is damaged or foreign, those records, checked against the artifacts' hashes, are
what `--force` rebuilds it from (see `verified_records`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Optional, Sequence

import yaml

from cann_distill.core.errors import ArtifactError, MissingInputError, StageError
from cann_distill.core.files import sha256_file, write_json_atomic, write_text_atomic

STAGE_ORDER = ("teacher", "select", "distill", "baseline", "validate", "report")  # the stage folders of a run dir
MANIFEST = "manifest.json"
RESOLVED = "recipe.resolved.yaml"
RECORDS = ".records"
MANIFEST_VERSION = 1


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


_RECORD_TYPES = {
    "fingerprint": str,
    "inputs": dict,
    "outputs": dict,
    "started": (int, float),
    "seconds": (int, float),
    "versions": dict,
    "summary": dict,
}


def parse_record(entry: Any) -> Optional[StageRecord]:
    """A StageRecord from its JSON form, None when anything is missing or of the wrong type."""
    if not isinstance(entry, dict):
        return None
    names = [f.name for f in fields(StageRecord)]
    if any(not isinstance(entry.get(n), _RECORD_TYPES[n]) for n in names if n in entry or n not in ("versions", "summary")):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in entry["outputs"].items()):
        return None
    return StageRecord(**{n: entry[n] for n in names if n in entry})


def manifest_problem(text: str) -> Optional[str]:
    """Why `text` is not a manifest this version reads (None when it is)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"is unreadable ({exc.msg}: line {exc.lineno} column {exc.colno})"
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        what = f"a JSON {type(data).__name__}" if not isinstance(data, dict) else "no stages"
        return f"is not a cann-distill manifest ({what.replace('dict', 'object').replace('list', 'array')})"
    if data.get("version") != MANIFEST_VERSION:
        return f"has manifest version {str(data.get('version'))[:20]}, this cann-distill reads {MANIFEST_VERSION}"
    bad = [name for name, entry in data["stages"].items() if parse_record(entry) is None]
    if bad:
        return f"is damaged (the record of {', '.join(str(b)[:40] for b in bad[:3])} is malformed)"
    return None


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


_NO_RECORD = StageRecord("", {}, {}, 0.0, 0.0)


class RunDir:
    """Paths and bookkeeping for one run directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._provisional: Optional[dict[str, Any]] = None  # a manifest considered, not yet written

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

    def record_path(self, stage: str) -> Path:
        return self.root / RECORDS / f"{stage}.json"

    # ----------------------------------------------------------------- manifest
    def manifest_problem(self) -> Optional[str]:
        """Why the manifest cannot be used (unreadable, foreign, damaged); None when it can or is absent."""
        if self._provisional is not None or not self.manifest_path.exists():
            return None
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return f"is unreadable ({getattr(exc, 'strerror', None) or type(exc).__name__})"
        return manifest_problem(text)

    def read_manifest(self) -> dict[str, Any]:
        if self._provisional is not None:
            return json.loads(json.dumps(self._provisional))
        if not self.manifest_path.exists():
            return {"version": MANIFEST_VERSION, "stages": {}}
        problem = self.manifest_problem()
        if problem:
            raise ArtifactError(
                f"{self.manifest_path} {problem}; rerun the command with --force to rebuild it from "
                "the stages' verified artifacts (it is moved aside, never deleted)"
            )
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def record(self, stage: str) -> Optional[StageRecord]:
        entry = self.read_manifest()["stages"].get(stage)
        return StageRecord(**entry) if entry else None

    def write_record(self, stage: str, rec: StageRecord) -> None:
        manifest = self.read_manifest()
        write_json_atomic(self.record_path(stage), {"stage": stage, "manifest_version": MANIFEST_VERSION, **rec.__dict__})
        manifest["stages"][stage] = rec.__dict__
        write_json_atomic(self.manifest_path, manifest)

    def forget(self, stage: str) -> None:
        manifest = self.read_manifest()
        self.record_path(stage).unlink(missing_ok=True)
        if manifest["stages"].pop(stage, None) is not None:
            write_json_atomic(self.manifest_path, manifest)

    # ----------------------------------------------------------------- recovery
    def verified_records(self, order: Sequence[str]) -> dict[str, StageRecord]:
        """Records from `.records/` that still vouch for their stage, in `order`.

        A record counts when it parses, lists only files inside its own stage folder, every one
        of them has its recorded hash, and the upstream artifacts it was made from are the ones
        the (verified) upstream records list.
        """
        kept: dict[str, StageRecord] = {}
        for stage in order:
            try:
                entry = json.loads(self.record_path(stage).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            rec = parse_record(
                {k: v for k, v in entry.items() if k not in ("stage", "manifest_version")}
                if isinstance(entry, dict) and entry.get("stage") == stage
                else None
            )
            if rec is None or not rec.outputs:
                continue
            inside = all(PurePosixPath(rel).parts[0] == stage and ".." not in PurePosixPath(rel).parts for rel in rec.outputs)
            upstream = rec.inputs.get("artifacts", {})
            consistent = isinstance(upstream, dict) and all(
                isinstance(rel, str) and kept.get(rel.split("/", 1)[0], _NO_RECORD).outputs.get(rel) == digest
                for rel, digest in upstream.items()
            )
            if inside and consistent and self.outputs_intact(rec):
                kept[stage] = rec
        return kept

    @contextlib.contextmanager
    def provisional(self, records: dict[str, StageRecord]) -> Iterator[None]:
        """Within this block the manifest reads as if it held just `records` (nothing is written)."""
        self._provisional = {"version": MANIFEST_VERSION, "stages": {k: r.__dict__ for k, r in records.items()}}
        try:
            yield
        finally:
            self._provisional = None

    def rebuild_manifest(self, records: dict[str, StageRecord]) -> Path:
        """Move the manifest aside (never delete it) and write one holding `records`; returns where it went."""
        aside = self.root / f"{MANIFEST}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{MANIFEST}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        os.replace(self.manifest_path, aside)
        write_json_atomic(self.manifest_path, {"version": MANIFEST_VERSION, "stages": {k: r.__dict__ for k, r in records.items()}})
        return aside

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

    def adopt(self, other: "RunDir", stage: str) -> bool:
        """Take `other`'s finished `stage`: its files (hard-linked, copied where a link is refused) and its record, so
        a run dir made for a variant of a recipe (a tune trial) starts from the same upstream stages. Nothing happens
        when `other` has no intact record of it or this run dir already holds the same outputs; False then."""
        rec = other.record(stage)
        mine = self.record(stage)
        if rec is None or not other.outputs_intact(rec) or (mine is not None and mine.outputs == rec.outputs and self.outputs_intact(mine)):
            return False
        with self.staging(stage) as out:
            for rel in rec.outputs:
                target = out / PurePosixPath(rel).relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(other.path(rel), target)
                except OSError:
                    shutil.copy2(other.path(rel), target)
            self.forget(stage)
        self.write_record(stage, rec)
        return True

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
        """What a killed command leaves behind: staging folders, swapped-out folders, half-written files."""
        for p in self.root.glob(".*.staging"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".*.old"):
            shutil.rmtree(p, ignore_errors=True)
        for p in [*self.root.glob(".*.tmp"), *(self.root / RECORDS).glob(".*.tmp")]:
            p.unlink(missing_ok=True)

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
