"""Scoring recorded spikes as the labs do (DESIGN.md §4): pure functions on sample numbers.

- Onsets come from a TTL line (photodiode or sync pulse) on the spike stream's
  clock; :mod:`rig.recording.pairing` pairs them with the shown stimuli, and
  :func:`fit_clock` maps the display's clock onto the recording clock from the pairs.
- The response is the spike count in onset + 50 to 200 ms, as a rate.
- The baseline is the 0-40 ms post-onset window averaged over all trials per
  channel (``"early"``), a pre-onset window per trial (``"pre"``), or none.
- A window is final only once the stream's watermark has passed its end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BASELINES = ("early", "pre", "none")


@dataclass(frozen=True)
class Windows:
    """Response and baseline windows in ms relative to onset."""

    response_ms: tuple[float, float] = (50.0, 200.0)
    baseline: str = "early"
    baseline_ms: tuple[float, float] = (0.0, 40.0)

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline: expected one of {list(BASELINES)}, got {self.baseline!r}")
        for name in ("response_ms", "baseline_ms"):
            start, stop = getattr(self, name)
            if not stop > start:
                raise ValueError(f"{name}: expected [start, stop] with stop > start, got {[start, stop]}")
        if self.baseline == "early" and self.baseline_ms[0] < 0:
            raise ValueError(f"baseline_ms: an 'early' baseline lies after onset, got {list(self.baseline_ms)}")

    def span_ms(self) -> tuple[float, float]:
        """Earliest start and latest end of every window used, relative to onset."""
        if self.baseline == "none":
            return self.response_ms
        return (min(self.response_ms[0], self.baseline_ms[0]), max(self.response_ms[1], self.baseline_ms[1]))


def ms_to_samples(ms: float, sample_rate: float) -> int:
    """Whole samples in ``ms`` at ``sample_rate`` Hz (rounded)."""
    return int(round(ms * sample_rate / 1000.0))


def fit_clock(display_times: np.ndarray, samples: np.ndarray) -> dict[str, float]:
    """Least-squares ``sample = slope * display_time + intercept`` and its residuals in ms."""
    t = np.asarray(display_times, dtype=np.float64)
    s = np.asarray(samples, dtype=np.float64)
    if len(t) < 2 or np.ptp(t) == 0:
        return {"pairs": int(len(t))}
    slope, intercept = np.polyfit(t - t[0], s, 1)
    residual = s - (slope * (t - t[0]) + intercept)
    return {
        "pairs": int(len(t)),
        "samples_per_display_second": float(slope),
        "sample_at_first_onset": float(intercept),
        "residual_ms_max": float(np.max(np.abs(residual)) / slope * 1000.0) if slope > 0 else float("nan"),
        "residual_ms_sd": float(np.std(residual) / slope * 1000.0) if slope > 0 else float("nan"),
    }


def window_counts(spike_samples: np.ndarray, anchors: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Spikes in [anchor + start, anchor + stop) for each anchor; ``spike_samples`` sorted."""
    spikes = np.asarray(spike_samples)
    anchors = np.asarray(anchors, dtype=np.int64)
    return np.searchsorted(spikes, anchors + stop, "left") - np.searchsorted(spikes, anchors + start, "left")


def window_rates(spike_samples: np.ndarray, anchors: np.ndarray, window_ms: tuple[float, float],
                 sample_rate: float) -> np.ndarray:
    """Spike rates (spikes/s) in ``window_ms`` after each anchor."""
    start, stop = ms_to_samples(window_ms[0], sample_rate), ms_to_samples(window_ms[1], sample_rate)
    counts = window_counts(spike_samples, anchors, start, stop)
    return counts / ((stop - start) / sample_rate)


def overlaps(intervals: list[tuple[int, int]], start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Whether each [start, stop) overlaps any of ``intervals`` [a, b)."""
    hit = np.zeros(len(start), dtype=bool)
    for a, b in intervals:
        hit |= (np.asarray(start) < b) & (np.asarray(stop) > a)
    return hit
