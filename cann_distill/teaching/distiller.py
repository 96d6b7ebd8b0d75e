"""Distillation wiring: feature taps, connectors and loss fusion, independent of stages and files.

A `Distiller` turns the recipe's loss list into one training objective for a timm student:

- taps: every `student.feat.<name>` / `teacher.feat.<name>` a loss requires is tapped by name
  (`cann_distill.models.taps`), names checked against the models with one-line errors;
- connectors: losses that compare maps element by element (fitnet, cw_mse, attn_mse) read the
  student tap through a 1x1 conv + BN + resize onto the teacher tap's shape, trained with the
  student and never exported;
- fusion: total = sum_i weight_i * L_i, or with `loss_balance: uncertainty` (Kendall, Gal &
  Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses", CVPR 2018)
  total = sum_i weight_i * (exp(-s_i) * L_i + s_i) with a learnable log-variance s_i per term
  (zero-initialised, so training starts from the plain weighted sum). At the optimum
  exp(-s_i) = 1 / L_i: each term's gradient is normalised by its own scale and the recipe
  weights keep setting the relative importance. The total can then go below zero.

The teacher runs in eval mode under no_grad (`teacher_outputs`), when the caller's teacher-target
source is online (`cann_distill.teaching.targets`); other sources supply `teacher.logits` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import LossSpec
from cann_distill.models.connectors import build_connector
from cann_distill.models.taps import FeatureTapper, tap_error
from cann_distill.runtime import distributed
from cann_distill.teaching.ensemble import KEY as TEACHERS_KEY
from cann_distill.teaching.ensemble import TeacherEnsemble
from cann_distill.teaching.losses import LOSSES, Loss, rank_rows
from cann_distill.teaching.losses.feature import channel_sensitivity


@dataclass
class Term:
    index: int  # position in distill.losses
    name: str  # history / display key: the kind, or kind[index] when a kind repeats
    kind: str
    weight: float
    loss: Loss
    student_key: Optional[str] = None  # the student feature tap read through `connector`
    connector: Optional[str] = None  # key in DistillModel.connectors


class UncertaintyBalance(nn.Module):
    """Learnable log-variances s_i: sum_i w_i * (exp(-s_i) * L_i + s_i) (Kendall et al. 2018)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.log_var = nn.Parameter(torch.zeros(n))

    def forward(self, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        s = self.log_var.to(values.dtype)
        return (weights * (torch.exp(-s) * values + s)).sum()

    def effective_weights(self, weights: torch.Tensor) -> torch.Tensor:
        return weights * torch.exp(-self.log_var.detach())


class DistillModel(nn.Module):
    """What the optimizer trains: the timm student, its connectors and the loss-balance parameters.

    Only `student` is deployed (`student.state_dict()` is the exported checkpoint).
    """

    def __init__(self, student: nn.Module, connectors: nn.ModuleDict, balance: Optional[UncertaintyBalance] = None) -> None:
        super().__init__()
        self.student = student
        self.connectors = connectors
        self.balance = balance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def _tap_names(keys: Iterable[str], role: str) -> list[str]:
    prefix = f"{role}.feat."
    return [k[len(prefix) :] for k in keys if k.startswith(prefix)]


def teacher_feature_taps(specs: Sequence[LossSpec]) -> list[str]:
    """Teacher feature taps the losses read: non-empty means the teacher must run online."""
    keys = [k for s in specs for k in LOSSES.build(s.kind, **s.kwargs()).requires]
    return list(dict.fromkeys(_tap_names(keys, "teacher")))


def _connector_key(student_tap: str, teacher_tap: str) -> str:
    return f"{student_tap}__{teacher_tap}".replace(".", "_")


def _which_arg(spec: LossSpec, role: str, name: str) -> str:
    """The loss argument that named tap `name` (for the key path in errors)."""
    kwargs = spec.kwargs()
    return role if kwargs.get(role, name) == name else next((k for k, v in kwargs.items() if v == name), role)


class Distiller:
    """Builds taps, connectors and loss terms for one student (and teacher); computes the fused loss.

    `sample` is a small input batch used once to learn the taps' shapes (eval mode, no grad).
    `teacher_input` maps student-normalised inputs onto the teacher's normalisation.
    Raises RecipeError (one line, every problem with its key path) for unknown taps and shapes
    no connector can bridge.
    """

    def __init__(
        self,
        specs: Sequence[LossSpec],
        student: nn.Module,
        *,
        student_arch: str,
        sample: torch.Tensor,
        teacher: Optional[nn.Module] = None,
        teacher_arch: str = "teacher",
        teacher_input: Optional[nn.Module] = None,
        balance: str = "none",
        force_teacher: bool = False,
        ensemble: Optional[TeacherEnsemble] = None,
    ) -> None:
        self.ensemble = ensemble  # several teachers: how their outputs become `teacher.logits` (cann_distill.teaching.ensemble)
        kinds = [s.kind for s in specs]
        self.terms = [
            Term(i, s.kind if kinds.count(s.kind) == 1 else f"{s.kind}[{i}]", s.kind, s.weight, LOSSES.build(s.kind, **s.kwargs()))
            for i, s in enumerate(specs)
        ]
        requires = [k for t in self.terms for k in t.loss.requires]
        self.student_taps = list(dict.fromkeys(_tap_names(requires, "student")))
        self.teacher_taps = list(dict.fromkeys(_tap_names(requires, "teacher")))
        self.runs_teacher = bool(self.teacher_taps) or force_teacher
        if self.runs_teacher and teacher is None:
            raise ValueError("a teacher model is needed: a loss reads teacher feature taps")
        _raise(self._tap_errors(specs, (("student", student, student_arch), ("teacher", teacher, teacher_arch))))
        self._attach(student, student_arch, teacher, teacher_arch, teacher_input)
        was_training = student.training
        dry = self._dry_run(sample)  # one dry run for the shapes
        self.shapes = {k: list(v.shape[1:]) for k, v in dry.items()}
        connectors, errors = self._connectors(dry)
        _raise(errors)
        self.model = DistillModel(
            student, nn.ModuleDict(connectors), UncertaintyBalance(len(self.terms)) if balance == "uncertainty" else None
        )
        _raise(self._loss_errors(dry, sample, was_training))
        self.weights = torch.tensor([t.weight for t in self.terms], dtype=torch.float32)

    def _tap_errors(self, specs: Sequence[LossSpec], models: Sequence[tuple[str, Optional[nn.Module], str]]) -> list[str]:
        """Every tap a loss reads that its model does not have, with the recipe key that names it."""
        errors: list[str] = []
        for term, spec in zip(self.terms, specs):
            for role, model, arch in models:
                for name in _tap_names(term.loss.requires, role):
                    err = tap_error(model, arch, name) if model is not None else None
                    if err:
                        errors.append(f"distill.losses[{term.index}].{_which_arg(spec, role, name)}: {err}")
        return errors

    def _attach(
        self, student: nn.Module, student_arch: str, teacher: Optional[nn.Module], teacher_arch: str, teacher_input: Optional[nn.Module]
    ) -> None:
        """The models and their tappers; the teacher frozen in eval mode."""
        self.student = student
        self.teacher = teacher.eval() if teacher is not None else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.teacher_input = teacher_input if teacher_input is not None else nn.Identity()
        self.student_tapper = FeatureTapper(student, self.student_taps, student_arch)
        self.teacher_tapper = FeatureTapper(teacher, self.teacher_taps, teacher_arch) if self.runs_teacher else None
        self.constants: dict[str, torch.Tensor] = {}  # e.g. teacher.chw.<tap>, added to every batch's outputs

    def _dry_run(self, sample: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tapped outputs of one batch (eval mode, no grad), to learn their shapes."""
        student = self.student
        was_training = student.training
        student.eval()
        with torch.no_grad():
            dry = self._student(sample)
            if self.runs_teacher:
                dry.update(self._teacher(sample))
        student.train(was_training)
        return dry

    def _connectors(self, dry: dict[str, torch.Tensor]) -> tuple[dict[str, nn.Module], list[str]]:
        """A connector per (student tap, teacher tap) pair whose shapes differ; (connectors, problems)."""
        connectors: dict[str, nn.Module] = {}
        errors: list[str] = []
        for term in self.terms:
            if not term.loss.elementwise:
                continue
            s_key, t_key = term.loss.requires[0], term.loss.requires[1]
            if s_key not in dry or t_key not in dry:
                continue
            key = _connector_key(s_key.split(".feat.", 1)[-1], t_key.split(".feat.", 1)[-1])
            try:
                conn = connectors.get(key) or build_connector(tuple(dry[s_key].shape[1:]), tuple(dry[t_key].shape[1:]))
            except ValueError as exc:
                errors.append(f"distill.losses[{term.index}] ({term.kind}): {exc}")
                continue
            if not isinstance(conn, nn.Identity):
                connectors[key] = conn
                term.student_key, term.connector = s_key, key
        return connectors, errors

    def _loss_errors(self, dry: dict[str, torch.Tensor], sample: torch.Tensor, was_training: bool) -> list[str]:
        """Every loss once on the dry-run outputs: shape problems surface now, as one line each."""
        errors: list[str] = []
        self.model.eval()
        with torch.no_grad():
            dry_out = {**dry, "targets": torch.zeros(sample.shape[0], dtype=torch.long)}
            if "teacher.logits" not in dry_out:
                dry_out["teacher.logits"] = torch.zeros_like(dry_out["student.logits"])
            if any("peers.logits" in t.loss.requires for t in self.terms):  # mutual learning: one other peer's logits
                dry_out["peers.logits"] = torch.zeros_like(dry_out["student.logits"]).unsqueeze(0)
            for term in self.terms:
                try:
                    term.loss(self._term_outputs(term, dry_out, {}))
                except (ValueError, RuntimeError) as exc:
                    errors.append(f"distill.losses[{term.index}] ({term.kind}): {str(exc).splitlines()[0]}")
        self.model.train(was_training)
        return errors

    # ------------------------------------------------------------------ forward passes

    def _student(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"student.{k}": v for k, v in self.student_tapper(x).items()}

    def _teacher(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self.teacher_tapper is not None
        with torch.no_grad():
            return {f"teacher.{k}": v for k, v in self.teacher_tapper(self.teacher_input(x)).items()}

    def student_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Student taps (with grad) for one batch, plus the constants (e.g. channel weights)."""
        return {**self._student(x), **self.constants}

    def teacher_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's logits and taps (eval mode, no grad) for one batch of student-normalised inputs."""
        return self._teacher(x)

    def _term_outputs(self, term: Term, outputs: dict[str, torch.Tensor], connected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if term.connector is None or term.student_key is None:
            return outputs
        if term.connector not in connected:
            connected[term.connector] = self.model.connectors[term.connector](outputs[term.student_key])
        return {**outputs, term.student_key: connected[term.connector]}

    def loss(self, outputs: dict[str, torch.Tensor], sample_weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Fused loss and each term's (sample-weighted) mean, plus the balance weights when balancing.

        With `outputs["labelled"]` ([B] bool; unlabelled images have label -1), a term that reads `targets` is the
        weighted mean over the labelled samples only; the others (teacher targets) cover every sample.
        """
        connected: dict[str, torch.Tensor] = {}
        values = []
        parts: dict[str, float] = {}
        # weighted mean over the global batch: under torchrun each rank divides by the global weight sum / ranks, so
        # DDP's gradient average is the one-process weighted mean exactly (not a mean of per-slice means)
        denom = distributed.weight_share(sample_weight) if sample_weight is not None else None
        labelled = outputs.get("labelled")  # [B] bool with unlabelled images (data.unlabeled): label-reading terms skip the rest
        for term in self.terms:
            term_outputs, weight, share = self._term_outputs(term, outputs, connected), sample_weight, denom
            if labelled is not None and "targets" in term.loss.requires:
                term_outputs = {**term_outputs, "targets": term_outputs["targets"].clamp_min(0)}  # -1: any class, weighed 0
                weight = labelled.float() * (sample_weight if sample_weight is not None else 1.0)
                share = distributed.weight_share(weight).clamp_min(torch.finfo(torch.float32).tiny)
            per_sample = self._term_value(term, term_outputs).float()
            value = per_sample.mean() if share is None else (per_sample * weight).sum() / share
            values.append(value)
            parts[term.name] = value.item()
        stacked = torch.stack(values)
        weights = self.weights.to(stacked.device)
        if self.model.balance is not None:
            total = self.model.balance(stacked, weights)
            for term, w in zip(self.terms, self.model.balance.effective_weights(weights).tolist()):
                parts[f"balance.{term.name}"] = w
        else:
            total = (weights * stacked).sum()
        return total, parts

    def _term_value(self, term: Term, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """A term's per-sample loss; with several teachers the ensemble makes the `teacher.logits` it reads."""
        if self.ensemble is not None and TEACHERS_KEY in outputs and "teacher.logits" in term.loss.requires:
            return self.ensemble.term(term.loss, term.loss.temperature, outputs)
        return rank_rows(term.loss, outputs)  # a relational loss reads the global batch under torchrun

    # ------------------------------------------------------------------ teacher channel sensitivity

    def channel_sensitivity(self, tap: str, batches: Iterable[Any]) -> np.ndarray:
        """Mean |grad x activation| per channel of teacher tap `tap` for the teacher's predicted logit, over `batches`."""
        assert self.teacher is not None
        tapper = FeatureTapper(self.teacher, [tap], self.teacher_tapper.arch if self.teacher_tapper else "teacher")
        total: Optional[torch.Tensor] = None
        n = 0
        for batch in batches:
            x = self.teacher_input(batch[0]).detach().requires_grad_(True)  # teacher weights are frozen: grads flow via x
            with torch.enable_grad():
                out = tapper(x)
                logits = out["logits"]
                picked = logits.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
                sens = channel_sensitivity(out[f"feat.{tap}"], picked) * x.shape[0]
            total = sens if total is None else total + sens
            n += x.shape[0]
        if total is None:
            raise ValueError("channel_sensitivity: no batches")
        return (total / n).float().cpu().numpy()


def _raise(errors: list[str]) -> None:
    if errors:
        raise RecipeError("; ".join(errors))
