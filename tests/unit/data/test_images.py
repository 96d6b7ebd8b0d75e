from __future__ import annotations

import json
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from cann_distill.data import images
from cann_distill.data.images import (
    IMAGE_EXTS,
    BadImageError,
    FileEntry,
    check_image,
    find_bad_images,
    open_image,
    scan_tree,
)


def save(img: Image.Image, path: Path, **kw: Any) -> Path:
    img.save(path, **kw)
    return path


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: np.ndarray) -> bytes:
    """A PNG written by hand, for the 16-bit colour layouts Pillow cannot write."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def pixels(img: Image.Image) -> list[Any]:
    return np.asarray(img).tolist()


SIXTEEN = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
SIXTEEN_AS_8 = [[0, 1, 128, 255]]


# --- conversion -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,mode", [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I;16B")])
def test_16bit_gray_is_scaled_not_clipped(tmp_path: Path, fmt: str, mode: str) -> None:
    dtype = ">u2" if mode == "I;16B" else "<u2"
    img = Image.frombytes(mode, (4, 1), SIXTEEN.astype(dtype).tobytes())
    path = save(img, tmp_path / f"g.{fmt.lower()}")
    assert Image.open(path).mode == mode  # the file really holds the mode under test
    assert pixels(open_image(path, "L")) == SIXTEEN_AS_8
    rgb = open_image(path, "RGB")
    assert rgb.mode == "RGB" and pixels(rgb) == [[[v] * 3 for v in SIXTEEN_AS_8[0]]]


def test_16bit_little_endian_in_memory() -> None:
    # No Pillow writer produces I;16L on reopening, so the conversion itself is checked.
    img = Image.frombytes("I;16L", (4, 1), SIXTEEN.astype("<u2").tobytes())
    assert pixels(images._to_8bit(img)) == SIXTEEN_AS_8


@pytest.mark.parametrize(
    "values,expected",
    [
        ([0, 256, 32768, 65535], SIXTEEN_AS_8[0]),  # max > 255: 16-bit data
        ([0, 7, 200, 255], [0, 7, 200, 255]),  # max <= 255: already 8-bit
    ],
)
def test_mode_I_range_decided_by_max(tmp_path: Path, values: list[int], expected: list[int]) -> None:
    path = save(Image.fromarray(np.array([values], dtype=np.int32)), tmp_path / "i.tif")
    assert Image.open(path).mode == "I"
    assert pixels(open_image(path, "L")) == [expected]


@pytest.mark.parametrize(
    "values,expected",
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),  # in [0, 1]: x255
        ([-1.0, 0.0, 3.0], [0, 64, 255]),  # otherwise min-max: (0 - -1) / 4 * 255 = 63.75
    ],
)
def test_float_images(tmp_path: Path, values: list[float], expected: list[int]) -> None:
    path = save(Image.fromarray(np.array([values], dtype=np.float32)), tmp_path / "f.tif")
    assert Image.open(path).mode == "F"
    assert pixels(open_image(path, "L")) == [expected]


def test_48_and_64_bit_png_arrive_as_8_bit(tmp_path: Path) -> None:
    rgb = np.array([[[65535, 32768, 256], [0, 0, 0]]], dtype=np.uint16).reshape(1, 6)
    p48 = tmp_path / "rgb48.png"
    p48.write_bytes(png_bytes(2, 1, 16, 2, rgb))
    assert pixels(open_image(p48, "RGB")) == [[[255, 128, 1], [0, 0, 0]]]
    rgba = np.array([[65535, 32768, 256, 0]], dtype=np.uint16)  # alpha 0 is dropped, not composited
    p64 = tmp_path / "rgba64.png"
    p64.write_bytes(png_bytes(1, 1, 16, 6, rgba))
    assert pixels(open_image(p64, "RGB")) == [[[255, 128, 1]]]


def test_palette_with_transparency_keeps_colours(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putpixel((1, 0), 1)
    path = save(img, tmp_path / "p.png", transparency=0)
    assert "transparency" in Image.open(path).info
    assert pixels(open_image(path, "RGB")) == [[[10, 20, 30], [200, 100, 50]]]
    assert pixels(open_image(path, "L")) == [[18, 124]]  # 601 luma of the palette colours


def test_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0], [200, 100, 50, 255]]], dtype=np.uint8), "RGBA")
    assert pixels(open_image(save(rgba, tmp_path / "a.png"), "RGB")) == [[[10, 20, 30], [200, 100, 50]]]
    la = Image.fromarray(np.array([[[77, 0], [200, 128]]], dtype=np.uint8), "LA")
    assert pixels(open_image(save(la, tmp_path / "la.png"), "L")) == [[77, 200]]
    pa = Image.new("PA", (1, 1))
    pa.putpalette([90, 80, 70] + [0] * 765)
    pa.putpixel((0, 0), (0, 0))
    assert pixels(images._to_8bit(pa)) == [[[90, 80, 70]]]


def test_cmyk_to_rgb(tmp_path: Path) -> None:
    cyan = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    assert pixels(open_image(save(cyan, tmp_path / "c.tif"), "RGB"))[0][0] == [0, 255, 255]
    jpeg = np.asarray(open_image(save(cyan, tmp_path / "c.jpg", quality=95), "RGB")).astype(int)
    assert np.abs(jpeg - [0, 255, 255]).max() <= 3


def test_bilevel_to_gray(tmp_path: Path) -> None:
    img = Image.new("1", (2, 1))
    img.putpixel((1, 0), 1)
    path = save(img, tmp_path / "b.png")
    assert pixels(open_image(path, "L")) == [[0, 255]]
    assert pixels(open_image(path, "RGB")) == [[[0, 0, 0], [255, 255, 255]]]


def test_colour_spaces_go_through_pil(tmp_path: Path) -> None:
    colour = (200, 100, 50)
    src = Image.new("RGB", (4, 4), colour)
    for mode in ("LAB", "YCbCr"):
        path = save(src.convert(mode), tmp_path / f"{mode}.tif")
        assert Image.open(path).mode == mode
        assert np.abs(np.asarray(open_image(path, "RGB")).astype(int) - colour).max() <= 3, mode
    hsv_red = Image.new("HSV", (1, 1), (0, 255, 255))  # no file format stores HSV
    assert pixels(images._to_8bit(hsv_red)) == [[[255, 0, 0]]]


def test_rgb_to_l_uses_601_luma_and_l_to_rgb_replicates(tmp_path: Path) -> None:
    rgb = Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8))
    assert pixels(open_image(save(rgb, tmp_path / "rgb.png"), "L")) == [[76, 150, 29]]
    gray = Image.fromarray(np.array([[3, 250]], dtype=np.uint8))
    assert pixels(open_image(save(gray, tmp_path / "l.png"), "RGB")) == [[[3, 3, 3], [250, 250, 250]]]


def test_bad_mode_argument() -> None:
    with pytest.raises(ValueError, match="'RGBA'"):
        open_image("x.png", "RGBA")  # type: ignore[arg-type]


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_exif_orientation_applied(tmp_path: Path, ext: str) -> None:
    img = Image.fromarray(np.array([[0, 255]], dtype=np.uint8))  # 2 wide, 1 high: dark left, light right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = open_image(save(img, tmp_path / f"o.{ext}", exif=exif.tobytes(), **({"quality": 100} if ext == "jpg" else {})), "L")
    assert out.size == (1, 2)
    top, bottom = np.asarray(out)[:, 0].astype(int)
    assert top < 30 and bottom > 225


# --- huge images ----------------------------------------------------------------------------------


def halves(width: int, height: int) -> Image.Image:
    """White left half, black right half: shrinking must keep that layout."""
    a = np.zeros((height, width), dtype=np.uint8)
    a[:, : width // 2] = 255
    return Image.fromarray(a)


def test_wide_png_is_reduced(tmp_path: Path) -> None:
    path = save(halves(10_000, 200), tmp_path / "wide.png", compress_level=1)
    out = open_image(path, "RGB", min_side=32)
    assert out.size == (3334, 67)  # factor 200 // 64 = 3, sides rounded up
    assert 64 <= min(out.size) < 128
    a = np.asarray(out)
    assert a[0, 0].tolist() == [255, 255, 255] and a[0, -1].tolist() == [0, 0, 0]
    assert open_image(path, "L").size == (10_000, 200)  # without min_side nothing is shrunk


def test_short_side_already_small_is_left_alone(tmp_path: Path) -> None:
    path = save(halves(10_000, 40), tmp_path / "strip.png", compress_level=1)
    assert open_image(path, "L", min_side=32).size == (10_000, 40)  # 40 <= 2*32: never below the asked size


def test_large_jpeg_is_drafted_then_reduced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(halves(4000, 3000), tmp_path / "big.jpg", quality=90)
    drafts: list[tuple[str, tuple[int, int]]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: Image.Image, mode: str, size: tuple[int, int]) -> Any:
        drafts.append((mode, size))
        return real_draft(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = open_image(path, "L", min_side=32)
    assert drafts == [("L", (86, 64))]  # decoded at 1/8 scale: 500 x 375, then reduce(375 // 64 = 5)
    assert out.size == (100, 75)
    a = np.asarray(out).astype(int)
    assert a[37, 5] > 240 and a[37, 95] < 15


def test_decompression_bomb_is_a_bad_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    warned = save(Image.new("L", (40, 40)), tmp_path / "warned.png")  # 1,600 px: PIL only warns
    raised = save(Image.new("L", (100, 100)), tmp_path / "raised.png")  # 10,000 px: PIL raises
    for path, n in ((warned, "1,600"), (raised, "10,000")):
        reason = f"has {n} pixels, over the decompression-bomb limit (1,000)"
        with pytest.raises(BadImageError) as err:
            open_image(path, "RGB")
        assert err.value.reason == reason
        assert check_image(path) == reason
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


# --- bad files ------------------------------------------------------------------------------------


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    png = save(noise, tmp_path / "ok.png").read_bytes()
    jpg = save(noise, tmp_path / "ok.jpg").read_bytes()
    files = {"empty": b"", "text": b"hello, not an image\n", "png_half": png[: len(png) // 2], "jpg_70": jpg[: len(jpg) * 7 // 10]}
    ext = {"empty": ".png", "text": ".jpg", "png_half": ".png", "jpg_70": ".jpg"}
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / "train" / "cat" / f"{name}{ext[name]}"
        out[name].parent.mkdir(parents=True, exist_ok=True)
        out[name].write_bytes(data)
    return out


def test_check_image_reasons(bad_files: dict[str, Path], tmp_path: Path) -> None:
    assert check_image(bad_files["empty"]) == "empty file (0 bytes)"
    assert check_image(bad_files["empty"], size=0) == "empty file (0 bytes)"
    assert check_image(bad_files["text"]) == "not an image (unknown format)"
    assert check_image(bad_files["png_half"]) == "truncated image (Truncated File Read)"
    assert check_image(bad_files["jpg_70"]) == "truncated JPEG (no end-of-image marker)"
    assert check_image(tmp_path / "missing.png") == "cannot read file (No such file or directory)"


@pytest.mark.parametrize(
    "name,reason",
    [
        ("empty", "empty file (0 bytes)"),
        ("text", "not an image (unknown format)"),
        ("png_half", "truncated image (image file is truncated)"),
        ("jpg_70", "truncated image (image file is truncated ("),
    ],
)
def test_open_image_raises_one_line_bad_image_error(bad_files: dict[str, Path], name: str, reason: str) -> None:
    rel = bad_files[name].relative_to(bad_files[name].parents[2])
    with pytest.raises(BadImageError) as err:
        open_image(bad_files[name], "RGB")
    e = err.value
    assert e.path == bad_files[name]
    assert e.reason.startswith(reason)
    text = str(e)
    assert text.endswith(f"/train/cat/{rel.name}: {e.reason}")
    assert "\n" not in text and len(text) < 200
    assert str(BadImageError(rel, e.reason)).startswith(f"train/cat/{rel.name}: {reason}")


def test_bad_image_error_is_short_and_picklable() -> None:
    e = BadImageError("/data/" + "deep/" * 60 + "x.jpg", "cannot decode (" + "very long\nmessage " * 30 + ")")
    text = str(e)
    assert "\n" not in text and len(text) < 200
    assert text.startswith("…") and "/deep/x.jpg: cannot decode (very long message" in text
    back = pickle.loads(pickle.dumps(e))
    assert (back.path, back.reason, str(back)) == (e.path, e.reason, text)


def test_jpeg_trailers(tmp_path: Path) -> None:
    jpg = save(Image.new("RGB", (16, 16), (1, 2, 3)), tmp_path / "a.jpg").read_bytes()
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(jpg + b"\x00" * 4)
    assert check_image(padded) is None
    trailer = tmp_path / "trailer.jpg"  # e.g. a phone's motion photo appends a video after the image
    trailer.write_bytes(jpg + b"ftypmp42" * 50)
    assert check_image(trailer) is None


@pytest.mark.parametrize(
    "fmt,mode",
    [
        ("PNG", "L"),
        ("PNG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", "P"),
        ("PNG", "I;16"),
        ("JPEG", "L"),
        ("JPEG", "RGB"),
        ("JPEG", "CMYK"),
        ("BMP", "L"),
        ("BMP", "RGB"),
        ("BMP", "P"),
        ("TIFF", "L"),
        ("TIFF", "RGB"),
        ("TIFF", "RGBA"),
        ("TIFF", "P"),
        ("TIFF", "I;16"),
        ("TIFF", "CMYK"),
        ("WEBP", "RGB"),
        ("WEBP", "RGBA"),
        ("GIF", "P"),
    ],
)
def test_valid_images_pass_and_open(tmp_path: Path, fmt: str, mode: str) -> None:
    gradient = Image.fromarray(np.tile(np.arange(0, 240, 10, dtype=np.uint8), (16, 1))).convert("RGB")
    if mode == "I;16":
        src = Image.fromarray(np.asarray(gradient.convert("L")).astype(np.uint16) << 8)
    else:  # an adaptive palette holds the 24 greys exactly
        src = gradient.convert(mode, **({"palette": Image.Palette.ADAPTIVE} if mode == "P" else {}))
    ext = {"JPEG": "jpg", "TIFF": "tif"}.get(fmt, fmt.lower())
    path = save(src, tmp_path / f"img.{ext}", **({"lossless": True} if fmt == "WEBP" else {}))
    assert check_image(path) is None
    assert check_image(path, size=path.stat().st_size) is None
    gray = open_image(path, "L")
    assert gray.mode == "L" and gray.size == (24, 16)
    expected = np.asarray(gradient.convert("L")).astype(int)
    assert np.abs(np.asarray(gray).astype(int) - expected).max() <= (12 if fmt == "JPEG" else 1)


# --- scan_tree ------------------------------------------------------------------------------------


def test_scan_tree(tmp_path: Path) -> None:
    root = tmp_path / "data"
    files = {
        "train/cat/001.jpg": b"a",
        "train/cat/002.JPG": b"bb",
        "train/dog/sub/003.Png": b"ccc",
        "val/cat/004.webp": b"dddd",
        "train/cat/notes.txt": b"x",
        "train/cat/noext": b"x",
        "train/cat/.hidden.jpg": b"x",
        "train/.cache/005.jpg": b"x",
        ".thumbs/006.png": b"x",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "train/dog/folder.png").mkdir()  # a folder with an image's name is walked, not listed
    target = tmp_path / "outside" / "target.bin"
    target.parent.mkdir()
    target.write_bytes(b"0123456789")
    (root / "val/cat/link.tif").symlink_to(target)
    (root / "val/cat/broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.utime(root / "train/cat/001.jpg", ns=(1, 123_456_789_000))

    entries = scan_tree(root)
    assert [e.rel for e in entries] == [
        "train/cat/001.jpg",
        "train/cat/002.JPG",
        "train/dog/sub/003.Png",
        "val/cat/004.webp",
        "val/cat/link.tif",
    ]
    by_rel = {e.rel: e for e in entries}
    assert by_rel["train/cat/001.jpg"] == FileEntry("train/cat/001.jpg", 1, 123_456_789_000)
    assert by_rel["val/cat/link.tif"].size == 10
    assert by_rel["train/dog/sub/003.Png"].size == 3


def test_scan_tree_follows_folder_links_but_not_cycles(tmp_path: Path) -> None:
    shared = tmp_path / "shared_cats"
    shared.mkdir()
    (shared / "a.png").write_bytes(b"x")
    (shared / "loop").symlink_to(tmp_path / "root")  # back up to the scanned root
    root = tmp_path / "root"
    (root / "train").mkdir(parents=True)
    (root / "train" / "cat").symlink_to(shared)
    assert [e.rel for e in scan_tree(root)] == ["train/cat/a.png"]


def test_image_exts() -> None:
    assert IMAGE_EXTS == frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


# --- find_bad_images ------------------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for i in range(5):
        (root / "train" / "cat").mkdir(parents=True, exist_ok=True)
        save(Image.new("L", (4, 4), i * 40), root / "train" / "cat" / f"{i}.png")
    (root / "train" / "cat" / "bad.jpg").write_bytes(b"not a jpeg")
    (root / "val" / "cat").mkdir(parents=True)
    (root / "val" / "cat" / "empty.png").write_bytes(b"")
    return root


def counting_check(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Patch check_image with a wrapper that records the file names it was asked about."""
    seen: list[str] = []
    real = images.check_image

    def wrapped(path: Path | str, size: int | None = None) -> str | None:
        seen.append(Path(path).name)
        return real(path, size)

    monkeypatch.setattr(images, "check_image", wrapped)
    return seen


