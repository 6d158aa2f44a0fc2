"""Constructor argument checks shared by the optimizers (ValueError naming the argument)."""
from __future__ import annotations

import math

import numpy as np


def check_seed(seed: object) -> int:
    """A non-negative int seed."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def check_positive(name: str, value: object) -> float:
    """A finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_x0(x0: np.ndarray | None, dim: int) -> np.ndarray:
    """A finite start code of length ``dim``; ``None`` is the zero code."""
    if x0 is None:
        return np.zeros(dim)
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.shape != (dim,) or not np.all(np.isfinite(x0)):
        raise ValueError(f"x0 must be a finite vector of shape ({dim},), got shape {x0.shape}")
    return x0.copy()
