"""Typed recipe schema, YAML loading, `--set` overrides and semantic checks.

Everything is checked before any work starts, and all problems are reported at once, on one
line, each with its key path and where it was written
(`r.yaml:31:9: distill.losses[1].kind: unknown loss 'kdd' (known: ce, kd)`). Recipes are
untrusted input: the text is read by `cann_distill.core.safeyaml` (UTF-8, bounded size, depth and
aliases, YAML 1.2 core scalars, no duplicate keys), every value is checked there for what no
field may hold (non-finite floats, control characters), and the schema is strict (no `true` → 1,
no `"3"` → 3).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cann_distill.core.errors import RecipeError, UsageError, cut, preview
from cann_distill.core.registries import DEVICE_PATTERN, LOSSES, SCHEDULES, SELECTORS
from cann_distill.core.registry import suggest
from cann_distill.core.safeyaml import (
    Document,
    YAMLSyntaxError,
    key_text,
    load_document,
    load_value,
    render_errors,
    text_problem,
    value_errors,
)


class Strict(BaseModel):
    """Base of every section: unknown keys and NaN/inf are errors (and, as `resolve` validates, coercions)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _plain_text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(f"{preview(value)} {problem}")
    return value


Text = Annotated[str, AfterValidator(_plain_text)]  # names and paths: no NUL or control characters, bounded length
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what numpy, torch and scikit-learn all accept


class AugmentConfig(Strict):
    """Training-time augmentation through timm's data module (`create_transform`, `Mixup`); names follow timm's."""

    enabled: bool = Field(True, description="false: training images get the evaluation transform (resize + center crop)")
    scale: tuple[float, float] = Field((0.08, 1.0), description="RandomResizedCrop area range (timm's default)")
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="RandomResizedCrop aspect-ratio range")
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    color_jitter: float = Field(0.4, ge=0, description="brightness/contrast/saturation strength; ignored when auto_augment is set (timm)")
    auto_augment: Optional[str] = Field(None, description="timm policy string, e.g. rand-m9-mstd0.5 or augmix-m5-w3")
    re_prob: float = Field(0.0, ge=0, le=1, description="random erasing probability")
    mixup_alpha: float = Field(0.0, ge=0, description="> 0 turns on mixup (timm Mixup); KD targets follow the mixed image")
    cutmix_alpha: float = Field(0.0, ge=0, description="> 0 turns on cutmix")
    mix_prob: float = Field(1.0, ge=0, le=1, description="probability of mixing a batch")
    mix_switch_prob: float = Field(0.5, ge=0, le=1, description="probability of cutmix instead of mixup when both are on")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="smoothing of the mixed one-hot labels")

    MIXING: ClassVar[frozenset[str]] = frozenset({"mixup_alpha", "cutmix_alpha", "mix_prob", "mix_switch_prob", "label_smoothing"})
    """The batch-mixing keys (they act on batches in distill, not on single images)."""

    @property
    def mixes(self) -> bool:
        return self.enabled and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


class DataConfig(Strict):
    source: Literal["digits", "imagefolder"] = "digits"
    root: Optional[str] = Field(
        None, description="imagefolder: folder holding train/<class>/*, val/<class>/* and optionally test/<class>/*"
    )
    image_size: Optional[int] = Field(None, ge=8, le=2048, description="default: the teacher's pretrained input size (digits: 32)")
    channels: Optional[Literal[1, 3]] = Field(None, description="default: 1 for digits, 3 for imagefolder")
    mean: Optional[list[float]] = Field(None, description="default: the teacher's pretrained_cfg (digits: 0.5)")
    std: Optional[list[float]] = Field(None, description="default: the teacher's pretrained_cfg (digits: 0.5)")
    crop_pct: Optional[float] = Field(None, gt=0, le=1, description="evaluation center-crop fraction; default the teacher's (digits: 1.0)")
    interpolation: Optional[Literal["bilinear", "bicubic", "nearest"]] = Field(None, description="default: the teacher's")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    num_workers: Optional[int] = Field(None, ge=0, description="DataLoader workers; default cores - 1 (max 8), 0 for in-memory digits")
    on_bad_image: Literal["error", "skip"] = Field(
        "error", description="a zero-byte, truncated or non-image file: stop, or skip it and count it"
    )
    cache_mb: int = Field(
        1024,
        ge=0,
        description="imagefolder: keep decoded images in memory up to this many MiB in all, "
        "shared out between the main process and the loader workers (each decodes a file once, then reuses it); 0: off",
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="digits: share of samples held out for validation (stratified)")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="digits: share held out as a test split (0: none)")
    split_seed: Seed = Field(0, description="digits: seed of the train/val/test split, fixed apart from the training seed")
    max_samples: Optional[int] = Field(None, ge=20, description="digits: keep only this many samples (quick runs)")
    batch_size: int = Field(64, ge=1)


