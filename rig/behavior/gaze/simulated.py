"""The ``simulated`` gaze source: a monkey that fixates, drifts, blinks, breaks and rests (dry runs and tests).

It stands in for a real monkey (DESIGN.md §9): when the fixation point appears
it saccades to it after a latency; while fixating its gaze drifts, with
microsaccades back toward the point; it blinks; it breaks fixation now and
then and comes back only when the point next appears; and it stops working
for minutes at a time, more often the more reward it has had.

How it runs: event-driven. The next time of each kind of event (a blink, a
break, a microsaccade, a look around, a rest, a saccade's landing, the
acquiring saccade) is drawn from its distribution when it becomes possible;
between events the samples are made vectorised (drift by cumulative sum).
Every sample draws four normals (drift x/y, noise x/y) from its own stream, and
the drift carries over exactly from the last sample, so the samples depend on
the seed, the options, ``task.now`` and the :meth:`scene`/:meth:`rewarded`
calls only, never on how reads are split. An event at time ``e`` shapes the
samples at and after ``e``; a scene change or reward at ``t`` those after ``t``.

Its eye signal can be raw, as analog outputs of a tracker are: with
``raw_map`` (degrees to raw units, affine or second-order) it delivers
``u, v`` instead of degrees, plus ``raw_noise`` (its own stream, one pair of
normals per sample in order) and a slow linear ``raw_drift_per_s``. It is then
a raw source (:mod:`rig.behavior.gaze.raw`): it needs ``calibration`` (``rig
calibrate`` with this monkey recovers the inverse map), and may use drift
correction. Without ``raw_map`` its signal is degrees and it needs no
calibration (one may still be named). One kind with options, rather than a
second kind: the monkey behaves the same either way, and a session's replay and
resume rebuild it from its kind and options as before.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from protocols.registry import option
from rig.behavior.calibration import polynomial_terms
from rig.behavior.gaze.base import GAZE_SOURCES, GazeError, GazeSamples, GazeTask
from rig.behavior.gaze.raw import RawGazeSource, RawOptions

__all__ = ["EVENT_KINDS", "MonkeyOptions", "SimulatedMonkey"]

#: What :attr:`SimulatedMonkey.events` records. Saccades are logged at their onset: ``acquire`` (toward the
#: fixation point), ``microsaccade``, ``break`` (away from the point while fixating it with the task on, including
#: at a rest's start) and ``look`` (looking around); ``fixate`` is the landing of an ``acquire`` (fixation begins).
EVENT_KINDS = ("acquire", "fixate", "microsaccade", "break", "look", "blink_start", "blink_end", "rest_start",
               "rest_end")

#: Spawn key deriving the monkey's seed from the session's, apart from every other part's seed.
_SEED_KEY = 0x6D6B79
_INF = math.inf
#: Draws of a place to look before settling for one straight out from the fixation point.
_ROAM_TRIES = 20


def _ms(default: float, low: float = 0.0, high: float = 10_000.0) -> Any:
    return option(default, low=low, high=high, valid=f"milliseconds in [{low:g}, {high:g}]")


def _rate(default: float, high: float = 100.0) -> Any:
    return option(default, low=0.0, high=high, valid=f"events per second in [0, {high:g}] (0: never)")


def _deg(default: float, high: float = 90.0) -> Any:
    return option(default, low=0.0, high=high, valid=f"degrees in [0, {high:g}]")


_RAW_MAP = "6 numbers (affine: u = a + b x + c y, v = d + e x + f y) or 12 (second order), or none"


def _range(default: tuple[float, float], low: float, high: float, unit: str) -> Any:
    return option(default, low=low, high=high, valid=f"[low, high] in {unit}, each in [{low:g}, {high:g}], low <= high")


@dataclass(frozen=True)
class MonkeyOptions(RawOptions):
    """``[gaze] source = "simulated"``: how the simulated monkey behaves. Hazards of 0 make a perfect monkey.

    ``calibration`` and ``drift_correction`` are every raw source's (:class:`~rig.behavior.gaze.raw.RawOptions`).
    """

    #: Seed of its random draws; none: derived from the session's seed (describe() reports the one used).
    seed: int | None = option(None, low=0, high=2**32 - 1, valid="an int in [0, 2**32) or none")
    #: Samples per second, on a fixed grid from the session's start.
    rate_hz: float = option(500.0, low=1.0, high=10_000.0, valid="samples per second in [1, 10000]")
    #: Latency of the saccade to the fixation point after it appears: mean, SD, and the shortest (a floor).
    acquire_latency_ms: float = _ms(250.0)
    acquire_latency_sd_ms: float = _ms(80.0)
    acquire_latency_min_ms: float = _ms(80.0)
    #: SD, per axis, of where the acquiring saccade lands around the point.
    landing_error_deg: float = _deg(0.2, high=10.0)
    #: Saccade duration: base + per degree of amplitude (the main sequence, about 21 ms + 2.2 ms/deg).
    saccade_base_ms: float = _ms(21.0, low=1.0, high=200.0)
    saccade_ms_per_deg: float = _ms(2.2, high=20.0)
    #: Fixational drift, a random walk: SD per axis after one second.
    drift_deg_per_sqrt_s: float = _deg(0.1, high=10.0)
    #: Measurement noise, SD per axis per sample.
    noise_deg: float = _deg(0.03, high=10.0)
    #: Microsaccades while fixating: rate, and amplitude range (directed back toward the point when off it).
    microsaccade_rate_hz: float = _rate(1.0)
    microsaccade_deg: tuple[float, float] = _range((0.2, 0.4), 0.0, 5.0, "degrees")
    #: Blinks per second of open eyes; duration mean, SD and floor. Samples during a blink are invalid (NaN).
    blink_rate_hz: float = _rate(0.2, high=10.0)
    blink_ms: float = _ms(80.0)
    blink_sd_ms: float = _ms(20.0)
    blink_min_ms: float = _ms(30.0)
    #: Fraction of blinks that are long (eyes shut longer than a typical grace period), and their duration range.
    long_blink_fraction: float = option(0.05, low=0.0, high=1.0, valid="a fraction in [0, 1]")
    long_blink_ms: tuple[float, float] = _range((300.0, 600.0), 0.0, 10_000.0, "milliseconds")
    #: Hazard of breaking fixation while fixating with the fixation point or a stimulus on.
    break_hazard_hz: float = _rate(0.2)
    #: A break is a saccade to this far from the fixation point, in a random direction.
    break_distance_deg: tuple[float, float] = _range((4.0, 10.0), 0.0, 90.0, "degrees")
    #: When not fixating (resting, after a break, between trials) it looks around: a saccade every so often
    #: (uniform in this range) to a point uniform within this distance of the screen centre (along x and y),
    #: kept at least twice the window's radius from the fixation point.
    look_interval_s: tuple[float, float] = _range((0.3, 1.0), 0.01, 3600.0, "seconds")
    look_around_deg: float = _deg(12.0)
    #: Hazard of starting a rest (ignoring the fixation point): a base, plus this much per reward pulse received.
    rest_hazard_hz: float = _rate(0.002, high=10.0)
    rest_hazard_per_reward_hz: float = _rate(1e-5, high=10.0)
    #: Mean duration of a rest (exponential).
    rest_mean_s: float = option(120.0, low=0.0, low_open=True, high=86_400.0, valid="seconds in (0, 86400]")
    #: Degrees to a raw signal (u, v): 6 numbers [a, b, c, d, e, f] for u = a + b x + c y, v = d + e x + f y, or
    #: 12 for second order (u = a + b x + c y + d xy + e x^2 + f y^2, then the same 6 for v); none: degrees.
    raw_map: tuple[float, ...] | None = option(None, low=-1e6, high=1e6, valid=_RAW_MAP)
    #: SD of noise added to u and v (raw units), apart from the eye's own noise_deg.
    raw_noise: float = option(0.0, low=0.0, high=1e6, valid="raw units >= 0")
    #: A slow drift of the raw signal, [du, dv] raw units per second from the start (degrees without raw_map).
    raw_drift_per_s: tuple[float, float] = option((0.0, 0.0), low=-1e3, high=1e3,
                                                  valid="[du, dv] in raw units per second, each in [-1000, 1000]")

    def check(self) -> None:
        for name in ("microsaccade_deg", "long_blink_ms", "break_distance_deg", "look_interval_s"):
            low, high = getattr(self, name)
            if low > high:
                self.invalid(name, f"[low, high] with low <= high, got low {low:g} > high {high:g}")
        if self.raw_map is not None and len(self.raw_map) not in (6, 12):
            self.invalid("raw_map", f"{_RAW_MAP}; got {len(self.raw_map)} numbers")


def _miss_distance(start: tuple[float, float], end: tuple[float, float], point: tuple[float, float]) -> float:
    """How close the straight path from ``start`` to ``end`` comes to ``point``."""
    (sx, sy), (ex, ey), (px, py) = start, end, point
    dx, dy = ex - sx, ey - sy
    length2 = dx * dx + dy * dy
    along = min(max(((px - sx) * dx + (py - sy) * dy) / length2, 0.0), 1.0) if length2 > 0 else 0.0
    return math.hypot(sx + along * dx - px, sy + along * dy - py)


def _min_jerk(fraction: np.ndarray) -> np.ndarray:
    """The fraction of a saccade's path covered at ``fraction`` of its duration (a smooth, bell-shaped velocity)."""
    f = np.clip(fraction, 0.0, 1.0)
    return f * f * f * (10.0 - 15.0 * f + 6.0 * f * f)


