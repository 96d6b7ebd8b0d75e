from pathlib import Path

import pytest
import torch

from cann_distill.core.errors import ArtifactError, StageError
from cann_distill.models.build import create_model, load_weights, read_checkpoint, save_checkpoint


def test_checkpoint_round_trip_weights_only(tmp_path: Path) -> None:
    m = create_model("test_resnet", num_classes=10, in_chans=1)
    save_checkpoint(tmp_path / "m.pt", m, "test_resnet", 10, 1)
    ckpt = read_checkpoint(tmp_path / "m.pt")
    m2 = create_model("test_resnet", num_classes=10, in_chans=1)
    load_weights(m2, ckpt, "test_resnet", "m.pt")
    x = torch.randn(2, 1, 16, 16)
    m.eval(), m2.eval()
    assert torch.allclose(m(x), m2(x))


def test_checkpoint_for_another_arch_is_rejected(tmp_path: Path) -> None:
    m = create_model("test_resnet", num_classes=10, in_chans=1)
    save_checkpoint(tmp_path / "m.pt", m, "test_resnet", 10, 1)
    with pytest.raises(ArtifactError, match="checkpoint is for arch 'test_resnet', not 'test_efficientnet'"):
        load_weights(create_model("test_efficientnet", 10, 1), read_checkpoint(tmp_path / "m.pt"), "test_efficientnet", "m.pt")
    # a bare state_dict carries no arch: the key/shape comparison catches it
    torch.save(m.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ArtifactError, match="does not match arch 'test_efficientnet': .*missing keys"):
        load_weights(create_model("test_efficientnet", 10, 1), read_checkpoint(tmp_path / "bare.pt"), "test_efficientnet", "bare.pt")
    with pytest.raises(ArtifactError, match="shape mismatches"):
        load_weights(create_model("test_resnet", 5, 1), read_checkpoint(tmp_path / "bare.pt"), "test_resnet", "bare.pt")


def test_garbage_checkpoint_and_unknown_arch(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="not a loadable weights-only checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(StageError, match="did you mean"):
        create_model("resnet181", 10, 1)


def test_teacher_input_renormalises_to_the_teachers_statistics() -> None:
    from cann_distill.core.recipe import DataConfig, TeacherConfig
    from cann_distill.models.build import with_teacher_input

    m = create_model("test_resnet", 10, 1).eval()
    data = DataConfig(mean=[0.5], std=[0.5])
    assert with_teacher_input(m, data, TeacherConfig(arch="test_resnet")) is m  # same stats: untouched
    wrapped = with_teacher_input(m, data, TeacherConfig(arch="test_resnet", mean=[0.1307], std=[0.3081])).eval()
    x = torch.randn(2, 1, 16, 16)  # normalised with the data's stats
    raw = x * 0.5 + 0.5
    with torch.no_grad():
        assert torch.allclose(wrapped(x), m((raw - 0.1307) / 0.3081), atol=1e-5)
