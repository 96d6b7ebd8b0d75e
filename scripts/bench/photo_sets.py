"""Build the photo benchmark sets as ImageFolder trees (train/val/test/<class>/*.png) from real photographs
that ship in Debian packages; every arm of the benchmarks reads the same PNG files.

Each class is one photograph; crops come from disjoint bands of it (cann_distill.data.photos), so test
crops show parts of the scene never seen in training.

Sets (licences: see each package's /usr/share/doc/<package>/copyright; nothing here is redistributed):
  ubuntu15  lomiri-wallpapers-16.04 (14 photos) + lomiri-wallpapers-20.04's Kleiber: 15 classes,
            CC BY 4.0 / CC BY-SA 3.0-4.0 / CC0
  nature20  mate-backgrounds' nature photos (12, GPL-2+) + 8 photos of plasma-workspace-wallpapers
            (LGPL / CC BY-SA): 20 classes
  nature40  nature20's photos, each cut into a left and a right half, one class per half: 40 classes
            where two classes share a photo's colours, so telling them apart takes the scene's structure
  digits_hard  not photos: scikit-learn's digits at 32 px, shifted, noised, occluded, 20% of the
            training labels flipped (scripts/bench_critical.py's write_hard_digits); needs no --debs

The packages are unpacked, not installed: `apt-get download PKG && dpkg-deb -x PKG.deb DIR`.

Example:
  python scripts/bench/photo_sets.py --debs /tmp/debs/x --out runs/photo_sets
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import PIL
from PIL import Image

from cann_distill.data.photos import class_name, crop_set

LOMIRI16 = "lomiri-wallpapers-16.04/usr/share/backgrounds"
SETS: dict[str, list[str]] = {
    "ubuntu15": [
        f"{LOMIRI16}/{n}"
        for n in (
            "Bridge_by_Sander_Klootwijk.jpg",
            "Dragonfly_by_Bolly.jpg",
            "Picture_0B_by_freespace.jpg",
            "Picture_1A_by_freespace.jpg",
            "Wine_by_Jakkub_Mede.jpg",
            "aitzgorri_by_Aitzol_Berasategi.jpg",
            "analogpattern_by_Peter_Nerlich.jpg",
            "free_by_Peter_Nerlich.jpg",
            "friends_by_Aitzol_Berasategi.jpg",
            "greentock_by_Peter_Nerlich.jpg",
            "life_by_Aitzol_Berasategi.jpg",
            "picosdeeuropa_by_Aitzol_Berasategi.jpg",
            "seeding_by_Clements_Engelhardt.jpg",
            "sunset_by_Aitzol_Berasategi.jpg",
        )
    ]
    + ["lomiri-wallpapers-20.04/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"],
    "nature20": [
        f"mate-backgrounds/usr/share/backgrounds/mate/nature/{n}.jpg"
        for n in (
            "Aqua",
            "Blinds",
            "Dune",
            "FreshFlower",
            "Garden",
            "GreenMeadow",
            "LadyBird",
            "RainDrops",
            "Storm",
            "TwoWings",
            "Wood",
            "YellowFlower",
        )
    ]
    + [
        f"plasma-workspace-wallpapers/usr/share/wallpapers/{n}/contents/images/2560x1600.jpg"
        for n in ("BytheWater", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Kite", "OneStandsOut", "Path")
    ],
}
SETS["nature40"] = SETS["nature20"]
HALVED = {"nature40"}  # sets whose photos are cut into a left and a right half, one class each
SPLITS = {"train": 240, "val": 80, "test": 80}  # crops per class
SPLITS_OF = {"nature40": {"train": 120, "val": 40, "test": 60}}  # twice the classes, about the same number of images
LONG_SIDE = {
    "ubuntu15": 512,
    "nature20": 512,
    "nature40": 768,
}  # photos are first reduced to this long side (512: a crop spans 24-100 % of a 102-px band)


def load_photo(path: Path, long_side: int) -> Image.Image:
    im = Image.open(path).convert("RGB")
    scale = long_side / max(im.size)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS)


def halves(photos: list[Image.Image], names: list[str]) -> tuple[list[Image.Image], list[str]]:
    """Each photo as two classes: its left half and its right half."""
    out: list[Image.Image] = []
    out_names: list[str] = []
    for im, name in zip(photos, names):
        w = im.width // 2
        out += [im.crop((0, 0, w, im.height)), im.crop((w, 0, 2 * w, im.height))]
        out_names += [f"{name}_left", f"{name}_right"]
    return out, out_names


def tree_digest(root: Path) -> str:
    """sha256 over every PNG under `root` (relative path and bytes, in sorted order): two trees with the same
    digest hold the same pixels. The crops depend on the Pillow that decoded and resized the photos, so a set
    rebuilt with another Pillow can differ; the digest and the Pillow version go into set.json."""
    h = hashlib.sha256()
    for png in sorted(root.rglob("*.png")):
        h.update(png.relative_to(root).as_posix().encode() + b"\0")
        h.update(png.read_bytes())
    return h.hexdigest()


def stamp(root: Path, info: dict[str, object]) -> dict[str, object]:
    """set.json: what the set is, with the digest of its files and the Pillow that wrote them."""
    info = {**info, "sha256": tree_digest(root), "pillow": PIL.__version__}
    (root / "set.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def find(debs: Path, rel: str) -> Path:
    path = debs / rel
    if path.exists():
        return path
    matches = sorted(debs.glob(rel.rsplit("/", 1)[0] + "/*")) if "/" in rel else []
    raise SystemExit(f"error: {path} not found (unpack the package with dpkg-deb -x){'; near: ' + matches[0].name if matches else ''}")


def build(name: str, debs: Path, out: Path, size: int, seed: int, long_side: int) -> dict[str, object]:
    paths = [find(debs, rel) for rel in SETS[name]]
    names = [class_name(p) if "plasma" not in rel else rel.split("/")[4] for p, rel in zip(paths, SETS[name])]
    photos = [load_photo(p, long_side) for p in paths]
    if name in HALVED:
        photos, names = halves(photos, names)
    dest = out / name
    counts = {}
    for split, per_class in SPLITS_OF.get(name, SPLITS).items():
        crops = crop_set(photos, split, per_class, size, seed)
        for i, (pix, target) in enumerate(zip(crops.pixels, crops.targets)):
            folder = dest / split / names[int(target)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pix).save(folder / f"{i:05d}.png")
        counts[split] = int(len(crops.targets))
    info = {"set": name, "classes": names, "sources": SETS[name], "size": size, "seed": seed, "long_side": long_side, "counts": counts}
    return stamp(dest, info)


def hard_digits(root: Path) -> dict[str, object]:
    """digits_hard, written by the critical-samples benchmark's own builder (one definition of the set)."""
    scripts = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(scripts))  # bench_critical imports its neighbour bench_common
    spec = importlib.util.spec_from_file_location("bench_critical", scripts / "bench_critical.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = dict(module.write_hard_digits(root))
    for png in sorted(root.glob("*/*/*.png")):  # RGB, so torchvision's ImageFolder and cann-distill read the same pixels
        with Image.open(png) as im:
            rgb = im.convert("RGB") if im.mode != "RGB" else None
        if rgb is not None:
            rgb.save(png)
    return stamp(root, {"set": "digits_hard", **info})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[-1]
    )
    ap.add_argument("--debs", type=Path, default=None, help="folder the Debian packages were unpacked into (one sub-folder each)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated (default %(default)s)")
    ap.add_argument("--size", type=int, default=32, help="crop size in px (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--long-side", type=int, help="reduce each photo to this long side first (default: the set's, see LONG_SIDE)")
    args = ap.parse_args(argv)
    for name in args.sets.split(","):
        if name not in SETS and name != "digits_hard":
            ap.error(f"unknown set {name!r} (known: {', '.join(SETS)})")
        if name == "digits_hard":
            info = hard_digits(args.out / name)
            print(f"{name}: {info['train']}/{info['val']}/{info['test']} images -> {args.out / name}", file=sys.stderr)
            continue
        if (args.out / name / "set.json").exists():
            print(f"{name}: already built in {args.out / name}", file=sys.stderr)
            continue
        if args.debs is None:
            ap.error(f"{name} needs --debs")
        info = build(name, args.debs, args.out, args.size, args.seed, args.long_side or LONG_SIDE[name])
        print(f"{name}: {len(info['classes'])} classes, {info['counts']} -> {args.out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
