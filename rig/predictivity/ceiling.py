"""The noise ceiling: how well the neuron predicts itself, from stimuli shown more than once.

Split-half reliability: two of each repeated stimulus's valid showings are
drawn at random, one per half; the correlation between the halves over stimuli,
averaged over many draws, is the reliability of one showing ``rho_1``. Halves of
one showing each keep every stimulus on the same footing: reference photos shown
in all 30 blocks and evolved images shown twice would otherwise mix halves of
very different reliability, and the correction below would not hold (on a
30-generation session, halves of up to 15 showings underestimated ``rho_1`` by
0.13). The Spearman–Brown formula then brings it to the mean number of showings
``n`` of the stimuli scored, the reliability of the responses a readout is scored on:

    rho_n = n rho_1 / (1 + (n - 1) rho_1)

A prediction can correlate with noisy responses at most ``sqrt(rho_n)``; scores
are normalised by that (r) and by ``rho_n`` (R²).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Below this many repeated stimuli the ceiling is reported with a plain warning.
FEW_STIMULI = 20
SPLITS = 200


@dataclass(frozen=True)
class Ceiling:
    """The split-half estimate and the ceiling of the scored responses."""

    #: Stimuli with at least two valid showings, and showings per half (one: see the module docstring).
    repeated_stimuli: int
    half_showings: float
    #: Correlation of the halves (averaged over random draws).
    split_half_r: float
    #: Reliability of one showing, and of the scored responses (mean ``showings`` each).
    single_showing: float
    reliability: float
    showings: float

    @property
    def max_r(self) -> float:
        """The highest correlation any prediction can reach with these responses."""
        return float(np.sqrt(self.reliability)) if self.reliability > 0 else float("nan")

    @property
    def warning(self) -> str | None:
        """A plain sentence when the ceiling rests on few images (or none can be given)."""
        if self.repeated_stimuli < 3:
            return (f"no noise ceiling: only {self.repeated_stimuli} stimuli were shown more than once; show "
                    f"reference images in every block or set [evolution] repeat_fraction")
        if not np.isfinite(self.reliability) or self.reliability <= 0:
            return (f"no noise ceiling: the {self.repeated_stimuli} repeated stimuli do not agree with "
                    f"themselves (split-half r = {self.split_half_r:.2f}); normalised scores are undefined")
        if self.repeated_stimuli < FEW_STIMULI:
            return (f"the noise ceiling rests on only {self.repeated_stimuli} repeated stimuli; treat "
                    f"normalised scores as rough (set [evolution] repeat_fraction for more)")
        return None

    def as_dict(self) -> dict:
        return {"repeated_stimuli": self.repeated_stimuli, "half_showings": self.half_showings,
                "split_half_r": self.split_half_r, "single_showing": self.single_showing,
                "reliability": self.reliability, "showings": self.showings, "max_r": self.max_r,
                "warning": self.warning}


def spearman_brown(rho: float, factor: float) -> float:
    """Reliability of a mean over ``factor`` times as many showings as one of reliability ``rho``."""
    return factor * rho / (1 + (factor - 1) * rho)


def noise_ceiling(showings: Sequence[Sequence[float]], seed: int = 0, splits: int = SPLITS) -> Ceiling:
    """Split-half, Spearman–Brown corrected reliability from each stimulus's valid showings.

    ``showings[i]`` lists stimulus ``i``'s valid responses; those with two or
    more are the repeated ones. Every stimulus counts for the mean number of
    showings of the scored responses.
    """
    counts = np.array([len(s) for s in showings])
    if len(counts) == 0 or np.any(counts == 0):
        raise ValueError("every stimulus needs at least one valid showing")
    repeated = [np.asarray(s, dtype=np.float64) for s in showings if len(s) >= 2]
    mean_showings = float(counts.mean())
    nan = float("nan")
    if len(repeated) < 3:
        return Ceiling(len(repeated), nan, nan, nan, nan, mean_showings)
    rng = np.random.default_rng(seed)
    # Stimuli with the same number of showings are drawn from together: one random order per draw and stimulus.
    a, b = np.empty((splits, len(repeated))), np.empty((splits, len(repeated)))
    for count in np.unique([len(s) for s in repeated]):
        rows = [i for i, s in enumerate(repeated) if len(s) == count]
        values = np.stack([repeated[i] for i in rows])                      # (m, count)
        order = rng.random((splits, len(rows), count)).argsort(axis=2)[..., :2]
        drawn = np.take_along_axis(np.broadcast_to(values, (splits, *values.shape)), order, axis=2)
        a[:, rows], b[:, rows] = drawn[..., 0], drawn[..., 1]
    usable = (a.std(axis=1) > 0) & (b.std(axis=1) > 0)
    rs = [np.corrcoef(x, y)[0, 1] for x, y in zip(a[usable], b[usable])]
    single = float(np.mean(rs)) if rs else nan
    reliability = spearman_brown(single, mean_showings) if np.isfinite(single) else nan
    return Ceiling(len(repeated), 1.0, single, single, float(reliability), mean_showings)
