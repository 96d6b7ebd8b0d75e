"""The `detect` section of a recipe: what `task: detect` reads (docs/guides/detection.md).

With `task: detect`, the data come from here (COCO JSON, or the packaged demo set) and the models are a timm
backbone (`features_only`) under a feature pyramid and an FCOS-style head. The other sections keep their meaning
where it carries over: teacher/student arch and checkpoint, the training settings, `distill.losses` (naming
detection losses), `data.batch_size` and `data.num_workers`, `report.baseline`, `seed`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cann_distill.core.errors import preview
from cann_distill.core.safeyaml import text_problem

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _plain_text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(f"{preview(value)} {problem}")
    return value


PathText = Annotated[str, AfterValidator(_plain_text)]


class _Section(BaseModel):
    """Unknown keys and NaN/inf are errors, as in every recipe section."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DemoSetConfig(_Section):
    """The packaged demo set: scikit-learn's digits pasted at several scales on crops of the packaged photos."""

    train_images: int = Field(256, ge=8, le=20000, description="training images")
    val_images: int = Field(64, ge=8, le=5000, description="validation images (digits and photo bands disjoint from training)")
    objects: tuple[int, int] = Field((1, 3), description="fewest and most digits per image (0: some images hold none)")
    digit_size: tuple[int, int] = Field((10, 44), description="smallest and largest side of a pasted digit, in px")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="the set is a function of this seed and the keys above")


class DetectDataConfig(_Section):
    source: Literal["demo", "coco"] = Field("demo", description="demo: the packaged demo set (offline); coco: COCO JSON files")
    train_annotations: Optional[PathText] = Field(None, description="coco: the training split's COCO JSON (instances) file")
    train_images: Optional[PathText] = Field(None, description="coco: folder the training JSON's `file_name`s are relative to")
    val_annotations: Optional[PathText] = Field(None, description="coco: the validation split's COCO JSON file")
    val_images: Optional[PathText] = Field(None, description="coco: folder the validation JSON's `file_name`s are relative to")
    demo: DemoSetConfig = Field(default_factory=DemoSetConfig)
    image_size: int = Field(64, ge=32, le=2048, description="images are resized to this square size (boxes with them)")
    on_bad: Literal["error", "skip"] = Field(
        "error",
        description="a box outside the image or of zero area, an unknown category, an image missing, unreadable or of "
        "another size than its JSON entry: stop with a one-line error, or skip it (the box, or the image) and count it",
    )


class DetectConfig(_Section):
    """Detector and evaluation settings of `task: detect` (docs/guides/detection.md)."""

    data: DetectDataConfig = Field(default_factory=DetectDataConfig)
    strides: list[int] = Field(
        default_factory=lambda: [8, 16, 32],
        min_length=1,
        max_length=5,
        description="the backbone feature maps (by their stride) the feature pyramid is built on, finest first",
    )
    fpn_channels: int = Field(64, ge=32, le=512, description="channels of every pyramid level (a multiple of 32: the head's GroupNorm)")
    head_convs: int = Field(2, ge=1, le=4, description="conv layers in each branch of the head (torchvision's FCOS head, default 4)")
    scale_factor: float = Field(
        8.0,
        gt=0,
        description="a level of stride s learns the objects whose largest distance from a location to a box side lies in "
        "(f * the previous level's stride, f * s] (the first level from 0, the last to infinity); FCOS's ranges are f = 8",
    )
    center_radius: float = Field(1.5, gt=0, description="positive locations lie within this many strides of a box centre (FCOS)")
    score_threshold: float = Field(0.05, ge=0, lt=1, description="detections scored below this are dropped before NMS")
    nms_iou: float = Field(0.6, gt=0, le=1, description="IoU above which the lower-scored of two same-class detections is dropped")
    max_detections: int = Field(100, ge=1, le=1000, description="detections kept per image (COCO's AP reads at most 100)")
    int8_head: Literal["int8", "float"] = Field(
        "int8",
        description="validate: float keeps the FCOS head's nodes out of the INT8 model (the backbone and the pyramid are "
        "quantized); what it changes in mAP, size and latency is measured in validate/validation.json",
    )
    mean: list[float] = Field(default_factory=lambda: list(IMAGENET_MEAN), min_length=3, max_length=3, description="input mean (RGB)")
    std: list[float] = Field(default_factory=lambda: list(IMAGENET_STD), min_length=3, max_length=3, description="input std (RGB)")


