"""Feature taps by feature_info index or module path, and teacher input re-normalisation."""

from __future__ import annotations

import pytest
import torch

from cann_distill.core.errors import UsageError
from cann_distill.models.build import Renormalize, create_model
from cann_distill.models.taps import FeatureTapper, describe_taps, inspect_arch, tap_error


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("test_resnet", num_classes=10, in_chans=1).eval()


def test_intermediates_and_hooks_agree_and_logits_match_forward(resnet: torch.nn.Module) -> None:
    x = torch.randn(2, 1, 16, 16)
    tapper = FeatureTapper(resnet, ["3", "1"], "test_resnet")
    assert tapper.mode == "intermediates"
    with torch.no_grad():
        out = tapper(x)
        hooked = FeatureTapper(resnet, ["3", "1"], "test_resnet")
        hooked.mode = "hooks"
        by_hooks = hooked(x)
        plain = resnet(x)
    assert set(out) == {"logits", "feat.3", "feat.1"}
    torch.testing.assert_close(out["logits"], plain)
    for k in out:
        torch.testing.assert_close(out[k], by_hooks[k])
    assert tuple(out["feat.1"].shape) == (2, 32, 4, 4)
    assert not resnet._forward_hooks and not resnet.layer1._forward_hooks  # hooks live for one call only


def test_module_path_taps_and_gradients(resnet: torch.nn.Module) -> None:
    x = torch.randn(2, 1, 16, 16)
    out = FeatureTapper(resnet, ["layer2.0", "2"], "test_resnet")(x)
    assert tuple(out["feat.layer2.0"].shape) == (2, 48, 2, 2)
    out["feat.layer2.0"].sum().backward()
    assert resnet.conv1[0].weight.grad is not None
    resnet.zero_grad(set_to_none=True)


def test_unknown_tap_lists_the_valid_ones(resnet: torch.nn.Module) -> None:
    assert tap_error(resnet, "test_resnet", "4") is None and tap_error(resnet, "test_resnet", "layer2.0") is None
    assert tap_error(resnet, "test_resnet", "7") == (
        "layer '7' not in test_resnet's taps (valid: 0, 1, 2, 3, 4 or a module path like layer2.0)"
    )
    assert "did you mean: layer2.0" in tap_error(resnet, "test_resnet", "layer2.O")
    with pytest.raises(ValueError, match=r"layer '9' not in test_resnet's taps"):
        FeatureTapper(resnet, ["9"], "test_resnet")


def test_describe_taps_and_inspect(resnet: torch.nn.Module) -> None:
    info = describe_taps(resnet, "test_resnet", 16, in_chans=1)
    rows = {r["tap"]: r for r in info["taps"]}
    assert list(rows) == ["0", "1", "2", "3", "4", "logits"]
    assert rows["2"] == {"tap": "2", "module": "layer2", "channels": 48, "stride": 8, "shape": [48, 2, 2]}
    assert rows["logits"]["shape"] == [10]
    assert inspect_arch("test_efficientnet", 32)["taps"][0]["shape"][1:] == [16, 16]
    with pytest.raises(UsageError, match=r"unknown timm architecture 'resnet181' \(did you mean: .*resnet18"):
        inspect_arch("resnet181")


def test_renormalize_maps_student_normalisation_to_the_teacher() -> None:
    raw = torch.rand(2, 3, 4, 4)
    ms, ss, mt, st = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x_s = (raw - torch.tensor(ms).view(1, 3, 1, 1)) / torch.tensor(ss).view(1, 3, 1, 1)
    x_t = (raw - torch.tensor(mt).view(1, 3, 1, 1)) / torch.tensor(st).view(1, 3, 1, 1)
    torch.testing.assert_close(Renormalize(ms, ss, mt, st)(x_s), x_t)
    same = Renormalize(ms, ss, ms, ss)
    assert same.identity and same(x_s) is x_s
