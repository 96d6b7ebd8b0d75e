"""`data.unlabeled`: a folder of images without labels joined to the training split for distillation.

The unlabelled images follow the labelled ones in the training split (ids `unlabeled/<path>`, label -1), decoded
and transformed like them, bad files handled by `data.on_bad_image`. Before any work the folder must hold at
least one image and no image of val or test: an unlabelled copy of a held-out image would let the student
learn the held-out set from the teacher (leakage). The check compares contents: file bytes (sha256) against an
image folder's val/test files, decoded pixels against in-memory val/test images (digits, photos). File hashes are
memoised per folder in the cache dir by (size, mtime), like the bad-image check.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from cann_distill.core.errors import RecipeError
from cann_distill.core.files import sha256_file, write_text_atomic
from cann_distill.core.recipe import DataConfig
from cann_distill.data.images import BadImageError, FileEntry, open_image, scan_tree
from cann_distill.data.transforms import pil_mode

PREFIX = "unlabeled/"
UNLABELED = -1  # the label of an unlabelled training image


class JoinedImages:
    """Images 0..n-1 from `first`, n.. from `second` (picklable for DataLoader workers)."""

    def __init__(self, first: Callable[[int], Any], n: int, second: Callable[[int], Any]) -> None:
        self.first, self.n, self.second = first, n, second

    def __call__(self, i: int) -> Any:
        return self.first(i) if i < self.n else self.second(i - self.n)


def labelled_count(targets: np.ndarray) -> int:
    return int((np.asarray(targets) >= 0).sum())


def join(train: Any, images: Callable[[int], Any], rels: list[str], skipped: dict[str, str]) -> Any:
    """The training split with the unlabelled images appended (label -1)."""
    n = len(train)
    return replace(
        train,
        ids=train.ids + [PREFIX + rel for rel in rels],
        targets=np.concatenate([train.targets, np.full(len(rels), UNLABELED, dtype=np.int64)]),
        images=JoinedImages(train.images, n, images),
        skipped={**train.skipped, **{PREFIX + rel: why for rel, why in skipped.items()}},
    )


def image_entries(folder: Path) -> list[FileEntry]:
    """The image files of the unlabelled folder (by extension; other files are not images and are left alone)."""
    if not folder.is_dir():
        raise RecipeError(f"data.unlabeled: folder not found: {folder}")
    return scan_tree(folder)


# ----------------------------------------------------------------------------- checks before any work


def input_errors(cfg: DataConfig, held_out: Callable[[], list[tuple[str, str]]], cache_dir: Optional[Path]) -> list[str]:
    """An empty folder, and unlabelled images that are also held-out ones; `held_out()` lists (name, content hash)
    of the val/test images in the form `content_key` gives for this data source."""
    if cfg.unlabeled is None:
        return []
    folder = Path(cfg.unlabeled)
    entries = image_entries(folder)
    if not entries:
        return [f"data.unlabeled: no images in {folder} (.png/.jpg/.jpeg/.bmp/.gif/.webp/.tif/.tiff, any depth)"]
    seen = {key: name for name, key in held_out()}
    mine = content_keys(cfg, folder, entries, cache_dir)
    leaks = [(rel, seen[key]) for rel, key in mine.items() if key in seen]
    if not leaks:
        return []
    rel, other = leaks[0]
    more = f" (and {len(leaks) - 1} more)" if len(leaks) > 1 else ""
    return [
        f"data.unlabeled: {folder / rel} is the same image as {other}{more}: unlabelled images must not include val or test "
        "images (the student would learn the held-out set); remove them"
    ]


def content_keys(cfg: DataConfig, folder: Path, entries: list[FileEntry], cache_dir: Optional[Path]) -> dict[str, str]:
    """rel -> content key of each unlabelled image: its file's sha256 for an image folder dataset, the hash of its
    decoded pixels for in-memory sources (whose held-out images exist only as pixels). Unreadable files have none."""
    if cfg.source == "imagefolder":
        return file_hashes(folder, entries, cache_dir)
    keys = {}
    for e in entries:
        try:
            keys[e.rel] = pixel_key(np.asarray(open_image(folder / e.rel, pil_mode(cfg))))  # type: ignore[arg-type]
        except BadImageError:
            continue  # data.on_bad_image decides when the images are loaded
    return keys


def pixel_key(pixels: np.ndarray) -> str:
    h = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}".encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def file_hashes(root: Path, entries: list[FileEntry], cache_dir: Optional[Path]) -> dict[str, str]:
    """rel -> sha256 of each file, memoised in `cache_dir/content_hashes/` by (size, mtime_ns)."""
    memo_path = (
        cache_dir / "content_hashes" / f"{hashlib.sha256(os.fspath(root.resolve()).encode()).hexdigest()}.json" if cache_dir else None
    )
    memo: dict[str, Any] = {}
    if memo_path is not None:
        try:
            loaded = json.loads(memo_path.read_text())
            memo = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            memo = {}
    out, changed = {}, False
    for e in entries:
        rec = memo.get(e.rel)
        if isinstance(rec, list) and len(rec) == 3 and rec[0] == e.size and rec[1] == e.mtime_ns and isinstance(rec[2], str):
            out[e.rel] = rec[2]
            continue
        try:
            out[e.rel] = sha256_file(root / e.rel)
        except OSError:
            continue
        memo[e.rel], changed = [e.size, e.mtime_ns, out[e.rel]], True
    if memo_path is not None and changed:
        try:
            write_text_atomic(memo_path, json.dumps(memo))
        except OSError:
            pass  # an unwritable cache only costs hashing again
    return out
