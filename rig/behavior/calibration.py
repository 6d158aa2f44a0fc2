"""Calibration of a raw eye signal (volts, tracker units) to degrees of visual angle, by least squares.

A calibration maps raw (u, v) to degrees (x, y) with an affine map (6
coefficients) or a second-order polynomial (12): each of x and y is a linear
combination of the terms ``[1, u, v]`` or ``[1, u, v, u*v, u*u, v*v]``
(:func:`polynomial_terms`). It is fitted from samples collected while the
monkey fixated targets at known positions (``rig calibrate``: :func:`grid_targets`,
:class:`TargetShowing`), and stored as TOML with each target's residual.

**When a fixation on a target counts** (:class:`StabilityRule`, applied by
:class:`FixationFinder` to the raw signal, before any calibration exists): a
run of valid samples (no blink) spanning at least ``stable_ms`` (300 ms) that

1. starts at least ``min_latency_ms`` (80 ms, a saccade's shortest latency) after the target's onset;
2. stays within ``dispersion`` (10) noise SDs on each raw axis: max - min of u is at most 10 σu, of v at most
   10 σv (the range of 150 white-noise samples is about 5 SD; the rest allows fixational drift);
3. lies away from where the eye was when the target appeared: its mean differs from the mean of the samples in
   the ``before_ms`` (50 ms) before the onset by more than ``dispersion`` SDs on u or on v (the eye moved to the
   target; a gaze that merely stays where it was is not taken for fixating it).

σu and σv, the raw signal's noise, are estimated from the data in its own units, robustly, from the
differences of consecutive valid samples over the whole calibration so far: σ = 1.4826 MAD(Δ) / √2 (white
noise's differences have SD √2 σ; saccades, a few samples each, barely move a median). The target's raw
position is the mean of that run's samples; its standard error (SD / √samples) is what the fit's collinearity
check weighs the targets' spread against.
"""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rig.behavior.gaze.base import GazeSamples, GazeSource
from rig.behavior.machine import BLANK, Scene
from rig.behavior.reward.base import RewardDelivery, RewardOutput

__all__ = ["CALIBRATION_KINDS", "Calibration", "CalibrationError", "FixationFinder", "StabilityRule",
           "StableFixation", "TargetShowing", "grid_targets", "load_calibration", "polynomial_terms"]

#: Map kinds and their least number of distinct targets (one more than the map has terms per axis... at least).
CALIBRATION_KINDS = {"affine": 3, "poly2": 6}
#: Targets whose raw positions spread, across their thinnest direction, less than this many standard errors of
#: a target's raw mean do not span the plane: the signal did not follow the targets on one axis.
SPAN_SEMS = 10.0


class CalibrationError(ValueError):
    """A calibration that cannot be fitted or trusted, or a calibration file that cannot be read.

    ``reason`` says which: ``"targets"`` (too few, or not finite), ``"collinear"``, ``"residual"`` (a target's
    residual above the limit) or ``"file"``.
    """

    def __init__(self, message: str, reason: str = "file") -> None:
        super().__init__(message)
        self.reason = reason


