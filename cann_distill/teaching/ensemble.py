"""Several teachers, one set of targets: how the teachers' outputs become what a loss reads (`distill.ensemble`).

The target source hands the losses every teacher's output as `teachers.logits` [K, B, C] (logits, or
log-probabilities for replayed or mixed targets: a distribution loss reads only softmax(z / T) of them). For each
loss that reads `teacher.logits`, `TeacherEnsemble.term` makes that input from them, with the weights w_k
normalised to sum to one:

- `mean`: the weighted mean of the softened distributions, p̄ = Σ_k w_k softmax(z_k / T), at the very
  temperature T the loss applies (its own, or the per-sample / scheduled one it is fed). The loss gets
  t = T · log p̄, so its softmax(t / T) is p̄ exactly. Hinton, Vinyals & Dean, "Distilling the Knowledge in a
  Neural Network" (2015), distil an ensemble through its mean prediction; Fukuda et al., "Efficient Knowledge
  Distillation from an Ensemble of Teachers" (Interspeech 2017), average the teachers' soft labels.
- `per_teacher`: one term per teacher, Σ_k w_k L(student, teacher_k) (Fukuda et al.'s alternative: the
  teachers' losses, not their labels, are combined).
- `confidence`: per sample, the teacher k that maximises w_k · p_k(y), its probability (at T = 1) of the
  sample's label, teaches that sample alone; on an unlabelled sample (label < 0) its top-1 probability stands
  for p_k(y), and with mixed soft labels [B, C] the expected probability Σ_c y_c p_k,c. A hard version of
  CA-MKD's per-sample teacher weights (Zhang, Chen & Wang, "Confidence-Aware Multi-Teacher Knowledge
  Distillation", ICASSP 2022), which weigh each teacher by its cross-entropy on the label. Ties go to the
  earlier teacher; a teacher of weight 0 never teaches.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch

RULES = ("mean", "per_teacher", "confidence")
KEY = "teachers.logits"  # [K, B, C]: every teacher's output for the batch, in `teachers:` order

Outputs = Mapping[str, torch.Tensor]


def normalised(weights: Sequence[float]) -> torch.Tensor:
    """Weights that sum to one (the recipe check refuses all zero)."""
    w = torch.tensor([float(v) for v in weights], dtype=torch.float32)
    if not (w >= 0).all() or w.sum() <= 0:
        raise ValueError(f"teacher weights must be >= 0 with a positive sum, got {list(weights)}")
    return w / w.sum()


def mean_target(stack: torch.Tensor, weights: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """t = T · log Σ_k w_k softmax(z_k / T): a logit vector whose softmax(t / T) is the weighted mean of the
    teachers' softened distributions. `stack` [K, B, C], `weights` [K] (summing to one), `temperature` [B, 1]."""
    log_p = torch.log_softmax(stack.float() / temperature.float().unsqueeze(0), dim=2)  # [K, B, C]
    log_w = weights.to(log_p.device).log().view(-1, 1, 1)  # log 0 = -inf: that teacher drops out
    return temperature.float() * torch.logsumexp(log_w + log_p, dim=0)


def label_confidence(stack: torch.Tensor, targets: Optional[torch.Tensor]) -> torch.Tensor:
    """[K, B]: each teacher's probability (T = 1) of each sample's label; top-1 probability where the label is
    unknown (< 0, or no labels at all); the expected probability under soft labels [B, C]."""
    p = torch.softmax(stack.float(), dim=2)
    top = p.max(dim=2).values
    if targets is None:
        return top
    if targets.dim() == 2:
        return (p * targets.float().unsqueeze(0)).sum(2)
    labelled = targets >= 0
    picked = p.gather(2, targets.clamp_min(0).view(1, -1, 1).expand(p.shape[0], -1, 1)).squeeze(2)
    return torch.where(labelled.unsqueeze(0), picked, top)


def confident_teacher(stack: torch.Tensor, weights: torch.Tensor, targets: Optional[torch.Tensor]) -> torch.Tensor:
    """[B]: per sample, the teacher that maximises weight × confidence (the first on ties)."""
    score = weights.to(stack.device).view(-1, 1) * label_confidence(stack, targets)
    score = torch.where(weights.to(stack.device).view(-1, 1) > 0, score, torch.full_like(score, -1.0))
    return score.argmax(dim=0)  # torch's argmax returns the first maximum


class TeacherEnsemble:
    """`rule` over the teachers' outputs with `weights` (the recipe's, normalised)."""

    def __init__(self, rule: str, weights: Sequence[float]) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown ensemble rule {rule!r} (known: {', '.join(RULES)})")
        self.rule, self.weights = rule, normalised(weights)
        self.chosen = torch.zeros(len(self.weights), dtype=torch.long)  # confidence: samples each teacher taught

    def term(self, loss: Callable[[Outputs], torch.Tensor], default_temperature: Optional[float], outputs: Outputs) -> torch.Tensor:
        """A loss that reads `teacher.logits`, per sample [B], from every teacher's output (`outputs[KEY]`)."""
        stack = outputs[KEY]
        if self.rule == "per_teacher":
            parts = [w * loss({**outputs, "teacher.logits": stack[k]}) for k, w in enumerate(self.weights.tolist()) if w > 0]
            return torch.stack(parts).sum(0)
        if self.rule == "mean":
            return loss({**outputs, "teacher.logits": mean_target(stack, self.weights, self._temperature(outputs, default_temperature))})
        pick = confident_teacher(stack, self.weights, outputs.get("targets"))
        self.chosen += torch.bincount(pick.cpu(), minlength=len(self.weights))
        return loss({**outputs, "teacher.logits": stack[pick, torch.arange(stack.shape[1], device=stack.device)]})

    @staticmethod
    def _temperature(outputs: Outputs, default: Optional[float]) -> torch.Tensor:
        """[B, 1]: the temperature the loss will apply (fed per sample, else its own, else 1)."""
        b = outputs[KEY].shape[1]
        temp = outputs.get("temperature")
        if temp is not None:
            return temp.float().reshape(-1, 1)
        return torch.full((b, 1), float(default) if default is not None else 1.0, device=outputs[KEY].device)

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"rule": self.rule, "weights": [round(w, 6) for w in self.weights.tolist()]}
        if self.rule == "confidence":
            total = int(self.chosen.sum())
            out["chosen_share"] = [c / total if total else 0.0 for c in self.chosen.tolist()]
        return out


def combined_logits(logits: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """log Σ_k w_k softmax(z_k): the teachers' weighted mean distribution (T = 1) as log-probabilities [N, C], what
    critical-sample scores, re-mining and the combined accuracy read."""
    stack = torch.from_numpy(np.stack([np.asarray(z, dtype=np.float32) for z in logits]))
    return mean_target(stack, normalised(weights), torch.ones(stack.shape[1], 1)).numpy().astype(np.float32)
