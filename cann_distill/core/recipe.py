"""Typed recipe schema: every section as a strict pydantic model, the shipped resources
(recipes, hardware profiles) and values derived from a recipe. Reading and checking a recipe
file is `cann_distill.core.recipe_load`.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from cann_distill.core.errors import RecipeError, preview
from cann_distill.core.recipe_detect import DetectConfig
from cann_distill.core.recipe_tune import TuneConfig
from cann_distill.core.registries import DEVICE_PATTERN
from cann_distill.core.registry import suggest
from cann_distill.core.safeyaml import (
    key_text,
    load_document,
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


def _unset(value: Any) -> bool:
    """A key added after a section's fingerprint was fixed is left out of every dump while unset, so recipes that do
    not use it keep their stage fingerprints (and their up-to-date runs)."""
    return value is None


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
    source: Literal["digits", "imagefolder", "photos"] = "digits"
    root: Optional[str] = Field(
        None,
        description="imagefolder: folder holding train/<class>/*, val/<class>/* and optionally test/<class>/*; "
        "photos: folder of photographs, one class each (default: the nine packaged photos)",
    )
    crops_per_class: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        (120, 40, 80),
        description="photos: crops cut from each photo for train, val and test (disjoint bands of the photo: cann_distill.data.photos)",
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
    split_seed: Seed = Field(
        0, description="digits: seed of the train/val/test split; photos: of the crops (fixed apart from the training seed)"
    )
    max_samples: Optional[int] = Field(None, ge=20, description="digits: keep only this many samples (quick runs)")
    batch_size: int = Field(64, ge=1)
    unlabeled: Optional[Text] = Field(
        None,
        exclude_if=_unset,
        description="a folder of images without labels (any tree; folder names are ignored) that distill adds to the "
        "training images: the teacher's soft outputs are their only targets, labelled images keep CE. The teacher trains "
        "on the labelled images only; an image also in val/test (same content) is refused",
    )


class TrainConfig(Strict):
    epochs: int = Field(10, ge=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: Optional[int] = Field(None, ge=1, description="default: data.batch_size")
    warmup_epochs: Optional[float] = Field(
        None,
        ge=0,
        description="linear learning-rate warmup (epochs, fractions allowed) before the cosine decay; default 1 epoch "
        "(a quarter of the run when it is shorter than 4 epochs); 0: none",
    )
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

    def warmup(self) -> float:
        """The warmup in epochs: the recipe's, else 1 epoch (a quarter of a run shorter than 4 epochs)."""
        return self.warmup_epochs if self.warmup_epochs is not None else min(1.0, self.epochs / 4)


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


class TeacherSpec(TeacherConfig):
    """One entry of `teachers:`: a teacher section plus its share of the distillation targets."""

    arch: str = Field(description="timm architecture (required)")
    weight: float = Field(
        1.0,
        ge=0,
        description="its share of the targets, normalised over the teachers (distill.ensemble); 0: trained and reported, not taught",
    )

    def section(self) -> TeacherConfig:
        """The teacher section this entry stands for (what `teacher:` holds when it is the first)."""
        return TeacherConfig.model_validate(self.model_dump(exclude={"weight"}))


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
    policy: Optional[Literal["hard", "easy", "mix", "auto", "random"]] = Field(
        None,
        description="which scores to keep: hard (highest), easy (lowest), mix (select.mix over score thirds), "
        "auto (easy when kept samples per class < scarce_below, else hard), random (scores ignored). Default: random "
        "with distill.critical.mode: subset (on photos no score-based policy beat a random subset of the same size: "
        "docs/defaults.md), else mix",
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
    # none by default: weighting the critical samples ×2 never beat no weighting on validation data (a photo set: a tie;
    # noisy-label digits: 4.4 pt worse over 3 seeds), see docs/defaults.md; weight / subset / curriculum stay one key away
    mode: Literal["none", "weight", "subset", "curriculum"] = "none"
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
        None,
        ge=1,
        description="views per sample the teacher labels in select; epoch e replays view e mod draws; default "
        "min(distill.epochs, 10), so a longer schedule reuses the same views instead of labelling more",
    )
    top_k: Optional[int] = Field(
        None,
        ge=1,
        description="teacher probabilities kept per view (fp16 + class index), the rest spread uniformly; default min(10, classes)",
    )


