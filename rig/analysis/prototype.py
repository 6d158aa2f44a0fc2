"""A prototype's score against a natural-image score distribution.

Four measures, because raw percentages mislead (DESIGN §8): the percent over
the natural mean depends on the score's scale and offset (logits, rates), and
the ratio to the best natural image needs a positive best. Two are scale-free
and defined whatever the sign of the responses: the percentile, and the
standardised distance ``(prototype − natural mean) / natural SD``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class PrototypeComparison:
    """How one prototype score compares with natural images' scores.

    ``percent_over_mean`` and ``ratio_to_best`` are NaN when the natural mean or
    best is not positive: a ratio of scores on a scale with no true zero means nothing.
    ``percentile`` is the percentage of natural images scoring at or below the prototype.
    ``z_over_natural`` is ``(prototype − natural_mean) / natural_sd`` (sample SD), NaN with fewer
    than two natural images or when they all score the same.
    """

    prototype: float
    natural_mean: float
    natural_best: float
    natural_count: int
    percent_over_mean: float
    ratio_to_best: float
    percentile: float
    natural_sd: float = float("nan")
    z_over_natural: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        """Plain values, for tables and JSON."""
        return {k: float(v) for k, v in self.__dict__.items()}


def prototype_vs_natural(prototype: float | Sequence[float], natural: Sequence[float]) -> PrototypeComparison:
    """Compare a prototype score (or the best of several prototypes' scores) with natural images' scores."""
    prototypes = np.atleast_1d(np.asarray(prototype, dtype=np.float64))
    natural = np.asarray(natural, dtype=np.float64).ravel()
    if prototypes.size == 0 or not np.isfinite(prototypes).all():
        raise ValueError(f"need at least one finite prototype score, got {prototypes.tolist()[:5]}")
    natural = natural[np.isfinite(natural)]
    if natural.size == 0:
        raise ValueError("need at least one finite natural-image score")
    best = float(prototypes.max())
    mean, top = float(natural.mean()), float(natural.max())
    sd = float(natural.std(ddof=1)) if natural.size > 1 else float("nan")
    return PrototypeComparison(
        prototype=best,
        natural_mean=mean,
        natural_best=top,
        natural_count=int(natural.size),
        percent_over_mean=100.0 * (best - mean) / mean if mean > 0 else float("nan"),
        ratio_to_best=best / top if top > 0 else float("nan"),
        percentile=100.0 * float(np.count_nonzero(natural <= best)) / natural.size,
        natural_sd=sd,
        z_over_natural=(best - mean) / sd if sd > 0 else float("nan"),
    )
