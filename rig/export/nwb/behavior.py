"""A session's behaviour in the NWB file: the trials table, eye position and the behaviour events.

- ``trials``: one row per trial (every showing of every block, the operator's
  unfinished blocks included), with its ML2 outcome code and the times the
  trial machine recorded; a time that did not happen is NaN.
- ``processing/behavior/EyeTracking/eye_position`` (SpatialSeries): every gaze
  sample, degrees from the screen centre; blinks and lost tracking are NaN.
- ``events/``: NWB ``EventsTable``s, one per type of event as NWB asks:
  ``rewards`` (pulses, manual or earned, how long the valve was open),
  ``not_working`` (the pauses when the monkey stopped fixating),
  ``operator_requests`` (the operator's keys). EventsTable is NWB's core type
  for instants such as rewards (pynwb 4 deprecates BehavioralEvents for it),
  so archives and readers take them without an extension, each with typed
  timestamp and duration columns; TimeIntervals would need a stop time that an
  instant does not have.

Times are on the file's time base, converted per block exactly as the
presentations' (:class:`~rig.export.nwb.tables.Times`), so a trial's
``first_onset_time`` is a presentation's ``start_time``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rig.behavior.outcomes import TrialOutcome
from rig.behavior.tables import BehaviorTables, behavior_tables
from rig.export.nwb.tables import Times
from rig.session import RecordedSession

__all__ = ["BehaviorCounts", "EYE_REFERENCE_FRAME", "NWB_BEHAVIOR_LAYOUT", "add_behavior"]

#: Where a session's behaviour goes in the NWB file (sessions with a ``[behavior]`` table only).
NWB_BEHAVIOR_LAYOUT = """\
| NWB path (sessions with `[behavior]`) | what |
|---|---|
| `trials` | one row per trial, every showing and the operator's unfinished blocks included: `start_time`, `stop_time`, `outcome` (ML2 trial error code: 0 completed, 3 broke fixation, 4 no fixation, 9 aborted), `outcome_label`, `reward_pulses`, `acquired_time`, `break_time`, `first_onset_time` (NaN where it did not happen), `block`, `showing`, `stimuli` (tried), `shown`, `held`, `unfinished` |
| `processing/behavior/EyeTracking/eye_position` | SpatialSeries (samples x 2): gaze in degrees of visual angle from the screen centre, +x right, +y up; NaN while invalid (blinks, lost tracking) |
| `events/rewards` | EventsTable, one row per reward: `timestamp`, `duration` (first pulse to end of last, s), `pulses`, `manual` (the operator's key) |
| `events/not_working` | EventsTable, one row per pause for a monkey not fixating: `timestamp` (pause start), `duration` (until fixation was offered again; NaN if the session ended first), `idle_s` (s without fixation before it) |
| `events/operator_requests` | EventsTable, one row per key the operator pressed: `timestamp`, `duration` (NaN), `request` (reward, pause, resume, stop, abort) |
| `events/other_behavior_events` | only if the runner logged kinds this export does not know: `timestamp`, `duration` (NaN), `kind`, `value` |
"""

#: The eye position's coordinates, in words (as rig/behavior/gaze/base.py defines them).
EYE_REFERENCE_FRAME = ("degrees of visual angle from the centre of the screen, +x right, +y up "
                       "(origin: screen centre; the fixation point is at the [behavior] table's fixation_point_deg)")


@dataclass(frozen=True)
class BehaviorCounts:
    """What :func:`add_behavior` wrote."""

    trials: int
    gaze_samples: int
    events: int


def add_behavior(nwb, session: RecordedSession, times: Times) -> BehaviorCounts | None:
    """Add the session's trials, eye position and events to ``nwb``; None (nothing added) without behaviour."""
    tables = behavior_tables(session)
    if tables is None:
        return None
    _add_trials(nwb, tables, times)
    return BehaviorCounts(tables.count, _add_eye_position(nwb, tables, times), _add_events(nwb, tables, times))


def on_timebase(tables: BehaviorTables, display_times: np.ndarray, times: Times) -> np.ndarray:
    """Display times of gaze samples or events on the file's time base.

    Each time takes the block of the trial running then (the last to start at or
    before it; the first trial's before any), since runs of a resumed session
    may sit on different clocks. Within one run every block shares one clock,
    so for a session that was never resumed this is exact whatever the block.
    """
    display_times = np.asarray(display_times, dtype=np.float64)
    starts, blocks = tables.trials["start"], tables.trials["block"]
    if not len(starts):
        return times.convert(display_times, 0)
    order = np.argsort(starts, kind="stable")
    at = np.clip(np.searchsorted(starts[order], display_times, side="right") - 1, 0, None)
    return _by_block(times, display_times, blocks[order][at])


def _by_block(times: Times, display_times: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Each display time converted as a time of its block (``blocks``, one per time)."""
    display_times = np.asarray(display_times, dtype=np.float64)
    out = np.empty_like(display_times)
    for block in np.unique(blocks):
        mine = blocks == block
        out[mine] = times.convert(display_times[mine], int(block))
    return out


def _spec_text(tables: BehaviorTables) -> str:
    return ", ".join(f"{key} = {value}" for key, value in tables.spec.items())


def _add_trials(nwb, tables: BehaviorTables, times: Times) -> None:
    from hdmf.common import VectorData
    from pynwb.epoch import TimeIntervals

    trials, block = tables.trials, tables.trials["block"]

    def timed(name: str) -> np.ndarray:
        return _by_block(times, trials[name], block)

    values = {"start_time": timed("start"), "stop_time": timed("stop"), "outcome": trials["outcome"],
              "outcome_label": [TrialOutcome(int(code)).label for code in trials["outcome"]],
              "reward_pulses": trials["reward_pulses"], "acquired_time": timed("acquired"),
              "break_time": timed("break_time"), "first_onset_time": timed("first_onset"), "block": block,
              "showing": trials["showing"], "stimuli": trials["stimuli"], "shown": trials["shown"],
              "held": trials["held"], "unfinished": trials["unfinished"]}
    columns = [VectorData(name=name, description=text.format(time=times.reference), data=values[name])
               for name, text in _TRIAL_COLUMNS]
    nwb.trials = TimeIntervals(name="trials", columns=columns, description=(
        f"One row per trial of the trial machine (fixation, hold, stimuli, reward, interval), every showing of "
        f"every block and the operator's unfinished blocks included; times in {times.reference}. Outcomes are "
        f"NIMH MonkeyLogic (ML2) trial error codes. The [behavior] table as run: {_spec_text(tables)}."))


def _add_eye_position(nwb, tables: BehaviorTables, times: Times) -> int:
    from pynwb.behavior import EyeTracking, SpatialSeries

    gaze = tables.gaze
    if not len(gaze["times"]):
        return 0
    module = nwb.create_processing_module(name="behavior", description=(
        f"Behaviour of the monkey during the trials: eye position; times in {times.reference}. "
        f"The [behavior] table as run: {_spec_text(tables)}."))
    position = np.column_stack([gaze["x"], gaze["y"]])  # as recorded (float32)
    position[~gaze["valid"].astype(bool)] = np.nan
    series = SpatialSeries(name="eye_position", data=position, unit="degrees",
                           reference_frame=EYE_REFERENCE_FRAME,
                           timestamps=on_timebase(tables, gaze["times"], times), description=(
                               "Gaze position (x, y) from the gaze source, every sample read during the trials "
                               "and the pauses between them; NaN where the sample was invalid (a blink, lost "
                               f"tracking). Times in {times.reference}."))
    module.add(EyeTracking(name="EyeTracking", spatial_series=series))
    return len(position)


@dataclass
class _Events:
    """One events table: one type of event, a row each."""

    name: str
    description: str
    timestamp: np.ndarray
    duration: np.ndarray
    duration_text: str
    #: More columns: name -> (description, data).
    columns: dict[str, tuple[str, np.ndarray | list]]


def _add_events(nwb, tables: BehaviorTables, times: Times) -> int:
    """The events as NWB ``EventsTable``s, one per type of event (as NWB asks); returns how many were written."""
    from hdmf.common import VectorData
    from pynwb.event import DurationVectorData, EventsTable, TimestampVectorData

    kinds = np.asarray(tables.events["kinds"]).astype(str)
    stamps = on_timebase(tables, tables.events["times"], times)
    written = 0
    for events in _event_tables(kinds, stamps, np.asarray(tables.events["values"], dtype=np.float64), tables.spec):
        if not len(events.timestamp):
            continue
        columns = [TimestampVectorData(name="timestamp", description=f"when, {times.reference}",
                                       data=events.timestamp),
                   DurationVectorData(name="duration", description=events.duration_text, data=events.duration)]
        columns += [VectorData(name=key, description=text, data=data) for key, (text, data) in events.columns.items()]
        nwb.add_events_table(EventsTable(name=events.name, description=events.description, columns=columns,
                                         source_description="rig's trial runner (rig/behavior/runner.py)"))
        written += len(events.timestamp)
    return written


def _event_tables(kinds: np.ndarray, stamps: np.ndarray, values: np.ndarray, spec: dict) -> list[_Events]:
    """Rewards, not-working pauses, the operator's requests, and any other kind (none today)."""
    reward_ms, pause_ms = float(spec.get("reward_ms", np.nan)), float(spec.get("reward_pause_ms", np.nan))
    rewards = np.isin(kinds, ("reward", "manual_reward"))
    pulses = values[rewards]
    paused = kinds == "not_working"
    offered = np.sort(stamps[kinds == "offering_fixation"])
    # Each pause lasts until the next offer of fixation; none after it: the session stopped during the pause.
    ends = np.append(offered, np.nan)[np.searchsorted(offered, stamps[paused])]
    requests = np.array([k.startswith("operator_") for k in kinds], dtype=bool)
    other = ~(rewards | paused | requests | (kinds == "offering_fixation"))
    return [
        _Events("rewards", "juice rewards: earned at the end of a trial, or given by the operator (manual)",
                stamps[rewards], (pulses * reward_ms + np.maximum(pulses - 1, 0) * pause_ms) / 1000,
                f"from the first pulse's start to the last one's end: pulses x reward_ms ({reward_ms:g} ms) "
                f"plus reward_pause_ms ({pause_ms:g} ms) between pulses",
                {"pulses": ("reward pulses", pulses.astype(np.int64)),
                 "manual": ("given with the operator's reward key, not earned by a trial",
                            kinds[rewards] == "manual_reward")}),
        _Events("not_working", "the monkey had not fixated for not_working_s: the session paused (blank screen) "
                               "until fixation was offered again", stamps[paused], ends - stamps[paused],
                "the pause, until fixation was offered again (NaN: the session ended first)",
                {"idle_s": ("seconds without fixation before the pause began", values[paused])}),
        _Events("operator_requests", "the operator's requests (keys), as the trial runner took them between frames",
                stamps[requests], np.full(int(requests.sum()), np.nan), "NaN: a request is an instant",
                {"request": ("what was asked: reward, pause, resume, stop or abort",
                             [k.removeprefix("operator_") for k in kinds[requests]])}),
        _Events("other_behavior_events", "behaviour events of kinds this export does not know", stamps[other],
                np.full(int(other.sum()), np.nan), "NaN: not known",
                {"kind": ("the event's kind", list(kinds[other])), "value": ("its value (NaN: none)", values[other])}),
    ]


_TRIAL_COLUMNS = (
    ("start_time", "trial start: the first frame showing the fixation point, {time}"),
    ("stop_time", "trial end: the end of its inter-trial interval (after any reward or timeout), {time}"),
    ("outcome", "ML2 trial error code: 0 completed, 3 broke fixation, 4 no fixation, 9 aborted"),
    ("outcome_label", "the outcome in words"),
    ("reward_pulses", "reward pulses given at the end of the trial"),
    ("acquired_time", "gaze entered the fixation window, {time}; NaN if it never did"),
    ("break_time", "gaze left the window (or was lost past the blink grace), {time}; NaN if it did not"),
    ("first_onset_time", "onset of the trial's first stimulus, {time}; NaN if none was shown"),
    ("block", "block (generation) index"),
    ("showing", "showing of the block the trial belongs to (0 first; later ones re-show lost stimuli)"),
    ("stimuli", "stimuli the trial tried to show"),
    ("shown", "stimuli it showed"),
    ("held", "stimuli held to the end of their response window"),
    ("unfinished", "the trial belongs to a block the operator stopped before it finished"),
)
