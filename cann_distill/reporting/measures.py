"""Knowledge-transfer metrics of the report, on per-sample predictions (numpy, no models).

Each formula is written out in the README ("Report: how much knowledge arrived"). A metric that
cannot be computed is returned as `{"value": None, "reason": ...}`, never as 0 or NaN.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

ECE_BINS = 15


def undefined(reason: str, **extra: Any) -> dict[str, Any]:
    return {"value": None, "reason": reason, **extra}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def agreement(a_pred: np.ndarray, b_pred: np.ndarray, mask: Optional[np.ndarray] = None) -> Optional[float]:
    """Share of samples (within `mask`) on which two models predict the same top-1 class; None on no samples."""
    a, b = np.asarray(a_pred), np.asarray(b_pred)
    if mask is not None:
        a, b = a[mask], b[mask]
    return float((a == b).mean()) if len(a) else None


def transfer_efficiency(acc_student: float, acc_baseline: float, acc_teacher: float) -> dict[str, Any]:
    """TE = (acc_S − acc_B) / (acc_T − acc_B): the share of the teacher's lead over the baseline the student gained."""
    gap = acc_teacher - acc_baseline
    if gap <= 0:
        return undefined(
            f"the teacher ({100 * acc_teacher:.2f}%) does not beat the CE-only baseline ({100 * acc_baseline:.2f}%): "
            "there is no lead to transfer",
            gap=gap,
        )
    return {"value": (acc_student - acc_baseline) / gap, "reason": None, "gap": gap}


PAIRED_ALPHA = 0.05


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair coin flips (the exact McNemar test's p)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    # log-space sum of the lower tail, doubled: exact for any n without huge integers
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, 2.0 * math.exp(top) * sum(math.exp(v - top) for v in logs))


def paired_difference(y: np.ndarray, a_pred: np.ndarray, b_pred: np.ndarray, alpha: float = PAIRED_ALPHA) -> dict[str, Any]:
    """Is model A's accuracy different from model B's on the same images, beyond the noise?

    The exact McNemar test (a binomial test on the images exactly one of the two gets right), with a
    95% Wald interval of the paired accuracy difference. The one rule every "beyond the noise" in the
    tool uses (the report's distillation verdict and transfer efficiency, `--strict`). `verdict` is
    `better` / `worse` (A vs B, p < alpha), `tie` (within the noise) or `too_few` (so few images
    differ that even a one-sided split could not reach p < alpha: the split is too small to tell).
    """
    y, a, b = np.asarray(y), np.asarray(a_pred), np.asarray(b_pred)
    a_ok, b_ok = a == y, b == y
    return paired_counts(int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum()), int(len(y)), alpha)


def paired_counts(a_only: int, b_only: int, n: int, alpha: float = PAIRED_ALPHA) -> dict[str, Any]:
    """`paired_difference` from its counts: of `n` images, `a_only` that only A gets right and `b_only` that
    only B gets right (also for counts summed over several pairs of models scored on the same images)."""
    discordant = a_only + b_only
    diff = (a_only - b_only) / n if n else 0.0
    var = max((discordant / n - diff**2) / n, 0.0) if n else 0.0
    out: dict[str, Any] = {
        "n": n,
        "a_only": a_only,
        "b_only": b_only,
        "difference": diff,
        "ci95": [diff - 1.96 * math.sqrt(var), diff + 1.96 * math.sqrt(var)],
        "p_value": binomial_two_sided_p(a_only, discordant),
        "alpha": alpha,
        "test": "exact McNemar",
    }
    if binomial_two_sided_p(0, discordant) >= alpha:
        out["verdict"] = "too_few"
        out["reason"] = (
            f"the two models differ on only {discordant} of {n} images: too few for the paired test to tell a difference at p < {alpha:g}"
        )
    elif out["p_value"] < alpha:
        out["verdict"], out["reason"] = ("better" if a_only > b_only else "worse"), None
    else:
        out["verdict"], out["reason"] = "tie", None
    return out