class QatConfig(TrainConfig):
    """distill.qat: quantization-aware distillation (QAD), a short phase after float distillation (`cann_distill.quant.qat`)."""

    enabled: bool = Field(False, description="train the distilled student once more with onnxruntime's INT8 arithmetic simulated")
    warmup_epochs: Optional[float] = Field(0.0, ge=0, description="QAD starts from a trained student: no warmup unless asked")
    epochs: int = Field(3, ge=1, description="QAD epochs, after distill.epochs of float distillation")
    lr: float = Field(
        0.0005,
        gt=0,
        description="QAD learning rate: 1% of a typical distill lr (NVIDIA's QAT guidance: start at "
        "1% of the initial training lr, cosine-annealed, ~10% of the original epochs)",
    )
    keep_start: bool = Field(
        True,
        description="ship the best on fake-quant val accuracy of the PTQ starting point and every QAD epoch (weights and "
        "ranges); false: the last epoch",
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
        1,
        ge=0,
        description="activation ranges follow an EMA of min/max until this QAD epoch (0-based), then stay; default 1: "
        "frozen after the first epoch; null: never frozen",
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
    mode: Optional[Literal["standard", "mutual"]] = Field(
        None,
        exclude_if=_unset,
        description="mutual: the students of distill.peers train together, each also distilling from the others' outputs "
        "(the dml loss; deep mutual learning, Zhang et al., CVPR 2018), with or without a teacher term; the peer best on val "
        "is the exported student. Default: standard (one student)",
    )
    peers: Optional[list[ModelConfig]] = Field(
        None,
        exclude_if=_unset,
        description="mode mutual: the students trained together (two or more); the first also fills `student:` "
        "(the baseline's and the select probe's arch)",
    )
    chain: Optional[list[Text]] = Field(
        None,
        min_length=3,
        exclude_if=_unset,
        description="teacher-assistant chain (TAKD, Mirzadeh et al., AAAI 2020): [teacher arch, assistant arch, ..., student arch]; "
        "distill runs one hop per pair, each hop's distilled model the next hop's teacher; every model smaller than the one before",
    )
    ensemble: Optional[Literal["mean", "per_teacher", "confidence"]] = Field(
        None,
        exclude_if=_unset,
        description="with `teachers:`, how their outputs become the targets: mean = the weighted mean of their softened "
        "probabilities (Hinton et al. 2015); per_teacher = one term per teacher, weighted; confidence = per sample the teacher "
        "with the highest weight x probability of the label (top-1 probability on unlabelled images). Default: mean",
    )


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
    trackers: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        exclude_if=lambda v: not v,
        description="experiment trackers every distill run (and every tune trial) logs to: the recipe as parameters, "
        "each epoch's history as metrics. tensorboard: <run_dir>/tensorboard/<stage or trial>; mlflow: MLFLOW_TRACKING_URI, "
        "else a local store in <run_dir>/mlruns. Needs the package (pip install 'cann-distill[trackers]')",
    )


class Recipe(Strict):
    name: Optional[Text] = None
    task: Literal["classify", "detect"] = Field(
        "classify",
        description="classify: one label per image (the data section); detect: boxes and classes, COCO JSON or the packaged "
        "demo set (the detect section, docs/guides/detection.md)",
    )
    seed: Seed = Field(0, description="seeds every random generator (0 to 2**32 - 1)")
    run_dir: Optional[Text] = Field(None, description="default: runs/<name>")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    report: ReportConfig = Field(default_factory=ReportConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig, description="read with task: detect only")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    teachers: Optional[list[TeacherSpec]] = Field(
        None,
        min_length=2,
        exclude_if=_unset,
        description="several teachers instead of one (docs/guides/modes.md): each trained and evaluated by the teacher stage, "
        "their outputs combined by distill.ensemble; the first also fills `teacher:` (what validate and the report compare with)",
    )
    tune: Optional[TuneConfig] = Field(
        None,
        exclude_if=_unset,
        description="the search space of `cann-distill tune` (docs/guides/tune.md): recipe key paths (as --set writes them) "
        "mapped to {low, high} ranges (optional log, step) or {choices: [...]}, plus trials, metric, pruner and sampler. "
        "Read by tune alone; no stage's fingerprint includes it",
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def section(self, name: str) -> dict[str, Any]:
        """A recipe section as plain data (what a stage fingerprints)."""
        return self.model_dump(mode="json", by_alias=True)[name]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


RECIPE_SCHEMA_FILE = "recipe.schema.json"  # shipped in cann_distill/schemas/


def recipe_json_schema() -> dict[str, Any]:
    """The recipe schema as JSON Schema (draft 2020-12), for editors and other tools.

    The same pydantic models that check a recipe produce it, so the shipped copy
    (`cann_distill/schemas/recipe.schema.json`) is regenerated, never edited by hand. It describes keys,
    types and ranges; the checks that need code (timm arch names, registered losses and their arguments,
    cross-key rules) run only when cann-distill loads the recipe.
    """
    schema = Recipe.model_json_schema(by_alias=True)
    head = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "cann-distill recipe",
        "description": "A cann-distill recipe (YAML). Generated from cann_distill.core.recipe.Recipe; "
        "cann-distill checks more when it loads a recipe (arch names, registered losses and their arguments, cross-key rules).",
    }
    return {**head, **{k: v for k, v in schema.items() if k not in ("title", "description")}}


