"""distill: train the student from the teacher's targets and the critical-sample index.

Teacher targets come from one source (`distill.teacher_targets`, `cann_distill.teaching.targets`): select's
cached logits, the teacher online on each batch (the only source of teacher feature taps), or the
top-k labels select stored for replayed augmented views (no teacher forward here). `execute` reads
the inputs (IO), builds the target source and the temperature / critical-sample plans (policy) and
hands `DistillStep` (math, `cann_distill.teaching.steps`) to the shared training loop. Connectors and loss-balance parameters train
with the student and are dropped at export: distill/student.pt holds the plain timm student. A resumable state is saved after every epoch and
on Ctrl-C to <run_dir>/.distill.resume.pt (outside the staging folder); `--resume` continues it.

Temperature and critical-sample plans: `cann_distill.teaching.plans`.
"""

from __future__ import annotations

import contextlib
import json
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from cann_distill.core.paths import resolve_cache_dir
from cann_distill.core.recipe import Recipe, StudentConfig, TeacherConfig, ensemble_rule, refresh_epochs
from cann_distill.data.loading import Split, loader
from cann_distill.data.transforms import channels_of, make_mixup
from cann_distill.models.build import build_model, checkpoint_weights_fingerprint, count_params, save_checkpoint, teacher_input
from cann_distill.quant import qad
from cann_distill.quant.qad import run_phase as run_qad
from cann_distill.reporting.trackers import Trackers, flatten
from cann_distill.runtime import distributed
from cann_distill.runtime.terminal import ui
from cann_distill.selection.remining import Refresher, training_cost
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.stages.distill_inputs import (  # read_index, read_select_summary: this module's names before the split
    DistillInputs,
    open_replay,
    read_cached_logits,
    read_index,  # noqa: F401
    read_inputs,
    read_select_summary,  # noqa: F401
    read_temperature_config,  # noqa: F401
)
from cann_distill.stages.select import INDEX, LOGITS, SUMMARY, teacher_logits, teacher_output_parts
from cann_distill.stages.teacher import CHECKPOINT as TEACHER_CKPT
from cann_distill.stages.teacher import extra_teachers, headline, teacher_checkpoint
from cann_distill.store.cache import OutputCache
from cann_distill.store.rundir import RunDir
from cann_distill.teaching.distiller import Distiller
from cann_distill.teaching.ensemble import TeacherEnsemble
from cann_distill.teaching.losses.feature import channel_weights_key
from cann_distill.teaching.mutual import MutualStep, PeerModels, PeerStudents, evaluate_peers
from cann_distill.teaching.plans import CriticalPlan, TemperaturePlan
from cann_distill.teaching.steps import DistillStep
from cann_distill.teaching.targets import (
    CachedTargets,
    EnsembleTargets,
    ModelTargets,
    OnlineTargets,
    TeacherTargets,
    check_recipe,
    describe_mixing,
    resolve_mode,
    why_online,
)
from cann_distill.teaching.teachers import evaluate_teachers, renormalized, teacher_model, unlabelled_counts
from cann_distill.training.live import EpochLog
from cann_distill.training.loop import Checkpointing, History, accuracy, chain_hooks, fit, predict, seed_everything

CHECKPOINT = "distill/student.pt"
METRICS = "distill/metrics.json"
RESUME = ".distill.resume.pt"  # in the run dir, outside the staging folder, so an interrupted run keeps it

_resume: ContextVar[bool] = ContextVar("cann_distill_distill_resume", default=False)


@contextlib.contextmanager
def resuming(enabled: bool = True) -> Iterator[None]:
    """Within this block the distill stage continues from its resume checkpoint when there is one."""
    token = _resume.set(enabled)
    try:
        yield
    finally:
        _resume.reset(token)


def resume_path(run: RunDir) -> Path:
    return run.root / RESUME


def hop_resume_path(run: RunDir, hop: int) -> Path:
    """The resume state of hop `hop` of a teacher-assistant chain before its last (kept until the chain is done)."""
    return run.root / f".distill.hop{hop}.resume.pt"


def resume_pending(run: RunDir) -> bool:
    """An interrupted distillation left a state `--resume` continues (a chain's hops included)."""
    return resume_path(run).exists() or any(run.root.glob(".distill.hop*.resume.pt"))


