"""COCO detection data: read an instances JSON and its images, check every entry once, and serve batches.

What is checked, and what happens (`detect.data.on_bad`: `error` stops at the first problem with one line
naming the file, the entry and why; `skip` drops the entry and counts it by reason):

- a file that is not JSON, or JSON without `images`, `annotations` and `categories` lists: always an error;
- an image entry whose file is missing, unreadable, outside the images folder, or whose size differs from its
  `width`/`height` (the size once its EXIF orientation is applied, as it is decoded; a JSON that gives the stored
  size of a rotated photo is said so): the image is bad (skipped with its annotations);
- boxes that look like [x1, y1, x2, y2] in a file of [x, y, width, height] (`xyxy_suspects`): always an error;
- a box with zero or negative width or height, wholly outside its image, or of an unknown category or image:
  the annotation is bad. A box partly outside is clipped to the image and counted (`clipped`);
- `iscrowd: 1` regions: not trained on, kept for evaluation, where COCOeval ignores detections that fall in
  them (as COCO does); counted (`crowd`);
- category ids need not be contiguous: they are mapped, in id order, to classes 0..K-1 (and said in `notes`);
- images without annotations are allowed (they teach background) and counted (`without_annotations`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from cann_distill.core.errors import StageError, cut, preview
from cann_distill.core.files import sha256_file
from cann_distill.core.recipe_detect import DetectDataConfig
from cann_distill.data.images import BadImageError, open_image, scan_tree

OnBad = Literal["error", "skip"]
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height (open_image applies them)


@dataclass(frozen=True)
class DetImage:
    """One usable image: its file, its size as stored, and the boxes trained on (crowd regions left out)."""

    id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # [M, 4] float32 x1 y1 x2 y2 in the image's pixels, clipped to it
    labels: np.ndarray  # [M] int64 class index 0..K-1


@dataclass
class DetectionSet:
    """One split: the usable images, the class list, the checked COCO dict COCOeval reads, and what was found."""

    name: str
    images: list[DetImage]
    classes: list[str]
    category_ids: list[int]  # class index -> the JSON's category id
    gt: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


class _Checker:
    """Where an entry's problem goes: an error that stops, or a count by reason."""

    def __init__(self, source: Path, on_bad: OnBad) -> None:
        self.source, self.on_bad = source, on_bad
        self.counts: Counter[str] = Counter()

    def bad(self, what: str, reason: str, key: str) -> None:
        if self.on_bad == "error":
            raise StageError(
                f"{cut(str(self.source), 120)}: {what}: {reason}; fix it, or set detect.data.on_bad: skip to skip and count it"
            )
        self.counts[key] += 1


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object of a COCO file, or one line saying why it is not one."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise StageError(f"{path}: cannot read the COCO file ({exc.strerror or exc})") from None
    try:
        data = json.loads(text.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise StageError(f"{path}: not a COCO JSON file (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise StageError(f"{path}: not a COCO JSON file ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise StageError(f"{path}: not a COCO JSON file (nested too deeply)") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        got = ", ".join(sorted(data)[:6]) if isinstance(data, dict) else type(data).__name__
        raise StageError(f"{path}: a COCO file is a JSON object with `images`, `annotations` and `categories` lists (got {got})")
    return data


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def categories_of(data: dict[str, Any], source: Path) -> tuple[list[int], list[str], list[str]]:
    """(category ids in id order, their names, notes); duplicate or malformed categories are errors."""
    ids, names = [], {}
    for cat in data["categories"]:
        cid = _int(cat.get("id")) if isinstance(cat, dict) else None
        if cid is None:
            raise StageError(f"{source}: category entry {preview(cat)} needs an integer `id`")
        if cid in names:
            raise StageError(f"{source}: category id {cid} appears twice")
        names[cid] = str(cat.get("name", cid))
        ids.append(cid)
    if not ids:
        raise StageError(f"{source}: no categories")
    ids.sort()
    notes = []
    if ids != list(range(ids[0], ids[0] + len(ids))):
        shown = ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
        notes.append(f"category ids {shown} are not contiguous: mapped in id order to classes 0..{len(ids) - 1}")
    return ids, [names[i] for i in ids], notes


def oriented_size(path: Path) -> tuple[tuple[int, int], Optional[int]]:
    """((width, height) of the decoded image, its EXIF orientation or None), from the header only: the size with the
    rotation applied, as open_image's ImageOps.exif_transpose applies it."""
    with Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112)
    return ((h, w) if orientation in _ROTATED else (w, h)), orientation


def _image_problem(entry: Any, images_dir: Path) -> tuple[Optional[str], Optional[Path]]:
    """Why an image entry cannot be used (None when it can), and its file."""
    if not isinstance(entry, dict) or _int(entry.get("id")) is None or not isinstance(entry.get("file_name"), str):
        return "needs an integer `id` and a `file_name`", None
    w, h = _int(entry.get("width")), _int(entry.get("height"))
    if w is None or h is None or w <= 0 or h <= 0:
        return f"needs positive integer `width` and `height`, got {preview(entry.get('width'))} x {preview(entry.get('height'))}", None
    rel = Path(entry["file_name"])
    if rel.is_absolute() or ".." in rel.parts:
        return f"file_name {preview(entry['file_name'])} leaves the images folder", None
    path = images_dir / rel
    if not path.is_file():
        return f"file not found: {cut(str(path), 100)}", None
    try:
        size, orientation = oriented_size(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"cannot read {rel} ({cut(str(exc), 60)})", None
    if size != (w, h):
        if orientation in _ROTATED and size == (h, w):
            return (
                f"{rel} is {size[0]}x{size[1]} once its EXIF orientation ({orientation}: rotated) is applied, as it is decoded; "
                f"the JSON says {w}x{h}, the size as stored, so its boxes would land rotated (annotate the rotated image)"
            ), None
        return f"{rel} is {size[0]}x{size[1]}, the JSON says {w}x{h}", None
    return None, path


def _box(ann: dict[str, Any], width: int, height: int) -> tuple[Optional[str], Optional[list[float]], bool]:
    """(problem, clipped [x, y, w, h], whether it was clipped)."""
    raw = ann.get("bbox")
    if not isinstance(raw, list) or len(raw) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        return f"bbox must be [x, y, width, height], got {preview(raw)}", None, False
    x, y, w, h = (float(v) for v in raw)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return f"bbox has a non-finite value {preview(raw)}", None, False
    if w <= 0 or h <= 0:
        return f"zero-area box {preview(raw)}", None, False
    x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if x2 <= x1 or y2 <= y1:
        return f"box {preview(raw)} lies outside the {width}x{height} image", None, False
    clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
    return None, [x1, y1, x2 - x1, y2 - y1], clipped


XYXY_MIN_BOXES = 3
XYXY_MIN_SHARE = 0.1
"""A file's boxes "look like xyxy" when at least this many, and this share, of them run past their image read as
[x, y, width, height] but fit it read as [x1, y1, x2, y2], while (nearly) all of them fit that way."""


def xyxy_suspects(boxes: list[tuple[list[float], int, int]], tolerance: float = 1.0) -> tuple[int, int]:
    """(boxes that look like [x1, y1, x2, y2], boxes that fit that reading) among (bbox, image width, image height).

    A box looks like xyxy when, read as COCO's [x, y, width, height], it runs past its image by more than `tolerance`
    px, while read as corners it lies inside the image with x2 > x1 and y2 > y1.
    """
    fits = looks = 0
    for (a, b, c, d), width, height in boxes:
        as_corners = a < c <= width + tolerance and b < d <= height + tolerance
        fits += as_corners
        looks += as_corners and (a + c > width + tolerance or b + d > height + tolerance)
    return looks, fits


def _check_box_format(data: dict[str, Any], entries: dict[int, tuple[dict[str, Any], Path]], source: Path) -> None:
    """Stop when the file's boxes look like [x1, y1, x2, y2] (always an error: skipping or clipping them would train
    on wrong boxes)."""
    boxes = []
    for ann in data["annotations"]:
        iid = _int(ann.get("image_id")) if isinstance(ann, dict) else None
        raw = ann.get("bbox") if isinstance(ann, dict) else None
        if (
            iid in entries
            and isinstance(raw, list)
            and len(raw) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
        ):
            if all(math.isfinite(v) for v in raw):
                boxes.append(([float(v) for v in raw], entries[iid][0]["width"], entries[iid][0]["height"]))
    looks, fits = xyxy_suspects(boxes)
    if looks >= XYXY_MIN_BOXES and looks >= XYXY_MIN_SHARE * len(boxes) and fits >= 0.9 * len(boxes):
        raise StageError(
            f"{cut(str(source), 120)}: {looks} of {len(boxes)} boxes run past their image read as [x, y, width, height] but fit "
            "it read as [x1, y1, x2, y2]: the boxes look like xyxy; COCO's bbox is [x, y, width, height] "
            "(width = x2 - x1, height = y2 - y1)"
        )


def _usable_images(data: dict[str, Any], images_dir: Path, check: _Checker) -> dict[int, tuple[dict[str, Any], Path]]:
    """id -> (entry, file) of every image entry that can be used; the others go to `check`."""
    entries: dict[int, tuple[dict[str, Any], Path]] = {}
    for entry in data["images"]:
        problem, path = _image_problem(entry, images_dir)
        iid = _int(entry.get("id")) if isinstance(entry, dict) else None
        if problem is None and iid in entries:
            problem = "id appears twice"
        if problem is not None or path is None or iid is None:
            check.bad(f"image {preview(entry.get('id') if isinstance(entry, dict) else entry)}", problem or "unusable", "bad_images")
            continue
        entries[iid] = (entry, path)
    return entries


def _checked_annotation(
    ann: Any, entries: dict[int, tuple[dict[str, Any], Path]], index: dict[int, int], check: _Checker
) -> Optional[dict[str, Any]]:
    """The annotation as COCOeval will read it (box clipped, area filled in), or None when it cannot be used."""
    iid = _int(ann.get("image_id")) if isinstance(ann, dict) else None
    what = f"annotation {preview(ann.get('id') if isinstance(ann, dict) else ann)} (image {preview(iid)})"
    if not isinstance(ann, dict) or iid not in entries:
        check.bad(what, "refers to no image in the file", "bad_annotations")
        return None
    entry = entries[iid][0]
    cid = _int(ann.get("category_id"))
    if cid not in index:
        check.bad(what, f"unknown category_id {preview(ann.get('category_id'))}", "bad_annotations")
        return None
    problem, bbox, clipped = _box(ann, entry["width"], entry["height"])
    if problem is not None or bbox is None:
        check.bad(what, problem or "bad box", "bad_annotations")
        return None
    crowd = ann.get("iscrowd", 0) in (1, True)
    check.counts["clipped"] += clipped
    check.counts["crowd"] += crowd
    area = ann.get("area")
    if not (isinstance(area, (int, float)) and not isinstance(area, bool) and math.isfinite(area) and area > 0):
        area = None
    return {
        "image_id": iid,
        "category_id": cid,
        "bbox": bbox,
        "area": float(area) if area is not None else bbox[2] * bbox[3],  # COCOeval's size ranges read the area
        "iscrowd": int(crowd),
    }


def read_coco(annotations: Path, images_dir: Path, on_bad: OnBad, name: str) -> DetectionSet:
    """One split from a COCO instances file and the folder its `file_name`s are relative to (see the module doc)."""
    data = read_json(annotations)
    check = _Checker(annotations, on_bad)
    cat_ids, classes, notes = categories_of(data, annotations)
    index = {cid: i for i, cid in enumerate(cat_ids)}
    entries = _usable_images(data, images_dir, check)
    _check_box_format(data, entries, annotations)
    dropped = {_int(e.get("id")) for e in data["images"] if isinstance(e, dict)} - set(entries)
    boxes: dict[int, list[list[float]]] = {iid: [] for iid in entries}
    labels: dict[int, list[int]] = {iid: [] for iid in entries}
    gt_anns: list[dict[str, Any]] = []
    for ann in data["annotations"]:
        if isinstance(ann, dict) and _int(ann.get("image_id")) in dropped - {None}:
            check.counts["annotations_of_skipped_images"] += 1
            continue
        gt = _checked_annotation(ann, entries, index, check)
        if gt is None:
            continue
        gt_anns.append({"id": len(gt_anns) + 1, **gt})  # renumbered: COCOeval keys annotations by a unique id
        if not gt["iscrowd"]:
            x, y, w, h = gt["bbox"]
            boxes[gt["image_id"]].append([x, y, x + w, y + h])
            labels[gt["image_id"]].append(index[gt["category_id"]])
    images = [
        DetImage(iid, path, e["width"], e["height"], np.asarray(boxes[iid], np.float32).reshape(-1, 4), np.asarray(labels[iid], np.int64))
        for iid, (e, path) in entries.items()
    ]
    counts = {
        "images": len(images),
        "boxes": sum(len(im.labels) for im in images),
        "without_annotations": sum(1 for im in images if len(im.labels) == 0),
        **{k: v for k, v in sorted(check.counts.items()) if v},
    }
    gt_dict = {
        "images": [{"id": iid, "width": e["width"], "height": e["height"], "file_name": e["file_name"]} for iid, (e, _) in entries.items()],
        "annotations": gt_anns,
        "categories": [{"id": cid, "name": n} for cid, n in zip(cat_ids, classes)],
    }
    return DetectionSet(name, images, classes, cat_ids, gt_dict, counts, notes)


def check_same_categories(train: DetectionSet, val: DetectionSet) -> None:
    """Class i must mean the same category in both splits."""
    if train.category_ids != val.category_ids:
        raise StageError(
            f"the {val.name} split's category ids {preview(val.category_ids, 60)} differ from the {train.name} split's "
            f"{preview(train.category_ids, 60)}: class i would mean another category"
        )


# ----------------------------------------------------------------------------- torch side

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]


class DetectionDataset(torch.utils.data.Dataset):
    """Images resized to `size` x `size` and normalised; boxes scaled with them. Decoded images are kept in memory."""

    def __init__(self, split: DetectionSet, size: int, mean: list[float], std: list[float]) -> None:
        self.split, self.size = split, size
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self._pixels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.split)

    def pixels(self, i: int) -> np.ndarray:
        """uint8 [size, size, 3] of image i (decoded once)."""
        if i not in self._pixels:
            im = self.split.images[i]
            try:
                img = open_image(im.path, "RGB")
            except BadImageError as exc:
                raise StageError(f"{self.split.name}: {exc}") from None
            self._pixels[i] = np.array(img.resize((self.size, self.size), Image.Resampling.BILINEAR))
        return self._pixels[i]

    def scale(self, i: int) -> tuple[float, float]:
        im = self.split.images[i]
        return self.size / im.width, self.size / im.height

    def input_boxes(self, i: int) -> torch.Tensor:
        """Image i's boxes [M, 4] in input pixels (scaled with the resize to `size`), without decoding the image."""
        sx, sy = self.scale(i)
        return torch.from_numpy(self.split.images[i].boxes) * torch.tensor([sx, sy, sx, sy])

    def __getitem__(self, i: int) -> Sample:
        x = torch.from_numpy(self.pixels(i)).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std, self.input_boxes(i), torch.from_numpy(self.split.images[i].labels), i