def detect_errors(recipe: Any) -> list[str]:
    """What the detect section's keys must agree on, the files a `coco` source needs, and the settings detection does
    not have yet; nothing for classification recipes (the section is not read)."""
    if recipe.task != "detect":
        return []
    detect: DetectConfig = recipe.detect
    errors = _unsupported(recipe)
    d, s = detect.data, detect.strides
    if detect.fpn_channels % 32:
        errors.append(f"detect.fpn_channels: must be a multiple of 32 (the head's GroupNorm has 32 groups), got {detect.fpn_channels}")
    if any(v <= 0 or v & (v - 1) for v in s) or sorted(set(s)) != s:
        errors.append(f"detect.strides: powers of two, increasing, each once, got {s}")
    elif d.image_size < 2 * s[-1]:
        errors.append(
            f"detect.strides: the coarsest level ({s[-1]}) needs images of at least {2 * s[-1]} px, detect.data.image_size is {d.image_size}"
        )
    if any(v <= 0 for v in detect.std):
        errors.append("detect.std: every value must be > 0")
    if not 0 <= d.demo.objects[0] <= d.demo.objects[1] <= 8:
        errors.append(f"detect.data.demo.objects: needs 0 <= fewest <= most <= 8, got {list(d.demo.objects)}")
    if not 4 <= d.demo.digit_size[0] <= d.demo.digit_size[1]:
        errors.append(f"detect.data.demo.digit_size: needs 4 <= smallest <= largest, got {list(d.demo.digit_size)}")
    return errors + (_coco_errors(d) if d.source == "coco" else [])


def _unsupported(recipe: Any) -> list[str]:
    """Keys that change a classification run but that task: detect would ignore: an error, not a silent no-op."""
    errors = []
    for path, cfg in (("teacher.train", recipe.teacher.train), ("distill", recipe.distill)):
        if cfg.select_best:
            errors.append(f"{path}.select_best: not with task: detect yet (the last epoch's weights are kept)")
        if cfg.patience is not None:
            errors.append(f"{path}.patience: early stopping is not there for task: detect yet")
    d = recipe.distill
    if d.qat.enabled:
        errors.append("distill.qat.enabled: quantization-aware distillation is classification-only so far")
    if d.loss_balance != "none":
        errors.append("distill.loss_balance: only `none` with task: detect (the losses are weighted as given)")
    if d.teacher_targets not in (None, "online"):
        errors.append(f"distill.teacher_targets: task: detect runs the teacher on every batch (online), got {d.teacher_targets!r}")
    if not d.temperature_schedule.is_default:
        errors.append("distill.temperature_schedule: not read with task: detect (pred_kd takes its own temperature)")
    if recipe.runtime.compile:
        errors.append("runtime.compile: not with task: detect yet")
    if d.critical.mode == "curriculum":
        errors.append("distill.critical.mode: curriculum is not there for task: detect yet (weight and subset are)")
    if recipe.select.refresh_every not in (None, "auto"):
        errors.append("select.refresh_every: re-mining the critical images is not there for task: detect yet; use null")
    if recipe.select.temperature.per_sample:
        errors.append("select.temperature.per_sample: not read with task: detect (pred_kd takes its own temperature)")
    return errors


def _coco_errors(d: DetectDataConfig) -> list[str]:
    from pathlib import Path

    errors = []
    for split in ("train", "val"):
        ann, images = getattr(d, f"{split}_annotations"), getattr(d, f"{split}_images")
        if not ann:
            errors.append(f"detect.data.{split}_annotations: required when detect.data.source is 'coco'")
        elif not Path(ann).is_file():
            errors.append(f"detect.data.{split}_annotations: file not found: {ann}")
        if not images:
            errors.append(f"detect.data.{split}_images: required when detect.data.source is 'coco'")
        elif not Path(images).is_dir():
            errors.append(f"detect.data.{split}_images: folder not found: {images}")
    return errors


def level_problem(path: str, registry: Any, kind: str, kwargs: dict[str, Any], detect: DetectConfig) -> list[str]:
    """A detection loss that reads a pyramid level (`student.fpn.<i>`) the detector does not have (`detect.strides`)."""
    try:
        requires = registry.build(kind, **kwargs).requires
    except (ValueError, TypeError):
        return []  # the loss's own refusal is reported with its arguments
    levels = len(detect.strides)
    beyond = sorted(
        {
            int(k.rsplit(".", 1)[1])
            for k in requires
            if k.startswith(("student.fpn.", "teacher.fpn.")) and int(k.rsplit(".", 1)[1]) >= levels
        }
    )
    if beyond:
        return [f"{path}: reads pyramid level {beyond[0]}, but detect.strides gives the detector {levels} level(s) (0..{levels - 1})"]
    return []
