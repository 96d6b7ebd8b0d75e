"""Image files of an ImageFolder dataset: list them fast, check them once, decode them correctly.

Why not `Image.open(p).convert(mode)`: PIL's `convert` clips 16-bit grayscale to 255 (a medical or
depth image becomes almost all white), ignores EXIF orientation, decodes a 10,000-px photo at full
size only to shrink it, and a damaged file raises mid-epoch. A 100k-file dataset also wants one fast
listing and one memoised validity pass before training starts, not a failure at hour three.

Conversion choices (see `open_image`):
- 16-bit grayscale keeps its high byte (65535 -> 255, 32768 -> 128, 256 -> 1), the same scaling
  Pillow applies to 48/64-bit RGB PNGs, which it decodes to 8-bit RGB(A) itself.
- Alpha is dropped, not composited: this is what timm's and torchvision's loaders
  (`img.convert("RGB")`) do, so a pretrained teacher sees the pixels it was trained on.
- `F` images: values within [0, 1] are scaled x255; any other range is min-max stretched to 0..255
  (a constant image outside [0, 1] becomes black).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import stat
import struct
import threading
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile
from PIL.PngImagePlugin import PngImageFile

from cann_distill.core.files import write_text_atomic

log = logging.getLogger(__name__)

IMAGE_EXTS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

# What Pillow raises for a file it cannot decode (its own fuzzing accepts exactly these kinds).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, Image.DecompressionBombError)
# Modes `_to_8bit` knows; anything else is reported instead of guessed at.
_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"})
# Failures to reach the file at all: reported as such, never as "not an image".
_UNREADABLE = (FileNotFoundError, PermissionError, IsADirectoryError)
_JPEG_EOI = b"\xff\xd9"
_JPEG_TAIL = 16  # bytes read from the end of a JPEG: EOI plus up to 14 bytes of zero padding
_PATH_CHARS = 90
_REASON_CHARS = 100
# Image.open is serialised only to make its decompression-bomb warning filter thread-safe
# (warnings.catch_warnings mutates process state); it reads headers only, so this costs little.
_OPEN_LOCK = threading.Lock()


def _clip(text: str, limit: int, keep_end: bool = False) -> str:
    """One line of at most `limit` characters, so a message never floods a log or a table."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :] if keep_end else text[: limit - 1] + "…"


class BadImageError(Exception):
    """An image that cannot be used; str() is one short line naming the file and why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(path, reason)  # both in args, so the error survives pickling (DataLoader workers)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{_clip(os.fspath(self.path), _PATH_CHARS, keep_end=True)}: {_clip(self.reason, _REASON_CHARS)}"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One image file as listed; (size, mtime_ns) says whether an earlier check still holds."""

    rel: str  # posix path relative to the scanned root, e.g. "train/cat/001.jpg"
    size: int  # bytes (of the target, for symlinks)
    mtime_ns: int


