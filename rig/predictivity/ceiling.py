"""The noise ceiling: how well the neuron predicts itself, from stimuli shown more than once.

Split-half reliability: each repeated stimulus's valid showings are split at
random into two halves; the correlation between the halves' means over stimuli,
averaged over many splits, is corrected with the Spearman–Brown formula.

The ceiling that bounds a readout is the reliability of the responses it is
scored on. Most evolved images are shown once, so the split-half estimate (of
means over ``h`` showings) is first brought to one showing, then to the mean
number of showings of the stimuli scored:

    rho_1 = r_h / (h - (h - 1) r_h)        rho_n = n rho_1 / (1 + (n - 1) rho_1)

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

    #: Stimuli with at least two valid showings, and their mean number of showings per half.
    repeated_stimuli: int
    half_showings: float
    #: Correlation of the half means (averaged over random splits).
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
    halves = np.array([len(s) // 2 for s in repeated])
    # Stimuli with the same number of showings are split together: one random order per split and stimulus.
    a, b = np.empty((splits, len(repeated))), np.empty((splits, len(repeated)))
    for count in np.unique([len(s) for s in repeated]):
        rows = [i for i, s in enumerate(repeated) if len(s) == count]
        values = np.stack([repeated[i] for i in rows])                      # (m, count)
        order = rng.random((splits, len(rows), count)).argsort(axis=2)
        shuffled = np.take_along_axis(np.broadcast_to(values, order.shape), order, axis=2)
        half = count // 2  # an odd showing out: equal halves
        a[:, rows], b[:, rows] = shuffled[..., :half].mean(axis=2), shuffled[..., half:2 * half].mean(axis=2)
    usable = (a.std(axis=1) > 0) & (b.std(axis=1) > 0)
    rs = [np.corrcoef(x, y)[0, 1] for x, y in zip(a[usable], b[usable])]
    r_half = float(np.mean(rs)) if rs else nan
    h = float(halves.mean())
    single = r_half / (h - (h - 1) * r_half) if np.isfinite(r_half) else nan
    reliability = spearman_brown(single, mean_showings) if np.isfinite(single) else nan
    return Ceiling(len(repeated), h, r_half, float(single), float(reliability), mean_showings)