def collate(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [B, 3, S, S], boxes [B, M, 4] in input pixels, labels [B, M] with -1 padding, indices [B])."""
    m = max(1, max(len(s[2]) for s in samples))
    boxes = torch.zeros(len(samples), m, 4)
    labels = torch.full((len(samples), m), -1, dtype=torch.int64)
    for b, (_, bx, lb, _) in enumerate(samples):
        boxes[b, : len(lb)] = bx
        labels[b, : len(lb)] = lb
    return torch.stack([s[0] for s in samples]), boxes, labels, torch.tensor([s[3] for s in samples])


def detection_loader(
    dataset: DetectionDataset, batch_size: int, train: bool, seed: int, workers: int = 0, indices: Optional[Sequence[int]] = None
) -> torch.utils.data.DataLoader:
    """Shuffled (seeded) for training, in order for evaluation; `indices`: these images only (training: a subset,
    shuffled; evaluation: in the order given)."""
    generator = torch.Generator().manual_seed(seed) if train else None
    sampler: Optional[Iterable[int]] = None
    if indices is not None:
        sampler = torch.utils.data.SubsetRandomSampler(list(indices), generator=generator) if train else list(indices)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        generator=generator if sampler is None else None,
        collate_fn=collate,
        num_workers=workers,
        drop_last=False,
    )


# ----------------------------------------------------------------------------- the recipe's splits


def split_files(cfg: DetectDataConfig, cache_dir: Path) -> dict[str, tuple[Path, Path]]:
    """split -> (COCO JSON, images folder): the recipe's files, or the demo set's (built in the cache dir if absent)."""
    if cfg.source == "demo":
        from cann_distill.data.detection_demo import demo_files

        return demo_files(cfg.demo, cfg.image_size, cache_dir)
    return {
        "train": (Path(str(cfg.train_annotations)), Path(str(cfg.train_images))),
        "val": (Path(str(cfg.val_annotations)), Path(str(cfg.val_images))),
    }


def load_detection(cfg: DetectDataConfig, cache_dir: Path) -> tuple[DetectionSet, DetectionSet]:
    """The checked train and val splits (same categories in both)."""
    files = split_files(cfg, cache_dir)
    train = read_coco(*files["train"], cfg.on_bad, "train")
    val = read_coco(*files["val"], cfg.on_bad, "val")
    check_same_categories(train, val)
    return train, val


def detection_fingerprint(cfg: DetectDataConfig) -> str:
    """What the splits are a function of: the demo set's settings, or the COCO files' bytes and the image files' listing."""
    import hashlib

    from cann_distill.data.detection_demo import demo_key

    h = hashlib.sha256(cfg.model_dump_json().encode())
    if cfg.source == "demo":
        h.update(demo_key(cfg.demo, cfg.image_size).encode())
        return h.hexdigest()
    for ann, images in ((cfg.train_annotations, cfg.train_images), (cfg.val_annotations, cfg.val_images)):
        h.update(sha256_file(Path(str(ann))).encode())
        for e in scan_tree(Path(str(images))):
            h.update(f"{e.rel}:{e.size}:{e.mtime_ns}\n".encode())
    return h.hexdigest()