def build_distiller(ctx: Context, train: Split, online: bool, peer: Optional[int] = None) -> Distiller:
    """Student (seeded), the teacher when it runs here, taps and connectors: a bad tap fails before any training.
    `peer`: the i-th of `distill.peers` (mutual learning), seeded with seed + i."""
    r = ctx.recipe
    n_classes, in_chans = len(train.classes), channels_of(r.data)
    cfg = r.student if peer is None else r.distill.peers[peer]  # type: ignore[index]
    seed_everything(r.seed + (peer or 0))
    student = build_model(cfg, n_classes, in_chans, role="student" if not peer else f"distill.peers[{peer}]", classes=train.classes)
    rule = ensemble_rule(r)
    online = online and rule is None  # several teachers run in their own target sources (`several_targets`)
    teacher = build_model(r.teacher, n_classes, in_chans, checkpoint=ctx.artifacts[TEACHER_CKPT], classes=train.classes) if online else None
    sample = torch.stack([train.fetch(i) for i in range(min(2, len(train)))])
    return Distiller(
        r.distill.losses,
        student,
        student_arch=cfg.arch,
        sample=sample,
        teacher=teacher,
        teacher_arch=r.teacher.arch,
        teacher_input=teacher_input(r.data, r.teacher) if online else None,
        balance=r.distill.loss_balance,
        force_teacher=online,
        ensemble=TeacherEnsemble(rule, [t.weight for t in r.teachers or ()]) if rule is not None else None,
    )


def load_student(ctx: Context, checkpoint: Path, n_classes: int) -> torch.nn.Module:
    """A student distill saved (an assistant of a chain), as the next hop's teacher."""
    return build_model(ctx.recipe.student, n_classes, channels_of(ctx.recipe.data), checkpoint=checkpoint)


def build_students(ctx: Context, train: Split, online: bool) -> list[Distiller]:
    """The student's distiller, or with `distill.mode: mutual` one per peer (the first runs the teacher online)."""
    peers = ctx.recipe.distill.peers if ctx.recipe.distill.mode == "mutual" else None
    if not peers:
        return [build_distiller(ctx, train, online)]
    return [build_distiller(ctx, train, online and i == 0, peer=i) for i in range(len(peers))]


def trained_modules(distillers: Sequence[Distiller]) -> tuple[torch.nn.Module, torch.nn.Module, tuple[str, ...]]:
    """What fit trains, what it evaluates / averages / exports, and the parameter prefixes without weight decay."""
    if len(distillers) == 1:
        return distillers[0].model, distillers[0].student, ("balance.",)
    return PeerModels(distillers), PeerStudents(distillers), tuple(f"peers.{i}.balance." for i in range(len(distillers)))


def build_targets(ctx: Context, mode: str, distiller: Distiller, inputs: DistillInputs) -> TeacherTargets:
    """The recipe's teacher-target source, on the training device."""
    check_recipe(ctx.recipe, len(inputs.train.classes))
    if ctx.recipe.teachers:
        targets: TeacherTargets = several_targets(ctx, mode, inputs)
    elif mode == "online":
        targets = OnlineTargets(distiller)
    elif mode == "cached":
        targets = CachedTargets(read_cached_logits(ctx.artifacts[LOGITS], inputs.train), inputs.splits.augmented)
    else:
        targets = open_replay(ctx.recipe, ctx.artifacts[SUMMARY], inputs.select_summary, inputs.train)
    targets.prepare(ctx.runtime)
    return targets


def several_targets(ctx: Context, mode: str, inputs: DistillInputs) -> EnsembleTargets:
    """One target source per teacher, all of the recipe's mode: each teacher's checkpoint run online, its logits
    from select, or its replayed views."""
    r, train = ctx.recipe, inputs.train
    sources: list[TeacherTargets] = []
    for k, spec in enumerate(r.teachers or ()):
        if mode == "online":
            model = teacher_model(r, spec, ctx.artifacts[teacher_checkpoint(k)], train.classes, channels_of(r.data))
            sources.append(ModelTargets(model))
        elif mode == "cached":
            sources.append(CachedTargets(read_cached_logits(ctx.artifacts[teacher_logits(k)], train), inputs.splits.augmented))
        else:
            sources.append(open_replay(r, ctx.artifacts[SUMMARY], inputs.select_summary, train, k))
    for k, flag in enumerate(renormalized(r)):
        if flag:
            ui.info(f"[dim]distill: teachers[{k}] ({r.teachers[k].arch}) gets its inputs re-normalised to its own mean/std[/dim]")  # type: ignore[index]
    return EnsembleTargets(sources)


