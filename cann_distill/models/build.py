"""timm models by name, checkpoints (always loaded with weights_only=True), teacher input re-normalisation."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from cann_distill.core.errors import ArtifactError, StageError
from cann_distill.core.files import atomic_path
from cann_distill.core.recipe import DataConfig, ModelConfig, Recipe, StudentConfig, TeacherConfig, timm_archs
from cann_distill.core.registry import suggest
from cann_distill.runtime import distributed


def create_model(arch: str, num_classes: int, in_chans: int, pretrained: bool = False) -> nn.Module:
    import timm

    if arch not in timm_archs():
        raise StageError(f"unknown timm architecture '{arch}'{suggest(arch, sorted(timm_archs()))}")
    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    except Exception as exc:  # network / hub failures surface here for pretrained=True
        raise StageError(f"could not create '{arch}' (pretrained={pretrained}): {str(exc).splitlines()[0]}") from exc


def save_checkpoint(path: Path, model: nn.Module, arch: str, num_classes: int, in_chans: int, **meta: Any) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"arch": arch, "num_classes": num_classes, "in_chans": in_chans, "meta": meta, "state_dict": state}, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Our checkpoint dict, or a bare state_dict wrapped as one (arch unknown)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise ArtifactError(f"{path}: not a loadable weights-only checkpoint ({str(exc).splitlines()[0][:200]})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"arch": None, "state_dict": obj}
    raise ArtifactError(f"{path}: expected a state_dict or a cann-distill checkpoint")


def load_weights(model: nn.Module, ckpt: dict[str, Any], arch: str, source: str) -> None:
    """Load strictly; on mismatch say how (arch recorded, missing/unexpected keys, shapes)."""
    if ckpt.get("arch") and ckpt["arch"] != arch:
        raise ArtifactError(f"{source}: checkpoint is for arch '{ckpt['arch']}', not '{arch}'")
    state = ckpt["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[0]})")
        raise ArtifactError(f"{source}: checkpoint does not match arch '{arch}': {', '.join(parts)}")
    model.load_state_dict(state, strict=True)


def check_classes(ckpt: dict[str, Any], classes: Sequence[str], source: str) -> None:
    """A checkpoint that records its class list must have been trained on these classes, in this order."""
    saved = (ckpt.get("meta") or {}).get("classes")
    if saved is None or list(saved) == list(classes):
        return
    if sorted(saved) == sorted(classes):
        raise ArtifactError(f"{source}: checkpoint has the same classes in another order (output i would mean another class)")
    missing, extra = sorted(set(classes) - set(saved)), sorted(set(saved) - set(classes))
    raise ArtifactError(
        f"{source}: checkpoint was trained on other classes (dataset has {len(classes)}, checkpoint {len(saved)}; "
        f"not in checkpoint: {', '.join(missing[:5]) or '-'}; not in dataset: {', '.join(extra[:5]) or '-'})"
    )


def build_model(
    cfg: ModelConfig,
    num_classes: int,
    in_chans: int,
    checkpoint: Optional[Path] = None,
    role: str = "model",
    classes: Optional[Sequence[str]] = None,
) -> nn.Module:
    """Create from the recipe; load `checkpoint` (a stage artifact) or the recipe's own checkpoint.

    With `classes`, a checkpoint that records its class list is refused when they differ.
    """
    ckpt_path = checkpoint or (Path(cfg.checkpoint) if cfg.checkpoint else None)
    model = create_model(cfg.arch, num_classes, in_chans, pretrained=cfg.pretrained and ckpt_path is None)
    if ckpt_path is not None:
        source = f"{role}.checkpoint {ckpt_path}" if checkpoint is None else str(ckpt_path)
        ckpt = read_checkpoint(ckpt_path)
        if classes is not None:
            check_classes(ckpt, classes, source)
        load_weights(model, ckpt, cfg.arch, source)
    return model


def exported_student(recipe: Recipe, checkpoint: Path) -> StudentConfig:
    """The student section distill's exported checkpoint loads with: the recipe's, or with `distill.mode: mutual` the
    peer distill exported (the best on val, whose arch the checkpoint records)."""
    if recipe.distill.mode != "mutual":
        return recipe.student
    arch = read_checkpoint(checkpoint).get("arch")
    return recipe.student if not arch or arch == recipe.student.arch else StudentConfig(arch=arch)


def exported_recipe(recipe: Recipe, checkpoint: Path) -> Recipe:
    """The recipe with `student:` as `exported_student` reads it (the same object when nothing changes)."""
    student = exported_student(recipe, checkpoint)
    return recipe if student is recipe.student else recipe.model_copy(update={"student": student})


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, in_chans: int, size: int) -> int:
    """Forward FLOPs at batch 1 (torch's FlopCounterMode: 2 per multiply-accumulate)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, in_chans, size, size))
    return int(counter.get_total_flops())


def capacity(arch: str, num_classes: int, in_chans: int, image_size: int, with_flops: bool = True) -> dict[str, Any]:
    """An architecture's size, built untrained (pretrained=False: nothing is downloaded): its parameters and its
    batch-1 forward FLOPs at `image_size`; `flops` is None, with `flops_error`, where torch cannot count them (or
    `with_flops` is false)."""
    model = create_model(arch, num_classes, in_chans).eval()
    out: dict[str, Any] = {"arch": arch, "params": count_params(model), "flops": None}
    if not with_flops:
        return out
    try:
        out["flops"] = count_flops(model, in_chans, image_size)
    except Exception as exc:  # FLOPs are informative only: parameters still give the gap
        out["flops_error"] = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return out


class Renormalize(nn.Module):
    """Map inputs normalised with the student's (data's) mean/std onto the teacher's.

    x_teacher = (x * std_s + mean_s - mean_t) / std_t, per channel. A teacher that sees inputs
    normalised for another model silently distills worse, so distill applies this whenever
    `teacher.mean` / `teacher.std` differ from the data's.
    """

    def __init__(self, mean_s: Sequence[float], std_s: Sequence[float], mean_t: Sequence[float], std_t: Sequence[float]) -> None:
        super().__init__()
        ms, ss, mt, st = (torch.tensor(list(v), dtype=torch.float32).view(1, -1, 1, 1) for v in (mean_s, std_s, mean_t, std_t))
        self.register_buffer("scale", ss / st)
        self.register_buffer("shift", (ms - mt) / st)
        self.identity = bool(torch.equal(ms, mt) and torch.equal(ss, st))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


def teacher_input(data: "DataConfig", teacher: "TeacherConfig") -> Renormalize:
    """Re-normalisation from the data's mean/std to the teacher's (identity when the teacher's are unset or equal)."""
    from cann_distill.data.transforms import norm_stats

    mean_s, std_s = norm_stats(data)
    return Renormalize(mean_s, std_s, teacher.mean or mean_s, teacher.std or std_s)


def with_teacher_input(model: nn.Module, data: "DataConfig", teacher: "TeacherConfig") -> nn.Module:
    """The teacher as every stage must run it: inputs re-normalised to its own statistics first."""
    renorm = teacher_input(data, teacher)
    return model if renorm.identity else nn.Sequential(renorm, model)


def weights_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: checkpoint files differ between saves, weights do not."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def checkpoint_weights_fingerprint(cache_root: Path, path: Path, file_sha256: str) -> str:
    """weights_fingerprint of a checkpoint, memoised by the file's sha256 (which the runner already knows).

    A file determines its weights, so the memo never goes stale; a damaged memo only costs a cache miss.
    """
    memo = Path(cache_root) / "weights" / f"{file_sha256}.txt"
    try:
        known = memo.read_text().strip()
        if len(known) == 64 and all(c in "0123456789abcdef" for c in known):
            return known
    except (OSError, UnicodeDecodeError):
        pass
    fingerprint = weights_fingerprint(read_checkpoint(path)["state_dict"])
    if not distributed.is_main():
        return fingerprint  # under torchrun rank 0 alone writes the cache
    try:
        with atomic_path(memo) as tmp:
            tmp.write_text(fingerprint + "\n")
    except OSError:
        pass  # an unwritable cache is reported when the outputs are stored
    return fingerprint
