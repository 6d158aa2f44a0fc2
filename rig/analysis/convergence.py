"""Convergence: how fast an evolution gets most of the way to its best generation.

The study's measure (DESIGN §8): min–max normalise the mean score per
generation, then report the first generation whose normalised mean reaches
each threshold (50% and 80%).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_THRESHOLDS = (0.5, 0.8)


@dataclass(frozen=True)
class Convergence:
    """Normalised mean per generation and the first generation reaching each threshold (None if never)."""

    generations: np.ndarray
    normalised: np.ndarray
    reached: dict[float, int | None]


def min_max_normalise(values: Sequence[float]) -> np.ndarray:
    """``(v - min) / (max - min)``; a flat series (max == min) is an error, since it never converges."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"need a non-empty 1-D series of finite scores, got shape {values.shape}")
    low, high = values.min(), values.max()
    if high == low:
        raise ValueError(f"the mean score is constant ({low:g}) over all {values.size} generations; "
                         "it cannot be normalised")
    return (values - low) / (high - low)


def convergence(mean_scores: Sequence[float], thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                generations: Sequence[int] | None = None) -> Convergence:
    """Convergence of one evolution from its mean score per generation.

    ``generations`` labels the entries (default 0, 1, ...); the reached
    generations are reported in those labels.
    """
    normalised = min_max_normalise(mean_scores)
    labels = np.arange(normalised.size) if generations is None else np.asarray(generations, dtype=np.int64)
    if labels.shape != normalised.shape:
        raise ValueError(f"{normalised.size} mean scores but {labels.size} generation labels")
    reached: dict[float, int | None] = {}
    for threshold in thresholds:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"convergence threshold must be in (0, 1], got {threshold}")
        hits = np.flatnonzero(normalised >= threshold)
        reached[float(threshold)] = int(labels[hits[0]]) if hits.size else None
    return Convergence(labels, normalised, reached)
