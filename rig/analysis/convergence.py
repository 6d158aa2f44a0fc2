"""Convergence: how fast an evolution gets most of the way to its best generation, if it evolved at all.

The study's measure (DESIGN §8): min–max normalise the mean score per
generation, then report the first generation whose normalised mean reaches
each threshold (50% and 80%).

Min–max normalisation stretches any trajectory to [0, 1], a flat one too: a
unit whose mean moved from −0.024 to −0.019 "reaches 50%" as early as one that
rose tenfold. So convergence is reported only for evolutions that **gained
meaningfully** (:func:`evolution_gain`):

    evolved  ⇔  final mean − first mean  >  min_gain × scale

where the means are the population's mean score in the first and the last
generation, ``min_gain`` is a stated multiple (:data:`DEFAULT_MIN_GAIN`, 1; ``rig sweep --min-gain`` and
``rig report --min-gain`` set it, checked by :func:`check_min_gain`) and
``scale`` is one of (:data:`GAIN_BASES`):

- ``natural_sd`` (default): the spread of the natural images' responses, the
  sample SD over natural images of each image's mean response (the reference
  images shown in every generation, or a screening on the same channel);
- ``noise_sd``: the response noise, the pooled SD of repeated showings of the
  same reference image (zero for a noiseless simulated neuron, so then any
  gain counts).

The rest are counted and flagged as "did not evolve".
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from rig.session import RecordedSession

DEFAULT_THRESHOLDS = (0.5, 0.8)
#: The gain an evolution needs, as a multiple of its scale, to count as evolved.
DEFAULT_MIN_GAIN = 1.0
#: What the gain is measured against: the natural images' spread, or the response noise.
GAIN_BASES = ("natural_sd", "noise_sd")
#: What a ``min_gain`` is a multiple of, in words, by basis.
_BASIS_WORDS = {"natural_sd": "SDs of the natural images' responses", "noise_sd": "SDs of the response noise"}


@dataclass(frozen=True)
class Convergence:
    """Normalised mean per generation and the first generation reaching each threshold (None if never)."""

    generations: np.ndarray
    normalised: np.ndarray
    reached: dict[float, int | None]


@dataclass(frozen=True)
class Gain:
    """How far an evolution's population mean rose, against a yardstick: whether it evolved."""

    first: float
    final: float
    #: The yardstick (an SD in response units) and what it is (one of :data:`GAIN_BASES`).
    scale: float
    basis: str
    min_gain: float

    @property
    def gain(self) -> float:
        """Final minus first generation's mean score."""
        return self.final - self.first

    @property
    def in_scale(self) -> float:
        """The gain in units of the scale (inf for a positive gain over a zero scale, NaN for 0 / 0)."""
        if self.scale > 0:
            return self.gain / self.scale
        return float("inf") if self.gain > 0 else float("-inf") if self.gain < 0 else float("nan")

    @property
    def evolved(self) -> bool:
        """True when the gain exceeds ``min_gain`` × scale."""
        return self.gain > self.min_gain * self.scale

    def describe(self) -> str:
        """One line: the gain against its yardstick and the verdict."""
        verdict = "evolved" if self.evolved else "did not evolve"
        return (f"{verdict}: mean {self.first:.3g} -> {self.final:.3g} ({self.in_scale:+.2f} x {self.basis} "
                f"{self.scale:.3g}; needs > {self.min_gain:g})")


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
    generations are reported in those labels. This does not judge whether the
    evolution gained anything: check :func:`evolution_gain` first.
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


def natural_spread(scores: Sequence[float]) -> float:
    """Sample SD (ddof 1) of natural images' responses; at least two finite scores are needed."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    scores = scores[np.isfinite(scores)]
    if scores.size < 2:
        raise ValueError(f"the spread of natural images' responses needs at least 2 images, got {scores.size}")
    return float(scores.std(ddof=1))


def response_noise(showings: Sequence[Sequence[float]]) -> float:
    """Pooled SD of repeated showings: sqrt of the mean, over images shown at least twice, of their variance."""
    variances = []
    for values in showings:
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size >= 2:
            variances.append(values.var(ddof=1))
    if not variances:
        raise ValueError("the response noise needs an image shown (validly) at least twice; none was")
    return float(np.sqrt(np.mean(variances)))


def evolution_gain(mean_scores: Sequence[float], scale: float, basis: str = "natural_sd",
                   min_gain: float = DEFAULT_MIN_GAIN) -> Gain:
    """Whether an evolution gained: its first and last mean score against ``min_gain`` × ``scale``."""
    means = np.asarray(mean_scores, dtype=np.float64).ravel()
    if means.size == 0 or not np.isfinite(means).all():
        raise ValueError(f"need a non-empty series of finite mean scores, got {means.tolist()[:5]}")
    if basis not in GAIN_BASES:
        raise ValueError(f"gain basis must be one of {GAIN_BASES}, got {basis!r}")
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"the gain's scale ({basis}) must be a finite number >= 0, got {scale}")
    return Gain(float(means[0]), float(means[-1]), float(scale), basis, check_min_gain(min_gain, basis=basis))


def check_min_gain(min_gain: float, name: str = "min_gain", basis: str = "natural_sd") -> float:
    """``min_gain`` as a float when it is a finite number >= 0; else a ValueError worded as ``rig sweep``'s,
    naming ``name`` (the field, or the option: ``--min-gain``) and what the bar is a multiple of."""
    if isinstance(min_gain, bool) or not isinstance(min_gain, numbers.Real) or not np.isfinite(min_gain) \
            or min_gain < 0:
        raise ValueError(f"{name} must be a number >= 0 ({_BASIS_WORDS[basis]}), got {min_gain}")
    return float(min_gain)


def judged_convergence(mean_scores: Sequence[float], gain: Gain,
                       generations: Sequence[int] | None = None) -> Convergence | None:
    """The convergence of an evolution that evolved (``gain.evolved``); None for one that did not."""
    return convergence(mean_scores, generations=generations) if gain.evolved else None


def session_gain(session: "RecordedSession", thread: int, natural: Sequence[float] | None = None,
                 basis: str = "natural_sd", min_gain: float = DEFAULT_MIN_GAIN) -> Gain:
    """A session thread's gain: ``natural`` per-image scores (default: the session's reference images on the
    thread's channel) give the ``natural_sd`` scale; the references' repeated showings give ``noise_sd``."""
    from rig.analysis.sources import natural_scores, session_thread, session_trajectory

    t = session_thread(session, thread)
    mean = session_trajectory(session, thread).mean
    if basis == "noise_sd":
        scale = response_noise(reference_showings(session, t.channel).values())
    else:
        scores = natural_scores(session, t.channel)[1] if natural is None else natural
        scale = natural_spread(scores)
    return evolution_gain(mean, scale, basis, min_gain)


def reference_showings(session: "RecordedSession", channel: int) -> dict[str, list[float]]:
    """Every valid response on ``channel`` to each reference image, by stimulus id."""
    showings: dict[str, list[float]] = {}
    for block in session.blocks:
        for i, (sid, kind) in enumerate(zip(block.stimulus_ids, block.kinds)):
            if kind == "reference" and block.valid[i]:
                showings.setdefault(sid, []).append(float(block.scores[i, channel]))
    return showings
