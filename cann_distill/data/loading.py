"""Datasets through timm's data module: the built-in `digits` (scikit-learn, offline, in memory) and
`imagefolder` (`train/`, `val/`, optional `test/`), stable sample ids, transforms, loaders.

- Images are decoded to the recipe's channels by `cann_distill.data.images` (16-bit, palette, CMYK,
  alpha handled; huge images reduced while decoding) and transformed by timm's `create_transform`:
  RandomResizedCrop / flips / colour jitter / auto-augment / random erasing for training, resize +
  center crop by `crop_pct` for evaluation (colour jitter through `cann_distill.data.jitter`, same pixels).
- As in timm's fast loader (`use_prefetcher`), a sample stops at uint8 pixels and batches are
  collated as uint8; `PixelNorm` turns a whole batch into the model's input on its device, with the
  very float32 operations of ToTensor + Normalize (bit-identical to the per-sample float path).
  Random erasing works on normalised pixels, so a recipe with `re_prob > 0` keeps that path for training.
- A training sample's augmentation is a function of (seed, epoch, index) alone: the sampler yields
  (epoch, index) keys and the dataset seeds the RNGs from them. So results do not depend on
  `num_workers`, a resumed run replays the exact views, and a view can be regenerated later.
- The folder listing is walked once per process and run (`scan`); the same walk fingerprints the
  data and feeds the bad-image check (memoised per file in the cache dir).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from cann_distill.core.errors import StageError
from cann_distill.core.recipe import DataConfig
from cann_distill.core.recipe_load import class_folders, class_mismatch
from cann_distill.data.images import IMAGE_EXTS, BadImageError, FileEntry, find_bad_images, open_image, scan_tree
from cann_distill.data.transforms import PixelNorm, Transform, build_transforms, pil_mode, pixel_norm
from cann_distill.runtime import distributed
from cann_distill.runtime.devices import CPU, Runtime, worker_count

__all__ = [
    "IMAGE_EXTS",
    "Split",
    "Splits",
    "Batches",
    "load_splits",
    "loader",
    "draw_loader",
    "data_fingerprint",
    "count_classes",
]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

SAMPLE_INVARIANT = frozenset({"num_workers", "cache_mb"})
"""data keys that change no sample and no result (augmentation is seeded per sample, not per worker)."""


# ----------------------------------------------------------------------------- image sources


class ArrayImages:
    """In-memory uint8 images [N, H, W] (digits) or [N, H, W, 3] (photos); picklable for DataLoader workers."""

    def __init__(self, pixels: np.ndarray, mode: str) -> None:
        self.pixels, self.mode = pixels, mode

    def __call__(self, i: int) -> Any:
        from PIL import Image

        im = Image.fromarray(self.pixels[i], "L" if self.pixels.ndim == 3 else "RGB")
        return im if im.mode == self.mode else im.convert(self.mode)


class FolderImages:
    """Files under a root, decoded on demand (in the workers) to the recipe's channels.

    With `cache_bytes`, each process keeps the decoded pixels of the files it opened (8-bit arrays) until
    that many bytes are held, so later epochs skip decoding (a 32-px PNG: ~80 µs of a ~200 µs sample);
    the image handed out is rebuilt from the same pixels, so transforms see exactly what decoding gives.
    Workers start with an empty cache of their own (it is not pickled).
    """

    def __init__(self, root: Path, rels: Sequence[str], mode: str, min_side: int, cache_bytes: int = 0) -> None:
        self.root, self.rels, self.mode, self.min_side = root, list(rels), mode, min_side
        self.cache_bytes = cache_bytes
        self._cache: dict[int, np.ndarray] = {}
        self._held = 0

    def __call__(self, i: int) -> Any:
        pixels = self._cache.get(i)
        if pixels is not None:
            from PIL import Image

            return Image.fromarray(pixels, self.mode)
        try:
            image = open_image(self.root / self.rels[i], self.mode, min_side=self.min_side)  # type: ignore[arg-type]
        except BadImageError as exc:  # changed on disk since the check before training
            raise StageError(f"{exc}; the file changed since it was checked, set data.on_bad_image: skip or fix it") from None
        if self._held < self.cache_bytes:
            pixels = np.asarray(image)
            self._cache[i] = pixels
            self._held += pixels.nbytes
        return image

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": {}, "_held": 0}


@dataclass
class Split:
    """One split: ids stable across runs, integer targets, decoded images and the evaluation transform.

    `transform` may stop at uint8 pixels; `norm` then makes them the model's input (`fetch`, `loader`)."""

    name: str
    ids: list[str]
    targets: np.ndarray
    classes: list[str]
    images: Callable[[int], Any]
    transform: Transform  # evaluation transform (resize + center crop + normalise)
    workers: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # bad images left out: id -> reason
    norm: Optional[PixelNorm] = None  # None: `transform` returns the model's input itself

    def __len__(self) -> int:
        return len(self.ids)

    def fetch(self, i: int) -> torch.Tensor:
        """Image i as the model sees it at evaluation (normalised like a batch, so bit-identical to it)."""
        x = self.transform(self.images(i))
        return self.norm(x.unsqueeze(0))[0] if self.norm is not None else x

    def rows(self, lo: int, hi: int) -> "Split":
        """Samples lo..hi-1 as a split of their own (a rank's shard of an evaluation pass)."""
        images = self.images
        return replace(self, ids=self.ids[lo:hi], targets=self.targets[lo:hi], images=lambda i: images(lo + i), skipped={})


