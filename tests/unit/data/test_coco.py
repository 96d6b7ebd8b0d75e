"""COCO detection data: every kind of bad entry is one line (on_bad: error) or skipped and counted (skip); the demo set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from cann_distill.core.errors import StageError
from cann_distill.core.recipe_detect import DemoSetConfig, DetectDataConfig
from cann_distill.data.coco import DetectionDataset, collate, detection_fingerprint, load_detection, read_coco
from cann_distill.data.detection_demo import demo_files


def image(folder: Path, name: str, size: tuple[int, int] = (40, 30)) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(folder / name)
    return {"file_name": name, "width": size[0], "height": size[1]}


def coco(tmp_path: Path, annotations: list[dict[str, Any]], images: list[dict[str, Any]] | None = None, cats: Any = None) -> Path:
    """A COCO file over images/ (image 1: a.png 40x30, image 2: b.png 40x30 unless given)."""
    folder = tmp_path / "images"
    if images is None:
        images = [{"id": 1, **image(folder, "a.png")}, {"id": 2, **image(folder, "b.png")}]
    data = {"images": images, "annotations": annotations, "categories": cats or [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def ann(i: int, bbox: list[float], image_id: int = 1, category_id: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": i, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def test_a_clean_file_reads_into_boxes_labels_and_the_eval_ground_truth(tmp_path: Path) -> None:
    path = coco(tmp_path, [ann(1, [2, 3, 10, 5]), ann(2, [0, 0, 4, 4], category_id=2)])
    split = read_coco(path, tmp_path / "images", "error", "train")
    first = split.images[0]
    np.testing.assert_allclose(first.boxes, [[2, 3, 12, 8], [0, 0, 4, 4]])
    assert first.labels.tolist() == [0, 1] and split.classes == ["cat", "dog"] and split.category_ids == [1, 2]
    assert split.counts == {"images": 2, "boxes": 2, "without_annotations": 1}  # image 2 has none: allowed, counted
    assert [a["bbox"] for a in split.gt["annotations"]] == [[2, 3, 10, 5], [0, 0, 4, 4]]
    assert split.notes == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (ann(1, [50, 40, 5, 5]), r"box \[50, 40, 5, 5\] lies outside the 40x30 image"),
        (ann(1, [2, 2, 0, 5]), r"zero-area box \[2, 2, 0, 5\]"),
        (ann(1, [2, 2, -3, 5]), r"zero-area box"),
        (ann(1, [2, 2, 5, 5], category_id=7), r"unknown category_id 7"),
        (ann(1, [2, 2, 5, 5], image_id=9), r"refers to no image in the file"),
        (ann(1, [2, 2, 5]), r"bbox must be \[x, y, width, height\]"),
    ],
    ids=["outside", "zero-width", "negative", "unknown-category", "unknown-image", "three-numbers"],
)
def test_a_bad_box_is_one_line_or_skipped_and_counted(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    path = coco(tmp_path, [entry, ann(2, [1, 1, 5, 5])])
    with pytest.raises(StageError, match=message) as exc:
        read_coco(path, tmp_path / "images", "error", "train")
    assert "\n" not in str(exc.value) and "detect.data.on_bad: skip" in str(exc.value)
    split = read_coco(path, tmp_path / "images", "skip", "train")
    assert split.counts["bad_annotations"] == 1 and split.counts["boxes"] == 1
    assert len(split.gt["annotations"]) == 1  # a skipped box is not ground truth for the metrics either


def test_a_box_partly_outside_is_clipped_and_counted(tmp_path: Path) -> None:
    split = read_coco(coco(tmp_path, [ann(1, [-5, 20, 20, 20])]), tmp_path / "images", "error", "train")
    np.testing.assert_allclose(split.images[0].boxes, [[0, 20, 15, 30]])
    assert split.counts["clipped"] == 1 and split.gt["annotations"][0]["bbox"] == [0.0, 20.0, 15.0, 10.0]


def test_non_contiguous_category_ids_are_mapped_in_id_order_and_said(tmp_path: Path) -> None:
    cats = [{"id": 9, "name": "c"}, {"id": 1, "name": "a"}, {"id": 5, "name": "b"}]
    path = coco(tmp_path, [ann(1, [1, 1, 5, 5], category_id=9), ann(2, [1, 1, 5, 5], category_id=5)], cats=cats)
    split = read_coco(path, tmp_path / "images", "error", "train")
    assert split.category_ids == [1, 5, 9] and split.classes == ["a", "b", "c"]
    assert split.images[0].labels.tolist() == [2, 1]
    assert split.notes == ["category ids 1, 5, 9 are not contiguous: mapped in id order to classes 0..2"]


def test_crowd_regions_are_not_trained_on_but_kept_for_evaluation(tmp_path: Path) -> None:
    path = coco(tmp_path, [ann(1, [1, 1, 5, 5]), ann(2, [10, 10, 20, 15], iscrowd=1)])
    split = read_coco(path, tmp_path / "images", "error", "train")
    assert len(split.images[0].labels) == 1 and split.counts["crowd"] == 1
    assert [a["iscrowd"] for a in split.gt["annotations"]] == [0, 1]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": 1, "file_name": "a.png", "width": 41, "height": 30}, r"a\.png is 40x30, the JSON says 41x30"),
        ({"id": 1, "file_name": "gone.png", "width": 40, "height": 30}, r"file not found"),
        ({"id": 1, "file_name": "../a.png", "width": 40, "height": 30}, r"leaves the images folder"),
        ({"id": 1, "file_name": "a.png"}, r"needs positive integer `width` and `height`"),
    ],
    ids=["size-differs", "missing-file", "outside-folder", "no-size"],
)
def test_a_bad_image_is_one_line_or_skipped_with_its_boxes(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    folder = tmp_path / "images"
    images = [{**entry}, {"id": 2, **image(folder, "b.png")}]
    image(folder, "a.png")
    path = coco(tmp_path, [ann(1, [1, 1, 5, 5]), ann(2, [1, 1, 5, 5], image_id=2)], images=images)
    with pytest.raises(StageError, match=message):
        read_coco(path, folder, "error", "train")
    split = read_coco(path, folder, "skip", "train")
    assert [im.id for im in split.images] == [2]
    assert split.counts["bad_images"] == 1 and split.counts["annotations_of_skipped_images"] == 1
    assert [a["image_id"] for a in split.gt["annotations"]] == [2] and [i["id"] for i in split.gt["images"]] == [2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json at all", r"not a COCO JSON file \(Expecting value at line 1, column 1\)"),
        ("[1, 2]", r"a COCO file is a JSON object with `images`, `annotations` and `categories` lists \(got list\)"),
        ('{"images": []}', r"\(got images\)"),
        ('{"images": [], "annotations": [], "categories": []}', r"no categories"),
        ('{"images": [], "annotations": [], "categories": [{"id": 1}, {"id": 1}]}', r"category id 1 appears twice"),
    ],
)
def test_a_file_that_is_not_coco_json_is_one_line_whatever_on_bad_says(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ann.json"
    path.write_text(text)
    for on_bad in ("error", "skip"):
        with pytest.raises(StageError, match=message) as exc:
            read_coco(path, tmp_path, on_bad, "train")  # type: ignore[arg-type]
        assert "\n" not in str(exc.value)
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(StageError, match="not UTF-8"):
        read_coco(path, tmp_path, "error", "train")


def test_the_dataset_resizes_images_and_boxes_and_collate_pads(tmp_path: Path) -> None:
    path = coco(tmp_path, [ann(1, [4, 3, 20, 15]), ann(2, [0, 0, 40, 30])])
    split = read_coco(path, tmp_path / "images", "error", "train")
    ds = DetectionDataset(split, 20, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    x, boxes, labels, i = ds[0]
    assert x.shape == (3, 20, 20) and i == 0
    torch.testing.assert_close(boxes, torch.tensor([[2.0, 2.0, 12.0, 12.0], [0.0, 0.0, 20.0, 20.0]]))
    torch.testing.assert_close(x[:, 0, 0], (torch.tensor([120, 80, 40]) / 255 - 0.5) / 0.25)
    images, b, lab, idx = collate([ds[1], ds[0]])
    assert images.shape == (2, 3, 20, 20) and b.shape == (2, 2, 4)
    assert lab.tolist() == [[-1, -1], [0, 0]] and idx.tolist() == [1, 0]


def test_the_demo_set_is_deterministic_and_reads_clean(tmp_path: Path) -> None:
    cfg = DemoSetConfig(train_images=12, val_images=8, objects=(0, 2), digit_size=(8, 20), seed=3)
    a = demo_files(cfg, 32, tmp_path / "a")
    b = demo_files(cfg, 32, tmp_path / "b")
    assert a["train"][0].read_bytes() == b["train"][0].read_bytes()
    assert (a["val"][1] / "000003.png").read_bytes() == (b["val"][1] / "000003.png").read_bytes()
    other = demo_files(cfg.model_copy(update={"seed": 4}), 32, tmp_path / "a")
    assert other["train"][0] != a["train"][0] and other["train"][0].read_bytes() != a["train"][0].read_bytes()
    data = DetectDataConfig(demo=cfg, image_size=32)
    train, val = load_detection(data, tmp_path / "a")
    assert (len(train), len(val)) == (12, 8) and train.classes == [str(d) for d in range(10)]
    for split in (train, val):
        for im in split.images:
            assert (im.width, im.height) == (32, 32) and len(im.labels) <= 2
            assert ((im.boxes[:, 2:] > im.boxes[:, :2]).all()) and im.boxes.min(initial=0) >= 0 and im.boxes.max(initial=0) <= 32
    assert train.counts["boxes"] > 0 and train.counts.get("bad_annotations", 0) == 0
    assert detection_fingerprint(data) == detection_fingerprint(DetectDataConfig(demo=cfg, image_size=32))
    assert detection_fingerprint(data) != detection_fingerprint(DetectDataConfig(demo=cfg, image_size=48))


def test_train_and_val_must_share_their_categories(tmp_path: Path) -> None:
    train = coco(tmp_path / "t", [ann(1, [1, 1, 5, 5])])
    val = coco(tmp_path / "v", [ann(1, [1, 1, 5, 5], category_id=3)], cats=[{"id": 1, "name": "cat"}, {"id": 3, "name": "cow"}])
    cfg = DetectDataConfig(
        source="coco",
        train_annotations=str(train),
        train_images=str(tmp_path / "t" / "images"),
        val_annotations=str(val),
        val_images=str(tmp_path / "v" / "images"),
    )
    with pytest.raises(StageError, match=r"the val split's category ids \[1, 3\] differ from the train split's \[1, 2\]"):
        load_detection(cfg, tmp_path)


def test_boxes_that_look_like_xyxy_stop_whatever_on_bad_says(tmp_path: Path) -> None:
    corners = [[20, 5, 35, 20], [25, 10, 38, 28], [15, 12, 30, 25], [2, 2, 10, 10]]  # x1 y1 x2 y2 in a 40x30 image
    path = coco(tmp_path, [ann(i + 1, box) for i, box in enumerate(corners)])
    for on_bad in ("error", "skip"):
        with pytest.raises(StageError, match=r"3 of 4 boxes run past their image read as \[x, y, width, height\]") as exc:
            read_coco(path, tmp_path / "images", on_bad, "train")  # type: ignore[arg-type]
        assert "the boxes look like xyxy" in str(exc.value) and "\n" not in str(exc.value)


def test_a_few_boxes_partly_outside_do_not_look_like_xyxy(tmp_path: Path) -> None:
    boxes = [[30, 20, 15, 15], [1, 1, 5, 5], [20, 5, 25, 10], [3, 3, 10, 10]]  # two run past the 40x30 image as xywh
    split = read_coco(coco(tmp_path, [ann(i + 1, b) for i, b in enumerate(boxes)]), tmp_path / "images", "error", "train")
    assert split.counts["clipped"] == 2 and split.counts["boxes"] == 4  # [20, 5, 25, 10] fits as corners too: one is not many


def rotated_jpeg(folder: Path, name: str) -> None:
    """A 40x30 JPEG as stored whose EXIF orientation 6 (rotate 90° clockwise) makes it 30x40 as decoded."""
    folder.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / name, exif=exif)


def test_an_exif_rotated_image_is_sized_as_decoded_and_a_stored_size_is_said(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    rotated_jpeg(folder, "r.jpg")
    good = coco(tmp_path, [ann(1, [2, 2, 20, 30])], images=[{"id": 1, "file_name": "r.jpg", "width": 30, "height": 40}])
    split = read_coco(good, folder, "error", "train")
    assert (split.images[0].width, split.images[0].height) == (30, 40)
    assert DetectionDataset(split, 16, [0.5] * 3, [0.25] * 3).pixels(0).shape == (16, 16, 3)
    stored = coco(tmp_path, [ann(1, [2, 2, 20, 20])], images=[{"id": 1, "file_name": "r.jpg", "width": 40, "height": 30}])
    with pytest.raises(StageError, match=r"r\.jpg is 30x40 once its EXIF orientation \(6: rotated\) is applied") as exc:
        read_coco(stored, folder, "error", "train")
    assert "the JSON says 40x30, the size as stored, so its boxes would land rotated" in str(exc.value)
    assert read_coco(stored, folder, "skip", "train").counts["bad_images"] == 1
