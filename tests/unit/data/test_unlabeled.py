"""data.unlabeled: joining unlabelled images to the training split, and the content check against val/test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cann_distill.core.recipe import DataConfig
from cann_distill.data.images import scan_tree
from cann_distill.data.loading import ArrayImages, Split
from cann_distill.data.unlabeled import file_hashes, input_errors, join, pixel_key


def test_join_appends_unlabelled_images_with_label_minus_one() -> None:
    pixels = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    train = Split("train", ["a", "b"], np.array([1, 0]), ["x", "y"], ArrayImages(pixels, "L"), transform=lambda im: im)
    joined = join(train, lambda i: f"unlabelled {i}", ["p/1.png", "q.png"], {"bad.png": "not an image"})
    assert joined.ids == ["a", "b", "unlabeled/p/1.png", "unlabeled/q.png"]
    assert joined.targets.tolist() == [1, 0, -1, -1]
    assert np.array_equal(np.asarray(joined.images(1)), pixels[1]) and joined.images(3) == "unlabelled 1"
    assert joined.skipped == {"unlabeled/bad.png": "not an image"} and len(train) == 2


def test_input_errors_name_an_empty_folder_and_a_held_out_copy(tmp_path: Path) -> None:
    folder = tmp_path / "unl"
    folder.mkdir()
    cfg = DataConfig(source="digits", channels=1, unlabeled=str(folder))
    (folder / "readme.txt").write_text("no image")
    assert input_errors(cfg, lambda: [], None) == [
        f"data.unlabeled: no images in {folder} (.png/.jpg/.jpeg/.bmp/.gif/.webp/.tif/.tiff, any depth)"
    ]
    held = np.full((8, 8), 7, dtype=np.uint8)
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(folder / "other.png")
    assert input_errors(cfg, lambda: [("val image 3", pixel_key(held))], None) == []
    Image.fromarray(held, "L").save(folder / "copy.png")
    (error,) = input_errors(cfg, lambda: [("val image 3", pixel_key(held))], None)
    assert error.startswith(f"data.unlabeled: {folder / 'copy.png'} is the same image as val image 3")


def test_file_hashes_are_memoised_by_size_and_mtime(tmp_path: Path) -> None:
    root, cache = tmp_path / "files", tmp_path / "cache"
    root.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(root / "a.png")
    first = file_hashes(root, scan_tree(root), cache)
    assert len(list((cache / "content_hashes").iterdir())) == 1
    # a memo entry is trusted while the file's size and mtime match it
    memo = next((cache / "content_hashes").iterdir())
    memo.write_text(memo.read_text().replace(first["a.png"], "f" * 64))
    assert file_hashes(root, scan_tree(root), cache) == {"a.png": "f" * 64}
    Image.fromarray(np.ones((5, 5), np.uint8), "L").save(root / "a.png")  # changed: hashed again
    assert file_hashes(root, scan_tree(root), cache)["a.png"] not in (first["a.png"], "f" * 64)
