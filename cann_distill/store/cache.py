"""Teacher-output cache shared by run dirs: outputs are computed once per teacher weights + data.

An entry is `<cache_dir>/teacher_outputs/<key>.npy` (read with `allow_pickle=False`) plus
`<key>.json`, a sidecar holding the key, the .npy's sha256, shape, dtype and `produced_by`:
what the outputs were computed from (teacher arch and weights fingerprint, data fingerprint,
sample ids, preprocessing, code version). The key is the hash of `produced_by`, never of the
run dir, so two recipes that share a teacher and a dataset share the entry. An entry whose
sidecar is missing, disagrees with the file, or was produced from anything else than what this
run expects (an entry of another teacher copied over this one) is reported and recomputed,
never used silently. A hash and a provenance are only as honest as whoever wrote the sidecar:
where the caller can recompute a few rows cheaply (`spot_check`, teacher logits), a hit is also
checked against them, so content replaced under a re-hashed sidecar is caught too.
`<cache_dir>/weights/<checkpoint sha256>.txt` memoises the weights fingerprint of a checkpoint
file, so a warm lookup does not load and hash the teacher's weights again.
Under torchrun rank 0 alone reads and writes an entry (`shared`); the other ranks get its array and
write nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np

from cann_distill.core.errors import preview
from cann_distill.core.files import atomic_path, sha256_file, write_json_atomic
from cann_distill.core.version import __version__
from cann_distill.runtime import distributed
from cann_distill.runtime.terminal import ui

CACHE_VERSION = 2  # 2: sidecars record and are checked for what produced the entry
CacheStatus = Literal["hit", "miss", "invalid"]
SPOT_ROWS = 8  # rows a spot check recomputes
SpotCheck = Callable[[Sequence[int]], np.ndarray]  # rows -> freshly computed outputs for them


def produced_by(parts: dict[str, Any]) -> dict[str, Any]:
    """What an entry records about its origin: the caller's parts plus the code that computed it (as JSON)."""
    return json.loads(json.dumps({**parts, "code": {"cache_version": CACHE_VERSION, "cann_distill": __version__}}, sort_keys=True))


