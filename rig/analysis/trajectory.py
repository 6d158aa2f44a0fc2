"""Score trajectory: mean and max score per generation, with the reference images' responses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Trajectory:
    """Per-generation summary of one evolution.

    ``reference_mean`` is the mean response to the reference (natural) images
    shown in each generation, NaN where none were shown or none were recorded.
    """

    generations: np.ndarray
    mean: np.ndarray
    max: np.ndarray
    reference_mean: np.ndarray

    def rows(self) -> list[dict[str, float]]:
        """One dict per generation, for tidy tables."""
        return [
            {"generation": int(g), "mean": float(m), "max": float(x), "reference_mean": float(r)}
            for g, m, x, r in zip(self.generations, self.mean, self.max, self.reference_mean)
        ]


def score_trajectory(generation_scores: Sequence[np.ndarray],
                     reference_scores: Sequence[np.ndarray] | None = None,
                     generations: Sequence[int] | None = None) -> Trajectory:
    """Mean and max of each generation's scores, and the mean of each generation's reference scores.

    Scores that are NaN (lost responses) are left out, never read as zero; a
    generation with no valid score is an error.
    """
    if len(generation_scores) == 0:
        raise ValueError("score_trajectory: no generations given")
    means, maxes = [], []
    for g, scores in enumerate(generation_scores):
        scores = np.asarray(scores, dtype=np.float64).ravel()
        scores = scores[np.isfinite(scores)]
        if scores.size == 0:
            raise ValueError(f"score_trajectory: generation {g} has no valid scores")
        means.append(scores.mean())
        maxes.append(scores.max())
    if reference_scores is None:
        refs = np.full(len(means), np.nan)
    else:
        if len(reference_scores) != len(means):
            raise ValueError(f"{len(means)} generations but reference scores for {len(reference_scores)}")
        refs = np.array([_nanmean(r) for r in reference_scores])
    labels = np.arange(len(means)) if generations is None else np.asarray(generations, dtype=np.int64)
    if len(labels) != len(means):
        raise ValueError(f"{len(means)} generations but {len(labels)} generation labels")
    return Trajectory(labels, np.array(means), np.array(maxes), refs)


def trajectory_from_summary(mean: Sequence[float], maximum: Sequence[float],
                            generations: Sequence[int] | None = None) -> Trajectory:
    """A trajectory from per-generation mean and max columns (e.g. another tool's table)."""
    mean = np.asarray(mean, dtype=np.float64)
    maximum = np.asarray(maximum, dtype=np.float64)
    if mean.shape != maximum.shape or mean.ndim != 1 or mean.size == 0:
        raise ValueError(f"mean and max must be equal-length 1-D, got shapes {mean.shape} and {maximum.shape}")
    labels = np.arange(len(mean)) if generations is None else np.asarray(generations, dtype=np.int64)
    return Trajectory(labels, mean, maximum, np.full(len(mean), np.nan))


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")