def several_teachers_summary(ctx: Context, inputs: DistillInputs, student: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each teacher's accuracy and agreement with the distilled student, for metrics.json and the report."""
    r, train = ctx.recipe, inputs.train
    models = [
        teacher_model(r, spec, ctx.artifacts[teacher_checkpoint(k)], train.classes, channels_of(r.data))
        for k, spec in enumerate(r.teachers or ())
    ]
    return evaluate_teachers(r, models, inputs.splits, student, ctx.runtime)


# ----------------------------------------------------------------------------- policy


class Epochs:
    """fit's epoch hooks: the critical plan picks the samples, the temperature plan feeds the step."""

    def __init__(
        self, temperature: TemperaturePlan, critical: CriticalPlan, step: DistillStep, ctx: Context, refresh: Optional[Refresher] = None
    ) -> None:
        self.temperature, self.critical, self.step, self.runtime, self.refresh = temperature, critical, step, ctx.runtime, refresh

    def start(self, epoch: int) -> dict[str, float]:
        if self.refresh is not None and self.refresh.due(epoch):
            self.critical.update(self.refresh(epoch).mask)
            self.step.sample_weight = self.runtime.to(self.critical.sample_weight)
        active, critical_only = self.critical.select(epoch)
        temps = self.temperature.at(epoch)
        self.step.temperature = None if temps is None else self.runtime.to(torch.from_numpy(temps).float())
        return {"samples": len(active), "critical_only": int(critical_only), **self.temperature.row(temps, active)}

    def end(self, epoch: int, row: dict[str, float]) -> None:
        self.temperature.end_epoch(row)


# ----------------------------------------------------------------------------- the stage


class DistillStage(Stage):
    name = "distill"
    version = 7
    all_ranks = True  # under torchrun: DDP training / a sharded teacher pass (cann_distill.runtime.distributed)
    sections = ("data", "student", "distill", "seed")
    needs = (LOGITS, INDEX, SUMMARY, TEACHER_CKPT)

    def needs_for(self, recipe: Recipe) -> tuple[str, ...]:
        several = tuple(teacher_logits(k) for k in range(len(recipe.teachers or ())))
        return self.needs + extra_teachers(recipe) + several

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        qat = {}
        if recipe.distill.qat.enabled:  # QAD starts from validate's PTQ, whose scheme this CPU decides
            from cann_distill.quant.ort import cpu_features

            v = recipe.validate_
            qat = {
                "qat_ptq": {
                    k: v.model_dump()[k]
                    for k in ("opset", "per_channel", "activation_type", "reduce_range", "nodes_to_exclude", "calibration")
                },
                "cpu": cpu_features(),
                "qad_version": qad.VERSION,
            }
        inputs: dict[str, Any] = {
            **qat,
            "checkpoint": _checkpoint_hashes(recipe)["student"],
            "teacher_input": {"arch": recipe.teacher.arch, "mean": recipe.teacher.mean, "std": recipe.teacher.std},
        }
        if recipe.teachers:  # several teachers: how each sees its inputs and counts, and how they are combined
            inputs["teachers"] = [{"arch": t.arch, "mean": t.mean, "std": t.std, "weight": t.weight} for t in recipe.teachers]
            inputs["ensemble"] = ensemble_rule(recipe)
        return inputs

    def execute(self, ctx: Context) -> dict[str, Any]:
        if ctx.recipe.distill.chain:
            return self._chain(ctx, read_inputs(ctx))
        summary, resume = self._run(ctx, read_inputs(ctx), resume_path(ctx.run))
        if distributed.is_main():  # the stage's outputs supersede it (kept until QAD is done, so --resume can reach it)
            resume.unlink(missing_ok=True)
        return summary

    def _chain(self, ctx: Context, inputs: DistillInputs) -> dict[str, Any]:
        """Teacher-assistant chain (TAKD): one distillation per hop, each hop's student the next hop's teacher; the
        assistants' artifacts in distill/hop_<k>/, the last hop's (the student's) where one distillation puts them.
        Each hop keeps its resume state until the chain is done, so `--resume` skips the hops already trained."""
        r, archs = ctx.recipe, ctx.recipe.distill.chain or []
        teacher, artifacts, hops, states = r.teacher, dict(ctx.artifacts), [], []
        for k in range(1, len(archs)):
            last = k == len(archs) - 1
            out = ctx.out if last else ctx.out / f"hop_{k}"
            out.mkdir(exist_ok=True)
            student = r.student if last else StudentConfig(arch=archs[k])
            hop = replace(
                ctx,
                recipe=r.model_copy(update={"teacher": teacher, "student": student}),
                out=out,
                artifacts=artifacts,
                # the last hop's state is the stage's own (`.distill.resume.pt`, checked against the stage's fingerprint
                # like any distill's); an assistant's carries its hop
                fingerprint=ctx.fingerprint if last else f"{ctx.fingerprint}:hop{k}",
            )
            ui.info(f"distill: hop {k}/{len(archs) - 1}: {teacher.arch} -> {student.arch}")
            state = resume_path(ctx.run) if last else hop_resume_path(ctx.run, k)
            summary, _ = self._run(hop, inputs, state, "" if last else f"_hop{k}")
            states.append(state)
            hops.append({"hop": k, "teacher": teacher.arch, "student": student.arch, "student_params": summary["params"]})
            hops[-1].update({key: summary[key] for key in ("val_acc", "test_acc")})
            teacher, artifacts = TeacherConfig(arch=student.arch), {**artifacts, TEACHER_CKPT: out / "student.pt"}
            if not last and resolve_mode(r) == "cached":  # the assistant's logits on the training split, as select's
                assistant = load_student(hop, out / "student.pt", len(inputs.train.classes))
                logits = predict(assistant, inputs.train, desc=f"assistant {k} logits", runtime=hop.runtime)
                np.save(out / "train_logits.npy", logits.astype(np.float32), allow_pickle=False)
                artifacts[LOGITS] = out / "train_logits.npy"
        metrics = json.loads((ctx.out / "metrics.json").read_text())
        (ctx.out / "metrics.json").write_text(json.dumps({**metrics, "chain": hops}, indent=2))
        if distributed.is_main():
            for state in states:
                state.unlink(missing_ok=True)
        return {**summary, "chain": hops}

    def _run(self, ctx: Context, inputs: DistillInputs, resume_file: Path, hop: str = "") -> tuple[dict[str, Any], Path]:
        """One distillation into ctx.out (its resume state at `resume_file`; `hop` names a chain's assistant hop for
        the trackers); its summary and that file."""
        r, cfg, rt = ctx.recipe, ctx.recipe.distill, ctx.runtime
        mode = resolve_mode(r)
        distillers = build_students(ctx, inputs.train, online=mode == "online")
        distiller = distillers[0]
        targets = build_targets(ctx, mode, distiller, inputs)
        ui.info(f"[dim]distill: teacher targets: {mode} ({targets.describe()['teacher_view']})[/dim]")
        sensitivity = self._channel_sensitivity(ctx, distiller, inputs.train)
        for d in distillers:
            d.constants = {k: rt.to(v) for k, v in d.constants.items()}
        temperature = TemperaturePlan(cfg, distiller.terms, inputs.index.temperature, inputs.select_temperature)
        if (message := temperature.replaced(cfg.losses)) is not None:
            ui.info(f"[dim]{message}[/dim]")
        critical = CriticalPlan(r, inputs.index)
        unlabelled = r.data.unlabeled is not None
        weight = rt.to(critical.sample_weight)
        step = MutualStep(distillers, weight, unlabelled) if len(distillers) > 1 else DistillStep(distiller, weight, unlabelled)
        model, deploy, no_decay = trained_modules(distillers)
        refresh = (
            Refresher(
                r,
                distiller.student,
                inputs.train,
                read_cached_logits(ctx.artifacts[LOGITS], inputs.train).numpy(),
                inputs.index.critical,
                rt,
            )
            if refresh_epochs(r)
            else None
        )
        epochs = Epochs(temperature, critical, step, ctx, refresh)
        resume = Checkpointing(resume_file, ctx.fingerprint, resume=_resume.get(), command="cann-distill distill RECIPE --resume")
        with trackers_for(ctx, self.name, hop) as trackers:
            history = fit(
                model,
                inputs.train,
                cfg,
                cfg.batch_size or r.data.batch_size,
                step,
                r.seed,
                "distill",
                val=inputs.splits.val,
                sampler=critical.sampler,
                on_epoch_start=epochs.start,
                on_epoch_end=EpochLog(
                    ctx.run.root, self.name, cfg.epochs, then=chain_hooks(epochs.end, trackers, ctx.observe.on_epoch_end)
                ),
                deploy=deploy,
                checkpoint=resume,
                no_decay=no_decay,
                runtime=rt,
                transform=inputs.splits.train_transform,
                mix=make_mixup(r.data, len(inputs.train.classes)),
                teacher=targets,
                period=targets.period,
            )
        qad = run_qad(ctx, distiller.student, inputs.splits, ctx.artifacts[TEACHER_CKPT], _resume.get()) if cfg.qat.enabled else None
        peers: dict[str, Any] = {}
        if len(distillers) > 1:  # mutual learning: every peer evaluated and kept, the best on val exported
            best, rows = evaluate_peers(distillers, [p.arch for p in cfg.peers or ()], inputs.splits, rt)
            for row, d in zip(rows, distillers):
                save_checkpoint(
                    ctx.out / f"peer_{row['index']}.pt", d.student, row["arch"], *self._shape(r, inputs), classes=inputs.train.classes
                )
            distiller, peers = distillers[best], {"peers": rows, "best_peer": best}
            ui.info(f"[dim]distill: peer {best} ({rows[best]['arch']}) is the best on val: the exported student[/dim]")
        arch = (cfg.peers or [])[peers["best_peer"]].arch if peers else r.student.arch
        summary = self._finish(ctx, distiller, inputs, history, targets, temperature, critical, sensitivity, refresh, arch, peers)
        if qad is not None:
            summary["qat"] = qad
        return summary, resume.path

    def _finish(
        self,
        ctx: Context,
        distiller: Distiller,
        inputs: DistillInputs,
        history: History,
        targets: TeacherTargets,
        temperature: TemperaturePlan,
        critical: CriticalPlan,
        sensitivity: dict[str, str],
        refresh: Optional[Refresher] = None,
        arch: Optional[str] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> dict[str, Any]:
        """Evaluate and save the student (`arch`: the exported peer's, in mutual learning); write metrics.json; the summary."""
        r, cfg, rt, student = ctx.recipe, ctx.recipe.distill, ctx.runtime, distiller.student
        train, val, test = inputs.train, inputs.splits.val, inputs.splits.test
        logits = {
            s.name: predict(student, s, desc=f"student {'eval' if s is val else s.name}", runtime=rt) for s in (val, test) if s is not None
        }
        val_acc = accuracy(logits["val"], val.targets)
        test_acc = accuracy(logits["test"], test.targets) if test is not None else None
        arch = arch or r.student.arch
        save_checkpoint(ctx.out / "student.pt", student, arch, len(train.classes), channels_of(r.data), classes=train.classes)
        mixes = r.data.augment.mixes  # mixing needs augmentation on
        summary = {
            "arch": arch,
            "params": count_params(student),
            "epochs": cfg.epochs,
            "val_acc": val_acc,
            "test_acc": test_acc,
            "headline": headline(val_acc, test_acc),
            "stopped_early": history.stopped_early,
            "augmented": inputs.splits.augmented,
            "mixup": mixes,
            "runtime": rt.describe(),
            "best_epoch": history.best_epoch,
            "weights": history.selected if not cfg.ema_decay else f"ema ({history.selected})",
            "losses": [s.model_dump() for s in cfg.losses],
            "loss_balance": cfg.loss_balance,
            "critical_mode": critical.mode,
            "num_critical": len(critical.critical),
            "critical_only_epochs": min(critical.warmup, cfg.epochs),
            "temperature": temperature.describe(),
            "teacher_targets": targets.mode,
            "teacher": {
                **targets.describe(),
                "forward": targets.runs_teacher,
                "logits": targets.mode,
                "why_online": why_online(r),
                "mixing": describe_mixing(targets, mixes),
                "renormalized": not teacher_input(r.data, r.teacher).identity,
                "taps": distiller.teacher_taps,
            },
            "student_taps": distiller.student_taps,
            "connectors": {k: {"params": count_params(m)} for k, m in distiller.model.connectors.items()},
            "tap_shapes": {k: v for k, v in distiller.shapes.items() if ".feat." in k},
            "channel_sensitivity": sensitivity,
            "throughput": throughput(history),
            "cost": training_cost(
                history, len(train), cfg.batch_size or r.data.batch_size, cfg.epochs, refresh.seconds if refresh else 0.0
            ),
            "refresh": {"every": refresh.every, "by": r.select.refresh_by, "records": refresh.records} if refresh else None,
        }
        if r.data.unlabeled is not None:  # how many images of each kind distill trained on
            summary["data"] = unlabelled_counts(train)
        if r.teachers:  # several teachers: each one's accuracy and agreement with the student, and the rule's record
            summary.update(several_teachers_summary(ctx, inputs, logits), ensemble=distiller.ensemble.describe())  # type: ignore[union-attr]
        summary.update(extra or {})  # mutual learning: every peer and the one exported
        if history.resumed_from:
            summary["resumed_from"] = history.resumed_from
        (ctx.out / "metrics.json").write_text(json.dumps({**summary, "history": history}, indent=2))
        return summary

    @staticmethod
    def _shape(r: Recipe, inputs: DistillInputs) -> tuple[int, int]:
        return len(inputs.train.classes), channels_of(r.data)

    def _channel_sensitivity(self, ctx: Context, distiller: Distiller, train: Split) -> dict[str, str]:
        """Teacher channel sensitivity for every tap a loss weighs channels of: computed once per teacher + data + tap, kept in select's cache."""
        taps = list(dict.fromkeys(t.loss.channel_weights for t in distiller.terms if t.loss.channel_weights))
        if not taps:
            return {}
        r = ctx.recipe
        cache = OutputCache(resolve_cache_dir(r.select.cache_dir))
        teacher_path = ctx.artifacts[TEACHER_CKPT]
        weights = checkpoint_weights_fingerprint(cache.root, teacher_path, ctx.hashes[TEACHER_CKPT])
        status: dict[str, str] = {}
        for tap in taps:
            channels = distiller.shapes[f"teacher.feat.{tap}"][0]
            batches = loader(train, r.select.batch_size, runtime=ctx.runtime)
            on_device = ((b[0],) for b in batches)  # `loader` batches arrive on the device
            arr, status[tap] = cache.shared(  # rank 0 reads and writes; every rank gets its array
                teacher_output_parts(r, train, weights, "channel_sensitivity", tap=tap),
                (channels,),
                lambda: distiller.channel_sensitivity(tap, ui.track(on_device, f"teacher sensitivity {tap}", total=len(batches))),
            )
            distiller.constants[channel_weights_key(tap)] = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        return status


def trackers_for(ctx: Context, stage: str, hop: str = "") -> Trackers:
    """The recipe's experiment trackers for one training run (rank 0 alone logs), named as the caller asked
    (`Observe`: a tune trial's name and its parent run dir) or after the stage."""
    names = ctx.recipe.report.trackers if distributed.is_main() else []
    root, run = ctx.observe.tracker_root or ctx.run.root, (ctx.observe.tracker_run or stage) + hop
    return Trackers(names, root, run, ctx.recipe.name or "recipe", flatten(ctx.recipe.to_dict()) if names else {})


def throughput(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """Means over the epochs of samples/s and the data / teacher / student time shares; the peak memory."""
    rows = [row for row in history if "samples_per_s" in row]
    if not rows:
        return {}
    out = {k: float(np.mean([row[k] for row in rows])) for k in ("samples_per_s", "data_share", "teacher_share", "student_share")}
    out["peak_rss_mb"] = max(row["peak_rss_mb"] for row in rows)
    if any("peak_device_mb" in row for row in rows):
        out["peak_device_mb"] = max(row.get("peak_device_mb", 0.0) for row in rows)
    return out


register_stage(DistillStage())