class _SampleDraws:
    """The per-sample draws on the sample grid, made ahead in blocks: time, drift's running sum, noise.

    Sample k's values depend on k alone: the normals come from one stream in
    sample order (four per sample: drift x/y, noise x/y) and the running sum
    carries exactly from block to block, so however the samples are asked for,
    they are the same.
    """

    #: Samples drawn at a time (at 500 Hz, 8 s): a read of a few samples then slices arrays already made.
    BLOCK = 4096
    #: The rows of :meth:`take`.
    TIME, DRIFT_X, DRIFT_Y, NOISE_X, NOISE_Y, SEEN_X, SEEN_Y = range(7)

    def __init__(self, rng: np.random.Generator, t0: float, rate_hz: float, drift_step: float, noise: float) -> None:
        self._rng, self._t0, self._rate, self._step, self._noise = rng, t0, rate_hz, drift_step, noise
        self._start = 0  # index of the first sample held
        self._sum_end = np.zeros(2)  # the drift's running sum at the last sample drawn
        self._table = np.zeros((7, 0))

    def take(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` (``start`` never below an earlier call's), a read-only view with one row each for
        time, drift sum x/y, noise x/y and drift sum plus noise x/y. Samples before ``start`` are let go."""
        held = self._start + self._table.shape[1]
        if stop > held:
            self._draw(start, held, max(stop - held, self.BLOCK))
        return self._table[:, start - self._start:stop - self._start]

    def _draw(self, keep_from: int, first: int, n: int) -> None:
        draws = self._rng.standard_normal((n, 4))
        walk = np.empty((n + 1, 2))
        walk[0] = self._sum_end
        np.multiply(draws[:, :2], self._step, out=walk[1:])
        np.cumsum(walk, axis=0, out=walk)
        self._sum_end = walk[-1].copy()
        fresh = np.empty((7, n))
        fresh[self.TIME] = self._t0 + np.arange(first, first + n) / self._rate
        fresh[self.DRIFT_X:self.DRIFT_Y + 1] = walk[1:].T
        fresh[self.NOISE_X:self.NOISE_Y + 1] = draws[:, 2:].T * self._noise
        np.add(fresh[self.DRIFT_X:self.DRIFT_Y + 1], fresh[self.NOISE_X:self.NOISE_Y + 1],
               out=fresh[self.SEEN_X:self.SEEN_Y + 1])
        self._table = np.concatenate((self._table[:, keep_from - self._start:], fresh), axis=1)
        self._table.flags.writeable = False  # handed out as views
        self._start = keep_from


class _Normals:
    """Pairs of standard normals in sample order, drawn ahead in fixed blocks: the k-th pair is the same however
    many are asked for at a time."""

    BLOCK = 4096

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._held = np.zeros((0, 2))

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` pairs, (n, 2)."""
        while len(self._held) < n:
            self._held = np.concatenate((self._held, self._rng.standard_normal((self.BLOCK, 2))))
        taken, self._held = self._held[:n], self._held[n:]
        return taken


@GAZE_SOURCES.register("simulated", MonkeyOptions)
class SimulatedMonkey(RawGazeSource):
    """A simulated monkey's gaze, made on demand (``realtime = False``).

    Ground truth for tests: :attr:`events` lists ``(time, kind)`` in time
    order, kinds from :data:`EVENT_KINDS`, e.g. ``(12.34, "break")``; a session's
    trial table can be checked against its breaks.

    Args:
        raw: Deliver the raw signal uncalibrated (``rig calibrate``; see :class:`RawGazeSource`).
        **options: :class:`MonkeyOptions`.
    """

    realtime: ClassVar[bool] = False

    def __init__(self, raw: bool = False, **options: Any) -> None:
        super().__init__(raw=raw, **options)
        #: What the monkey did, ``(time, kind)`` in time order (see :data:`EVENT_KINDS`); reset by :meth:`start`.
        self.events: list[tuple[float, str]] = []
        self._started = False

    def start(self, task: GazeTask) -> None:
        """Begin at ``task.now``, looking around; the seed is made concrete here (see :meth:`describe`)."""
        super().start(task)
        o = self.options
        if o.seed is None:
            seed = int(np.random.SeedSequence(task.session_seed, spawn_key=(_SEED_KEY,)).generate_state(1)[0])
            self.options = o = dataclasses.replace(o, seed=seed)
        # Children 0 and 1 are what they were before the raw signal's child 2 was added: the same seed, the same eye.
        events_seed, samples_seed, raw_seed = np.random.SeedSequence(o.seed).spawn(3)
        self._rng = np.random.default_rng(events_seed)  # event times, durations, targets
        self._raw_noise = _Normals(np.random.default_rng(raw_seed))
        self._t0, self._rate = float(task.now), o.rate_hz
        self._grid = _SampleDraws(np.random.default_rng(samples_seed), self._t0, o.rate_hz,
                                  o.drift_deg_per_sqrt_s / math.sqrt(o.rate_hz), o.noise_deg)
        self._k = 0  # index of the next sample to make; sample k is at t0 + k / rate
        self._clock = self._t0  # everything up to here is settled
        self._made: list[tuple[np.ndarray, ...]] = []  # samples made, not read yet
        self._point = (float(task.fixation_deg[0]), float(task.fixation_deg[1]))
        # Still, the eye is at anchor + the drift's running sum; _drift_last is that sum at the last sample made.
        self._drift_last = (0.0, 0.0)
        self._mode = "roam"  # "roam" (not on the point), "acquiring" (saccade to it), "fixate"
        self._working, self._broke, self._blinking = True, False, False
        self._fixation_on = self._stimulus_on = False
        self._rewards = 0
        self._saccade: tuple[float, float, float, float, float, float] | None = None  # start, end, x0, y0, x1, y1
        self._handlers: dict[str, Callable[[float], None]] = {
            "land": self._land, "blink": self._blink, "rest": self._rest, "acquire": self._acquire,
            "break": self._break, "microsaccade": self._microsaccade, "look": self._look}
        self._next = dict.fromkeys(self._handlers, _INF)  # fixed order: ties resolve the same way every run
        self.events = []
        self._anchor = self._roam_target()  # it starts somewhere on the screen, looking around
        self._next["look"] = self._t0 + self._rng.uniform(*o.look_interval_s)
        self._next["blink"] = self._t0 + self._wait(o.blink_rate_hz)
        self._next["rest"] = self._t0 + self._wait(self._rest_hazard())
        self._started = True

    # -- the interface --------------------------------------------------------------------------------------------

    def raw_is_degrees(self) -> bool:
        """Without ``raw_map`` the monkey's signal is degrees."""
        return self.options.raw_map is None

    def _eye(self, until: float) -> GazeSamples:
        """Where the eye is, in degrees, for every sample not read yet up to ``until``."""
        self._settle(until)
        made, self._made = self._made, []
        if len(made) == 1:
            return GazeSamples(*made[0])
        if not made:
            return GazeSamples.empty()
        return GazeSamples(*(np.concatenate(column) for column in zip(*made)))

    def _read_raw(self, until: float) -> GazeSamples:
        eye = self._eye(until)
        o = self.options
        if not len(eye) or (o.raw_map is None and o.raw_noise == 0 and o.raw_drift_per_s == (0.0, 0.0)):
            return eye  # degrees, exactly as made
        u, v = eye.x, eye.y
        if o.raw_map is not None:
            raw_map = np.asarray(o.raw_map).reshape(2, -1)  # rows u, v over the terms of polynomial_terms
            raw = polynomial_terms("affine" if raw_map.shape[1] == 3 else "poly2", u, v) @ raw_map.T
            u, v = raw[:, 0], raw[:, 1]
        if o.raw_noise > 0:
            noise = self._raw_noise.take(len(eye)) * o.raw_noise
            u, v = u + noise[:, 0], v + noise[:, 1]
        if o.raw_drift_per_s != (0.0, 0.0):
            elapsed = eye.times - self._t0
            u, v = u + o.raw_drift_per_s[0] * elapsed, v + o.raw_drift_per_s[1] * elapsed
        return GazeSamples(eye.times, u, v, eye.valid)

    def scene(self, time: float, fixation_on: bool, stimulus_on: bool,
              fixation_deg: tuple[float, float] | None = None) -> None:
        """The screen from ``time`` on: the point's appearance starts an acquiring saccade (after a latency).

        ``fixation_deg`` moves the point (None: the task's): the monkey looks for it there from now on, and a
        point that moves while on is acquired again where it went, as a point that appears is."""
        t = self._settle(time)
        point = self.task.fixation_deg if fixation_deg is None else fixation_deg
        point = (float(point[0]), float(point[1]))
        moved, self._point = point != self._point, point
        task_was_on = self._fixation_on or self._stimulus_on
        appears = fixation_on and (not self._fixation_on or moved)
        disappears = self._fixation_on and not fixation_on
        self._fixation_on, self._stimulus_on = bool(fixation_on), bool(stimulus_on)
        task_on = self._fixation_on or self._stimulus_on
        if moved and self._mode != "roam":  # what it was fixating is gone: not a break, it looks again
            self._stop_fixating()
            if self._saccade is None:
                self._next["look"] = t + self._rng.uniform(*self.options.look_interval_s)
        if disappears:
            self._next["acquire"] = _INF
        if appears:
            self._broke = False  # a break lasts until the point reappears
            if self._working:
                self._next["acquire"] = t + self._latency()
                # A working monkey goes for the point: a look planned while the screen was blank is dropped
                # (it would take the eye out of the window after the machine saw it arrive, an unlogged break).
                self._next["look"] = _INF
        if not task_on and self._mode != "roam":
            self._stop_fixating()
            if self._saccade is None:  # a saccade in flight schedules the next look when it lands
                self._next["look"] = t + self._rng.uniform(*self.options.look_interval_s)
        elif task_on and not task_was_on and self._mode == "fixate":
            self._next["break"] = t + self._wait(self.options.break_hazard_hz)

    def rewarded(self, time: float, pulses: int) -> None:
        """Reward makes rests likelier: the rest hazard grows by ``rest_hazard_per_reward_hz`` per pulse."""
        t = self._settle(time)
        self._rewards += int(pulses)
        if self._working:  # exponential waits are memoryless: draw again at the new hazard
            self._next["rest"] = t + self._wait(self._rest_hazard())

    def close(self) -> None:
        """Nothing to release; safe to call twice."""
        self._made = []

    # -- the engine -----------------------------------------------------------------------------------------------

    def _settle(self, until: float) -> float:
        """Handle every event at or before ``until`` and make every sample at or before it; the settled time."""
        if not self._started:
            raise GazeError("SimulatedMonkey: start() it before reading or telling it the scene")
        if not math.isfinite(until):
            raise GazeError(f"SimulatedMonkey: cannot make samples up to {until}")
        upcoming = self._next
        while min(upcoming.values()) <= until:
            kind = min(upcoming, key=upcoming.__getitem__)
            time = upcoming[kind]
            self._make(self._first_at_or_after(time))  # the samples before it
            self._handlers[kind](time)
        self._make(self._first_after(until))
        self._clock = max(self._clock, until)
        return self._clock

    def _first_at_or_after(self, t: float) -> int:
        """Index of the first sample at or after ``t``."""
        t0, rate = self._t0, self._rate
        k = max(math.ceil((t - t0) * rate), 0)
        while k > 0 and t0 + (k - 1) / rate >= t:  # the float product may round either way
            k -= 1
        while t0 + k / rate < t:
            k += 1
        return k

    def _first_after(self, t: float) -> int:
        """Index of the first sample after ``t``."""
        t0, rate = self._t0, self._rate
        k = max(math.floor((t - t0) * rate) + 1, 0)
        while k > 0 and t0 + (k - 1) / rate > t:
            k -= 1
        while t0 + k / rate <= t:
            k += 1
        return k

    def _make(self, stop: int) -> None:
        """Make samples ``self._k`` to ``stop`` (exclusive), all in the current state (no event between them)."""
        start = self._k
        if stop <= start:
            return
        draws = self._grid.take(start, stop)
        times, n = draws[_SampleDraws.TIME].copy(), stop - start  # the grid's arrays are read-only views
        if self._blinking:
            nan = np.full(n, np.nan)
            self._made.append((times, nan, nan.copy(), np.zeros(n, dtype=bool)))
        elif self._saccade is not None:
            t_start, t_end, x0, y0, x1, y1 = self._saccade
            covered = _min_jerk((times - t_start) / (t_end - t_start))
            self._made.append((times, x0 + (x1 - x0) * covered + draws[_SampleDraws.NOISE_X],
                               y0 + (y1 - y0) * covered + draws[_SampleDraws.NOISE_Y], np.ones(n, dtype=bool)))
        else:
            ax, ay = self._anchor
            self._made.append((times, ax + draws[_SampleDraws.SEEN_X], ay + draws[_SampleDraws.SEEN_Y],
                               np.ones(n, dtype=bool)))
        self._drift_last = (float(draws[_SampleDraws.DRIFT_X, -1]), float(draws[_SampleDraws.DRIFT_Y, -1]))
        self._k = stop

    # -- draws ----------------------------------------------------------------------------------------------------

    def _wait(self, rate_hz: float) -> float:
        """Seconds to the next event of a Poisson process at ``rate_hz`` (never, at 0)."""
        return float(self._rng.exponential(1.0 / rate_hz)) if rate_hz > 0 else _INF

    def _latency(self) -> float:
        o = self.options
        return max(o.acquire_latency_min_ms, self._rng.normal(o.acquire_latency_ms, o.acquire_latency_sd_ms)) / 1e3

    def _rest_hazard(self) -> float:
        return self.options.rest_hazard_hz + self.options.rest_hazard_per_reward_hz * self._rewards

    def _roam_target(self, start: tuple[float, float] | None = None) -> tuple[float, float]:
        """Somewhere on the screen, at least two window radii from the fixation point, on a path from ``start``
        that does not cross the window (looking around never passes for fixating; leaving it is fine)."""
        reach, window = self.options.look_around_deg, self.task.window_deg
        px, py = self._point
        if start is not None and math.hypot(start[0] - px, start[1] - py) <= window:
            start = None  # leaving the window: any path will do
        for _ in range(_ROAM_TRIES):
            x, y = self._rng.uniform(-reach, reach, 2)
            dx, dy = x - px, y - py
            distance, keep_out = math.hypot(dx, dy), 2.0 * window
            if distance < keep_out:  # pushed out radially
                dx, dy = (dx / distance, dy / distance) if distance > 0 else (1.0, 0.0)
                x, y = px + keep_out * dx, py + keep_out * dy
            if start is None or _miss_distance(start, (x, y), self._point) > window:
                return float(x), float(y)
        # Hemmed in (a small look_around_deg): straight out from the point, through where it is.
        sx, sy = start
        away = math.hypot(sx - px, sy - py) or 1.0
        reach = max(away, 2.0 * window)
        return px + reach * (sx - px) / away, py + reach * (sy - py) / away

    def _position(self, t: float) -> tuple[float, float]:
        """Where the eye is at ``t`` (before noise): along a saccade in flight, else at the last sample."""
        if self._saccade is None:
            return self._anchor[0] + self._drift_last[0], self._anchor[1] + self._drift_last[1]
        t_start, t_end, x0, y0, x1, y1 = self._saccade
        covered = float(_min_jerk(np.array((t - t_start) / (t_end - t_start))))
        return x0 + (x1 - x0) * covered, y0 + (y1 - y0) * covered

    def _saccade_to(self, t: float, target: tuple[float, float], kind: str) -> None:
        """Start a saccade at ``t`` from where the eye is to ``target``; its landing is an event."""
        self.events.append((t, kind))
        x0, y0 = self._position(t)
        x1, y1 = target
        o = self.options
        duration = (o.saccade_base_ms + o.saccade_ms_per_deg * math.hypot(x1 - x0, y1 - y0)) / 1e3
        self._saccade = (t, t + duration, x0, y0, float(x1), float(y1))
        self._next["land"] = t + duration

    def _stop_fixating(self) -> None:
        self._mode = "roam"
        self._next["microsaccade"] = self._next["break"] = _INF

    # -- events ---------------------------------------------------------------------------------------------------

    def _land(self, t: float) -> None:
        x, y = self._saccade[4:]  # type: ignore[index]  # a landing is scheduled only with a saccade
        self._anchor = (x - self._drift_last[0], y - self._drift_last[1])
        self._saccade, self._next["land"] = None, _INF
        o = self.options
        if self._mode == "acquiring":
            self._mode = "fixate"
            self.events.append((t, "fixate"))
            if self._fixation_on or self._stimulus_on:
                self._next["break"] = t + self._wait(o.break_hazard_hz)
        if self._mode == "fixate":
            self._next["microsaccade"] = t + self._wait(o.microsaccade_rate_hz)
        else:
            self._next["look"] = t + self._rng.uniform(*o.look_interval_s)

    def _acquire(self, t: float) -> None:
        self._next["acquire"] = self._next["look"] = self._next["microsaccade"] = self._next["break"] = _INF
        self._mode = "acquiring"
        px, py = self._point
        ex, ey = self._rng.normal(0.0, self.options.landing_error_deg, 2)
        self._saccade_to(t, (px + ex, py + ey), "acquire")

    def _break(self, t: float) -> None:
        self._stop_fixating()
        self._broke = True
        distance = self._rng.uniform(*self.options.break_distance_deg)
        angle = self._rng.uniform(0.0, 2.0 * math.pi)
        px, py = self._point
        self._saccade_to(t, (px + distance * math.cos(angle), py + distance * math.sin(angle)), "break")

    def _microsaccade(self, t: float) -> None:
        self._next["microsaccade"] = _INF  # the next is drawn when this one lands
        x, y = self._position(t)
        amplitude = self._rng.uniform(*self.options.microsaccade_deg)
        angle = self._rng.uniform(0.0, 2.0 * math.pi)
        # Toward the point when off it by more than about half an amplitude, in a random direction when on it.
        dx = self._point[0] - x + 0.5 * amplitude * math.cos(angle)
        dy = self._point[1] - y + 0.5 * amplitude * math.sin(angle)
        norm = math.hypot(dx, dy) or 1.0
        self._saccade_to(t, (x + amplitude * dx / norm, y + amplitude * dy / norm), "microsaccade")

    def _look(self, t: float) -> None:
        self._next["look"] = _INF
        self._saccade_to(t, self._roam_target(self._position(t)), "look")

    def _blink(self, t: float) -> None:
        o = self.options
        self._blinking = not self._blinking
        self.events.append((t, "blink_start" if self._blinking else "blink_end"))
        if not self._blinking:
            self._next["blink"] = t + self._wait(o.blink_rate_hz)
        elif self._rng.random() < o.long_blink_fraction:
            self._next["blink"] = t + self._rng.uniform(*o.long_blink_ms) / 1e3
        else:
            self._next["blink"] = t + max(o.blink_min_ms, self._rng.normal(o.blink_ms, o.blink_sd_ms)) / 1e3

    def _rest(self, t: float) -> None:
        self._working = not self._working
        if self._working:
            self.events.append((t, "rest_end"))
            self._next["rest"] = t + self._wait(self._rest_hazard())
            if self._fixation_on and not self._broke and self._mode == "roam":
                self._next["acquire"] = t + self._latency()
            return
        self.events.append((t, "rest_start"))
        self._next["rest"] = t + float(self._rng.exponential(self.options.rest_mean_s))
        self._next["acquire"] = _INF
        if self._mode != "roam":  # it looks away at once; from a fixation with the task on, that is a break
            broke = self._mode == "fixate" and (self._fixation_on or self._stimulus_on)
            self._stop_fixating()
            self._broke = self._broke or broke
            self._saccade_to(t, self._roam_target(self._position(t)), "break" if broke else "look")