def scan_tree(root: Path) -> list[FileEntry]:
    """Every image file under root (recursive, by extension, case-insensitive), sorted by rel.

    One os.scandir walk with one stat per image (pathlib's rglob + is_file + stat costs several):
    100k files list in well under a second. Symlinks are followed, to files and to folders (a folder
    link back to one of its own ancestors is skipped); names starting with '.' are skipped, which
    also drops macOS `._x.jpg` resource forks. Broken links are skipped and counted in the log.
    """
    found: list[FileEntry] = []
    broken = 0
    top = os.stat(root)
    stack: list[tuple[str, str, frozenset[tuple[int, int]]]] = [("", os.fspath(root), frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        prefix, folder, ancestors = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                name = entry.name
                if name.startswith("."):
                    continue
                is_image = name[name.rfind(".") :].lower() in IMAGE_EXTS  # no dot: rfind gives -1, the last char
                if not is_image and not entry.is_dir():
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    broken += 1
                    continue
                if is_image and stat.S_ISREG(st.st_mode):
                    found.append(FileEntry(prefix + name, st.st_size, st.st_mtime_ns))
                elif stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key in ancestors:
                        log.warning("%s: folder link back to its own ancestor, not followed", entry.path)
                        continue
                    stack.append((f"{prefix}{name}/", entry.path, ancestors | {key}))
    if broken:
        log.warning("%s: skipped %d image path(s) that could not be read (broken links?)", root, broken)
    found.sort(key=lambda e: e.rel)
    return found


def _bomb_reason(pixels: int) -> str:
    return f"has {pixels:,} pixels, over the decompression-bomb limit ({Image.MAX_IMAGE_PIXELS:,})"


def _describe(exc: BaseException) -> str:
    """A short reason for a decode failure, without Pillow's file-object reprs."""
    if isinstance(exc, Image.DecompressionBombError):
        m = re.search(r"\((\d+) pixels\)", str(exc))
        return _bomb_reason(int(m.group(1))) if m else f"over the decompression-bomb limit ({_clip(str(exc), 60)})"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (unknown format)"
    if isinstance(exc, _UNREADABLE):
        return f"cannot read file ({exc.strerror})"
    detail = _clip(str(exc) or type(exc).__name__, 70)
    if "truncated" in detail.lower():
        return f"truncated image ({detail})"
    return f"cannot decode ({detail})"


@contextlib.contextmanager
def _opened(path: Path | str) -> Iterator[Image.Image]:
    """Image.open whose every failure, in opening or in the block, is a BadImageError."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with the size
            img = Image.open(path)
    except _DECODE_ERRORS as exc:
        reason = _describe(exc)
        if isinstance(exc, UnidentifiedImageError):
            with contextlib.suppress(OSError):
                reason = "empty file (0 bytes)" if os.path.getsize(path) == 0 else reason
        elif not isinstance(exc, (Image.DecompressionBombError, *_UNREADABLE)):
            reason = f"not an image ({_clip(str(exc), 70)})"
        raise BadImageError(path, reason) from exc
    with img:
        pixels = img.width * img.height
        if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
            raise BadImageError(path, _bomb_reason(pixels))
        try:
            yield img
        except _DECODE_ERRORS as exc:
            raise BadImageError(path, _describe(exc)) from exc


def _gray(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.uint8))  # 2-D uint8: mode L


def _to_8bit(img: Image.Image) -> Image.Image:
    """The image as 8-bit L or RGB, scaled rather than clipped (see the module docstring)."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode.startswith("I;16"):
        return _gray(np.clip(np.asarray(img).astype(np.int32), 0, 65535) >> 8)
    if mode == "I":
        a = np.asarray(img)
        return _gray(np.clip(a, 0, 65535) >> 8 if a.max() > 255 else np.clip(a, 0, 255))
    if mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return _gray(np.rint(a * 255.0))
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    if mode in ("P", "PA"):  # via RGBA: a palette with a transparency entry cannot go to RGB directly
        return img.convert("RGBA").convert("RGB")
    if mode in _MODES:
        return img.convert("RGB")  # RGBA/RGBX/RGBa drop alpha; CMYK, YCbCr, LAB, HSV through PIL
    raise ValueError(f"unsupported pixel mode {mode}")


def _shrink_plan(size: tuple[int, int], min_side: int | None) -> int:
    """Integer reduction factor that keeps the short side >= 2*min_side (1: leave as is)."""
    if min_side is None or min_side <= 0:
        return 1
    return max(1, min(size) // (2 * min_side))


def open_image(path: Path | str, mode: Literal["L", "RGB"], min_side: int | None = None) -> Image.Image:
    """Decode one image to 8-bit `mode`, converted correctly (never saturated), EXIF orientation applied.

    With `min_side`, an image whose short side exceeds 2*min_side is shrunk by an integer factor
    (JPEG: decoded at 1/2..1/8 scale via draft; others: `reduce` after decoding), so the short side
    ends in [2*min_side, 4*min_side) and transforms never see a 10,000-px image.
    Raises BadImageError for anything that cannot be decoded.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', not {mode!r}")
    with _opened(path) as img:
        if isinstance(img, JpegImageFile) and _shrink_plan(img.size, min_side) > 1:
            assert min_side is not None
            w, h = img.size
            scale = 2 * min_side / min(w, h)
            img.draft(mode, (math.ceil(w * scale), math.ceil(h * scale)))
        img.load()
        try:
            ImageOps.exif_transpose(img, in_place=True)
        except _DECODE_ERRORS as exc:  # damaged EXIF: the pixels are still good
            log.debug("%s: EXIF orientation ignored (%s)", path, exc)
        out = _to_8bit(img)
        factor = _shrink_plan(out.size, min_side)
        if factor > 1:
            out = out.reduce(factor)
        return out if out.mode == mode else out.convert(mode)  # RGB->L: ITU-R 601 luma; L->RGB: replicated


def _jpeg_complete(path: Path | str) -> bool:
    """A JPEG ends with the EOI marker, allowing a few bytes of zero padding."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _JPEG_TAIL))
        return f.read().rstrip(b"\x00").endswith(_JPEG_EOI)


def check_image(path: Path | str, size: int | None = None) -> str | None:
    """Cheap validity check before training: None if usable, else a short reason.

    `size` (bytes, e.g. FileEntry.size) saves a stat. PNG: `verify()` reads every chunk's CRC without
    decompressing. JPEG: the end-of-image marker is checked instead (verify() checks nothing useful);
    a JPEG without one is decoded in full once, since some cameras append data after the image.
    Other formats are rare and decoded in full.
    """
    try:
        if (os.stat(path).st_size if size is None else size) == 0:
            return "empty file (0 bytes)"
        with _opened(path) as img:
            if img.mode not in _MODES and not img.mode.startswith("I;16"):
                return f"unsupported pixel mode {img.mode}"
            if isinstance(img, PngImageFile):
                img.verify()
            elif isinstance(img, JpegImageFile):
                if not _jpeg_complete(path):
                    try:
                        img.load()
                    except _DECODE_ERRORS:
                        return "truncated JPEG (no end-of-image marker)"
            else:
                img.load()
    except BadImageError as exc:
        return exc.reason
    except OSError as exc:  # the stat or the tail read
        return _describe(exc)
    return None


def _memo_file(cache_dir: Path, root: Path) -> Path:
    key = hashlib.sha256(os.fspath(Path(root).resolve()).encode()).hexdigest()
    return cache_dir / "image_checks" / f"{key}.json"


def _read_memo(path: Path) -> dict[str, list[Any]]:
    """Earlier results, keeping only well-formed records; a damaged file counts as empty."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable image-check memo, checking again (%s)", path, _clip(str(exc), 80))
        return {}
    if not isinstance(raw, dict):
        log.warning("%s: image-check memo is not a mapping, checking again", path)
        return {}
    return {
        rel: rec
        for rel, rec in raw.items()
        if isinstance(rec, list)
        and len(rec) == 3
        and type(rec[0]) is int
        and type(rec[1]) is int
        and (rec[2] is None or isinstance(rec[2], str))
    }


def _in_order(
    pool: ThreadPoolExecutor, fn: Callable[[FileEntry], str | None], items: Sequence[FileEntry], window: int
) -> Iterator[str | None]:
    """pool.map with at most `window` tasks queued: 100k futures at once cost memory and block Ctrl-C."""
    pending: deque[Future[str | None]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def find_bad_images(
    root: Path,
    entries: Sequence[FileEntry],
    cache_dir: Path | None = None,
    progress: Callable[[Iterable[FileEntry]], Iterable[FileEntry]] | None = None,
    save: bool = True,
) -> dict[str, str]:
    """rel -> reason (sorted by rel) for every unusable image among `entries`.

    Memoised in `cache_dir/image_checks/<sha256 of resolved root>.json` as {rel: [size, mtime_ns, reason]}:
    only entries whose (size, mtime_ns) changed, or that are new, are checked again. Records of files
    not in `entries` are kept (train and val may be checked in separate calls). What was checked is
    saved even if the pass is interrupted. `progress` wraps the entries that need checking and must
    yield each of them, in order (tqdm does). `save` False reads the memo but never writes it (a torchrun rank
    other than 0).
    """
    memo_path = _memo_file(cache_dir, root) if cache_dir is not None else None
    memo = _read_memo(memo_path) if memo_path is not None else {}
    bad: dict[str, str] = {}
    todo: list[FileEntry] = []
    for e in entries:
        rec = memo.get(e.rel)
        if rec is not None and rec[0] == e.size and rec[1] == e.mtime_ns:
            if rec[2] is not None:
                bad[e.rel] = rec[2]
        else:
            todo.append(e)
    if todo:
        threads = os.cpu_count() or 1
        pool = ThreadPoolExecutor(threads, thread_name_prefix="check_image")
        checked = 0
        try:
            # `check_image` is looked up per call, so tests (and callers) can wrap it.
            results = _in_order(pool, lambda e: check_image(Path(root) / e.rel, e.size), todo, 4 * threads)
            for e, reason in zip(progress(todo) if progress is not None else todo, results, strict=True):
                memo[e.rel] = [e.size, e.mtime_ns, reason]
                checked += 1
                if reason is not None:
                    bad[e.rel] = reason
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if memo_path is not None and checked and save:
                try:
                    write_text_atomic(memo_path, json.dumps(memo, separators=(",", ":")))
                except OSError as exc:
                    log.warning("%s: could not save image-check memo (%s)", memo_path, exc)
    return dict(sorted(bad.items()))
