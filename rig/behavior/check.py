"""Run a recorded showing's trials again through the same trial machine, and say where they differ.

A session with behaviour keeps, per showing, every value the runner read: the
frame clock at the start, each gaze horizon and the samples read by then, each
expected next flip, the flips, and at which take of the operator's requests each
request came. :class:`RecordedFrames`, :class:`RecordedGaze` and
:class:`RecordedOperator` answer the runner with exactly those values, so the
trials re-run bit for bit; ``rig replay`` reports any difference in the trial
table, in which stimuli were shown, held or lost, and in the events.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np

from protocols.base import Block
from protocols.spec import BehaviorSpec
from rig.behavior.frames import FrameSurface
from rig.behavior.gaze.base import GazeSamples, GazeSource
from rig.behavior.log import TRIAL_FIELDS, read_behavior
from rig.behavior.machine import Scene, StimulusTiming
from rig.behavior.operator import Operator
from rig.behavior.parts import part_registry
from rig.behavior.reward.base import RewardDelivery, RewardOutput
from rig.behavior.runner import TrialRunner

__all__ = ["check_behavior", "rerun_showing"]


class _Exhausted(RuntimeError):
    """The re-run asked for more than was recorded: it took another path."""


class RecordedFrames(FrameSurface):
    """Answers ``horizon``, ``next_flip`` and ``flip`` with the recorded values, in order."""

    realtime = False

    def __init__(self, behavior: Mapping[str, np.ndarray], period: float, clock: str) -> None:
        self.period, self.clock = period, clock
        self._last = float(behavior["decision_start"][0])
        self._horizons = iter(behavior["decision_horizons"].tolist())
        self._dues = iter(behavior["decision_dues"].tolist())
        self._flips = iter(behavior["frame_times"].tolist())

    @staticmethod
    def _next(values: Any, what: str) -> float:
        try:
            return next(values)
        except StopIteration:
            raise _Exhausted(f"the re-run asked for more {what} than were recorded") from None

    def last_flip(self) -> float:
        return self._last

    def next_flip(self) -> float:
        return self._next(self._dues, "expected flips")

    def horizon(self) -> float:
        return self._next(self._horizons, "gaze reads")

    def draw(self, scene: Scene, position: int) -> None:
        pass

    def flip(self) -> float:
        self._last = self._next(self._flips, "flips")
        return self._last


class RecordedGaze(GazeSource):
    """Answers each read with the samples the recorded read returned."""

    def __init__(self, behavior: Mapping[str, np.ndarray], realtime: bool, monitors_gaze: bool) -> None:
        self.realtime, self.monitors_gaze = realtime, monitors_gaze
        self._samples = GazeSamples(behavior["gaze_times"], behavior["gaze_x"], behavior["gaze_y"],
                                    behavior["gaze_valid"])
        self._ends = iter(behavior["decision_gaze_read"].tolist())
        self._at = 0
        kinds, times, values = behavior["event_kinds"], behavior["event_times"], behavior["event_values"]
        xs = [(t, v) for k, t, v in zip(kinds, times, values) if str(k) == "drift_correction_x"]
        ys = [v for k, v in zip(kinds, values) if str(k) == "drift_correction_y"]
        self._drift = [(float(t), float(dx), float(dy)) for (t, dx), dy in zip(xs, ys)]
        self.corrections: list[SimpleNamespace] = []

    def held_fixation(self, start: float, stop: float, point: tuple[float, float]) -> None:
        """The recorded source corrected its drift at the hold's end: take up those corrections again."""
        while self._drift and self._drift[0][0] <= stop:
            self.corrections.append(SimpleNamespace(time=self._drift[0][0], dx=self._drift[0][1],
                                                    dy=self._drift[0][2]))
            self._drift.pop(0)

    def _read(self, until: float) -> GazeSamples:
        end = RecordedFrames._next(self._ends, "gaze reads")
        samples, self._at = self._samples.slice(self._at, end), end
        return samples

    def read(self, until: float) -> GazeSamples:
        return self._read(until)  # as recorded: the live read checked them


