"""`cann-distill predict` on an exported detector: boxes (class, score, x1 y1 x2 y2 in the image's own pixels) decoded
as evaluation decodes them, `--out DIR` writes each image with its boxes drawn; bad uses are one `Error:` line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from cann_distill.core.recipe_detect import DetectConfig
from cann_distill.models.detector import Detector, detections
from cann_distill.quant.deploy_meta import DETECT, detect_metadata, stamp_onnx
from cann_distill.quant.detect_int8 import export_detector

CLASSES = ["cat", "dog", "[bold]bird[/bold]"]
CFG = DetectConfig(strides=[8, 16, 32], fpn_channels=32, head_convs=1, score_threshold=0.0, max_detections=5)
CFG.data.image_size = 64


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Detector]:
    torch.manual_seed(0)
    model = Detector("test_efficientnet", len(CLASSES), CFG).eval()
    path = tmp_path_factory.mktemp("det") / "student_int8.onnx"
    shapes = export_detector(model, path, 64, 17)
    stamp_onnx([path], detect_metadata(CLASSES, CFG, shapes))
    return path, model


def photo(path: Path, size: tuple[int, int] = (96, 48)) -> Path:
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def one_error(result) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_boxes_are_listed_in_the_images_pixels_and_drawn(cli, detector, tmp_path: Path) -> None:
    model, torch_model = detector
    image = photo(tmp_path / "wide.png")
    out_dir = tmp_path / "drawn"
    result = cli("predict", model, image, "--out", out_dir, "--min-score", "0", "--json")
    assert result.exit_code == 0, result.stderr
    pred = json.loads(result.stdout)["predictions"][0]
    assert pred["size"] == [96, 48] and len(pred["boxes"]) == 5  # max_detections from the metadata
    x = torch.from_numpy(np.asarray(Image.open(image).resize((64, 64), Image.Resampling.BILINEAR), np.float32) / 255)
    x = ((x - torch.tensor(CFG.mean)) / torch.tensor(CFG.std)).permute(2, 0, 1)[None]
    with torch.no_grad():
        ref = detections(torch_model(x), CFG, 64)[0]  # the torch model, decoded by evaluation's code
    got = np.array([b["box"] for b in pred["boxes"]])
    want = ref["boxes"].numpy() * np.array([96 / 64, 48 / 64, 96 / 64, 48 / 64])  # scaled back to the image's pixels
    np.testing.assert_allclose(got, want, atol=0.05)  # float32 kernels of two libraries, boxes rounded to 0.01 px
    assert [b["class"] for b in pred["boxes"]] == [CLASSES[i] for i in ref["labels"].tolist()]
    drawn = out_dir / "wide.png"
    assert pred["drawn"] == str(drawn) and Image.open(drawn).size == (96, 48)
    assert not np.array_equal(np.asarray(Image.open(drawn).convert("RGB")), np.asarray(Image.open(image).convert("RGB")))
    shown = cli("predict", model, image, "--min-score", "0")
    assert shown.exit_code == 0 and "wide.png (96x48): 5 box(es) scored >= 0" in " ".join(shown.stderr.split())


def test_min_score_filters_and_same_named_images_do_not_overwrite(cli, detector, tmp_path: Path) -> None:
    model, _ = detector
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = photo(tmp_path / "a" / "x.png"), photo(tmp_path / "b" / "x.png", (40, 40))
    result = cli("predict", model, one, two, "--out", tmp_path / "out", "--min-score", "1", "--json")
    assert result.exit_code == 0, result.stderr
    preds = json.loads(result.stdout)["predictions"]
    assert all(p["boxes"] == [] for p in preds)  # no score reaches 1
    assert [Path(p["drawn"]).name for p in preds] == ["x.png", "x-2.png"]


def test_bad_uses_are_one_line(cli, detector, tmp_path: Path) -> None:
    model, _ = detector
    image = photo(tmp_path / "p.png")
    (tmp_path / "file").write_text("")
    result = cli("predict", model, image, "--out", tmp_path / "file")
    assert result.exit_code == 2 and "--out" in one_error(result) and "not a folder" in one_error(result)
    result = cli("predict", model, image, "--min-score", "1.5")
    assert result.exit_code == 2 and "--min-score must be in [0, 1], got 1.5" in one_error(result)
    broken = tmp_path / "broken.onnx"
    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        if prop.key == DETECT:
            prop.value = json.dumps({**json.loads(prop.value), "shapes": [[8, 8]]})
    onnx.save(proto, str(broken))
    result = cli("predict", broken, image)
    assert result.exit_code == 2 and "shapes must list one [height, width] per stride (3)" in one_error(result)