def error_reduction(y: np.ndarray, teacher_pred: np.ndarray, baseline_pred: np.ndarray, student_pred: np.ndarray) -> dict[str, Any]:
    """ER = |T✓ ∧ B✗ ∧ S✓| / |T✓ ∧ B✗|: of the samples the teacher gets right and the baseline wrong, the share the student gets right.

    Also counts `regressed` = |T✓ ∧ B✓ ∧ S✗| (teacher-known samples the baseline had and the student lost).
    """
    y = np.asarray(y)
    t_ok, b_ok, s_ok = teacher_pred == y, baseline_pred == y, student_pred == y
    opportunities = t_ok & ~b_ok
    fixed = int((opportunities & s_ok).sum())
    regressed = int((t_ok & b_ok & ~s_ok).sum())
    n = int(opportunities.sum())
    counts = {"fixed": fixed, "opportunities": n, "regressed": regressed, "teacher_correct": int(t_ok.sum())}
    if n == 0:
        return undefined("the baseline gets every teacher-correct sample right: no error to reduce", **counts)
    return {"value": fixed / n, "reason": None, **counts}


def _center_gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def linear_cka(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    """Linear CKA (Kornblith et al., ICML 2019) of two representations of the same n samples, any widths.

    With column-centred X [n, p] and Y [n, q]: CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F), computed through the n×n Gram
    matrices K = XXᵀ, L = YYᵀ as ⟨K, L⟩_F / (‖K‖_F ‖L‖_F). None when either representation is constant.
    """
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same samples: {len(x)} vs {len(y)} rows")
    k, l_ = _center_gram(x), _center_gram(y)
    denom = np.linalg.norm(k) * np.linalg.norm(l_)
    return float((k * l_).sum() / denom) if denom > 0 else None


def expected_calibration_error(logits: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """ECE = Σ_b (n_b / n) · |acc_b − conf_b| over `bins` equal-width confidence bins (Guo et al., ICML 2017).

    conf = the top-1 softmax probability; bin b holds conf in ((b−1)/B, b/B]. Also returns the reliability rows.
    """
    p = softmax(logits)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    correct = pred == np.asarray(y)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    n, ece, rows = len(conf), 0.0, []
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        acc_b, conf_b = float(correct[sel].mean()), float(conf[sel].mean())
        ece += sel.sum() / n * abs(acc_b - conf_b)
        rows.append({"bin": b, "count": int(sel.sum()), "accuracy": acc_b, "confidence": conf_b})
    return {"value": float(ece), "bins": bins, "reliability": rows}


def hardware_fit(gate: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """fit = passed budgets / budgets checked (validate's verdicts); 1 when no budget is set (nothing to miss)."""
    total = len(gate)
    passed = sum(1 for line in gate if line.get("pass"))
    if total == 0:
        return {"value": 1.0, "passed": 0, "total": 0, "reason": "no deployment budget set (recipe or hardware profile)"}
    return {"value": passed / total, "passed": passed, "total": total, "reason": None}


def dqi(te: dict[str, Any], int8_drop: float, fit: dict[str, Any]) -> dict[str, Any]:
    """DQI = clip(TE, 0, 1) × (1 − max(INT8 drop, 0)) × fit, in [0, 1]; undefined when TE is."""
    if te.get("value") is None:
        return undefined(f"transfer efficiency is undefined ({te.get('reason')})")
    terms = {"te": min(max(float(te["value"]), 0.0), 1.0), "int8_kept": 1.0 - max(float(int8_drop), 0.0), "fit": float(fit["value"])}
    return {"value": terms["te"] * terms["int8_kept"] * terms["fit"], "reason": None, "terms": terms}


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, n_classes: int) -> list[Optional[float]]:
    y = np.asarray(y)
    return [float((pred[y == c] == c).mean()) if (y == c).any() else None for c in range(n_classes)]


def confusion(pred: np.ndarray, y: np.ndarray, n_classes: int) -> list[list[int]]:
    """Rows: true class, columns: predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y), np.asarray(pred)), 1)
    return m.tolist()


def attention_map(feat: np.ndarray) -> np.ndarray:
    """Spatial attention [N, H, W] of features [N, C, H, W]: mean over channels of F², scaled to [0, 1] per sample (Zagoruyko & Komodakis, ICLR 2017)."""
    a = (np.asarray(feat, dtype=np.float64) ** 2).mean(axis=1)
    lo = a.reshape(len(a), -1).min(axis=1)[:, None, None]
    hi = a.reshape(len(a), -1).max(axis=1)[:, None, None]
    return (a - lo) / np.where(hi > lo, hi - lo, 1.0)