class TrainConfig(Strict):
    epochs: int = Field(10, ge=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: Optional[int] = Field(None, ge=1, description="default: data.batch_size")
    warmup_epochs: float = Field(0.0, ge=0, description="linear learning-rate warmup (epochs, fractions allowed) before the cosine decay")
    grad_clip: Optional[float] = Field(None, gt=0, allow_inf_nan=False, description="clip the global gradient L2 norm to this value")
    amp: Literal["none", "bf16", "fp16"] = Field(
        "none", description="bf16: bfloat16 autocast (any device); fp16: float16 autocast + grad scaler (CUDA/NPU)"
    )
    ema_decay: Optional[float] = Field(
        None, gt=0, lt=1, description="keep an exponential moving average of the weights; evaluate and export it"
    )
    select_best: bool = Field(False, description="export the weights of the epoch with the best validation accuracy instead of the last")
    patience: Optional[int] = Field(
        None, ge=1, description="early stopping: stop after this many epochs without a better validation accuracy"
    )


class ModelConfig(Strict):
    arch: str
    pretrained: bool = False
    checkpoint: Optional[str] = Field(None, description="local state_dict (loaded with weights_only=True)")


class TeacherConfig(ModelConfig):
    arch: str = "resnet18"
    mean: Optional[list[float]] = Field(
        None, description="input mean the teacher expects; default data.mean (distill re-normalises when they differ)"
    )
    std: Optional[list[float]] = Field(None, description="input std the teacher expects; default data.std")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=10))
    train_when_checkpoint: bool = Field(False, description="fine-tune even when a checkpoint is given")


class StudentConfig(ModelConfig):
    arch: str = "resnet10t"


class SelectTemperatureConfig(Strict):
    """Per-sample distillation temperature from the strategy's score (see cann_distill.teaching.temperature)."""

    base: float = Field(3.0, gt=0, description="temperature of the median-difficulty sample")
    t_min: float = Field(1.0, gt=0, description="lower clip, also applied after the distill schedule")
    t_max: float = Field(8.0, gt=0, description="upper clip, also applied after the distill schedule")
    t_easy: float = Field(2.1, gt=0, description="temperature of the easiest sample")
    t_hard: float = Field(4.7, gt=0, description="temperature of the hardest sample")
    per_sample: bool = Field(
        False,
        description="true: KD uses each sample's index temperature; false: every sample gets `base` in the index and KD keeps its own temperature",
    )


class MixConfig(Strict):
    """select.policy: mix — the share of the quota drawn from each third of the score ranking (they must sum to 1)."""

    hard: float = Field(0.0, ge=0, le=1)
    medium: float = Field(0.0, ge=0, le=1)
    easy: float = Field(0.0, ge=0, le=1)


class SelectConfig(Strict):
    strategy: str = "margin"
    strategy_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the strategy")
    top_k_ratio: float = Field(0.35, gt=0, le=1)
    class_balanced: bool = Field(True, description="the same quota for every class (a smaller class gives all it has, the rest is shared)")
    policy: Optional[Literal["hard", "easy", "mix", "auto"]] = Field(
        None,
        description="which scores to keep: hard (highest), easy (lowest), mix (select.mix over score thirds), "
        "auto (easy when kept samples per class < scarce_below, else hard). Default: hard when the critical samples are "
        "re-mined every epoch (select.refresh_every: 1), else mix — the best measured in each case (README)",
    )
    mix: Optional[MixConfig] = Field(
        None, description="policy mix: fractions of the quota from the hard / medium / easy thirds; default 1/3 each"
    )
    scarce_below: int = Field(500, ge=1, description="policy auto: kept samples per class below which data counts as scarce")
    views: int = Field(4, ge=1, le=64, description="view_loss / view_margin: augmented views per sample the teacher scores")
    refresh_every: Union[Literal["auto"], int, None] = Field(
        "auto",
        description="re-mine the critical samples every N distill epochs from the current student (select.refresh_by); "
        "auto: every epoch with distill.critical.mode: subset (the best measured at a third of the steps), else never; null: never",
    )
    refresh_by: Literal["disagreement", "reducible_loss"] = Field(
        "disagreement",
        description="re-mining score: disagreement = KL(p_teacher ‖ p_student); reducible_loss = the student's "
        "CE on the label minus the teacher's (RHO-LOSS, Mindermann et al. 2022; skips samples the teacher gets wrong too)",
    )
    batch_size: int = Field(256, ge=1)
    cache_dir: Optional[str] = Field(
        None, description="teacher-output cache; default $XDG_CACHE_HOME/cann-distill or ~/.cache/cann-distill"
    )
    probe_epochs: Optional[int] = Field(
        None,
        ge=0,
        description="strategies that read a student probe: its CE epochs; "
        "default the strategy's (disagreement 0 = at init, el2n 2, forgetting 3)",
    )
    temperature: SelectTemperatureConfig = Field(default_factory=SelectTemperatureConfig)

    @field_validator("refresh_every", mode="before")
    @classmethod
    def _refresh_every(cls, v: Any) -> Any:
        if v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("should be 'auto', a number of epochs >= 1, or null (never)")


