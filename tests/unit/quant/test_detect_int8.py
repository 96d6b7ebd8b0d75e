"""INT8 for detection: the exported dense outputs match torch's, and an ONNX session decodes to the same detections."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cann_distill.core.recipe_detect import DetectConfig
from cann_distill.models.detector import Detector, detections
from cann_distill.quant import ort as q
from cann_distill.quant.detect_int8 import SessionDetector, export_detector

CFG = DetectConfig(strides=[8, 16, 32], fpn_channels=32, head_convs=1, score_threshold=0.0)


def test_onnx_outputs_and_detections_match_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Detector("test_efficientnet", 4, CFG).eval()
    shapes = export_detector(model, tmp_path / "d.onnx", 64, 17)
    assert shapes == [(8, 8), (4, 4), (2, 2)] and not model.training  # the export leaves the model as it was
    onnx_model = SessionDetector(q.session(tmp_path / "d.onnx", "CPUExecutionProvider", 1), shapes)
    x = torch.randn(3, 3, 64, 64)  # a batch size other than the export's: the batch axis is dynamic
    with torch.no_grad():
        ref = model(x)
    got = onnx_model(x)
    for key in ("cls", "reg", "ctr"):  # float32 kernels of two libraries: agree to 1e-4
        torch.testing.assert_close(got[key], ref[key], atol=1e-4, rtol=1e-4)
    for a, b in zip(detections(got, CFG, 64), detections(ref, CFG, 64)):
        assert a["labels"][:20].tolist() == b["labels"][:20].tolist()
        torch.testing.assert_close(a["boxes"][:20], b["boxes"][:20], atol=1e-3, rtol=1e-4)


def test_a_failing_export_is_one_line(tmp_path: Path) -> None:
    from cann_distill.core.errors import StageError

    model = Detector("test_efficientnet", 4, CFG).eval()
    with pytest.raises(StageError, match=r"detector ONNX export \(opset 17\) failed"):
        export_detector(model, tmp_path / "missing" / "d.onnx", 64, 17)
