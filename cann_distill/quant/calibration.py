"""The images PTQ calibrates on: validate, QAD and fit-student draw the same samples with the same seed."""

from __future__ import annotations

import numpy as np
import torch

from cann_distill.core.errors import StageError
from cann_distill.data.loading import Split


def stack(split: Split, idx: np.ndarray) -> np.ndarray:
    return torch.stack([split.fetch(int(i)) for i in idx]).numpy().astype(np.float32)


def calibration_images(train: Split, samples: int, seed: int) -> np.ndarray:
    if samples > len(train):
        raise StageError(f"validate.calibration.samples asks for {samples} images but the training split has only {len(train)}")
    idx = np.sort(np.random.default_rng(seed).permutation(len(train))[:samples])
    return stack(train, idx)
