"""Feature-map losses: read `student.feat.<name>` / `teacher.feat.<name>` taps, shape [B, C, H, W].

Losses that compare maps element by element expect the student tap to have been passed
through a connector (`cann_distill.models.connectors`) so its shape matches the teacher's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cann_distill.core.errors import preview
from cann_distill.teaching.losses.base import LOSSES, Loss, Outputs


def feat_key(role: str, name: str) -> str:
    """Output key of a feature tap, e.g. `feat_key("student", "2") == "student.feat.2"`."""
    return f"{role}.feat.{name}"


def channel_weights_key(teacher_tap: str) -> str:
    """Output key of the per-channel weights of a teacher tap (`Loss.channel_weights`)."""
    return f"teacher.chw.{teacher_tap}"


def check_tap_name(arg: str, value: object) -> str:
    """Validate a `student=` / `teacher=` tap-name argument (recipes may pass a bare YAML int)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{arg} must be a non-empty tap name string, got {preview(value)} (quote numbers in YAML: '2')")
    return value


def check_same_shape(s_key: str, s: torch.Tensor, t_key: str, t: torch.Tensor) -> None:
    if s.shape != t.shape:
        raise ValueError(
            f"'{s_key}' {tuple(s.shape)} and '{t_key}' {tuple(t.shape)} must have the same shape (add a connector for the student tap)"
        )


def check_maps(s_key: str, s: torch.Tensor, t_key: str, t: torch.Tensor) -> None:
    """Both taps are [B, C, H, W] with the same B (channels and spatial size may differ)."""
    if s.dim() != 4 or t.dim() != 4 or s.shape[0] != t.shape[0]:
        raise ValueError(
            f"'{s_key}' {tuple(s.shape)} and '{t_key}' {tuple(t.shape)} must both be [B, C, H, W] feature maps with the same batch size"
        )