@dataclass
class Splits:
    train: Split
    val: Split
    test: Optional[Split] = None
    train_transform: Optional[Transform] = None  # None: training images get the evaluation transform

    @property
    def augmented(self) -> bool:
        """True when a training image's pixels change from epoch to epoch (cached teacher outputs would go stale)."""
        return self.train_transform is not None

    @property
    def headline(self) -> Split:
        """The split headline numbers come from: test when there is one, else val."""
        return self.test if self.test is not None else self.val


# ----------------------------------------------------------------------------- datasets


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's augmentation in one epoch (splitmix64 over the three)."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & 0xFFFFFFFF


def _seed(seed: int) -> None:
    """Seed the python, numpy and torch RNGs a transform may draw from."""
    random.seed(seed)
    np.random.seed(seed)
    # the CPU generator only: torch.manual_seed would also queue lazy seeding of CUDA/XPU/MTIA,
    # which records a Python stack trace per call (~1.7 ms a sample on a CUDA build of torch)
    torch.random.default_generator.manual_seed(seed)


class _KeptRng:
    """In the main process, save the python, numpy and torch RNG states and restore them after (once
    per batch: saving costs ~80 µs, more than a 32-px sample's transform). Workers own their RNGs."""

    def __enter__(self) -> None:
        self.saved = None
        if torch.utils.data.get_worker_info() is None:
            self.saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            random.setstate(self.saved[0])
            np.random.set_state(self.saved[1])
            torch.set_rng_state(self.saved[2])


Key = Union[int, tuple[int, int]]


class SplitDataset(Dataset):
    """Yields (image, target, index). Keys are an index or an (epoch, index) pair from KeyedSampler;
    a random transform is seeded from (seed, epoch, index). The DataLoader fetches whole batches
    through `__getitems__`, so the main process's RNGs are saved and restored once per batch."""

    def __init__(self, split: Split, transform: Optional[Transform] = None, seed: int = 0) -> None:
        self.split, self.seed = split, seed
        self.random = transform is not None
        self.transform = transform or split.transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int, int]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[Key]) -> list[tuple[torch.Tensor, int, int]]:
        if not self.random:
            return [self._sample(i) for i in (k[1] if isinstance(k, tuple) else k for k in keys)]
        out = []
        with _KeptRng():
            for key in keys:
                epoch, i = key if isinstance(key, tuple) else (0, key)
                _seed(sample_seed(self.seed, epoch, i))
                out.append(self._sample(i))
        return out

    def _sample(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.split.images(i)), int(self.split.targets[i]), i