class ComponentSpec(BaseModel):
    """`kind` names a registered component; other keys are its keyword arguments.

    The arguments are bound against the component's signature by the recipe checks; here they
    are held to what any recipe value must be (finite numbers, plain strings).
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    kind: str

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _plain_arguments(self) -> "ComponentSpec":
        errors = value_errors(self.model_extra or {})
        if errors:
            raise ValueError("; ".join(f"{path}: {msg}" for path, msg in errors))
        return self


class LossSpec(ComponentSpec):
    """`kind` names a registered loss; other keys are its keyword arguments."""

    weight: float = Field(1.0, ge=0)


class CriticalConfig(Strict):
    mode: Literal["none", "weight", "subset", "curriculum"] = "weight"
    weight: float = Field(2.0, gt=0, description="mode=weight: loss weight of a critical sample (others: 1)")
    curriculum_epochs: Optional[int] = Field(
        None, ge=0, description="mode=curriculum: epochs on the critical samples only before all; default half of distill.epochs"
    )


class ScheduleSpec(ComponentSpec):
    """`kind` names a registered temperature schedule; other keys are its keyword arguments."""

    kind: str = "constant"

    @property
    def is_default(self) -> bool:
        """The plain `constant` schedule with no arguments: KD keeps its own temperature."""
        return self.kind == "constant" and not self.kwargs()


class ReplayConfig(Strict):
    """distill.teacher_targets: replay (FKD, Shen & Xing, ECCV 2022): select labels `draws` augmented views per sample."""

    draws: Optional[int] = Field(
        None, ge=1, description="views per sample the teacher labels in select; epoch e replays view e mod draws; default distill.epochs"
    )
    top_k: Optional[int] = Field(
        None,
        ge=1,
        description="teacher probabilities kept per view (fp16 + class index), the rest spread uniformly; default min(10, classes)",
    )


class QatConfig(TrainConfig):
    """distill.qat: quantization-aware distillation (QAD), a short phase after float distillation (`cann_distill.quant.qat`)."""

    enabled: bool = Field(False, description="train the distilled student once more with onnxruntime's INT8 arithmetic simulated")
    epochs: int = Field(3, ge=1, description="QAD epochs, after distill.epochs of float distillation")
    lr: float = Field(
        0.0005,
        gt=0,
        description="QAD learning rate: 1% of a typical distill lr (NVIDIA's QAT guidance: start at "
        "1% of the initial training lr, cosine-annealed, ~10% of the original epochs)",
    )
    keep_start: bool = Field(
        True, description="ship the PTQ starting point (weights and ranges) when no QAD epoch beats its fake-quant val accuracy"
    )
    teacher: Literal["teacher", "float_student"] = Field(
        "float_student", description="KD target: the float student of the previous phase (the QAD recipe) or the teacher"
    )
    temperature: float = Field(1.0, gt=0, description="KD temperature of the QAD loss (logit KL, as NVIDIA Model Optimizer's QAD)")
    ce_weight: float = Field(0.0, ge=0, description="weight of cross-entropy with the labels next to the KD term (weight 1)")
    keep_float: list[Text] = Field(
        default_factory=list, description="student modules (conv/linear) kept in float: no fake quant, excluded at export"
    )
    per_tensor: list[Text] = Field(
        default_factory=list, description="student modules whose weights are quantized per tensor instead of per channel"
    )
    freeze_observers_epoch: Optional[int] = Field(
        None,
        ge=0,
        description="activation ranges follow an EMA of min/max until this QAD epoch (0-based), then stay; default: never frozen",
    )
    freeze_bn_epoch: int = Field(
        0, ge=0, description="BatchNorm uses batch statistics until this QAD epoch, then its running ones (0: frozen throughout)"
    )
    observer_momentum: float = Field(0.01, gt=0, le=1, description="EMA factor of the activation range observers")


class DistillConfig(TrainConfig):
    losses: list[LossSpec] = Field(
        default_factory=lambda: [LossSpec(kind="ce", weight=0.5), LossSpec(kind="kd", weight=0.5, temperature=4.0)],
        min_length=1,
    )
    critical: CriticalConfig = Field(default_factory=CriticalConfig)
    temperature_schedule: ScheduleSpec = Field(
        default_factory=ScheduleSpec, description="per-epoch temperature: constant | linear | cosine | adaptive, plus its arguments"
    )
    loss_balance: Literal["none", "uncertainty"] = Field(
        "none", description="uncertainty: learnable log-variance s_i per loss, weight_i * (exp(-s_i) * L_i + s_i) (Kendall et al. 2018)"
    )
    teacher_targets: Optional[Literal["cached", "online", "replay"]] = Field(
        None,
        description="cached: select's logits on the evaluation view; online: the teacher on each training batch; "
        "replay: select's top-k labels of the replayed augmented views (FKD). Default: online when training views are random "
        "(augmentation) or a loss reads teacher features, else cached",
    )
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    qat: QatConfig = Field(default_factory=QatConfig)


class CalibrationConfig(Strict):
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    samples: int = Field(256, ge=1)


class LatencyConfig(Strict):
    warmup: int = Field(10, ge=0)
    runs: int = Field(100, ge=5, description="timed runs per model, split over `rounds`")
    rounds: int = Field(5, ge=1, le=100, description="FP32 and INT8 are timed in this many alternating rounds (median of round medians)")
    threads: Optional[int] = Field(None, ge=1, description="onnxruntime intra-op threads; default: the hardware profile's")


class GapConfig(Strict):
    samples: int = Field(128, ge=1, description="validation images used to compare FP32 and INT8 activations")
    top: int = Field(10, ge=1, description="worst layers listed")


class FeedbackConfig(Strict):
    max_int8_drop: float = Field(0.01, ge=0, le=1, description="INT8 top-1 drop (fraction) above which fixes are searched")
    max_layer_gap_db: float = Field(10.0, gt=0, description="a layer that loses more SQNR than this (dB) is a float candidate")
    max_exclude: int = Field(4, ge=0, description="most nodes suggested to keep in float")
    search: bool = Field(True, description="measure each candidate fix (quantize + evaluate) before suggesting it")
    qad_epochs: int = Field(
        1,
        ge=0,
        description="when the INT8 drop exceeds max_int8_drop, also measure the fix 'run QAD': "
        "this many QAD epochs from the float student (1: cheap; 0: not offered)",
    )


class BudgetConfig(Strict):
    """Deployment budgets; a null value inherits the hardware profile's."""

    latency_ms_p99: Optional[float] = Field(None, gt=0, description="INT8 P99 at the profile's batch (needs a quiet machine)")
    latency_ms_median: Optional[float] = Field(None, gt=0, description="INT8 median of round medians (robust on a busy machine)")
    size_mb: Optional[float] = Field(None, gt=0)
    params_m: Optional[float] = Field(None, gt=0)
    max_accuracy_drop: Optional[float] = Field(None, ge=0, le=1, description="ONNX FP32 → INT8 top-1 drop (fraction)")


