"""Datasets: the built-in `digits` (scikit-learn, offline) and `imagefolder`; stable sample ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cann_distill.errors import StageError
from cann_distill.recipe import DataConfig

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Split:
    """One split: ids stable across runs, integer targets, and a way to get image i."""

    ids: list[str]
    targets: np.ndarray
    classes: list[str]
    fetch: Callable[[int], torch.Tensor]

    def __len__(self) -> int:
        return len(self.ids)


class SplitDataset(Dataset):
    """Yields (image, target, index); the index keys cached teacher outputs and the critical index."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.split.fetch(i), int(self.split.targets[i]), i


def channels_of(cfg: DataConfig) -> int:
    return cfg.channels or (1 if cfg.source == "digits" else 3)


def norm_stats(cfg: DataConfig) -> tuple[list[float], list[float]]:
    c = channels_of(cfg)
    return (cfg.mean or [0.5] * c), (cfg.std or [0.5] * c)


def _normalize(x: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    mean, std = norm_stats(cfg)
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


def _digits(cfg: DataConfig) -> tuple[Split, Split]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    targets = bunch.target.astype(np.int64)
    index = np.arange(len(targets))
    if cfg.max_samples is not None and cfg.max_samples < len(index):
        index, _ = train_test_split(index, train_size=cfg.max_samples, stratify=targets, random_state=cfg.split_seed)
        index = np.sort(index)
    tr, va = train_test_split(index, test_size=cfg.val_fraction, stratify=targets[index], random_state=cfg.split_seed)
    tr, va = np.sort(tr), np.sort(va)
    x = torch.from_numpy(images).unsqueeze(1)
    x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
    x = x.repeat(1, channels_of(cfg), 1, 1)
    x = _normalize(x, cfg)  # [N, C, H, W] against per-channel [C, 1, 1]
    classes = [str(c) for c in range(10)]

    def make(idx: np.ndarray) -> Split:
        imgs = x[torch.from_numpy(idx)].contiguous()
        return Split([f"digits/{i}" for i in idx], targets[idx], classes, lambda i: imgs[i])

    return make(tr), make(va)


def _list_folder(root: Path, classes: Optional[list[str]] = None) -> tuple[list[Path], list[int], list[str]]:
    if not root.is_dir():
        raise StageError(f"dataset folder not found: {root}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise StageError(f"{root}: class folders not in the training split: {', '.join(unknown)}")
    paths, targets = [], []
    for ci, cname in enumerate(classes):
        cdir = root / cname
        if not cdir.is_dir():
            continue
        for p in sorted(cdir.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTS and p.is_file():
                paths.append(p)
                targets.append(ci)
    if not paths:
        raise StageError(f"{root}: no images found (expected {root}/<class>/*.png|jpg)")
    return paths, targets, classes


def _imagefolder(cfg: DataConfig) -> tuple[Split, Split]:
    from PIL import Image

    root = Path(cfg.root or "")
    mode = "L" if channels_of(cfg) == 1 else "RGB"

    def make(split: str, classes: Optional[list[str]]) -> Split:
        paths, targets, classes = _list_folder(root / split, classes)

        def fetch(i: int) -> torch.Tensor:
            with Image.open(paths[i]) as im:
                im = im.convert(mode).resize((cfg.image_size, cfg.image_size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0
            t = torch.from_numpy(arr)
            t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
            return _normalize(t.contiguous(), cfg)

        ids = [p.relative_to(root).as_posix() for p in paths]
        return Split(ids, np.asarray(targets, dtype=np.int64), classes, fetch)

    train = make("train", None)
    return train, make("val", train.classes)


def load_splits(cfg: DataConfig) -> tuple[Split, Split]:
    """(train, val) for the recipe's data section."""
    return _digits(cfg) if cfg.source == "digits" else _imagefolder(cfg)


def data_fingerprint(cfg: DataConfig, ignore: frozenset[str] = frozenset()) -> str:
    """Recipe section + (for folders) the file listing, so edits on disk invalidate caches.

    `ignore` drops keys that cannot change the samples (e.g. `batch_size` for cached outputs).
    """
    h = hashlib.sha256(cfg.model_dump_json(exclude=set(ignore)).encode())
    if cfg.source == "imagefolder" and cfg.root:
        for p in sorted(Path(cfg.root).rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
                st = p.stat()
                h.update(f"{p.relative_to(cfg.root).as_posix()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def loader(split: Split, batch_size: int, shuffle: bool = False, seed: int = 0, sampler=None) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        SplitDataset(split), batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, generator=g,
        num_workers=0,
    )
