"""Gaze sources whose signal is raw (volts from an analog output, tracker units): calibration and drift correction.

A raw source's subclass makes raw samples ``(times, u, v, valid)`` in
:meth:`RawGazeSource._read_raw`; this base turns them into degrees through a
:class:`~rig.behavior.calibration.Calibration` (``[gaze] calibration =
"CAL.toml"``, written by ``rig calibrate`` and loaded when the source is
built), then adds the drift offset. Without a calibration a raw source is
refused when built, saying to run ``rig calibrate``, unless its raw signal is
degrees already (``calibration = "identity"``, or a subclass that says so).

**Drift correction** (MonkeyLogic's): ``drift_correction = F`` with F in
(0, 1] (0, the default, is off). After each trial's baseline hold the runner
calls :meth:`held_fixation` with the hold's span and the fixation point; the
median calibrated gaze over the span's valid samples is taken, and the offset
added to every later sample moves by ``F x (point - median)``. Each correction
is kept in :attr:`RawGazeSource.corrections` and in :meth:`describe`. The
median is of the samples this source delivered (the session file records
them), so a session's corrections follow from its recorded gaze and trial
table alone (:func:`drift_corrections`), and a new offset applies from the
first sample not yet read, so the same reads give the same samples.

A resumed session (``rig run --resume``) carries the offset on: the offset at
the end of the recorded trials is recomputed from the file
(:func:`drift_offset`, the sum of its corrections) and the rebuilt source
starts from it (:meth:`RawGazeSource.resume_drift`, recorded in
:meth:`describe` as ``drift_resumed_from``), so the monkey's first trials
after a resume are read with the correction he had earned.

Built with ``raw=True`` (what ``rig calibrate`` does, :func:`build_raw`), a
source applies neither: :meth:`read` delivers the raw signal, ``x = u`` and
``y = v`` in the source's raw units.
"""
from __future__ import annotations

import abc
import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from protocols.registry import Options, option
from rig.behavior.calibration import Calibration, CalibrationError, load_calibration
from rig.behavior.gaze.base import GAZE_SOURCES, GazeSamples, GazeSource, GazeTask

__all__ = ["IDENTITY", "DriftCorrection", "RawGazeSource", "RawOptions", "baseline_hold", "baseline_holds", "build_raw",
           "carry_drift", "drift_corrections", "drift_offset"]

#: ``calibration = "identity"``: the raw signal is degrees already.
IDENTITY = "identity"
#: The options :func:`build_raw` leaves out: what maps raw to degrees is what is being calibrated.
CALIBRATED_BY = ("calibration", "drift_correction")
#: How long delivered samples are kept for a drift correction's median (a hold ends before its trial does).
KEEP_S = 120.0


@dataclass(frozen=True)
class RawOptions(Options):
    """Options of every raw gaze source (a kind's own options dataclass extends this one)."""

    #: The calibration file written by ``rig calibrate``; "identity" when the raw signal is degrees already.
    calibration: str | None = option(None, valid='a calibration file written by rig calibrate ("CAL.toml"), '
                                                 '"identity" (the raw signal is degrees already), or none')
    #: The fraction of the measured offset removed at each correction (after each trial's baseline hold); 0: off.
    drift_correction: float = option(0.0, low=0.0, high=1.0,
                                     valid="a fraction in [0, 1]: 0 is off, else the part of the measured offset "
                                           "removed at each correction")