class RecordedOperator(Operator):
    """Hands back each recorded request at the take it came with."""

    def __init__(self, behavior: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        kinds, takes = behavior["event_kinds"], behavior["event_takes"]
        self._by_take: dict[int, list[str]] = {}
        for kind, take in zip(kinds, takes):
            if str(kind).startswith("operator_"):
                self._by_take.setdefault(int(take), []).append(str(kind)[len("operator_"):])
        self._takes = 0

    def take(self) -> list[str]:
        self._takes += 1
        return self._by_take.get(self._takes, [])


class _NoReward(RewardOutput):
    def _deliver(self, reward: RewardDelivery) -> None:
        pass


def rerun_showing(behavior: Mapping[str, np.ndarray], spec: BehaviorSpec, timing: StimulusTiming,
                  period: float, clock: str, gaze_kind: str, first_trial: int) -> list[str]:
    """Re-run one recorded showing; the differences from what was recorded, in words (empty: identical)."""
    from rig.display.psychopy import dropped_frames

    entry = part_registry("gaze").entry(gaze_kind)
    gaze = RecordedGaze(behavior, bool(getattr(entry.factory, "realtime", True)),
                        bool(getattr(entry.factory, "monitors_gaze", True)))
    gaze.start(None)
    n = len(behavior["position_trial"])
    runner = TrialRunner(spec, timing, RecordedFrames(behavior, period, clock), gaze, _NoReward(),
                         dropped_frames=dropped_frames, operator=RecordedOperator(behavior),
                         say=lambda message: None, first_trial=first_trial)
    runner._started = True  # the recorded gaze needs no start
    if "decision_carry" in behavior:
        runner.carry_on(tuple(behavior["decision_carry"]))
    block = Block(0, [str(i) for i in range(n)], ["generated"] * n, np.zeros(n), np.arange(n),
                  _NoImages(n), np.zeros((n, 1)))
    try:
        again = runner.run(block, lambda position, onset: None).log.datasets()
        differences = []
    except _Exhausted as exc:
        # It took another path and ran out of recorded input: say where its trials parted from the record.
        again = runner._frames.log.datasets()
        count = len(again["trial_number"])
        recorded = {name: behavior[f"trial_{name}"][:count] for name in TRIAL_FIELDS}
        differences = [f"trial_{name}: recorded {_short(recorded[name])}, re-run {_short(again[f'trial_{name}'])}"
                       for name in TRIAL_FIELDS
                       if not np.array_equal(np.asarray(again[f"trial_{name}"]), recorded[name], equal_nan=True)]
        return differences + [f"{exc} (the trials took another path)"]
    for name in [f"trial_{f}" for f in TRIAL_FIELDS] + ["position_trial", "position_lost_to_behavior",
                                                       "frame_times", "frame_position", "event_takes", "event_times"]:
        if not np.array_equal(np.asarray(again[name]), np.asarray(behavior[name]), equal_nan=True):
            differences.append(f"{name}: recorded {_short(behavior[name])}, re-run {_short(again[name])}")
    if [str(k) for k in again["event_kinds"]] != [str(k) for k in behavior["event_kinds"]]:
        differences.append(f"event_kinds: recorded {list(behavior['event_kinds'])[:6]}, "
                           f"re-run {list(again['event_kinds'])[:6]}")
    return differences


class _NoImages:
    """Stands in for a block's images: the re-run draws nothing."""

    def __init__(self, n: int) -> None:
        self.shape = (n, 3, 1, 1)


def _short(values: Any) -> str:
    array = np.asarray(values)
    text = np.array2string(array[:8], precision=6)
    return text + (f" ... ({len(array)} in all)" if len(array) > 8 else "")


def check_behavior(session: Any) -> str | None:
    """Re-run every recorded showing's trials; the first difference, in words, or None when all reproduce."""
    provenance = session.provenance.get("display", {}).get("behavior")
    if provenance is None:
        return None
    spec = BehaviorSpec(**provenance["spec"])
    timing = StimulusTiming(**provenance["timing"])
    gaze_kind = provenance["gaze"]["kind"]
    period = float(provenance["period_s"])
    clock = provenance.get("clock", "")
    for block in session.blocks:
        for number, showing in enumerate(block.showings):
            behavior = read_behavior(showing)
            if behavior is None:
                continue
            first = int(behavior["trial_number"][0]) if len(behavior["trial_number"]) else 0
            differences = rerun_showing(behavior, spec, timing, period, clock, gaze_kind, first)
            if differences:
                return (f"block {block.index}, showing {number}: the trials do not re-run as recorded: "
                        + "; ".join(differences[:3]))
    return None