class Batches:
    """A DataLoader whose image batches arrive as the model's input: moved to the runtime's device
    (channels_last as set) and normalised there by the split's `PixelNorm`, so uint8 crosses to the
    device and every consumer (training, teacher labelling, evaluation) gets the same tensors.
    Other attributes are the DataLoader's (`sampler`, `batch_sampler`, `dataset`)."""

    def __init__(self, data: DataLoader, norm: Optional[PixelNorm], runtime: Runtime) -> None:
        self.data, self.norm, self.runtime = data, norm, runtime

    def __len__(self) -> int:
        return len(self.data)

    def __getattr__(self, name: str) -> Any:
        if name == "data":  # not set yet
            raise AttributeError(name)
        return getattr(self.data, name)

    def __iter__(self) -> Iterator[Batch]:
        for x, y, idx in self.data:
            x = self.runtime.batch(x)
            yield (self.norm(x) if self.norm is not None else x), y, idx


class KeyedSampler(Sampler):
    """Wraps an index sampler and yields (epoch, index): the epoch reaches the dataset even in
    persistent workers. `generator` is the one that orders the samples (saved for resume).

    With a `period` K the key is (epoch mod K, index): epoch e shows the views of epoch e mod K
    again (replayed teacher targets label K views per sample, `cann_distill.teaching.targets`).
    """

    def __init__(self, base: Sampler, period: Optional[int] = None) -> None:
        self.base = base
        self.generator = getattr(base, "generator", None)
        self.epoch = 0
        self.period = period

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        view = self.epoch % self.period if self.period else self.epoch
        return ((view, int(i)) for i in self.base)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]


class DrawSampler(Sampler):
    """Keys (d, i) for d in 0..draws-1, i in split order: every training view of `draws` epochs, in order;
    `rows` = (lo, hi) keeps positions lo..hi-1 of that sequence (one rank's shard)."""

    def __init__(self, n: int, draws: int, rows: Optional[tuple[int, int]] = None) -> None:
        self.n, self.draws = n, draws
        self.lo, self.hi = rows if rows is not None else (0, n * draws)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return (divmod(p, self.n) for p in range(self.lo, self.hi))

    def __len__(self) -> int:
        return self.hi - self.lo


def _worker_init(worker_id: int) -> None:
    # transforms outside our seeding (e.g. a user's) still get distinct, reproducible streams per worker
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def loader(
    split: Split,
    batch_size: int,
    *,
    train: bool = False,
    seed: int = 0,
    sampler: Optional[Sampler] = None,
    transform: Optional[Transform] = None,
    runtime: Runtime = CPU,
    period: Optional[int] = None,
) -> Batches:
    """Evaluation batches in split order, or (train=True) shuffled training batches, on `runtime`'s device.

    Training drops the last incomplete batch when the split has more than one batch (a last
    batch of one sample would crash BatchNorm) and shuffles with its own generator, so the order
    does not depend on the worker count. `period`: see `KeyedSampler`.
    """
    dataset = SplitDataset(split, transform if train else None, seed)
    if train:
        base = sampler if sampler is not None else RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        keyed: Sampler = KeyedSampler(base, period=period)
        drop_last = len(base) > batch_size  # type: ignore[arg-type]
    else:
        keyed, drop_last = SequentialSampler(dataset), False
    if train and distributed.active():  # each rank takes its slice of every global batch; `batch_sampler.sampler` is `keyed`
        return _data_loader(
            dataset, None, distributed.rank_batches(BatchSampler(keyed, batch_size, drop_last)), False, seed, runtime, persistent=True
        )
    return _data_loader(dataset, batch_size, keyed, drop_last, seed, runtime, persistent=train)


