"""The response model: unit activation → firing rate → spike count (or spike times).

A simulated unit's activation ``a`` becomes a firing rate in spikes/s::

    rate = rectify(gain * a + offset)        rectify: "relu" max(0, x) or "softplus" log(1 + e^x)

Each presentation (stimulus × channel) then gets its own rate fluctuation and
spikes:

- **multiplicative noise** (``multiplicative_sd`` = σ > 0): the rate is
  multiplied by a gamma-distributed gain with mean 1 and standard deviation σ
  (shape 1/σ², scale σ²). Gamma, not lognormal, because with Poisson spiking
  it gives the negative-binomial counts that describe cortical over-dispersion
  (Goris, Movshon & Simoncelli 2014), and it never makes a rate negative.
  Published optimizer benchmarks use σ = 0.2 and 0.5.
- **spiking** (``noise``): ``"poisson"`` draws a Poisson count with mean
  ``rate × window_s``; ``"none"`` uses the (noisy) rate itself.

The scored response is count / ``window_s``, a rate, as labs score the window
onset + 50 to 200 ms. :meth:`ResponseModel.spike_times` draws the same
process as spike times: a stimulus shown at ``onset`` drives the unit from
``onset + latency_s`` for ``duration_s`` (``window_s`` by default), so counting
those times in that window has exactly the distribution of :meth:`counts`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

__all__ = ["ResponseModelConfig", "ResponseModel", "build_response_model", "count_spikes", "RECTIFIERS", "NOISES"]

#: Bumped whenever the same seed would draw different numbers (part of ``describe()``).
VERSION = "1"
RECTIFIERS = ("relu", "softplus")
NOISES = ("none", "poisson")


#: Limits: |gain| and |offset| in spikes/s (per unit of activation), seconds for windows and latencies, so a
#: rate times a window stays far inside what a Poisson draw accepts (a neuron fires < 1000 spikes/s).
MAX_RATE_SCALE = 1e6
MAX_SECONDS = 10.0
MAX_MULTIPLICATIVE_SD = 100.0


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


@dataclass(frozen=True)
class ResponseModelConfig:
    """Parameters of the response model; every field is checked when built.

    ``gain`` and ``offset`` map activations to spikes/s; ``window_s`` is the
    counting window's length and ``latency_s`` the delay from stimulus onset to
    the response. ``seed=None`` is replaced by a concrete seed in
    :class:`ResponseModel`, so every model can be rebuilt exactly.
    """

    gain: float = 1.0
    offset: float = 0.0
    rectify: str = "relu"
    window_s: float = 0.15
    noise: str = "poisson"
    multiplicative_sd: float = 0.0
    latency_s: float = 0.05
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("gain", "offset"):
            value = getattr(self, name)
            if not _is_number(value) or abs(value) > MAX_RATE_SCALE:
                raise ValueError(f"{name}: expected a number with |{name}| <= {MAX_RATE_SCALE:g}, got {value!r}")
        if self.rectify not in RECTIFIERS:
            raise ValueError(f"rectify: expected one of {list(RECTIFIERS)}, got {self.rectify!r}")
        if self.noise not in NOISES:
            raise ValueError(f"noise: expected one of {list(NOISES)}, got {self.noise!r}")
        if not _is_number(self.window_s) or not 0 < self.window_s <= MAX_SECONDS:
            raise ValueError(f"window_s: expected a number of seconds in (0, {MAX_SECONDS:g}], got {self.window_s!r}")
        if not _is_number(self.latency_s) or not 0 <= self.latency_s <= MAX_SECONDS:
            raise ValueError(f"latency_s: expected a number of seconds in [0, {MAX_SECONDS:g}], "
                             f"got {self.latency_s!r}")
        if not _is_number(self.multiplicative_sd) or not 0 <= self.multiplicative_sd <= MAX_MULTIPLICATIVE_SD:
            raise ValueError(f"multiplicative_sd: expected a number in [0, {MAX_MULTIPLICATIVE_SD:g}], "
                             f"got {self.multiplicative_sd!r}")
        if self.seed is not None and not (
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**32
        ):
            raise ValueError(f"seed: expected an integer in [0, 2**32), got {self.seed!r}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> "ResponseModelConfig":
        """Build from a TOML table; unknown keys are an error that lists the valid ones."""
        if not isinstance(table, Mapping):
            raise ValueError(f"expected a table of response-model fields, got {type(table).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(table) - set(valid))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; valid fields: {valid}")
        return cls(**table)


def _ensure_seed(seed: int | None) -> int:
    # A fresh seed is drawn from OS entropy but then kept, so the run can be rebuilt.
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return int(seed)


def count_spikes(times: np.ndarray, onsets: np.ndarray, start_s: float, stop_s: float) -> np.ndarray:
    """How many of the sorted spike ``times`` fall in [onset + start_s, onset + stop_s) per onset."""
    times = np.asarray(times, dtype=np.float64)
    onsets = np.asarray(onsets, dtype=np.float64)
    if stop_s <= start_s:
        raise ValueError(f"count window must have stop_s > start_s, got [{start_s}, {stop_s})")
    if times.size and np.any(np.diff(times) < 0):
        raise ValueError("spike times must be sorted")
    return np.searchsorted(times, onsets + stop_s, "left") - np.searchsorted(times, onsets + start_s, "left")


class ResponseModel:
    """Turns activations into scored responses (spike count / window) or spike times.

    Randomness comes from one ``np.random.Generator`` seeded with ``config.seed``
    (made concrete if None), or from a generator the caller passes, e.g.
    :meth:`rng_for` keyed by block, so a resumed session draws the same noise.
    """

    def __init__(self, config: ResponseModelConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            config = ResponseModelConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a ResponseModelConfig or keyword fields, not both")
        seed = _ensure_seed(config.seed)
        self.config = ResponseModelConfig(**{**asdict(config), "seed": seed})
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def rng_for(self, *key: int) -> np.random.Generator:
        """An independent generator for ``key`` (e.g. block index, attempt), derived from the seed."""
        if not all(isinstance(k, (int, np.integer)) and k >= 0 for k in key):
            raise ValueError(f"rng keys must be integers >= 0, got {key!r}")
        return np.random.default_rng([self.seed, *(int(k) for k in key)])

    # ------------------------------------------------------------------ deterministic part

    def rate(self, activations: np.ndarray) -> np.ndarray:
        """Mean firing rate (spikes/s) for ``activations``: rectify(gain·a + offset)."""
        a = np.asarray(activations, dtype=np.float64)
        drive = self.config.gain * a + self.config.offset
        if self.config.rectify == "relu":
            return np.maximum(drive, 0.0)
        return np.logaddexp(0.0, drive)  # softplus without overflow

    # ------------------------------------------------------------------ random part

    def _rng(self, rng: np.random.Generator | None) -> np.random.Generator:
        return self.rng if rng is None else rng

    def trial_rates(self, activations: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Rates of single presentations: :meth:`rate` times the multiplicative gamma noise."""
        rate = self.rate(activations)
        sd = self.config.multiplicative_sd
        if sd == 0:
            return rate
        shape = 1.0 / sd**2
        return rate * self._rng(rng).gamma(shape, 1.0 / shape, size=rate.shape)

    def counts(self, activations: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Spike counts in the window, one per activation (float, so ``noise="none"`` can be exact)."""
        rate = self.trial_rates(activations, rng)
        expected = rate * self.config.window_s
        if self.config.noise == "none":
            return expected
        return self._rng(rng).poisson(expected).astype(np.float64)

    def respond(self, activations: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Scored responses as labs score them: spike count / window_s (spikes/s), same shape as input."""
        return self.counts(activations, rng) / self.config.window_s

    def spike_times(
        self,
        activations: np.ndarray,
        onsets: np.ndarray,
        duration_s: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> list[np.ndarray]:
        """Sorted spike times per channel for stimuli shown at ``onsets`` (seconds).

        ``activations`` is (stimuli,) or (stimuli, channels). Stimulus i drives
        the unit at its trial rate from ``onsets[i] + latency_s`` for
        ``duration_s`` (default ``window_s``); there are no spikes otherwise.
        Returns one array of times per channel.
        """
        a = np.asarray(activations, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        onsets = np.asarray(onsets, dtype=np.float64)
        if a.ndim != 2 or onsets.shape != (a.shape[0],):
            raise ValueError(f"need one onset per stimulus: activations {a.shape}, onsets {onsets.shape}")
        duration = self.config.window_s if duration_s is None else duration_s
        if not _is_number(duration) or duration <= 0:
            raise ValueError(f"duration_s: expected a number of seconds > 0, got {duration_s!r}")
        rng = self._rng(rng)
        rate = self.trial_rates(a, rng)
        if self.config.noise == "poisson":
            n = rng.poisson(rate * duration)
        else:
            # Without spiking noise a count must still be whole: round the expectation.
            n = np.rint(rate * duration).astype(np.int64)
        starts = onsets + self.config.latency_s
        out = []
        for channel in range(a.shape[1]):
            # Given its count, a homogeneous Poisson process puts spikes uniformly in the interval.
            k = n[:, channel]
            times = np.repeat(starts, k) + rng.uniform(0.0, duration, size=int(k.sum()))
            out.append(np.sort(times))
        return out

    def describe(self) -> dict[str, Any]:
        """``{class, version, kwargs}``: enough to rebuild this model, seed included."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "version": VERSION,
            "kwargs": asdict(self.config),
        }

    def __repr__(self) -> str:
        return f"ResponseModel({self.config!r})"


def build_response_model(table: Mapping[str, Any] | None, default_seed: int | None = None) -> ResponseModel | None:
    """A model from a protocol's ``[neuron.response]`` table, or None when there is no table.

    ``default_seed`` is used when the table gives no seed (e.g. one derived from
    the session seed, so a dry run is reproducible by default).
    """
    if table is None:
        return None
    config = ResponseModelConfig.from_table(table)
    if config.seed is None and default_seed is not None:
        config = ResponseModelConfig(**{**asdict(config), "seed": int(default_seed)})
    return ResponseModel(config)
