"""Storage of replayed teacher targets: K labelled views per sample, memory-mapped from the shared cache.

An entry is a folder `<cache_dir>/teacher_replay/<key>/` with `values.npy` (float16 [K, N, k], the
teacher's top-k log-probabilities of view d of sample i) and `indices.npy` (int16/int32 [K, N, k], their
classes), plus the sidecar `<key>.json` next to it (key, sha256, shape, dtypes). Both arrays are
written into a temporary folder, renamed into place when complete, and the sidecar is written last:
an interrupted or failed write leaves no entry, and an entry without a matching sidecar is reported
and recomputed, never used. The size is estimated before anything is written; a disk too small for
it stops with the numbers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from cann_distill.core.errors import StageError
from cann_distill.core.files import sha256_file
from cann_distill.runtime.terminal import ui
from cann_distill.store.cache import CacheStatus, KeyedEntries

FILES = ("values.npy", "indices.npy")


@dataclass
class ReplayDraws:
    """Top-k teacher log-probabilities per (draw, sample), memory-mapped read-only."""

    key: str
    values: np.ndarray  # float16 [K, N, k]
    indices: np.ndarray  # int16 / int32 [K, N, k]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)  # type: ignore[return-value]


def index_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.int16) if num_classes <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def replay_bytes(shape: tuple[int, int, int], num_classes: int) -> int:
    """Bytes of one entry: fp16 values + class indices, plus the two .npy headers."""
    n = int(np.prod(shape))
    return n * (2 + index_dtype(num_classes).itemsize) + 2 * 4096


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class ReplayStore(KeyedEntries):
    """The `teacher_replay` folder of the shared cache: an entry is a folder of two .npy files."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "teacher_replay")

    def open(
        self, key: str, shape: tuple[int, int, int], num_classes: int, verify: bool = True
    ) -> tuple[Optional[ReplayDraws], Optional[str]]:
        """(draws, None) for a complete entry; (None, None) when absent; (None, why) when unusable.

        `verify` re-hashes both files against the sidecar (select does; distill, which starts from the
        entry select verified, checks the sidecar, shapes and dtypes only).
        """
        folder, side = self.paths(key)
        if self.absent(key):
            return None, None
        meta, problem = self.sidecar(key, missing="is missing (an interrupted write?)")
        if meta is None:
            return None, problem
        if tuple(meta.get("shape") or ()) != tuple(shape):
            return None, f"{side}: shape {tuple(meta.get('shape') or ())} recorded, {tuple(shape)} expected"
        arrays = []
        for name, dtype in zip(FILES, (np.dtype(np.float16), index_dtype(num_classes))):
            path = folder / name
            if not path.is_file():
                return None, f"{path} is missing"
            if verify and sha256_file(path) != (meta.get("sha256") or {}).get(name):
                return None, f"{path}: sha256 does not match its sidecar (modified or corrupt)"
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as exc:
                return None, f"{path}: unreadable ({str(exc).splitlines()[0][:120]})"
            if arr.shape != tuple(shape) or arr.dtype != dtype:
                return None, f"{path}: holds {arr.dtype} {arr.shape}, expected {dtype} {tuple(shape)}"
            arrays.append(arr)
        return ReplayDraws(key, arrays[0], arrays[1]), None

    def check_space(self, shape: tuple[int, int, int], num_classes: int) -> None:
        """Stop before writing when the entry cannot fit on the cache's disk."""
        need = replay_bytes(shape, num_classes)
        self.dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.dir).free
        if need > free:
            k, n, top = shape
            raise StageError(
                f"replay draws need {_human(need)} ({k} draws × {n} samples × top-{top}, fp16 + class index) in "
                f"{self.dir}, but only {_human(free)} are free; lower distill.replay.draws or distill.replay.top_k, "
                "or set select.cache_dir to a larger disk"
            )

    def create(
        self,
        key: str,
        shape: tuple[int, int, int],
        num_classes: int,
        fill: Callable[[np.ndarray, np.ndarray], None],
        info: Optional[dict[str, Any]] = None,
    ) -> ReplayDraws:
        """Write an entry: `fill(values, indices)` writes the writable memory maps; rename and sidecar come last."""
        self.check_space(shape, num_classes)
        folder, side = self.paths(key)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=self.dir))
        try:
            values = np.lib.format.open_memmap(tmp / FILES[0], mode="w+", dtype=np.float16, shape=shape)
            indices = np.lib.format.open_memmap(tmp / FILES[1], mode="w+", dtype=index_dtype(num_classes), shape=shape)
            fill(values, indices)
            values.flush()
            indices.flush()
            del values, indices
            sha = {name: sha256_file(tmp / name) for name in FILES}
            side.unlink(missing_ok=True)  # an old, unusable entry stops vouching for the folder first
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
            self.write_sidecar(
                key,
                {
                    "sha256": sha,
                    "shape": list(shape),
                    "dtypes": {FILES[0]: "float16", FILES[1]: index_dtype(num_classes).name},
                    **(info or {}),
                },
            )
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        draws, problem = self.open(key, shape, num_classes, verify=False)
        if draws is None:
            raise StageError(f"replay draws: {problem}")
        return draws

    def get_or_compute(
        self,
        key: str,
        shape: tuple[int, int, int],
        num_classes: int,
        fill: Callable[[np.ndarray, np.ndarray], None],
        info: Optional[dict[str, Any]] = None,
    ) -> tuple[ReplayDraws, CacheStatus]:
        """The verified entry for `key`, or a new one written by `fill`; status says which."""
        draws, problem = self.open(key, shape, num_classes)
        if draws is not None:
            return draws, "hit"
        if problem:
            ui.warn(f"replay cache: {problem}; recomputing")
        return self.create(key, shape, num_classes, fill, info), "invalid" if problem else "miss"