def draw_loader(
    split: Split,
    batch_size: int,
    draws: int,
    *,
    seed: int,
    transform: Optional[Transform],
    runtime: Runtime = CPU,
    rows: Optional[tuple[int, int]] = None,
) -> Batches:
    """The training views of epochs 0..draws-1 of every sample, in (draw, split) order and in batches
    that may span two draws: the very views `loader(train=True, seed=seed, transform=transform)` shows.
    `rows`: only positions [lo, hi) of that order (lo a multiple of `batch_size` keeps one process's batches)."""
    dataset = SplitDataset(split, transform, seed)
    return _data_loader(dataset, batch_size, DrawSampler(len(split), draws, rows), False, seed, runtime, persistent=False)


def _data_loader(
    dataset: SplitDataset, batch_size: Optional[int], sampler: Sampler, drop_last: bool, seed: int, runtime: Runtime, persistent: bool
) -> Batches:
    """`batch_size` None: `sampler` yields whole batches (a batch sampler)."""
    workers = dataset.split.workers
    batching = {"batch_size": batch_size, "sampler": sampler, "drop_last": drop_last} if batch_size else {"batch_sampler": sampler}
    data = DataLoader(
        dataset,
        **batching,
        num_workers=workers,
        pin_memory=runtime.pin_memory,
        persistent_workers=persistent and workers > 0,
        worker_init_fn=_worker_init if workers else None,
        generator=torch.Generator().manual_seed(seed),
    )
    return Batches(data, dataset.split.norm, runtime)


# ----------------------------------------------------------------------------- splits


