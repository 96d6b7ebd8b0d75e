"""`cann-distill predict`: top-k by class name from an exported model's metadata, and every kind of bad input as one
`Error:` line with exit 2; images of any size, RGBA, 16-bit and EXIF-rotated decode as evaluation decodes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cann_distill.core.recipe import DataConfig
from cann_distill.quant.deploy_meta import CLASSES, PREPROCESS, deploy_metadata, stamp_onnx
from cann_distill.quant.export import export_onnx
from cann_distill.quant.predict import image_batch, open_model

CLASS_NAMES = ["\x1b[31mred\x1b[0m", "[bold]green[/bold]", "blue\x07"]
SIZE = 16


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, len(CLASS_NAMES)))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    plain, stamped = folder / "plain.onnx", folder / "stamped.onnx"
    export_onnx(tiny_model(), plain, 3, SIZE, 17)
    stamped.write_bytes(plain.read_bytes())
    data = DataConfig(source="imagefolder", image_size=SIZE, channels=3, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], crop_pct=0.875)
    data = data.model_copy(update={"interpolation": "bicubic"})
    stamp_onnx([stamped], deploy_metadata(CLASS_NAMES, data))
    return {"plain": plain, "stamped": stamped}


def rgb(seed: int = 0, size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def one_error(result) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_top_k_names_from_the_metadata(cli, models, tmp_path: Path) -> None:
    rgb().save(tmp_path / "a.png")
    rgb(1, (50, 31)).save(tmp_path / "wide.jpg")  # any size: resized and centre-cropped per the metadata
    result = cli("predict", models["stamped"], tmp_path / "a.png", tmp_path / "wide.jpg", "--top-k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["classes"] == 3 and [p["image"] for p in out["predictions"]] == [str(tmp_path / "a.png"), str(tmp_path / "wide.jpg")]
    for pred in out["predictions"]:
        top = pred["top"]
        assert [g["rank"] for g in top] == [1, 2]
        assert all(g["name"] == CLASS_NAMES[g["index"]] for g in top)
        assert top[0]["probability"] >= top[1]["probability"] > 0
    everything = json.loads(cli("predict", models["stamped"], tmp_path / "a.png", "-k", "10", "--json").stdout)
    assert len(everything["predictions"][0]["top"]) == 3
    assert sum(g["probability"] for g in everything["predictions"][0]["top"]) == pytest.approx(1.0, abs=1e-6)


def test_class_names_print_inert(cli, models, tmp_path: Path) -> None:
    rgb().save(tmp_path / "a.png")
    result = cli("predict", models["stamped"], tmp_path / "a.png", "-k", "3")
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "\\x1b[31mred\\x1b[0m" in result.stderr and "[bold]green[/bold]" in result.stderr and "blue\\x07" in result.stderr


def test_odd_images_decode_as_evaluation_decodes_them(models, tmp_path: Path) -> None:
    _, info = open_model(models["stamped"])
    upright = rgb(2, (24, 20))
    upright.save(tmp_path / "upright.png")
    ex = Image.Exif()
    ex[0x0112] = 6  # the camera stored the pixels turned; the viewer turns them back
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "exif.png", exif=ex)
    rgba = upright.copy()
    rgba.putalpha(Image.fromarray(np.full((20, 24), 40, dtype=np.uint8)))
    rgba.save(tmp_path / "rgba.png")
    gray8 = np.random.RandomState(3).randint(0, 256, (20, 24)).astype(np.uint8)
    Image.fromarray(gray8).save(tmp_path / "gray8.png")
    Image.fromarray(gray8.astype(np.uint16) * 256 + 100).save(tmp_path / "gray16.png")  # 16-bit: the high byte is gray8
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    x = image_batch([tmp_path / n for n in ("upright.png", "exif.png", "rgba.png", "gray8.png", "gray16.png")], info)
    assert x.shape == (5, 3, SIZE, SIZE) and x.dtype == np.float32
    np.testing.assert_array_equal(x[1], x[0])  # EXIF orientation applied
    np.testing.assert_array_equal(x[2], x[0])  # alpha dropped, as timm's loader does
    np.testing.assert_array_equal(x[4], x[3])  # 16-bit scaled to its high byte, not clipped
    # timm's eval transform by hand: shorter side to floor(16 / 0.875) = 18 (bicubic), centre crop 16, then mean/std
    resized = np.asarray(upright.resize((21, 18), Image.Resampling.BICUBIC), dtype=np.float32)
    crop = resized[1 : 1 + SIZE, 2 : 2 + SIZE].transpose(2, 0, 1) / np.float32(255)
    expected = (crop - np.array([0.5, 0.4, 0.3], np.float32)[:, None, None]) / np.array([0.2, 0.25, 0.3], np.float32)[:, None, None]
    np.testing.assert_allclose(x[0], expected, atol=1e-5)  # float32 rounding of the normalisation only


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_text("not an image"), "not an image (unknown format)"),
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: p.mkdir(), "cannot read file"),
    ],
)
def test_bad_images_are_one_line_exit_2(cli, models, tmp_path: Path, make, expected: str) -> None:
    bad = tmp_path / "bad.png"
    make(bad)
    rgb().save(tmp_path / "good.png")
    result = cli("predict", models["stamped"], tmp_path / "good.png", bad)
    assert result.exit_code == 2
    assert expected in one_error(result) and "bad.png" in one_error(result)
    assert "rank" not in result.stderr  # nothing half-printed


def test_decompression_bomb_is_refused(cli, models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb(0, (40, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 px over a 1,000 px limit (PIL errors past twice the limit)
    result = cli("predict", models["stamped"], tmp_path / "big.png")
    assert result.exit_code == 2 and "over the decompression-bomb limit (1,000)" in one_error(result)


def test_models_without_metadata_or_not_onnx(cli, models, tmp_path: Path) -> None:
    rgb().save(tmp_path / "a.png")
    result = cli("predict", models["plain"], tmp_path / "a.png")
    assert result.exit_code == 2
    assert f"no {CLASSES} or {PREPROCESS} in the model's metadata" in one_error(result)
    (tmp_path / "m.onnx").write_text("garbage")
    result = cli("predict", tmp_path / "m.onnx", tmp_path / "a.png")
    assert result.exit_code == 2 and "not an ONNX model onnxruntime can load" in one_error(result)
    result = cli("predict", tmp_path / "none.onnx", tmp_path / "a.png")
    assert result.exit_code == 2 and "model not found" in one_error(result)


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({CLASSES: "[1, 2]"}, "must be a non-empty list of class names"),
        ({CLASSES: "{"}, "is not valid JSON"),
        ({CLASSES: '["a", "b"]'}, "outputs 3 scores but its metadata names 2 classes"),
        ({PREPROCESS: '{"image_size": 4}'}, "image_size"),
        ({PREPROCESS: '{"image_size": 16, "channels": 3}'}, "lacks mean, std, interpolation, crop_pct"),
    ],
)
def test_damaged_metadata_is_one_line_exit_2(cli, models, tmp_path: Path, props: dict[str, str], expected: str) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(models["stamped"].read_bytes())
    stamp_onnx([model], props)
    rgb().save(tmp_path / "a.png")
    result = cli("predict", model, tmp_path / "a.png")
    assert result.exit_code == 2 and expected in one_error(result)


def test_box_options_on_a_classifier_are_one_line(cli, models, tmp_path: Path) -> None:
    rgb().save(tmp_path / "a.png")
    result = cli("predict", models["stamped"], tmp_path / "a.png", "--out", tmp_path / "drawn")
    assert result.exit_code == 2 and "--out and --min-score are for detection models" in one_error(result)
    assert not (tmp_path / "drawn").exists()