@dataclass(frozen=True)
class DriftCorrection:
    """One drift correction: the hold it measured, the median gaze there, the shift and the offset after it."""

    #: The hold's end (the correction's time on the display's clock), its start, and the fixation point.
    time: float
    start: float
    point: tuple[float, float]
    #: The median calibrated gaze over the hold (offset included), and the valid samples it is the median of.
    median: tuple[float, float]
    samples: int
    #: The shift (degrees) added to the offset, and the offset after it.
    dx: float
    dy: float
    offset: tuple[float, float]
    #: The new offset applies to samples after this time (the last sample delivered before the correction).
    applies_after: float

    def as_dict(self) -> dict[str, Any]:
        """For the session's provenance (JSON)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _shift(x: np.ndarray, y: np.ndarray, point: Sequence[float], fraction: float) -> tuple[float, float, float, float]:
    """(median x, median y, dx, dy) of one correction from the calibrated samples of a hold (valid ones only)."""
    mx, my = float(np.median(x)), float(np.median(y))
    return mx, my, fraction * (float(point[0]) - mx), fraction * (float(point[1]) - my)


def drift_corrections(samples: GazeSamples, holds: Sequence[tuple[float, float]], point: Sequence[float],
                      fraction: float) -> list[tuple[float, float]]:
    """The corrections ``(dx, dy)`` a source with ``drift_correction = fraction`` made, from what it delivered.

    ``samples`` is the gaze a session recorded (every sample delivered, corrected), ``holds`` each trial's
    baseline hold ``(acquired, first onset or break)`` in trial order. A hold without valid samples makes none.
    """
    corrections = []
    for start, stop in holds:
        use = samples.valid & (samples.times >= start) & (samples.times <= stop)
        if use.any():
            corrections.append(_shift(samples.x[use], samples.y[use], point, fraction)[2:])
    return corrections


def drift_offset(samples: GazeSamples, holds: Sequence[tuple[float, float]], point: Sequence[float],
                 fraction: float) -> tuple[float, float]:
    """The offset a source with ``drift_correction = fraction`` had after ``holds``: its corrections summed in
    order (from zero, as :meth:`RawGazeSource.start` begins), with the arguments of :func:`drift_corrections`."""
    x = y = 0.0
    for dx, dy in drift_corrections(samples, holds, point, fraction):
        x, y = x + dx, y + dy
    return x, y


def baseline_holds(acquired: Sequence[float], first_onset: Sequence[float],
                   break_time: Sequence[float]) -> list[tuple[float, float]]:
    """Each trial's baseline hold ``(acquired, first onset or break)`` from a trial table's columns, in its order:
    the spans the trial runner hands :meth:`RawGazeSource.held_fixation` (none where fixation was never acquired,
    or the hold has no finite end after it)."""
    spans = [baseline_hold(*row) for row in zip(acquired, first_onset, break_time)]
    return [span for span in spans if span is not None]


def baseline_hold(acquired: float, first_onset: float, break_time: float) -> tuple[float, float] | None:
    """One trial's baseline hold: from acquisition to its first onset (NaN: none shown), else to its break; None
    when fixation was never acquired or the hold has no finite end after it. The trial runner hands this span to
    :meth:`RawGazeSource.held_fixation`, and a resume recomputes the corrections from the same spans."""
    start, onset, broke = float(acquired), float(first_onset), float(break_time)
    end = onset if math.isfinite(onset) else broke
    return (start, end) if math.isfinite(start) and math.isfinite(end) and end > start else None


def carry_drift(source: GazeSource, offset: tuple[float, float]) -> None:
    """Start ``source`` (started, nothing read yet) from a resumed session's drift ``offset``.

    Only a raw source corrects drift; any other source given a non-zero offset is a caller's mistake.
    """
    if isinstance(source, RawGazeSource):
        source.resume_drift(offset)
    elif tuple(offset) != (0.0, 0.0):
        raise ValueError(f"gaze source {type(source).__name__} has no drift correction, so it cannot resume from "
                         f"a drift offset of ({offset[0]:g}, {offset[1]:g})°")


class RawGazeSource(GazeSource):
    """A gaze source with a raw signal: subclasses implement :meth:`_read_raw` (and may override
    :meth:`raw_is_degrees`); options extend :class:`RawOptions`.

    Args:
        raw: Deliver the raw signal, uncalibrated (``rig calibrate``); the source then needs no calibration.
        **options: The kind's options (a :class:`RawOptions` subclass).
    """

    def __init__(self, raw: bool = False, **options: Any) -> None:
        self.configure(options)
        #: True: :meth:`read` delivers the raw signal (x = u, y = v), with neither calibration nor drift correction.
        self.raw = bool(raw)
        #: Every drift correction so far, in time order (reset by :meth:`start`).
        self.corrections: list[DriftCorrection] = []
        self._offset = (0.0, 0.0)
        #: The offset a resumed session's source started from (:meth:`resume_drift`); None: not resumed.
        self.resumed_from: tuple[float, float] | None = None
        self._kept: list[GazeSamples] = []
        self.calibration, self._calibration_sha256 = self._load_calibration()

    def raw_is_degrees(self) -> bool:
        """Whether the raw signal is degrees already, so that no calibration is needed (override)."""
        return False

    def _load_calibration(self) -> tuple[Calibration | None, str | None]:
        """The calibration the options name (None: identity, or none needed when ``raw``); checked here, at build."""
        name = getattr(self.options, "calibration", None)
        if self.raw or name == IDENTITY:
            return None, None
        if name is None:
            if self.raw_is_degrees():
                return None, None
            raise CalibrationError(
                f"gaze source {self.kind!r}: its eye signal is raw and [gaze] names no calibration; run "
                f"`rig calibrate PROTOCOL.toml --out CAL.toml` and add calibration = \"CAL.toml\" to [gaze] "
                f'(calibration = "{IDENTITY}" if the signal is degrees already)')
        path = Path(name)
        calibration = load_calibration(path)
        return calibration, hashlib.sha256(path.read_bytes()).hexdigest()

    @property
    def offset(self) -> tuple[float, float]:
        """The drift offset (degrees) added to every calibrated sample from now on."""
        return self._offset

    def start(self, task: GazeTask) -> None:
        """Begin; the drift offset starts at zero and the corrections list empty (see :meth:`resume_drift`)."""
        super().start(task)
        self.corrections, self._offset, self._kept, self.resumed_from = [], (0.0, 0.0), [], None

    def resume_drift(self, offset: tuple[float, float]) -> None:
        """Carry on a resumed session's drift offset (:func:`drift_offset` of its file): after :meth:`start`,
        before the first read. With drift correction off only a zero offset is taken (and changes nothing)."""
        x, y = (float(v) for v in offset)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"gaze source {self.kind!r}: a resumed drift offset must be finite, got ({x}, {y})")
        if getattr(self, "task", None) is None or self._last_time != -np.inf:
            raise RuntimeError(f"gaze source {self.kind!r}: resume_drift comes after start() and before the "
                               f"first read")
        if self.raw or getattr(self.options, "drift_correction", 0.0) <= 0:
            if (x, y) != (0.0, 0.0):
                raise ValueError(f"gaze source {self.kind!r} does not correct drift (drift_correction = 0 or raw), "
                                 f"so it cannot resume from a drift offset of ({x:g}, {y:g})°")
            return
        self._offset = self.resumed_from = (x, y)

    def _read(self, until: float) -> GazeSamples:
        raw = self._read_raw(until)
        if self.raw or not len(raw):
            return raw
        x, y = (raw.x, raw.y) if self.calibration is None else self.calibration.apply(raw.x, raw.y)
        dx, dy = self._offset
        samples = GazeSamples(raw.times, x + dx if dx else x, y + dy if dy else y, raw.valid)
        if getattr(self.options, "drift_correction", 0.0) > 0:
            self._keep(samples)
        return samples

    def _keep(self, samples: GazeSamples) -> None:
        """Keep the calibrated samples of the last :data:`KEEP_S` for the next drift correction."""
        self._kept.append(GazeSamples(samples.times.copy(), samples.x.copy(), samples.y.copy(), samples.valid.copy()))
        horizon = samples.times[-1] - KEEP_S
        while len(self._kept) > 1 and self._kept[0].times[-1] < horizon:
            self._kept.pop(0)

    def held_fixation(self, start: float, stop: float, point: tuple[float, float]) -> None:
        """Re-centre: move the offset by ``drift_correction`` x (point - median gaze over start..stop)."""
        fraction = getattr(self.options, "drift_correction", 0.0)
        if self.raw or fraction <= 0 or not self._kept:
            return
        kept = GazeSamples.concat(self._kept)
        use = kept.valid & (kept.times >= start) & (kept.times <= stop)
        if not use.any():
            return
        mx, my, dx, dy = _shift(kept.x[use], kept.y[use], point, fraction)
        self._offset = (self._offset[0] + dx, self._offset[1] + dy)
        self.corrections.append(DriftCorrection(
            float(stop), float(start), (float(point[0]), float(point[1])), (mx, my), int(use.sum()), dx, dy,
            self._offset, float(self._last_time)))

    def describe(self) -> dict[str, Any]:
        """Provenance: class, kind, options; the calibration as applied (its map and file's SHA-256); every drift
        correction so far, and (resumed) the offset it started from."""
        calibration: Any = None
        if self.calibration is not None:
            calibration = {**self.calibration.describe(), "path": str(self.options.calibration),
                           "sha256": self._calibration_sha256}
        elif not self.raw:
            calibration = IDENTITY
        resumed = {} if self.resumed_from is None else {"drift_resumed_from": list(self.resumed_from)}
        return {**super().describe(), "raw": self.raw, "calibration": calibration,
                "drift_corrections": [c.as_dict() for c in self.corrections], **resumed}

    @abc.abstractmethod
    def _read_raw(self, until: float) -> GazeSamples:
        """The raw samples up to ``until`` (x = u, y = v, raw units), as :meth:`GazeSource._read` would deliver."""


def build_raw(table: Mapping[str, Any], where: str = "[gaze]") -> RawGazeSource:
    """The ``[gaze]`` table's source built for calibrating: ``raw=True``, its calibration and drift correction
    left out (it is what is being calibrated). A source without a raw signal is refused, saying so."""
    kind = table["source"]
    entry = GAZE_SOURCES.entry(kind)
    if not (isinstance(entry.factory, type) and issubclass(entry.factory, RawGazeSource)):
        raws = [k for k in GAZE_SOURCES.kinds()
                if isinstance(GAZE_SOURCES.entry(k).factory, type)
                and issubclass(GAZE_SOURCES.entry(k).factory, RawGazeSource)]
        raise ValueError(f"{where}: gaze source {kind!r} has no raw eye signal to calibrate; sources that have one: "
                         f"{', '.join(raws) or 'none'}")
    options = {k: v for k, v in table.items() if k != "source" and k not in CALIBRATED_BY}
    return GAZE_SOURCES.build(kind, options, raw=True)
