"""What the trials of one showing did, kept for the session file: trials, frames, gaze, events, transitions.

A :class:`BehaviorLog` is filled in by the runner as trials run, and becomes
flat datasets of the showing's group (:meth:`BehaviorLog.datasets`), read back
by :meth:`BehaviorLog.from_datasets`. The layout is in docs/session-schema.md.
Times are on the display's frame clock (the showing's ``onset_times`` clock).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from protocols.base import TextStrings
from rig.behavior.gaze.base import GazeSamples
from rig.behavior.machine import Scene, TrialRecord

__all__ = ["BehaviorLog", "TRIAL_FIELDS"]

#: The trial table's columns (``trial_<name>`` datasets), one row per trial.
TRIAL_FIELDS = ("number", "start", "acquired", "first_onset", "break_time", "stop", "outcome", "reward_pulses",
                "stimuli", "shown", "held")


@dataclass
class BehaviorLog:
    """Trials, frames, gaze, events and state transitions of one showing; per-position trial and loss."""

    positions: int
    #: Per position of the showing: the trial that showed it (-1: never shown), and whether it was lost to
    #: behaviour (shown and not held to its window's end, or never shown because a trial broke first).
    position_trial: np.ndarray = field(init=False)
    position_lost: np.ndarray = field(init=False)
    trials: dict[str, list] = field(default_factory=lambda: {name: [] for name in TRIAL_FIELDS})
    frame_times: list[float] = field(default_factory=list)
    frame_gaze_read: list[int] = field(default_factory=list)
    frame_fixation: list[bool] = field(default_factory=list)
    frame_position: list[int] = field(default_factory=list)
    gaze: list[GazeSamples] = field(default_factory=list)
    gaze_count: int = 0
    events: list[tuple[float, str, float, int]] = field(default_factory=list)
    transitions: list[tuple[float, int, str]] = field(default_factory=list)
    #: The frame clock's time when the showing began, and what every decision read: each ``horizon()`` value,
    #: the gaze samples read by then (cumulative), and each ``next_flip()`` value. With the flips and the gaze
    #: they let the trial machine run the showing again exactly (rig/behavior/check.py).
    start: float = math.nan
    #: The runner's state carried in from earlier showings: when the monkey last fixated, since when he has
    #: not been working, and whether the operator had paused (NaN: none).
    carry: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    horizons: list[float] = field(default_factory=list)
    horizon_gaze_read: list[int] = field(default_factory=list)
    dues: list[float] = field(default_factory=list)
    #: How many times the operator's requests have been taken (events say at which take they came).
    takes: int = 0

    def __post_init__(self) -> None:
        self.position_trial = np.full(self.positions, -1, dtype=np.int64)
        self.position_lost = np.zeros(self.positions, dtype=bool)

    def add_gaze(self, samples: GazeSamples, horizon: float) -> None:
        """Samples read up to ``horizon`` before drawing the next frame."""
        if len(samples):
            self.gaze.append(samples)
            self.gaze_count += len(samples)
        self.horizons.append(horizon)
        self.horizon_gaze_read.append(self.gaze_count)

    def add_frame(self, time: float, scene: Scene, position: int) -> None:
        """A flip at ``time`` showed ``scene`` (``position``: its stimulus's position, -1 none)."""
        self.frame_times.append(time)
        self.frame_gaze_read.append(self.gaze_count)
        self.frame_fixation.append(scene.fixation)
        self.frame_position.append(position)

    def add_event(self, time: float, kind: str, value: float = math.nan) -> None:
        """Something that is not a trial: a manual reward, a pause, the monkey not working."""
        self.events.append((time, kind, value, self.takes))

    def add_trial(self, number: int, record: TrialRecord, positions: list[int], shown: int, held: int) -> None:
        """A finished trial: its record, the showing positions it tried, and how many it showed and held."""
        row = {"number": number, "start": record.start, "acquired": record.acquired,
               "first_onset": record.onsets[0] if record.onsets else math.nan, "break_time": record.break_time,
               "stop": record.stop, "outcome": int(record.outcome), "reward_pulses": record.reward_pulses,
               "stimuli": len(positions), "shown": shown, "held": held}
        for name in TRIAL_FIELDS:
            self.trials[name].append(row[name])
        self.transitions.extend((t, number, state) for t, state in record.transitions)

    @property
    def trial_count(self) -> int:
        return len(self.trials["number"])

    def samples(self) -> GazeSamples:
        """Every gaze sample read during the showing."""
        return GazeSamples.concat(self.gaze)

    def datasets(self) -> dict[str, Any]:
        """Flat datasets for the showing's group."""
        gaze = self.samples()
        out: dict[str, Any] = {
            "position_trial": self.position_trial,
            "position_lost_to_behavior": self.position_lost,
            "gaze_times": gaze.times, "gaze_x": gaze.x.astype(np.float32), "gaze_y": gaze.y.astype(np.float32),
            "gaze_valid": gaze.valid,
            "frame_times": np.asarray(self.frame_times, dtype=np.float64),
            "frame_gaze_read": np.asarray(self.frame_gaze_read, dtype=np.int64),
            "frame_fixation": np.asarray(self.frame_fixation, dtype=bool),
            "frame_position": np.asarray(self.frame_position, dtype=np.int64),
            "event_times": np.asarray([e[0] for e in self.events], dtype=np.float64),
            "event_kinds": TextStrings(e[1] for e in self.events),
            "event_values": np.asarray([e[2] for e in self.events], dtype=np.float64),
            "event_takes": np.asarray([e[3] for e in self.events], dtype=np.int64),
            "decision_start": np.asarray([self.start], dtype=np.float64),
            "decision_carry": np.asarray(self.carry, dtype=np.float64),
            "decision_horizons": np.asarray(self.horizons, dtype=np.float64),
            "decision_gaze_read": np.asarray(self.horizon_gaze_read, dtype=np.int64),
            "decision_dues": np.asarray(self.dues, dtype=np.float64),
            "transition_times": np.asarray([t[0] for t in self.transitions], dtype=np.float64),
            "transition_trials": np.asarray([t[1] for t in self.transitions], dtype=np.int64),
            "transition_states": TextStrings(t[2] for t in self.transitions),
        }
        for name in TRIAL_FIELDS:
            integer = name in ("number", "outcome", "reward_pulses", "stimuli", "shown", "held")
            out[f"trial_{name}"] = np.asarray(self.trials[name], dtype=np.int64 if integer else np.float64)
        return out


def read_behavior(showing: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """A recorded showing's behaviour datasets (decoded strings), or None for a showing without behaviour."""
    if "trial_number" not in showing:
        return None
    out = {}
    for key, value in showing.items():
        if key.startswith(("trial_", "gaze_", "frame_", "event_", "transition_", "decision_", "position_trial",
                           "position_lost_to_behavior")):
            array = np.asarray(value)
            if array.dtype.kind in "OS":
                array = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in array], dtype=object)
            out[key] = array
    return out