def attention_map(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis's spatial attention: mean over channels of |f|^p, [B, C, H, W] -> [B, H, W]."""
    return f.abs().pow(p).mean(dim=1)


def channel_sensitivity(features: torch.Tensor, logit_of_pred: torch.Tensor) -> torch.Tensor:
    """|d logit / d feature * feature| averaged over the batch and spatial positions -> [C].

    `features` is a teacher tap [B, C, H, W] that requires grad, `logit_of_pred` [B] the
    teacher's logit of its own predicted class for each sample, computed from `features`.
    Per-sample gradients come from one backward of the sum, which is exact as long as
    samples do not interact (teacher in eval mode: no batch statistics). To average over a
    dataset, weight each batch's result by its batch size.
    """
    if not features.requires_grad:
        raise ValueError("channel_sensitivity: features must require grad (tap them with grad enabled)")
    if features.dim() != 4 or logit_of_pred.shape != (features.shape[0],):
        raise ValueError(
            f"channel_sensitivity: need features [B, C, H, W] and logit_of_pred [B], "
            f"got {tuple(features.shape)} and {tuple(logit_of_pred.shape)}"
        )
    (grad,) = torch.autograd.grad(logit_of_pred.sum(), features)
    return (grad * features).abs().mean(dim=(0, 2, 3)).detach()


class _FeaturePair(Loss):
    """Shared plumbing: two named taps, recorded in `requires`."""

    def __init__(self, student: str, teacher: str) -> None:
        self.student_key = feat_key("student", check_tap_name("student", student))
        self.teacher_key = feat_key("teacher", check_tap_name("teacher", teacher))
        self.requires = (self.student_key, self.teacher_key)

    def _pair(self, outputs: Outputs, same_shape: bool) -> tuple[torch.Tensor, torch.Tensor]:
        s = outputs[self.student_key]
        t = outputs[self.teacher_key].to(s.dtype)
        check_maps(self.student_key, s, self.teacher_key, t)
        if same_shape:
            check_same_shape(self.student_key, s, self.teacher_key, t)
        return s, t


@LOSSES.register("fitnet")
class FitNet(_FeaturePair):
    """Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

    Hint loss between the (connector-mapped) student map and the teacher map. The paper
    uses 1/2 the squared L2 norm; we take the per-sample mean of squared errors so the
    scale does not depend on the map size (the recipe's weight absorbs the constant).
    """

    elementwise = True

    def __init__(self, student: str, teacher: str) -> None:
        super().__init__(student, teacher)

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, t = self._pair(outputs, same_shape=True)
        return (s - t).pow(2).flatten(1).mean(dim=1)


@LOSSES.register("cw_mse")
class ChannelWeightedMSE(_FeaturePair):
    """FitNets-style hint loss with per-channel weights from teacher channel sensitivity.

    Sensitivity of channel c is |grad x activation| of the teacher's logit for its own
    predicted class with respect to the tap, averaged over the dataset and spatial positions
    (see `channel_sensitivity`; computed elsewhere, once). It is read from the optional
    output `teacher.chw.<teacher tap>` ([C], non-negative) and normalised here to mean 1, so
    uniform sensitivity reduces to `fitnet`. Without that key the weights are uniform.
    Loss per sample: mean over (c, h, w) of w_c * (s - t)^2.
    """

    elementwise = True

    def __init__(self, student: str, teacher: str) -> None:
        super().__init__(student, teacher)
        self.channel_weights = check_tap_name("teacher", teacher)
        self.weights_key = channel_weights_key(self.channel_weights)

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, t = self._pair(outputs, same_shape=True)
        sq = (s - t).pow(2)
        chw = outputs.get(self.weights_key)
        if chw is not None:
            chw = chw.to(device=s.device, dtype=s.dtype)
            if chw.shape != (s.shape[1],):
                raise ValueError(
                    f"'{self.weights_key}' {tuple(chw.shape)} must be [C] = ({s.shape[1]},) to match '{self.teacher_key}' {tuple(t.shape)}"
                )
            if bool((chw < 0).any()) or not bool(chw.sum() > 0):
                raise ValueError(f"'{self.weights_key}' must be non-negative and not all zero")
            sq = sq * (chw / chw.mean()).view(1, -1, 1, 1)
        return sq.flatten(1).mean(dim=1)


@LOSSES.register("at")
class AttentionTransfer(_FeaturePair):
    """Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017).

    Attention map Q = mean over channels of |f|^p, flattened and L2-normalised per sample;
    loss per sample = beta * ||Q_s - Q_t||_2^2. The paper writes beta/2 * ||Q_s - Q_t||_p
    (p = 2, so the unsquared norm); the authors' code uses the squared difference averaged
    over positions with beta = 1e3. We keep the squared distance, summed over positions
    (in [0, 4], independent of map size) and leave the scale to `beta` and the recipe weight.
    Channels may differ (maps are channel-free); a student map of another spatial size is
    resized to the teacher's bilinearly before normalisation.
    """

    def __init__(self, student: str, teacher: str, p: float = 2.0, beta: float = 1.0) -> None:
        super().__init__(student, teacher)
        if not p > 0:
            raise ValueError("p must be > 0")
        if beta < 0:
            raise ValueError("beta must be >= 0")
        self.p = p
        self.beta = beta

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, t = self._pair(outputs, same_shape=False)
        a_s, a_t = attention_map(s, self.p), attention_map(t, self.p)
        if a_s.shape[-2:] != a_t.shape[-2:]:
            a_s = F.interpolate(a_s.unsqueeze(1), size=a_t.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
        q_s = F.normalize(a_s.flatten(1), dim=1)
        q_t = F.normalize(a_t.flatten(1), dim=1)
        return self.beta * (q_s - q_t).pow(2).sum(dim=1)


@LOSSES.register("attn_mse")
class AttentionMaskedMSE(_FeaturePair):
    """Spatial MSE weighted by where the teacher attends (Zagoruyko & Komodakis's map, ICLR 2017).

    Mask = teacher attention map (mean over channels of |t|^p), normalised to sum 1 over
    positions per sample and detached; loss per sample = sum over positions of
    mask * mean over channels of (s - t)^2. An all-zero teacher map gives a uniform mask.
    """

    elementwise = True

    def __init__(self, student: str, teacher: str, p: float = 2.0) -> None:
        super().__init__(student, teacher)
        if not p > 0:
            raise ValueError("p must be > 0")
        self.p = p

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, t = self._pair(outputs, same_shape=True)
        a = attention_map(t.detach(), self.p).flatten(1)
        total = a.sum(dim=1, keepdim=True)
        uniform = torch.full_like(a, 1.0 / a.shape[1])
        mask = torch.where(total > 0, a / total.clamp_min(torch.finfo(a.dtype).tiny), uniform)
        return (mask * (s - t).pow(2).mean(dim=1).flatten(1)).sum(dim=1)