# ----------------------------------------------------------------------------- resources


def resource_dir(kind: Literal["configs", "recipes"]) -> Path:
    """Top-level `configs/` and `recipes/`, installed as `cann_distill.configs` / `.recipes`."""
    return Path(str(resources.files(f"cann_distill.{kind}")))


def default_recipe_path() -> Path:
    return resource_dir("recipes") / "mobilenetv3_small_050_from_resnet18_photos.yaml"


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


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("validate" if part == "validate_" else key_text(part))
    return out


def schema_errors(exc: ValidationError) -> list[tuple[str, str]]:
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
        problems = "; ".join(f"{path_}: {msg}" for path_, msg in schema_errors(exc))
        raise RecipeError(f"hardware profile {path}: {problems}") from None


def load_hardware_profile(name: str) -> dict[str, Any]:
    return hardware_profile(name).model_dump(mode="json")


@lru_cache(maxsize=1)
def timm_archs() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


# ----------------------------------------------------------------------------- derived values


def teacher_specs(recipe: Recipe) -> list[TeacherSpec]:
    """The recipe's teachers: `teachers:`, or `teacher:` as the only one (weight 1)."""
    if recipe.teachers:
        return list(recipe.teachers)
    return [TeacherSpec.model_validate({**recipe.teacher.model_dump(), "weight": 1.0})]


def ensemble_rule(recipe: Recipe) -> Optional[str]:
    """distill.ensemble resolved: None with one teacher, else as given (default mean)."""
    if not recipe.teachers:
        return None
    return recipe.distill.ensemble or "mean"


def curriculum_epochs(recipe: Recipe) -> int:
    """distill.critical.curriculum_epochs resolved: as given, else half of distill.epochs."""
    c = recipe.distill.critical
    return c.curriculum_epochs if c.curriculum_epochs is not None else recipe.distill.epochs // 2


def distill_epoch_equivalents(recipe: Recipe) -> float:
    """distill's optimizer steps in full-set epochs: a subset of top_k_ratio trains that share of each epoch, a
    curriculum that share of its critical-only epochs. The CE-only baseline gets as many (it gets the same steps)."""
    mode, epochs, ratio = recipe.distill.critical.mode, recipe.distill.epochs, recipe.select.top_k_ratio
    if mode == "subset":
        return epochs * ratio
    if mode == "curriculum":
        first = min(curriculum_epochs(recipe), epochs)
        return first * ratio + (epochs - first)
    return float(epochs)


def refresh_epochs(recipe: Recipe) -> Optional[int]:
    """select.refresh_every resolved: N, or for `auto` 1 with distill.critical.mode: subset, a score-based
    select.policy and more than one epoch (a random subset is not re-drawn), else None."""
    every = recipe.select.refresh_every
    if every == "auto" and recipe.task == "detect":  # re-mining is classification-only: auto means never there
        return None
    if every == "auto":
        scored = selection_policy(recipe) != "random"
        return 1 if recipe.distill.critical.mode == "subset" and scored and recipe.distill.epochs > 1 else None
    return every


def selection_policy(recipe: Recipe) -> str:
    """select.policy resolved: as given, else `random` for a subset (no score-based policy beat a random subset of
    the same size on photos: docs/defaults.md) and `mix` for the weighted samples of mode weight. With task: detect
    the default is `hard` in both modes: those measurements are of classifiers, none was repeated for detectors, so
    the plain rule (keep the highest scores) holds until one is (docs/guides/detection.md)."""
    if recipe.select.policy is not None:
        return recipe.select.policy
    if recipe.task == "detect":
        return "hard"
    return "random" if recipe.distill.critical.mode == "subset" else "mix"