EXPECTED_BAD = {"train/cat/bad.jpg": "not an image (unknown format)", "val/cat/empty.png": "empty file (0 bytes)"}


def test_find_bad_images_memo(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    seen = counting_check(monkeypatch)
    entries = scan_tree(dataset)
    wrapped: list[list[str]] = []

    def progress(items: Iterable[FileEntry]) -> Iterable[FileEntry]:
        items = list(items)
        wrapped.append([e.rel for e in items])
        return items

    assert find_bad_images(dataset, entries, cache_dir=cache, progress=progress) == EXPECTED_BAD
    assert sorted(seen) == sorted(Path(e.rel).name for e in entries) and len(seen) == 7
    assert wrapped == [[e.rel for e in entries]]

    memo_files = list((cache / "image_checks").iterdir())
    assert [p.name for p in memo_files] == [f"{images.hashlib.sha256(str(dataset.resolve()).encode()).hexdigest()}.json"]
    memo = json.loads(memo_files[0].read_text())
    assert memo["val/cat/empty.png"] == [0, entries[-1].mtime_ns, "empty file (0 bytes)"]
    assert memo["train/cat/0.png"][2] is None

    seen.clear()
    before = memo_files[0].stat().st_mtime_ns
    assert find_bad_images(dataset, scan_tree(dataset), cache_dir=cache, progress=progress) == EXPECTED_BAD
    assert seen == [] and wrapped[-1] == [e.rel for e in entries]  # nothing new: progress not even called
    assert len(wrapped) == 1 and memo_files[0].stat().st_mtime_ns == before  # and the memo not rewritten

    os.utime(dataset / "train/cat/3.png", ns=(1, 1_000_000_000))
    assert find_bad_images(dataset, scan_tree(dataset), cache_dir=cache) == EXPECTED_BAD
    assert seen == ["3.png"]


def test_find_bad_images_memo_notices_a_repaired_file(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert find_bad_images(dataset, scan_tree(dataset), cache_dir=cache) == EXPECTED_BAD
    save(Image.new("RGB", (4, 4)), dataset / "val/cat/empty.png", format="PNG")
    assert find_bad_images(dataset, scan_tree(dataset), cache_dir=cache) == {"train/cat/bad.jpg": EXPECTED_BAD["train/cat/bad.jpg"]}


@pytest.mark.parametrize("damage", [b"{not json", b"\xff\xfe\x00", b"[1, 2, 3]", b'{"train/cat/0.png": "oops", "train/cat/1.png": [1]}'])
def test_find_bad_images_tolerates_a_damaged_memo(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: bytes) -> None:
    cache = tmp_path / "cache"
    entries = scan_tree(dataset)
    find_bad_images(dataset, entries, cache_dir=cache)
    (memo_file,) = (cache / "image_checks").iterdir()
    memo_file.write_bytes(damage)
    seen = counting_check(monkeypatch)
    assert find_bad_images(dataset, entries, cache_dir=cache) == EXPECTED_BAD
    assert len(seen) == 7  # everything checked again
    memo = json.loads(memo_file.read_text())  # and the memo rewritten whole
    assert sorted(memo) == [e.rel for e in entries]
    assert [p.name for p in (cache / "image_checks").iterdir()] == [memo_file.name]  # no temp file left


def test_find_bad_images_merges_separate_calls_and_works_without_cache(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = scan_tree(dataset)
    train = [e for e in entries if e.rel.startswith("train/")]
    val = [e for e in entries if e.rel.startswith("val/")]
    assert find_bad_images(dataset, entries) == EXPECTED_BAD  # no cache_dir: nothing written anywhere
    cache = tmp_path / "cache"
    find_bad_images(dataset, train, cache_dir=cache)
    find_bad_images(dataset, val, cache_dir=cache)
    seen = counting_check(monkeypatch)
    assert find_bad_images(dataset, entries, cache_dir=cache) == EXPECTED_BAD
    assert seen == []


def test_find_bad_images_saves_progress_when_interrupted(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    entries = scan_tree(dataset)

    def stop_after_three(items: Iterable[FileEntry]) -> Iterable[FileEntry]:
        for i, e in enumerate(items):
            if i == 3:
                raise KeyboardInterrupt
            yield e

    with pytest.raises(KeyboardInterrupt):
        find_bad_images(dataset, entries, cache_dir=cache, progress=stop_after_three)
    (memo_file,) = (cache / "image_checks").iterdir()
    assert sorted(json.loads(memo_file.read_text())) == [e.rel for e in entries[:3]]
    seen = counting_check(monkeypatch)
    assert find_bad_images(dataset, entries, cache_dir=cache) == EXPECTED_BAD
    assert sorted(seen) == sorted(Path(e.rel).name for e in entries[3:])
