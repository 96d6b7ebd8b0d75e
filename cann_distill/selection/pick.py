"""The critical samples of a recipe: its selection policy and class balance applied to scores, and what to tell the user."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from cann_distill.core.recipe import MixConfig, Recipe, selection_policy
from cann_distill.runtime.terminal import ui
from cann_distill.selection.policy import Selection, select_samples


def pick_critical(
    scores: np.ndarray, targets: np.ndarray, recipe: Recipe, classes: Optional[Sequence[str]] = None, seed: int = 0
) -> Selection:
    """The critical samples by the recipe's policy (`selection_policy`: its default follows distill.critical.mode)
    and class balance (`cann_distill.selection.policy`)."""
    cfg = recipe.select
    names = list(classes) if classes is not None else [str(c) for c in range(int(np.max(targets, initial=-1)) + 1)]
    mix = (cfg.mix or MixConfig(hard=1 / 3, medium=1 / 3, easy=1 / 3)).model_dump()
    return select_samples(
        scores,
        targets,
        names,
        cfg.top_k_ratio,
        policy=selection_policy(recipe),
        mix=mix,
        class_balanced=cfg.class_balanced,
        scarce_below=cfg.scarce_below,
        seed=seed,
    )


def report_selection(selection: Selection, what: str = "select") -> None:
    """Say what the policy did that a user would not guess: small classes, an auto choice, empty classes."""
    for note in selection.notes:
        ui.info(f"[dim]{what}: {note}[/dim]")
    if selection.empty:
        ui.warn(
            f"{what}: no critical sample in class(es) {', '.join(selection.empty[:10])}"
            f"{' …' if len(selection.empty) > 10 else ''}; set select.class_balanced: true to keep every class"
        )