class ValidateConfig(Strict):
    target: Text = Field("cpu", description="hardware profile: a name in configs/hardware/ or a path to a profile YAML")
    provider: Optional[str] = Field(None, description="onnxruntime execution provider; default: the profile's")
    opset: int = Field(17, ge=13, le=21)
    per_channel: Optional[bool] = Field(None, description="per-channel weight scales; default: the hardware profile's")
    activation_type: Literal["auto", "uint8", "int8"] = Field("auto", description="auto: the hardware profile's, else the host CPU's best")
    reduce_range: Union[Literal["auto"], bool] = Field("auto", description="auto: the hardware profile's, else true on x86 without VNNI")
    nodes_to_exclude: list[str] = Field(default_factory=list, description="ONNX node names kept in float")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    throughput_batch: int = Field(64, ge=1)
    gap: GapConfig = Field(default_factory=GapConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    budgets: BudgetConfig = Field(default_factory=BudgetConfig)


class RuntimeConfig(Strict):
    """Where torch work runs; not part of any stage's fingerprint (moving a run to a GPU does not redo it)."""

    device: str = Field(
        "auto", pattern=DEVICE_PATTERN, description="auto | cpu | cuda | cuda:N | npu | npu:N (auto: CUDA, then NPU, then CPU)"
    )
    channels_last: Union[bool, Literal["auto"]] = Field(
        "auto",
        description="NHWC memory format for models and batches; auto: on for CPU and CUDA (oneDNN and cuDNN convolutions "
        "are faster in NHWC: 0.5-0.95x the step time measured here), off on NPUs",
    )
    compile: bool = Field(False, description="torch.compile the training forward")
    backend: Literal["auto", "gloo", "nccl", "hccl"] = Field(
        "auto", description="torchrun process-group backend; auto: nccl on CUDA, hccl on Ascend NPUs, gloo on the CPU"
    )
    dist_timeout_s: float = Field(
        1800.0,
        gt=0,
        le=86400,
        description="under torchrun: seconds a rank waits for the others in a collective before it stops with an error",
    )
    sync_bn: bool = Field(
        False,
        description="under torchrun: SyncBatchNorm (statistics over the whole global batch); CUDA/NPU only, torch has no CPU kernel for it",
    )


class ReportConfig(Strict):
    title: Optional[str] = None
    baseline: bool = Field(
        False,
        description="train the student with CE only (same data, augmentation and epoch budget) "
        "as the baseline that transfer efficiency, error reduction and DQI compare against",
    )
    samples: int = Field(256, ge=8, le=4096, description="headline-split images the report's CKA and attention heatmaps use")


class Recipe(Strict):
    name: Optional[Text] = None
    seed: Seed = Field(0, description="seeds every random generator (0 to 2**32 - 1)")
    run_dir: Optional[Text] = Field(None, description="default: runs/<name>")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    report: ReportConfig = Field(default_factory=ReportConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def section(self, name: str) -> dict[str, Any]:
        """A recipe section as plain data (what a stage fingerprints)."""
        return self.model_dump(mode="json", by_alias=True)[name]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# ----------------------------------------------------------------------------- resources


def resource_dir(kind: Literal["configs", "recipes"]) -> Path:
    """Top-level `configs/` and `recipes/`, installed as `cann_distill.configs` / `.recipes`."""
    return Path(str(resources.files(f"cann_distill.{kind}")))


def default_recipe_path() -> Path:
    return resource_dir("recipes") / "resnet10t_from_resnet18_digits.yaml"


def hardware_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted((resource_dir("configs") / "hardware").glob("*.yaml"))}


class Int8Scheme(Strict):
    """How INT8 is quantized for a target (`auto`: chosen from the host CPU's features, reason recorded)."""

    activation_type: Literal["auto", "uint8", "int8"] = "auto"
    reduce_range: Union[Literal["auto"], bool] = Field("auto", description="7-bit weights: for x86 CPUs without VNNI")
    per_channel: bool = True


class HardwareProfile(Strict):
    """A deployment target: the runtime, how INT8 is built for it, and the budgets a student must meet."""

    name: Text
    description: Text = ""
    provider: Text = "CPUExecutionProvider"
    provider_options: dict[str, Union[str, int, float, bool]] = Field(default_factory=dict, description="onnxruntime provider options")
    threads: int = Field(1, ge=1, description="onnxruntime intra-op threads")
    batch: int = Field(1, ge=1, description="batch size at which latency is measured and budgeted")
    int8: Int8Scheme = Field(default_factory=Int8Scheme)
    machine: Optional[Literal["x86_64", "aarch64"]] = Field(None, description="CPU architecture of the target; null: any")
    cpu_features: dict[Literal["avx2", "avx512", "vnni"], bool] = Field(
        default_factory=dict, description="features the target has (true) or lacks (false); a host that differs only estimates it"
    )
    measured_here: bool = Field(True, description="false: figures taken on this host never stand for the target (estimates only)")
    budgets: BudgetConfig = Field(default_factory=lambda: BudgetConfig())


def hardware_profile(name: str) -> HardwareProfile:
    """A shipped profile by name, or a profile YAML by path; unknown keys and bad values are errors with their key path."""
    profiles = hardware_profiles()
    path = profiles.get(name)
    if path is None:
        if not name.endswith((".yaml", ".yml")) or not Path(name).is_file():
            raise RecipeError(
                f"unknown hardware profile {preview(name)}{suggest(name, list(profiles))} "
                f"(known: {', '.join(profiles)}; or a path to a profile .yaml)"
            )
        path = Path(name)
    data = load_document(path).data
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a hardware profile is a mapping of keys, got {type(data).__name__}")
    try:
        return HardwareProfile.model_validate(data, strict=True)
    except ValidationError as exc:
        problems = "; ".join(f"{path_}: {msg}" for path_, msg in _schema_errors(exc))
        raise RecipeError(f"hardware profile {path}: {problems}") from None


def load_hardware_profile(name: str) -> dict[str, Any]:
    return hardware_profile(name).model_dump(mode="json")


@lru_cache(maxsize=1)
def timm_archs() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


# ----------------------------------------------------------------------------- loading


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("validate" if part == "validate_" else key_text(part))
    return out


def read_document(path: Path) -> Document:
    """A recipe file as data plus where each key was written (see cann_distill.core.safeyaml)."""
    if not path.exists():
        raise UsageError(f"recipe not found: {path}")
    if path.is_dir():
        raise UsageError(f"recipe is a directory, not a YAML file: {path}")
    return load_document(path)


def read_yaml(path: Path) -> dict[str, Any]:
    return read_document(path).data


_INDEX = re.compile(r"^(\w+)\[(\d+)\]$")


def split_key(key: str) -> list[Union[str, int]]:
    parts: list[Union[str, int]] = []
    for raw in key.split("."):
        m = _INDEX.match(raw)
        if m:
            parts += [m.group(1), int(m.group(2))]
        elif raw.isdigit():
            parts.append(int(raw))
        elif raw:
            parts.append(raw)
        else:
            raise UsageError(f"--set {key_text(key)}: empty key segment")
    return parts


def apply_overrides(data: dict[str, Any], overrides: list[str], positions: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Apply `a.b=c` / `a.list[1].k=v` overrides; values are parsed as YAML like a recipe file.

    `positions` (a Document's) learns that the overridden paths now come from `--set`.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"--set {key_text(item)}: expected KEY=VALUE, e.g. --set distill.epochs=2")
        key, raw = item.split("=", 1)
        label = f"--set {key_text(key)}"
        try:
            value = load_value(raw, label) if raw != "" else None
        except YAMLSyntaxError:
            value = raw
        parts = split_key(key.strip())
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise UsageError(f"{label}: index [{part}] out of range")
                node = node[part]
                continue
            if not isinstance(node, dict):
                raise UsageError(f"{label}: '{key_text(part)}' is not inside a mapping")
            if part not in node or node[part] is None:
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise UsageError(f"{label}: index [{last}] out of range")
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise UsageError(f"{label}: '{key_text(last)}' is not inside a mapping")
        if positions is not None:
            path = format_loc(tuple(parts))
            for p in [p for p in positions if p == path or p.startswith((path + ".", path + "["))]:
                del positions[p]
            positions[path] = "--set"
    return data


def semantic_errors(recipe: Recipe) -> list[str]:
    """Checks that need the registries, timm or the file system."""
    errors: list[str] = []
    archs = timm_archs()
    for role in ("teacher", "student"):
        cfg: ModelConfig = getattr(recipe, role)
        if cfg.arch not in archs:
            errors.append(f"{role}.arch: unknown timm architecture {preview(cfg.arch)}{suggest(cfg.arch, sorted(archs))}")
        if cfg.checkpoint and not Path(cfg.checkpoint).is_file():
            errors.append(f"{role}.checkpoint: file not found: {cfg.checkpoint}")
    errors += _data_errors(recipe)
    channels = recipe.data.channels or (1 if recipe.data.source == "digits" else 3)
    for section in ("data", "teacher"):
        for key in ("mean", "std"):
            value = getattr(getattr(recipe, section), key)
            if value is None:
                continue
            if len(value) != channels:
                errors.append(f"{section}.{key}: needs {channels} value(s), one per channel, got {len(value)}")
            if not all(math.isfinite(v) for v in value):
                errors.append(f"{section}.{key}: every value must be finite")
            elif key == "std" and any(v <= 0 for v in value):
                errors.append(f"{section}.std: every value must be > 0")
    errors += _select_errors(recipe)
    errors += _qat_errors(recipe)
    for i, spec in enumerate(recipe.distill.losses):
        path = f"distill.losses[{i}]"
        if spec.kind not in LOSSES:
            errors.append(f"{path}.kind: {LOSSES.unknown_message(spec.kind)}{suggest(spec.kind, LOSSES.names())}")
            continue
        errors += _component_errors(LOSSES, spec.kind, spec.kwargs(), path, path, arg_in_path=False)
    if all(spec.weight == 0 for spec in recipe.distill.losses):
        errors.append("distill.losses: at least one loss needs a weight > 0")
    errors += _schedule_errors(recipe)
    if recipe.validate_.provider is not None:
        import onnxruntime as ort

        if recipe.validate_.provider not in ort.get_all_providers():
            errors.append(
                f"validate.provider: onnxruntime does not know {preview(recipe.validate_.provider)}"
                f"{suggest(recipe.validate_.provider, ort.get_all_providers())}"
            )
    try:
        hardware_profile(recipe.validate_.target)
    except RecipeError as exc:
        errors.append(f"validate.target: {exc}")
    return errors


def class_folders(folder: Path) -> list[str]:
    """A split's class folder names, sorted (hidden folders skipped): their order is the class order."""
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def class_mismatch(split: str, train: list[str], other: list[str]) -> Optional[str]:
    """How `split`'s class folders differ from train's, or None when they match."""
    missing, extra = sorted(set(train) - set(other)), sorted(set(other) - set(train))
    if not (missing or extra):
        return None
    diff = ", ".join(
        ([f"missing in {split}: {', '.join(missing[:5])}"] if missing else [])
        + ([f"not in train: {', '.join(extra[:5])}"] if extra else [])
    )
    return f"class folders of {split}/ do not match train/ ({diff})"


def _data_errors(recipe: Recipe) -> list[str]:
    """Dataset folders and class folders that match across splits; augmentation that timm and the losses accept."""
    data, errors = recipe.data, []
    if data.source == "imagefolder":
        if not data.root:
            errors.append("data.root: required when data.source is 'imagefolder'")
        else:
            root = Path(data.root)
            for split in ("train", "val"):
                if not (root / split).is_dir():
                    errors.append(f"data.root: dataset folder not found: {root / split} (expected <root>/{split}/<class>/*)")
            if not errors:
                train = class_folders(root / "train")
                if not train:
                    errors.append(f"data.root: no class folders in {root / 'train'} (expected {root / 'train'}/<class>/*)")
                for split in ("val", "test"):
                    if split == "test" and not (root / split).is_dir():
                        continue
                    if (mismatch := class_mismatch(split, train, class_folders(root / split))) is not None:
                        errors.append(f"data.root: {mismatch}")
    aug = data.augment
    if aug.enabled and aug.auto_augment:
        from timm.data import create_transform

        try:
            create_transform(32, is_training=True, auto_augment=aug.auto_augment)
        except Exception as exc:  # timm raises AssertionError / KeyError / ValueError for bad policy strings
            errors.append(
                f"data.augment.auto_augment: timm does not accept {preview(aug.auto_augment, 60)} ({type(exc).__name__}: "
                f"{cut(str(exc), 80)}); e.g. rand-m9-mstd0.5, augmix-m5-w3, original"
            )
    for lo_hi in ("scale", "ratio"):
        lo, hi = getattr(aug, lo_hi)
        if not 0 < lo <= hi or (lo_hi == "scale" and hi > 1):
            errors.append(f"data.augment.{lo_hi}: needs 0 < low <= high{' <= 1' if lo_hi == 'scale' else ''}, got [{lo}, {hi}]")
    if aug.mixes:
        for i, spec in enumerate(recipe.distill.losses):
            if spec.kind not in LOSSES or LOSSES.get(spec.kind).soft_targets or LOSSES.check_kwargs(spec.kind, spec.kwargs()):
                continue  # unknown kinds and bad arguments are reported with the losses below
            try:
                reads_labels = "targets" in LOSSES.build(spec.kind, **spec.kwargs()).requires
            except (ValueError, TypeError):
                continue  # a value the loss refuses: reported with the losses below
            if reads_labels:
                errors.append(
                    f"distill.losses[{i}].kind: '{spec.kind}' needs hard labels, but data.augment mixes images "
                    "(mixup_alpha/cutmix_alpha > 0) into soft targets; use ce + kd, or turn mixing off"
                )
        sizes = {
            "data.batch_size": data.batch_size,
            "teacher.train.batch_size": recipe.teacher.train.batch_size,
            "distill.batch_size": recipe.distill.batch_size,
        }
        for key, size in sizes.items():
            if size is not None and size % 2:
                errors.append(f"{key}: mixup/cutmix pairs images within a batch, so the batch size must be even, got {size}")
    return errors


def fill_data_defaults(recipe: Recipe) -> None:
    """Input size, mean/std, crop and interpolation the recipe leaves open, from the teacher's pretrained_cfg
    (timm's `resolve_data_config`); digits: 32 px, 0.5/0.5, no crop, bilinear. The resolved recipe records them."""
    data = recipe.data
    channels = data.channels or (1 if data.source == "digits" else 3)
    if data.source == "digits":
        resolved = {
            "input_size": (channels, 32, 32),
            "mean": (0.5,) * channels,
            "std": (0.5,) * channels,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
        }
    else:
        import timm
        from timm.data import resolve_data_config

        cfg = timm.models.get_pretrained_cfg(recipe.teacher.arch)
        resolved = resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})
    mean, std = list(resolved["mean"]), list(resolved["std"])
    if channels == 1 and len(mean) != 1:  # a grayscale dataset: one channel of the teacher's statistics' mean
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    updates = {
        "image_size": data.image_size or int(resolved["input_size"][-1]),
        "mean": data.mean or mean,
        "std": data.std or std,
        "crop_pct": data.crop_pct or float(resolved.get("crop_pct") or 1.0),
        "interpolation": data.interpolation
        or (resolved.get("interpolation") if resolved.get("interpolation") in ("bilinear", "bicubic", "nearest") else "bilinear"),
        "channels": channels,
    }
    recipe.data = data.model_copy(update=updates)


def _component_errors(registry: Any, name: str, kwargs: dict[str, Any], path: str, args_path: str, arg_in_path: bool = True) -> list[str]:
    """Bind `kwargs` against a registered component and build it once; errors carry their key path.

    With `arg_in_path`, a constructor error that starts with an argument's name is moved onto
    that argument's path; without it, it is reported on `path` as raised (loss messages).
    """
    bad = registry.check_kwargs(name, kwargs)
    if bad:
        return [f"{args_path}.{arg}: {msg}" for arg, msg in bad]
    try:
        registry.build(name, **kwargs)
    except (ValueError, TypeError) as exc:
        # "alpha must be in [0, 1]" → "<args_path>.alpha: must be in [0, 1]"
        first, _, rest = str(exc).partition(" ")
        if arg_in_path and first in kwargs and rest:
            return [f"{args_path}.{first}: {rest}"]
        return [f"{path}: {exc}"]
    return []


def _select_errors(recipe: Recipe) -> list[str]:
    sel = recipe.select
    errors: list[str] = []
    if sel.strategy not in SELECTORS:
        errors.append(f"select.strategy: {SELECTORS.unknown_message(sel.strategy)}{suggest(sel.strategy, SELECTORS.names())}")
    else:
        errors += _component_errors(SELECTORS, sel.strategy, sel.strategy_args, "select.strategy_args", "select.strategy_args")
    errors += _policy_errors(recipe)
    t = sel.temperature
    if t.t_min > t.t_max:
        errors.append(f"select.temperature.t_min: must be <= t_max, got t_min={t.t_min} > t_max={t.t_max}")
    elif not t.t_min <= t.base <= t.t_max:
        errors.append(f"select.temperature.base: must lie in [t_min, t_max] = [{t.t_min}, {t.t_max}], got {t.base}")
    if not t.t_easy <= t.base:
        errors.append(f"select.temperature.t_easy: must be <= base ({t.base}), got {t.t_easy}")
    if not t.base <= t.t_hard:
        errors.append(f"select.temperature.t_hard: must be >= base ({t.base}), got {t.t_hard}")
    return errors


def _qat_errors(recipe: Recipe) -> list[str]:
    qat, errors = recipe.distill.qat, []
    if not qat.enabled:
        return errors
    for key in ("freeze_observers_epoch", "freeze_bn_epoch"):
        value = getattr(qat, key)
        if value is not None and value > qat.epochs:
            errors.append(f"distill.qat.{key}: {value} is past the last QAD epoch (distill.qat.epochs={qat.epochs})")
    if qat.ema_decay is not None:
        errors.append("distill.qat.ema_decay: not supported in QAD (an averaged copy would lose the quantizers' hooks)")
    if recipe.validate_.per_channel and recipe.validate_.opset < 13:
        errors.append(f"validate.opset: per-channel QDQ (QuantizeLinear axis) needs opset >= 13, got {recipe.validate_.opset}")
    both = set(qat.keep_float) & set(qat.per_tensor)
    if both:
        errors.append(f"distill.qat.per_tensor: {sorted(both)[0]!r} is also in keep_float")
    return errors


def refresh_epochs(recipe: Recipe) -> Optional[int]:
    """select.refresh_every resolved: N, or for `auto` 1 with distill.critical.mode: subset (and more than one epoch), else None."""
    every = recipe.select.refresh_every
    if every == "auto":
        return 1 if recipe.distill.critical.mode == "subset" and recipe.distill.epochs > 1 else None
    return every


def selection_policy(recipe: Recipe) -> str:
    """select.policy resolved: as given, else `hard` when re-mined every epoch (the selection follows the student,
    so its hardest samples stay current) and `mix` for a one-off selection — the best measured in each case."""
    if recipe.select.policy is not None:
        return recipe.select.policy
    return "hard" if refresh_epochs(recipe) == 1 else "mix"


def _policy_errors(recipe: Recipe) -> list[str]:
    """select.mix, refresh_every and the probe a strategy needs."""
    sel, errors = recipe.select, []
    if sel.mix is not None:
        total = sel.mix.hard + sel.mix.medium + sel.mix.easy
        if selection_policy(recipe) != "mix":
            errors.append(f"select.mix: only read with select.policy: mix (policy is {selection_policy(recipe)})")
        elif abs(total - 1.0) > 1e-6:
            errors.append(
                f"select.mix: hard + medium + easy must sum to 1, got {sel.mix.hard} + {sel.mix.medium} + {sel.mix.easy} = {total:.4g}"
            )
    if sel.refresh_every not in (None, "auto"):
        epochs = recipe.distill.epochs
        if sel.refresh_every > epochs:
            errors.append(
                f"select.refresh_every: {sel.refresh_every} is more than distill.epochs ({epochs}); the critical samples would never be re-mined"
            )
        if recipe.distill.critical.mode == "none":
            errors.append("select.refresh_every: distill.critical.mode is none, so there are no critical samples to re-mine")
    if sel.strategy in SELECTORS:
        need = SELECTORS.get(sel.strategy).min_probe_epochs
        if sel.probe_epochs is not None and sel.probe_epochs < need:
            errors.append(
                f"select.probe_epochs: strategy '{sel.strategy}' scores a student probe's training and needs >= {need} "
                f"probe epoch(s), got {sel.probe_epochs}"
            )
    return errors


def _schedule_errors(recipe: Recipe) -> list[str]:
    spec = recipe.distill.temperature_schedule
    path = "distill.temperature_schedule"
    if spec.kind not in SCHEDULES:
        return [f"{path}.kind: {SCHEDULES.unknown_message(spec.kind)}{suggest(spec.kind, SCHEDULES.names())}"]
    errors = _component_errors(SCHEDULES, spec.kind, spec.kwargs(), path, path)
    reads_temperature = (
        "temperature" in inspect.signature(LOSSES.get(s.kind)).parameters for s in recipe.distill.losses if s.kind in LOSSES
    )
    if not spec.is_default and not any(reads_temperature):
        errors.append(f"{path}: a temperature schedule needs a loss that reads a temperature (kd, dkd)")
    return errors


def _schema_errors(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = err["msg"]
        else:
            msg = f"{err['msg'].removeprefix('Value error, ')}, got {preview(err['input'])}"
        out.append((format_loc(tuple(err["loc"])), msg))
    return out


def _path_and_message(error: str) -> tuple[str, str]:
    path, sep, msg = error.partition(": ")
    return (path, msg) if sep and " " not in path else ("", error)


def resolve(data: dict[str, Any], source: str = "recipe", name: Optional[str] = None, doc: Optional[Document] = None) -> Recipe:
    """Validate raw recipe data; raise one RecipeError listing every problem with its key path.

    `doc` (the file's Document) lets each problem name the line it was written on.
    """
    errors = value_errors(data)
    try:
        # strict, as JSON: `true` is no int, "3" no number, 2.0 no int, while a list fills a tuple field
        recipe: Optional[Recipe] = Recipe.model_validate_json(json.dumps(data, skipkeys=True, default=str), strict=True)
    except ValidationError as exc:
        recipe = None
        # a value the walk above already refused is not reported again by the schema
        bad = [path for path, _ in errors]
        errors += [(loc, msg) for loc, msg in _schema_errors(exc) if not any(b == loc or b.startswith((loc + ".", loc + "[")) for b in bad)]
    if errors or recipe is None:
        raise RecipeError(render_errors(source, errors, doc))
    semantic = semantic_errors(recipe)
    if semantic:
        raise RecipeError(render_errors(source, [_path_and_message(e) for e in semantic], doc))
    fill_data_defaults(recipe)
    if recipe.name is None:
        try:
            recipe.name = name or "recipe"
        except ValidationError:
            raise RecipeError(f"{source}: the file name cannot serve as the recipe's name; set `name:`") from None
    return recipe


def merge_defaults(defaults: Any, data: Any) -> Any:
    """Recipe values over schema defaults (mappings merge, everything else replaces)."""
    if isinstance(defaults, dict) and isinstance(data, dict):
        return {**defaults, **{k: merge_defaults(defaults.get(k), v) for k, v in data.items()}}
    return data


def load_recipe(path: Union[str, Path, None] = None, overrides: Optional[list[str]] = None) -> Recipe:
    """Load, override and validate a recipe. `None` loads the packaged default recipe.

    Overrides apply on top of the schema defaults, so `--set distill.losses[1].temperature=2`
    works on a recipe that relies on the default loss list.
    """
    path = Path(path) if path is not None else default_recipe_path()
    doc = read_document(path)
    data = merge_defaults(Recipe().to_dict(), doc.data)
    data = apply_overrides(data, list(overrides or []), doc.positions)
    return resolve(data, source=str(path), name=path.stem, doc=doc)