def polynomial_terms(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The terms of a ``kind`` map at ``u``, ``v``: (..., 3) ``[1, u, v]`` or (..., 6) ``[1, u, v, uv, uu, vv]``."""
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    ones = np.ones_like(u)
    if kind == "affine":
        return np.stack([ones, u, v], axis=-1)
    return np.stack([ones, u, v, u * v, u * u, v * v], axis=-1)


@dataclass(frozen=True)
class Calibration:
    """Raw (u, v) → degrees (x, y): ``coefficients`` is (2, terms) for ``kind`` (see the module docstring)."""

    kind: str
    coefficients: np.ndarray
    #: Per target: its position (deg), the raw mean, and the residual (deg) of the fitted map there (and what
    #: else the fit was given about it: samples, raw SD, attempts).
    targets: list[dict[str, Any]] = field(default_factory=list)
    #: How it was made (``rig calibrate`` writes the protocol, the source, the grid and the stability rule).
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in CALIBRATION_KINDS:
            raise CalibrationError(f"calibration kind {self.kind!r}; valid: {list(CALIBRATION_KINDS)}")
        coefficients = np.asarray(self.coefficients, dtype=np.float64)
        terms = 3 if self.kind == "affine" else 6
        if coefficients.shape != (2, terms) or not np.all(np.isfinite(coefficients)):
            raise CalibrationError(f"a {self.kind} calibration needs 2 x {terms} finite coefficients, got shape "
                                   f"{coefficients.shape}")
        object.__setattr__(self, "coefficients", coefficients)

    def apply(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Degrees for raw ``u``, ``v`` (NaN stays NaN)."""
        degrees = polynomial_terms(self.kind, u, v) @ self.coefficients.T
        return degrees[..., 0], degrees[..., 1]

    @property
    def max_residual_deg(self) -> float:
        """The largest residual over the targets (NaN without targets)."""
        return max((float(t["residual_deg"]) for t in self.targets), default=math.nan)

    @classmethod
    def fit(cls, raw: np.ndarray, degrees: np.ndarray, kind: str = "affine", max_residual_deg: float | None = None,
            raw_sem: np.ndarray | None = None, details: Sequence[dict[str, Any]] | None = None,
            info: dict[str, Any] | None = None) -> "Calibration":
        """Least-squares fit from per-target raw means ``raw`` (n, 2) to target positions ``degrees`` (n, 2).

        Refused with a :class:`CalibrationError` saying why: too few targets for the kind, targets that do
        not span the plane (collinear in degrees, or raw positions that spread across their thinnest direction
        less than :data:`SPAN_SEMS` standard errors ``raw_sem`` (n, 2) of a target's raw mean; for ``poly2``, a
        conic), non-finite values, or a residual above ``max_residual_deg``. ``details`` (one dict per target)
        and ``info`` are kept with the targets and the calibration.
        """
        raw, degrees = np.asarray(raw, dtype=np.float64), np.asarray(degrees, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != 2 or degrees.shape != raw.shape:
            raise CalibrationError(f"calibration: raw {raw.shape} and degrees {degrees.shape} must both be (n, 2)",
                                   "targets")
        if kind not in CALIBRATION_KINDS:
            raise CalibrationError(f"calibration kind {kind!r}; valid: {list(CALIBRATION_KINDS)}", "targets")
        if not (np.all(np.isfinite(raw)) and np.all(np.isfinite(degrees))):
            raise CalibrationError("calibration: a target has no finite raw mean (no stable fixation was found)",
                                   "targets")
        need = CALIBRATION_KINDS[kind]
        if len(raw) < need:
            raise CalibrationError(f"calibration: {len(raw)} targets are too few for a {kind} map (at least "
                                   f"{need}; use a 5- or 9-point grid, 9 for poly2)", "targets")
        _check_span(raw, degrees, raw_sem)
        design = polynomial_terms(kind, raw[:, 0], raw[:, 1])
        rank = np.linalg.matrix_rank(design, tol=1e-9 * max(1.0, float(np.abs(design).max())))
        if rank < design.shape[1]:
            raise CalibrationError(
                f"calibration: the targets' raw signals do not span the plane for a {kind} map (rank {rank} of "
                f"{design.shape[1]}): the targets are collinear, or the eye signal did not move with them",
                "collinear")
        solution, *_ = np.linalg.lstsq(design, degrees, rcond=None)
        x, y = cls(kind, solution.T).apply(raw[:, 0], raw[:, 1])
        residuals = np.hypot(x - degrees[:, 0], y - degrees[:, 1])
        extra = list(details) if details is not None else [{}] * len(raw)
        targets = [{"target_deg": [float(a), float(b)], "raw": [float(u), float(v)], "residual_deg": float(r), **more}
                   for (a, b), (u, v), r, more in zip(degrees, raw, residuals, extra)]
        calibration = cls(kind, solution.T, targets, dict(info or {}))
        if max_residual_deg is not None and residuals.max() > max_residual_deg:
            worst = int(np.argmax(residuals))
            raise CalibrationError(
                f"calibration: the residual at target {[float(d) for d in degrees[worst]]}° is "
                f"{residuals[worst]:.2f}°, above the limit of {max_residual_deg:g}° (--max-residual-deg); "
                f"recalibrate (was the monkey fixating the targets?)", "residual")
        return calibration

    def to_toml(self) -> str:
        """The calibration as TOML (read back by :func:`load_calibration`)."""
        rows = ",\n  ".join("[" + ", ".join(repr(float(c)) for c in row) + "]" for row in self.coefficients)
        lines = ["# rig calibration: raw eye signal -> degrees from the screen centre (+x right, +y up)",
                 f'kind = "{self.kind}"', f"coefficients = [\n  {rows},\n]",
                 f"max_residual_deg = {_toml(self.max_residual_deg)}", ""]
        if self.info:
            lines += ["[info]", *(f"{_toml_key(k)} = {_toml(v)}" for k, v in self.info.items()), ""]
        for target in self.targets:
            lines += ["[[targets]]", *(f"{_toml_key(k)} = {_toml(v)}" for k, v in target.items()), ""]
        return "\n".join(lines)

    def describe(self) -> dict[str, Any]:
        """Provenance for a session file."""
        return {"kind": self.kind, "coefficients": self.coefficients.tolist(), "targets": self.targets,
                "info": self.info}


def _check_span(raw: np.ndarray, degrees: np.ndarray, raw_sem: np.ndarray | None) -> None:
    """Refuse targets on one line in degrees, or raw positions that do not spread in two directions."""
    def thinnest(points: np.ndarray) -> tuple[float, float]:
        spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False) / math.sqrt(len(points))
        return float(spread[-1]), float(spread[0])

    low, high = thinnest(degrees)
    if low <= 1e-9 * max(high, 1e-12):
        raise CalibrationError("calibration: the targets are collinear (they lie on one line), so they cannot say "
                               "how the signal maps the plane; use a 5- or 9-point grid", "collinear")
    low, high = thinnest(raw)
    noise = math.sqrt(float(np.mean(np.square(raw_sem)))) if raw_sem is not None else 0.0
    if low <= max(SPAN_SEMS * noise, 1e-9 * high):
        said = f", within {SPAN_SEMS:g} standard errors of a target's raw mean ({noise:.3g})" if noise else ""
        raise CalibrationError(
            f"calibration: the targets' raw signals are collinear: across their thinnest direction they spread "
            f"{low:.3g} raw units{said}, against {high:.3g} along the widest; the eye signal did not follow the "
            f"targets on one axis (a channel unplugged or saturated?)", "collinear")


def least_trusted(raw: np.ndarray, degrees: np.ndarray, kind: str) -> int:
    """The target the fit trusts least: the largest error when predicted by a fit of the others (leave one out),
    or, with no target to spare, the largest residual."""
    raw, degrees = np.asarray(raw, dtype=np.float64), np.asarray(degrees, dtype=np.float64)
    design = polynomial_terms(kind, raw[:, 0], raw[:, 1])
    errors = []
    for i in range(len(raw)):
        keep = np.arange(len(raw)) != i if len(raw) > design.shape[1] else np.ones(len(raw), dtype=bool)
        solution, *_ = np.linalg.lstsq(design[keep], degrees[keep], rcond=None)
        errors.append(float(np.hypot(*(design[i] @ solution - degrees[i]))))
    return int(np.argmax(errors))


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else _toml(key)


def _toml(value: Any) -> str:
    """``value`` as a TOML value (strings, numbers, booleans, lists, tables; a non-finite number as a string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if math.isfinite(value) else f'"{float(value)}"'
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if value is None:
        return '"none"'
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to TOML")


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration written by ``rig calibrate``; errors name the file and what is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration file not found (run rig calibrate first)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CalibrationError(f"{path}: not a readable calibration file: {exc}") from None
    try:
        return Calibration(str(data["kind"]), np.asarray(data["coefficients"], dtype=np.float64),
                           list(data.get("targets", [])), dict(data.get("info", {})))
    except KeyError as exc:
        raise CalibrationError(f"{path}: calibration file has no {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: {exc}") from None


# -- collecting fixations on targets ---------------------------------------------------------------------------


def grid_targets(points: int, spacing_deg: float, centre: Sequence[float] = (0.0, 0.0)) -> list[tuple[float, float]]:
    """A calibration grid around ``centre``: 5 points (the centre and a cross, ± spacing on each axis) or 9 (a
    3 x 3 square, the corners at ± spacing on both); the centre first, then counter-clockwise from the right."""
    cx, cy, d = float(centre[0]), float(centre[1]), float(spacing_deg)
    if points == 5:
        offsets = [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1)]
    elif points == 9:
        offsets = [(0, 0), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)]
    else:
        raise ValueError(f"a calibration grid has 5 or 9 points, not {points}")
    if not (math.isfinite(d) and d > 0):
        raise ValueError(f"the grid's spacing must be a number of degrees > 0, got {spacing_deg!r}")
    return [(cx + d * i, cy + d * j) for i, j in offsets]


@dataclass(frozen=True)
class StabilityRule:
    """When a fixation on a target counts (the rule is in the module docstring)."""

    stable_ms: float = 300.0
    #: The largest range (max - min) on each raw axis, in multiples of that axis's noise SD.
    dispersion: float = 10.0
    min_latency_ms: float = 80.0
    #: Where the eye was at the onset: the mean of the samples this long before it.
    before_ms: float = 50.0

    def __post_init__(self) -> None:
        for name in ("stable_ms", "dispersion", "min_latency_ms", "before_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name in ("stable_ms", "dispersion") and value == 0):
                raise ValueError(f"stability rule: {name} must be a finite number > 0 (>= 0 for latency and "
                                 f"before), got {value!r}")


@dataclass(frozen=True)
class StableFixation:
    """A stable fixation found in the raw signal: its samples' span, count, raw mean and SD, and the noise SD."""

    start: float
    stop: float
    samples: int
    raw: tuple[float, float]
    raw_sd: tuple[float, float]
    noise: tuple[float, float]

    @property
    def raw_sem(self) -> tuple[float, float]:
        """The standard error of :attr:`raw`, per axis."""
        n = math.sqrt(self.samples)
        return self.raw_sd[0] / n, self.raw_sd[1] / n


class FixationFinder:
    """Applies a :class:`StabilityRule` to the raw samples of one calibration: :meth:`add` every sample read,
    :meth:`begin` at each target's onset; :meth:`add` returns the target's stable fixation once there is one."""

    #: Consecutive-sample differences needed before the noise is trusted, and the most kept (the latest).
    MIN_DIFFS = 50
    KEEP_DIFFS = 5000

    def __init__(self, rule: StabilityRule | None = None) -> None:
        self.rule = rule if rule is not None else StabilityRule()
        self._diffs = np.zeros((0, 2))
        self._last: tuple[float, float] | None = None  # the last sample, if valid
        self._recent = GazeSamples.empty()  # the samples of the last before_ms
        self._onset: float | None = None
        self._before: tuple[float, float] | None = None
        self._shown: list[GazeSamples] = []
        self._searched = 0  # samples since the onset already tried as a window's last

    def noise(self) -> tuple[float, float] | None:
        """The raw noise SD per axis, or None before :data:`MIN_DIFFS` differences have been seen."""
        if len(self._diffs) < self.MIN_DIFFS:
            return None
        d = self._diffs
        mad = np.median(np.abs(d - np.median(d, axis=0)), axis=0)
        sd = 1.4826 * mad / math.sqrt(2.0)
        return float(sd[0]), float(sd[1])

    def begin(self, onset: float) -> None:
        """A target appeared at ``onset``: look for a stable fixation from now on."""
        self._onset, self._shown, self._searched = float(onset), [], 0
        recent = self._recent
        use = recent.valid & (recent.times <= onset)
        self._before = (float(recent.x[use].mean()), float(recent.y[use].mean())) if use.any() else None

    def end(self) -> None:
        """The target is gone."""
        self._onset, self._shown = None, []

    def add(self, samples: GazeSamples) -> StableFixation | None:
        """Learn from ``samples`` (the next read); the target's stable fixation, if there is one by now."""
        if not len(samples):
            return None
        self._learn(samples)
        if self._onset is None:
            return None
        self._shown.append(samples)
        return self._search()

    def _learn(self, samples: GazeSamples) -> None:
        u, v, valid = samples.x, samples.y, samples.valid
        if self._last is not None:
            u, v = np.concatenate(([self._last[0]], u)), np.concatenate(([self._last[1]], v))
            valid = np.concatenate(([True], valid))
        both = valid[1:] & valid[:-1]
        fresh = np.stack((np.diff(u)[both], np.diff(v)[both]), axis=1)
        self._diffs = np.concatenate((self._diffs, fresh))[-self.KEEP_DIFFS:]
        self._last = (float(samples.x[-1]), float(samples.y[-1])) if samples.valid[-1] else None
        recent = GazeSamples.concat([self._recent, samples])
        first = np.searchsorted(recent.times, recent.times[-1] - self.rule.before_ms / 1e3, side="left")
        self._recent = recent.slice(int(first), len(recent))

    def _search(self) -> StableFixation | None:
        noise = self.noise()
        shown = GazeSamples.concat(self._shown)
        self._shown = [shown]
        if noise is None:
            return None
        rule = self.rule
        limit = rule.dispersion * np.asarray(noise)
        earliest = self._onset + rule.min_latency_ms / 1e3
        t, u, v = shown.times, shown.x, shown.y
        invalid_before = np.concatenate(([0], np.cumsum(~shown.valid)))  # invalid samples before index i
        starts = np.searchsorted(t, t - rule.stable_ms / 1e3, side="right") - 1  # the last j with t[i] - t[j] >= span
        for i in range(self._searched, len(t)):
            j = int(starts[i])
            if j < 0 or t[j] < earliest or invalid_before[i + 1] - invalid_before[j]:
                continue
            wu, wv = u[j:i + 1], v[j:i + 1]
            if np.ptp(wu) > limit[0] or np.ptp(wv) > limit[1]:
                continue
            mean = (float(wu.mean()), float(wv.mean()))
            if self._before is not None and abs(mean[0] - self._before[0]) <= limit[0] \
                    and abs(mean[1] - self._before[1]) <= limit[1]:
                continue  # the eye is where it was when the target appeared
            self._searched = len(t)
            return StableFixation(float(t[j]), float(t[i]), i + 1 - j, mean,
                                  (float(wu.std(ddof=1)), float(wv.std(ddof=1))), noise)
        self._searched = len(t)
        return None


@dataclass
class TargetResult:
    """What showing one target gave: its stable fixation (None: none in any attempt) and the attempts made."""

    target_deg: tuple[float, float]
    fixation: StableFixation | None
    attempts: int


class TargetShowing:
    """Shows calibration targets one at a time on a frame surface and finds a stable fixation on each.

    Each attempt: ``blank_s`` of blank screen, then the fixation point at the target until a stable fixation
    (:class:`FixationFinder`) or ``timeout_s``; a fixation is rewarded (``reward(time)``, which also tells the
    gaze source). Gaze is read before every frame, as the trial runner reads it, and the source is told every
    scene with the point's position. ``say`` prints what went wrong (a timeout).
    """

    def __init__(self, surface: Any, gaze: GazeSource, reward: Callable[[float], None], *,
                 finder: FixationFinder | None = None, timeout_s: float = 4.0, attempts: int = 3,
                 blank_s: float = 0.5, say: Callable[[str], None] = print) -> None:
        self.surface, self.gaze, self.reward, self.say = surface, gaze, reward, say
        self.finder = finder if finder is not None else FixationFinder()
        self.timeout_s, self.attempts, self.blank_s = float(timeout_s), int(attempts), float(blank_s)

    def show(self, target: tuple[float, float]) -> TargetResult:
        """Show ``target`` until a stable fixation on it, :attr:`attempts` times at most."""
        target = (float(target[0]), float(target[1]))
        tries = self.attempts
        place = getattr(self.surface, "place_fixation", None)
        for attempt in range(1, tries + 1):
            self._frames(BLANK, target, self.blank_s)
            if place is not None:
                place(target)
            fixation = self._frames(Scene(True), target, self.timeout_s, look=True)
            if fixation is not None:
                self._frames(BLANK, target, 0.0)  # the point goes off at once
                return TargetResult(target, fixation, attempt)
            self.say(f"calibration: no stable fixation on the target at {list(target)}° within {self.timeout_s:g} s "
                     f"(attempt {attempt} of {tries})")
        return TargetResult(target, None, tries)

    def _frames(self, scene: Scene, target: tuple[float, float], duration_s: float,
                look: bool = False) -> StableFixation | None:
        """Show ``scene`` from the next flip for ``duration_s`` (one frame at least), reading gaze before each
        frame; with ``look``, stop (and reward) at the first stable fixation."""
        surface, gaze, finder = self.surface, self.gaze, self.finder
        until = surface.horizon()
        finder.add(gaze.read(until))
        surface.draw(scene, -1)
        first = surface.flip()
        gaze.scene(first, scene.fixation, False, target)
        if look:
            finder.begin(first)
        try:
            while surface.next_flip() <= first + duration_s:
                until = surface.horizon()
                found = finder.add(gaze.read(until))
                if look and found is not None:
                    self.reward(until)
                    return found
                surface.draw(scene, -1)
                surface.flip()
        finally:
            if look:
                finder.end()
        return None


def reward_for(reward: RewardOutput, gaze: GazeSource, pulses: int, pulse_ms: float,
               pause_ms: float) -> Callable[[float], None]:
    """``reward(time)``: deliver ``pulses`` through ``reward`` and tell ``gaze`` (a simulated monkey tires of it)."""
    def give(time: float) -> None:
        reward.deliver(RewardDelivery(time, pulses, pulse_ms, pause_ms))
        gaze.rewarded(time, pulses)
    return give