def _digits(cfg: DataConfig, eval_tf: Transform) -> tuple[Split, Split, Optional[Split]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    targets = bunch.target.astype(np.int64)
    index = np.arange(len(targets))
    if cfg.max_samples is not None and cfg.max_samples < len(index):
        index, _ = train_test_split(index, train_size=cfg.max_samples, stratify=targets, random_state=cfg.split_seed)
        index = np.sort(index)
    held = cfg.val_fraction + cfg.test_fraction
    tr, rest = train_test_split(index, test_size=held, stratify=targets[index], random_state=cfg.split_seed)
    if cfg.test_fraction > 0:
        va, te = train_test_split(rest, test_size=cfg.test_fraction / held, stratify=targets[rest], random_state=cfg.split_seed)
    else:
        va, te = rest, None
    # 8x8 images of 0..16, upsampled once to the recipe's size and kept in memory as 8-bit grayscale
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    size = int(cfg.image_size or 32)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    pixels = (x.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    classes = [str(c) for c in range(10)]
    images = ArrayImages(pixels, pil_mode(cfg))
    norm = pixel_norm(cfg)

    def make(name: str, idx: np.ndarray) -> Split:
        idx = np.sort(idx)
        sub = ArrayImages(images.pixels[idx], images.mode)
        return Split(name, [f"digits/{i}" for i in idx], targets[idx], classes, sub, eval_tf, norm=norm)

    return make("train", tr), make("val", va), (make("test", te) if te is not None else None)


def _photos(cfg: DataConfig, eval_tf: Transform) -> tuple[Split, Split, Optional[Split]]:
    """Crops of photographs, one class per photo, cut from disjoint bands (cann_distill.data.photos), in memory."""
    from PIL import Image

    from cann_distill.data.photos import class_name, crop_set, photo_files, photos_dir

    files = photo_files(photos_dir(cfg.root))
    photos = []
    for f in files:
        with Image.open(f) as im:
            photos.append(im.convert("RGB"))
    classes = [class_name(f) for f in files]
    size, norm = int(cfg.image_size or 32), pixel_norm(cfg)

    def make(name: str, per_class: int) -> Split:
        crops = crop_set(photos, name, per_class, size, cfg.split_seed)
        ids = [f"photos/{name}/{classes[t]}/{i}" for i, t in enumerate(crops.targets)]
        return Split(name, ids, crops.targets, classes, ArrayImages(crops.pixels, pil_mode(cfg)), eval_tf, norm=norm)

    n_train, n_val, n_test = cfg.crops_per_class
    return make("train", n_train), make("val", n_val), make("test", n_test)


_LISTINGS: dict[str, list[FileEntry]] = {}


def scan(root: Path) -> list[FileEntry]:
    """The image files under `root`, walked once per process until `forget_listings()`."""
    key = str(Path(root).resolve())
    if key not in _LISTINGS:
        if not Path(root).is_dir():
            raise StageError(f"dataset folder not found: {root}")
        _LISTINGS[key] = scan_tree(Path(root))
    return _LISTINGS[key]


def forget_listings() -> None:
    """Called when a command starts, so files changed since the last command are seen."""
    _LISTINGS.clear()


def _bad_images(cfg: DataConfig, root: Path, entries: list[FileEntry]) -> dict[str, str]:
    from cann_distill.core.paths import default_cache_dir
    from cann_distill.runtime.terminal import ui

    def progress(items: Any) -> Any:
        items = list(items)
        return ui.track(items, "checking images", total=len(items)) if len(items) > 200 else items

    bad = find_bad_images(root, entries, default_cache_dir(), progress=progress, save=distributed.is_main())  # rank 0 writes
    if bad and cfg.on_bad_image == "error":
        first = sorted(bad)[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise StageError(f"bad image {root / first}: {bad[first]}{more}; fix or remove it, or set data.on_bad_image: skip")
    return bad


def _imagefolder(cfg: DataConfig, eval_tf: Transform, workers: int) -> tuple[Split, Split, Optional[Split]]:
    root = Path(cfg.root or "")
    entries = scan(root)
    bad = _bad_images(cfg, root, entries)
    by_split: dict[str, dict[str, list[str]]] = {}
    for e in entries:
        parts = e.rel.split("/")
        if len(parts) < 3 or parts[0] not in ("train", "val", "test") or e.rel in bad:
            continue
        by_split.setdefault(parts[0], {}).setdefault(parts[1], []).append(e.rel)
    classes = class_folders(root / "train")
    if not classes:
        raise StageError(f"{root / 'train'}: no class folders (expected {root / 'train'}/<class>/*.jpg|png)")

    def make(name: str) -> Optional[Split]:
        folder = root / name
        if not folder.is_dir():
            return None
        if (mismatch := class_mismatch(name, classes, class_folders(folder))) is not None:  # changed since the recipe check
            raise StageError(f"{root}: {mismatch}")
        files = by_split.get(name, {})
        empty = [c for c in classes if not files.get(c)]
        if empty:
            skipped = sum(1 for rel in bad if rel.startswith(f"{name}/{empty[0]}/"))
            why = f" (its {skipped} image(s) were skipped as bad)" if skipped else ""
            raise StageError(
                f"{folder / empty[0]}: class folder has no images{why}" + (f" ({len(empty) - 1} more empty)" if len(empty) > 1 else "")
            )
        rels = [rel for c in classes for rel in files[c]]
        targets = np.array([ci for ci, c in enumerate(classes) for _ in files[c]], dtype=np.int64)
        skipped = {rel: why for rel, why in bad.items() if rel.startswith(f"{name}/")}
        # the cache budget is shared: each of the three splits, and in each the main process and every worker
        per_process = cfg.cache_mb * 2**20 // (3 * (workers + 1))
        images = FolderImages(root, rels, pil_mode(cfg), min_side=int(cfg.image_size or 224), cache_bytes=per_process)
        return Split(name, rels, targets, classes, images, eval_tf, workers=workers, skipped=skipped, norm=pixel_norm(cfg))

    train, val = make("train"), make("val")
    assert train is not None and val is not None  # the recipe check requires both folders
    return train, val, make("test")


def count_classes(cfg: DataConfig) -> int:
    """The class count without loading any image: 10 for digits, the class folders of <root>/train (0 when absent)."""
    if cfg.source == "digits":
        return 10
    if cfg.source == "photos":
        from cann_distill.data.photos import photo_files, photos_dir

        root = photos_dir(cfg.root)
        return len(photo_files(root)) if root.is_dir() else 0
    train = Path(cfg.root or "") / "train"
    return len(class_folders(train)) if train.is_dir() else 0


def load_splits(cfg: DataConfig, unlabeled: bool = False) -> Splits:
    """train / val (/ test) splits and the training transform for the recipe's data section; with `unlabeled`,
    the images of `data.unlabeled` (if set) follow the labelled ones in train, labelled -1 (`cann_distill.data.unlabeled`)."""
    train_tf, eval_tf = build_transforms(cfg)
    in_memory = cfg.source in ("digits", "photos")
    workers = worker_count(cfg.num_workers, in_memory=in_memory)
    if in_memory:
        train, val, test = (_digits if cfg.source == "digits" else _photos)(cfg, eval_tf)
        for s in (train, val, test):
            if s is not None:
                s.workers = workers
    else:
        train, val, test = _imagefolder(cfg, eval_tf, workers)
    if unlabeled and cfg.unlabeled is not None:
        train = _with_unlabeled(cfg, train, workers)
    return Splits(train, val, test, train_transform=train_tf)


def _with_unlabeled(cfg: DataConfig, train: Split, workers: int) -> Split:
    """`train` with the usable images of `data.unlabeled` appended (bad ones: `data.on_bad_image`)."""
    from cann_distill.data.unlabeled import join

    folder = Path(cfg.unlabeled or "")
    entries = scan(folder)
    bad = _bad_images(cfg, folder, entries)
    rels = [e.rel for e in entries if e.rel not in bad]
    if not rels:
        raise StageError(f"data.unlabeled: no usable images in {folder} ({len(bad)} skipped as bad)")
    per_process = cfg.cache_mb * 2**20 // (4 * (workers + 1))
    images = FolderImages(folder, rels, pil_mode(cfg), min_side=int(cfg.image_size or 224), cache_bytes=per_process)
    return join(train, images, rels, bad)


def held_out_keys(cfg: DataConfig, cache_dir: Optional[Path]) -> list[tuple[str, str]]:
    """(name, content key) of every val and test image: file sha256 for an image folder, pixel hash for in-memory
    sources (`cann_distill.data.unlabeled` compares the unlabelled images with them)."""
    from cann_distill.data.unlabeled import file_hashes, pixel_key

    if cfg.source == "imagefolder":
        root = Path(cfg.root or "")
        entries = [e for e in scan(root) if e.rel.split("/", 1)[0] in ("val", "test")]
        return [(str(root / rel), key) for rel, key in file_hashes(root, entries, cache_dir).items()]
    splits = load_splits(cfg)
    held = [s for s in (splits.val, splits.test) if s is not None]
    return [(f"{s.name} image {s.ids[i]}", pixel_key(np.asarray(s.images(i)))) for s in held for i in range(len(s))]


def data_fingerprint(cfg: DataConfig, ignore: frozenset[str] = frozenset()) -> str:
    """Recipe section + (for folders) the file listing, so edits on disk invalidate caches.

    `ignore` drops keys that cannot change the samples (e.g. `batch_size` for cached outputs).
    `num_workers` never changes a sample (augmentation is seeded per sample), so it is always ignored.
    """
    h = hashlib.sha256(cfg.model_dump_json(exclude=set(ignore) | SAMPLE_INVARIANT).encode())
    if cfg.source == "imagefolder" and cfg.root:
        for e in scan(Path(cfg.root)):
            h.update(f"{e.rel}:{e.size}:{e.mtime_ns}\n".encode())
    if cfg.unlabeled is not None and "unlabeled" not in ignore:  # its listing: an added or edited image is new data
        h.update(b"unlabeled\n")
        for e in scan(Path(cfg.unlabeled)):
            h.update(f"{e.rel}:{e.size}:{e.mtime_ns}\n".encode())
    if cfg.source == "photos":  # the photos' bytes: an edited or swapped photo is a new dataset
        from cann_distill.data.photos import photo_files, photos_dir

        for f in photo_files(photos_dir(cfg.root)):
            h.update(f"{f.name}:{hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()
