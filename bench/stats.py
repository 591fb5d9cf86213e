"""Bootstrap resampling over items."""
from __future__ import annotations

import numpy as np

N_BOOT = 1000
ALPHA = 0.05


def resample_counts(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot × n) matrix: how often each item appears in each bootstrap resample (with replacement).
    The same seed gives the same resamples, so systems scored on the same items are paired."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n), dtype=float)
    np.add.at(counts, (np.repeat(np.arange(n_boot), n), draws.ravel()), 1.0)
    return counts