def cache_key(parts: dict[str, Any]) -> str:
    payload = json.dumps(produced_by(parts), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _origin_mismatch(recorded: Any, expected: dict[str, Any]) -> Optional[str]:
    if not isinstance(recorded, dict):
        return "records no origin (written by an older cann-distill)"
    differ = [k for k in sorted(set(recorded) | set(expected)) if recorded.get(k) != expected.get(k)]
    if not differ:
        return None
    first = differ[0]
    return (
        f"was produced with different {', '.join(differ)} "
        f"({first}: {preview(recorded.get(first), 20)}, this run: {preview(expected.get(first), 20)})"
    )


def read_sidecar(side: Path, key: str, missing: str = "is missing") -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """(sidecar, None) when it is JSON for `key`; (None, why) otherwise. Shared by every cache kind."""
    try:
        meta = json.loads(side.read_text())
    except FileNotFoundError:
        return None, f"{side} {missing}"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, f"{side} is not valid JSON"
    if not isinstance(meta, dict) or meta.get("key") != key:
        return None, f"{side} names another key"
    return meta, None


class KeyedEntries:
    """A folder of entries keyed by what produced them: `<key><suffix>` (a file or a folder) and the
    sidecar `<key>.json` that vouches for it. The shared caches are thin users (teacher outputs here,
    replay draws, finished baselines, fit-student measurements); each checks what its payload needs."""

    def __init__(self, root: Path, kind: str, suffix: str = "") -> None:
        self.root = Path(root)
        self.dir = self.root / kind
        self.suffix = suffix

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.dir / f"{key}{self.suffix}", self.dir / f"{key}.json"

    def absent(self, key: str) -> bool:
        payload, side = self.paths(key)
        return not payload.exists() and not side.exists()

    def sidecar(
        self, key: str, parts: Optional[dict[str, Any]] = None, missing: str = "is missing"
    ) -> tuple[Optional[dict[str, Any]], Optional[str]]:
        """(sidecar, None) when it is JSON for `key` and, given `parts`, records them as its origin; (None, why) otherwise."""
        payload, side = self.paths(key)
        meta, problem = read_sidecar(side, key, missing)
        if meta is None or parts is None:
            return meta, problem
        mismatch = _origin_mismatch(meta.get("produced_by"), produced_by(parts))
        return (None, f"{payload} {mismatch}") if mismatch else (meta, None)

    def write_sidecar(self, key: str, fields: dict[str, Any]) -> None:
        """Written last, atomically: an entry without it is absent or unusable, never half-trusted."""
        write_json_atomic(self.paths(key)[1], {"key": key, **fields})


class OutputCache(KeyedEntries):
    """One folder of keyed .npy entries with verifying sidecars."""

    def __init__(self, root: Path, kind: str = "teacher_outputs") -> None:
        super().__init__(root, kind, ".npy")

    def load(self, parts: dict[str, Any], shape: tuple[int, ...]) -> tuple[Optional[np.ndarray], Optional[str]]:
        """(array, None) on a verified hit; (None, None) when absent; (None, why) when unusable."""
        key = cache_key(parts)
        npy, _ = self.paths(key)
        if self.absent(key):
            return None, None
        if not npy.is_file():
            return None, f"{npy} is missing (its sidecar is there)"
        meta, problem = self.sidecar(key, parts)
        if meta is None:
            return None, problem
        if sha256_file(npy) != meta.get("sha256"):
            return None, f"{npy}: sha256 does not match its sidecar (modified or corrupt)"
        if tuple(meta.get("shape") or ()) != tuple(shape):
            return None, f"{npy}: shape {tuple(meta.get('shape') or ())} recorded, {tuple(shape)} expected"
        try:
            arr = np.load(npy, allow_pickle=False)
        except (ValueError, OSError) as exc:
            return None, f"{npy}: unreadable ({str(exc).splitlines()[0][:120]})"
        if arr.shape != tuple(shape) or arr.dtype.str != meta.get("dtype"):
            return None, f"{npy}: holds {arr.dtype} {arr.shape}, sidecar says {meta.get('dtype')} {tuple(shape)}"
        return arr, None

    def store(self, parts: dict[str, Any], arr: np.ndarray) -> None:
        """Write the .npy then its sidecar, each atomically; a half-written entry fails the hash check.
        Under torchrun only rank 0 writes (a no-op elsewhere)."""
        if not distributed.is_main():
            return
        key = cache_key(parts)
        npy, _ = self.paths(key)
        with atomic_path(npy) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
        self.write_sidecar(
            key, {"sha256": sha256_file(npy), "shape": list(arr.shape), "dtype": arr.dtype.str, "produced_by": produced_by(parts)}
        )

    def get_or_compute(
        self,
        parts: dict[str, Any],
        shape: tuple[int, ...],
        compute: Callable[[], np.ndarray],
        spot_check: Optional[SpotCheck] = None,
    ) -> tuple[np.ndarray, CacheStatus]:
        """The array cached for `parts` (what it is computed from), or `compute()` stored under them.

        `spot_check(rows)` recomputes a few rows; a hit that disagrees with them is not used.
        Status says which happened.
        """
        arr, problem = self.load(parts, shape)
        if arr is not None and spot_check is not None:
            problem = _spot_check(arr, spot_check)
            if problem:
                arr, problem = None, f"{self.paths(cache_key(parts))[0]} {problem}"
        if arr is not None:
            return arr, "hit"
        if problem:
            ui.warn(f"teacher-output cache: {problem}; recomputing")
        arr = compute()
        if arr.shape != tuple(shape):
            raise ValueError(f"computed outputs have shape {arr.shape}, expected {tuple(shape)}")
        try:
            self.store(parts, arr)
        except OSError as exc:  # a read-only or full cache must not fail the stage
            ui.warn(f"teacher-output cache: could not write {self.dir} ({exc.strerror or exc}); continuing without it")
        return arr, "invalid" if problem else "miss"

    def shared(
        self,
        parts: dict[str, Any],
        shape: tuple[int, ...],
        compute: Callable[[], np.ndarray],
        spot_check: Optional[SpotCheck] = None,
    ) -> tuple[np.ndarray, CacheStatus]:
        """`get_or_compute` for every rank of a torchrun job: rank 0 alone reads and writes the entry; on a miss
        every rank runs `compute` (which may be a sharded pass that gives every rank the whole array), on a hit
        rank 0 sends its array, so every rank holds the same one. One process: `get_or_compute`."""
        return distributed.follow_cache(lambda fill: self.get_or_compute(parts, shape, fill, spot_check), compute)


def _spot_check(arr: np.ndarray, recompute: SpotCheck) -> Optional[str]:
    """None when freshly computed rows match the cached ones.

    The rows are drawn from OS entropy, so whoever writes a cache entry cannot know which rows
    to leave honest; an entry with a few altered rows may still pass (8 rows are a sample).
    """
    n = arr.shape[0]
    rows = sorted(np.random.default_rng().choice(n, size=min(SPOT_ROWS, n), replace=False).tolist())
    fresh = np.asarray(recompute(rows), dtype=np.float64)
    cached = arr[rows].astype(np.float64)
    diff = float(np.max(np.abs(fresh - cached))) if fresh.shape == cached.shape else math.inf
    # loose enough for another device or kernel (TF32, batch size), far below another teacher's difference
    if not diff <= 1e-2 * (1.0 + float(np.max(np.abs(fresh), initial=0.0))):
        return f"does not match the teacher on {len(rows)} spot-checked samples (max difference {diff:.3g}; replaced content?)"
    return None
