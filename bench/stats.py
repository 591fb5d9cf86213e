"""Bootstrap resampling over items."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

N_BOOT = 1000
ALPHA = 0.05


def resample_counts(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot × n) matrix: how often each item appears in each bootstrap resample (with replacement).
    The same seed gives the same resamples, so systems scored on the same items are paired."""
    return _resample_counts(n, n_boot, seed).copy()


@lru_cache(maxsize=256)
def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    # row r's draws counted into cells r*n .. r*n+n-1 (one bincount instead of np.add.at's scatter)
    flat = (np.arange(n_boot)[:, None] * n + draws).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)
