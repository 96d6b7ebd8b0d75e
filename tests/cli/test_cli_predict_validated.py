"""The models validate exports (FP32 and INT8) carry class names and preprocessing, and `predict` on an image file
feeds them exactly what evaluation fed them for that image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits
from cann_distill.quant.deploy_meta import CLASSES, PREPROCESS
from cann_distill.quant.predict import image_batch, open_model
from tests.conftest import TINY

pytestmark = pytest.mark.slow

RECIPE = {
    **TINY,
    "data": {**TINY["data"], "max_samples": 120},
    "teacher": {"arch": "test_resnet", "train": {"epochs": 1, "lr": 0.05}},
    "distill": {"epochs": 1, "lr": 0.05},
    "validate": {
        "calibration": {"samples": 16},
        "latency": {"warmup": 1, "runs": 5},
        "throughput_batch": 8,
        "gap": {"samples": 16},
        "feedback": {"search": False, "qad_epochs": 0},
    },
}


def test_validated_models_predict_what_evaluation_saw(cli, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "run_dir": str(tmp_path / "run")}))
    result = cli("run", recipe, "--to", "validate", "-q")
    assert result.exit_code == 0, result.stderr
    fp32, int8 = tmp_path / "run" / "validate" / "student_fp32.onnx", tmp_path / "run" / "validate" / "student_int8.onnx"
    for model in (fp32, int8):
        props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
        assert json.loads(props[CLASSES]) == [str(d) for d in range(10)]
        assert json.loads(props[PREPROCESS])["image_size"] == 16 and json.loads(props[PREPROCESS])["channels"] == 1

    val = load_splits(load_recipe(recipe).data).val
    paths = []
    for i in range(3):
        val.images(i).save(tmp_path / f"val{i}.png")
        paths.append(tmp_path / f"val{i}.png")
    _, info = open_model(fp32)
    np.testing.assert_array_equal(image_batch(paths, info), np.stack([val.fetch(i).numpy() for i in range(3)]))

    for model in (fp32, int8):
        result = cli("predict", model, *paths, "--json", "-k", "1")
        assert result.exit_code == 0, result.stderr
        top = [p["top"][0] for p in json.loads(result.stdout)["predictions"]]
        assert all(g["name"] == str(g["index"]) for g in top)
