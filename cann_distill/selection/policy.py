"""Selection policies: per-sample difficulty scores (higher = harder) → which samples are critical.

A strategy (`select.strategy`) says how hard each sample is; a policy (`select.policy`) says which
of them to keep, and the class balance (`select.class_balanced`) how many per class:

- `hard`: the highest scores — classic hard-example mining; what pays when data is plentiful
  (Sorscher et al., "Beyond neural scaling laws: beating power law scaling via data pruning",
  NeurIPS 2022).
- `easy`: the lowest scores — what the same paper finds best when data is scarce: with few samples
  per class the hardest ones are mostly ambiguous or mislabelled, and keeping them starves the
  student of the prototypical cases.
- `mix`: stratified over score quantiles — each class's samples are cut into three equal bands by
  score (hard = top third, medium, easy = bottom third) and `select.mix` gives the share of the
  quota drawn (at random, seeded) from each band. Coverage-centric coreset selection (Zheng et al.,
  "Coverage-centric coreset selection for high pruning rates", ICLR 2023) shows that sampling across
  difficulty strata beats taking either end at high pruning rates.
- `auto`: Sorscher et al.'s rule of thumb by data regime: `easy` when the kept samples per class
  are fewer than `select.scarce_below`, else `hard`.

With `class_balanced` (the default) every class gets the same quota, total × 1/C; a class with
fewer samples than its quota gives all it has and the rest is shared among the others
(water-filling), so the total stays the budget. Without it the policy ranks all samples together
and a class can end up with none: that is reported, never silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

POLICIES = ("hard", "easy", "mix", "auto", "random")
BANDS = ("hard", "medium", "easy")


@dataclass
class Selection:
    """The critical mask and how it was chosen (recorded in select's summary)."""

    mask: np.ndarray  # bool [N]
    policy: str  # as asked (may be `auto`)
    resolved: str  # hard | easy | mix
    per_class: dict[str, dict[str, int]]  # class → {available, quota, taken}
    notes: list[str] = field(default_factory=list)  # classes smaller than their quota, why `auto` chose
    empty: list[str] = field(default_factory=list)  # classes left with no critical sample

    def describe(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "resolved": self.resolved,
            "per_class": self.per_class,
            "notes": self.notes,
            "empty_classes": self.empty,
        }


def equal_quotas(available: Sequence[int], total: int) -> np.ndarray:
    """Per-class quotas summing to min(total, Σ available), as equal as the class sizes allow.

    Water-filling: a class smaller than the equal share gives all it has; what it leaves is shared
    among the others. The remainder goes to the classes that have least, earlier classes first.
    """
    avail = np.asarray(available, dtype=np.int64)
    total = int(min(total, avail.sum()))
    quota = np.zeros(len(avail), dtype=np.int64)
    open_ = avail > 0
    left = total
    while left > 0 and open_.any():
        share, extra = divmod(left, int(open_.sum()))
        idx = np.flatnonzero(open_)
        give = np.full(len(idx), share, dtype=np.int64)
        give[np.argsort(quota[idx], kind="stable")[:extra]] += 1  # the remainder to the classes that have least
        room = avail[idx] - quota[idx]
        give = np.minimum(give, room)
        quota[idx] += give
        left -= int(give.sum())
        open_ = quota < avail
    return quota


def band_counts(k: int, mix: dict[str, float], band_sizes: Sequence[int]) -> list[int]:
    """How many of `k` to draw from the hard / medium / easy bands: the mix fractions, rounded by
    largest remainder, a band's shortfall moved to the next bands in order."""
    want = np.array([mix[b] * k for b in BANDS])
    counts = np.floor(want).astype(np.int64)
    for i in np.argsort(-(want - counts), kind="stable")[: k - int(counts.sum())]:
        counts[i] += 1
    sizes = np.asarray(band_sizes, dtype=np.int64)
    spill = 0
    for order in (range(3), range(3)):  # twice round, so a shortfall in the last band reaches the first ones
        for i in order:
            counts[i] += spill
            spill = max(0, int(counts[i] - sizes[i]))
            counts[i] -= spill
    return counts.tolist()


def pick_in_class(scores: np.ndarray, k: int, policy: str, mix: Optional[dict[str, float]], rng: np.random.Generator) -> np.ndarray:
    """Positions (into `scores`) of the `k` samples `policy` keeps; ties keep the earlier sample."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")  # hardest first
    if policy == "hard":
        return order[:k]
    if policy == "easy":
        return order[::-1][:k]
    if policy == "random":  # scores ignored: the reference every score-based policy must beat
        return np.sort(rng.choice(len(scores), size=min(k, len(scores)), replace=False))
    assert policy == "mix" and mix is not None
    bands = np.array_split(order, 3)  # hard, medium, easy thirds by score rank
    take = band_counts(k, mix, [len(b) for b in bands])
    return np.concatenate([rng.choice(b, size=t, replace=False) for b, t in zip(bands, take) if t > 0])


def resolve_policy(policy: str, kept_per_class: float, scarce_below: int) -> tuple[str, Optional[str]]:
    """`auto` → easy when data is scarce, else hard (Sorscher et al. 2022); other policies unchanged."""
    if policy != "auto":
        return policy, None
    if kept_per_class < scarce_below:
        return "easy", (
            f"policy auto: {kept_per_class:.0f} kept samples per class < scarce_below={scarce_below}: "
            "scarce data, keeping the easy samples (Sorscher et al. 2022)"
        )
    return "hard", (
        f"policy auto: {kept_per_class:.0f} kept samples per class >= scarce_below={scarce_below}: "
        "plentiful data, keeping the hard samples (Sorscher et al. 2022)"
    )


def select_samples(
    scores: np.ndarray,
    targets: np.ndarray,
    classes: Sequence[str],
    ratio: float,
    *,
    policy: str = "hard",
    mix: Optional[dict[str, float]] = None,
    class_balanced: bool = True,
    scarce_below: int = 500,
    seed: int = 0,
) -> Selection:
    """Keep round(ratio × N) samples (at least one) by `policy`, per class when `class_balanced`."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    n = len(scores)
    targets = np.asarray(targets)
    total = max(1, int(round(ratio * n)))
    n_classes = len(classes)
    members = [np.flatnonzero(targets == c) for c in range(n_classes)]
    available = [len(m) for m in members]
    present = sum(a > 0 for a in available) or 1
    resolved, why = resolve_policy(policy, total / present, scarce_below)
    notes = [why] if why else []
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    if class_balanced:
        quotas = equal_quotas(available, total)
        share = total / present
        for c, idx in enumerate(members):
            mask[idx[pick_in_class(scores[idx], int(quotas[c]), resolved, mix, rng)]] = True
            if 0 < available[c] < share:
                notes.append(f"class {classes[c]}: {available[c]} samples, fewer than the balanced quota of {share:.0f}; took all of them")
    else:
        mask[pick_in_class(np.asarray(scores, dtype=np.float64), total, resolved, mix, rng)] = True
        quotas = np.array([int(mask[idx].sum()) for idx in members])
    per_class = {
        classes[c]: {"available": available[c], "quota": int(quotas[c]), "taken": int(mask[members[c]].sum())} for c in range(n_classes)
    }
    empty = [classes[c] for c in range(n_classes) if per_class[classes[c]]["taken"] == 0]
    return Selection(mask, policy, resolved, per_class, notes, empty)
