"""What the page shows, as JSON: the session's status and generation, each thread's scores, stream health,
behaviour and the operator's controls, computed from a :class:`~rig.dashboard.live.LiveSession`."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from rig.analysis.sources import session_threads
from rig.behavior.outcomes import TrialOutcome
from rig.dashboard.channel import ControlRequest
from rig.dashboard.live import LiveSession
from protocols.spec import ProtocolSpec
from rig.loop.rebuild import recorded_spec
from rig.recording.replay_reader import resume_boundaries
from rig.session import RecordedBlock, RecordedSession

__all__ = ["snapshot", "session_status"]


def _num(value: Any) -> float | None:
    """A float for JSON (which has no NaN or infinity): None where it is not finite."""
    value = float(value)
    return value if math.isfinite(value) else None


def _stat(values: np.ndarray, how: Any) -> float | None:
    finite = values[np.isfinite(values)]
    return _num(how(finite)) if len(finite) else None


def session_status(session: RecordedSession, pending: Sequence[ControlRequest]) -> str:
    """running, paused, stopping, or the file's own status (stopped, complete, ...).

    Paused: the last pause taken has no resume after it. Stopping: a stop was asked and not yet taken.
    """
    status = str(session.attrs.get("status", "unknown"))
    if status != "running":
        return status
    if any(r.kind == "stop" for r in pending):
        return "stopping"
    state = "running"
    for control in session.controls:
        if control.get("outcome") == "applied" and control["kind"] in ("pause", "resume", "stop"):
            state = "paused" if control["kind"] == "pause" else "running"
    return state


def _generations(session: RecordedSession) -> int | None:
    planned = session.provenance.get("generations")
    return planned + session.extended_by if isinstance(planned, int) else None


def _seconds(block: RecordedBlock) -> float | None:
    parts = [block.timings.get(k) for k in ("propose", "present_and_record", "observe")]
    return _num(sum(parts)) if all(isinstance(p, (int, float)) for p in parts) else None


def _threads(session: RecordedSession) -> list[dict[str, Any]]:
    out = []
    for t in session_threads(session):
        mean, best, band = [], [], []
        top = (-math.inf, -1, -1)  # score, block, code index
        for block in session.blocks:
            scores = block.thread_scores(t.thread, t.channel)
            mean.append(_stat(scores, np.mean))
            best.append(_stat(scores, np.max))
            refs = block.reference_scores(t.channel)
            band.append([_stat(refs, np.min), _stat(refs, np.max)])
            if np.isfinite(scores).any() and np.nanmax(scores) > top[0]:
                top = (float(np.nanmax(scores)), block.index, int(np.nanargmax(scores)))
        latest = session.blocks[-1]
        out.append({
            "thread": t.thread, "channel": t.name, "mean": mean, "max": best, "reference_band": band,
            "best": {"score": _num(top[0]), "block": top[1], "code": top[2]} if top[1] >= 0 else None,
            "latest": {"block": latest.index,
                       "scores": [_num(s) for s in latest.thread_scores(t.thread, t.channel)]},
        })
    return out


def _last_diagnostics(live: LiveSession, index: int) -> dict[str, Any] | None:
    """The stream diagnostics of block ``index``'s last showing; None without a recording."""
    diagnostics = [d for d in live.recording.get(index, []) if d]
    return diagnostics[-1] if diagnostics else None


def _health(live: LiveSession, block: RecordedBlock, fresh_reader: bool) -> dict[str, Any]:
    """One block's stream health: re-shows, dropped frames and, with a recording, its own messages, gaps,
    restarts and message rate, and the TTL pairing residual of its last showing.

    The live reader's counters run from its start (the session's or a resume's, ``fresh_reader``), so a block's
    own are the difference from the previous block's; without those (a block that stored none) they are unknown.
    """
    dropped = sum(int(np.sum(s["dropped_frames"])) for s in block.showings if "dropped_frames" in s) \
        if block.showings else int(np.sum(block.dropped_frames))
    row: dict[str, Any] = {"block": block.index, "reshows": max(len(block.showings) - 1, 0), "dropped_frames": dropped}
    last = _last_diagnostics(live, block.index)
    if last is None:
        return row
    residual = last.get("pairing", {}).get("residual_ms")
    row["residual_ms"] = _num(residual) if isinstance(residual, (int, float)) else None
    stream = last.get("stream", {})
    if fresh_reader:
        start = {"messages": 0, "gaps": 0, "restarts": 0, "last_receive_time": stream.get("first_receive_time")}
    else:
        before = _last_diagnostics(live, block.index - 1)
        start = before.get("stream") if before else None
    if not start:
        return row
    for name in ("messages", "gaps", "restarts"):
        counts = stream.get(name), start.get(name)
        row[name] = counts[0] - counts[1] if all(isinstance(c, int) for c in counts) else None
    times = stream.get("last_receive_time"), start.get("last_receive_time")
    if row["messages"] is not None and all(isinstance(t, (int, float)) for t in times) and times[0] > times[1]:
        row["messages_per_s"] = _num(row["messages"] / (times[0] - times[1]))
    return row


def _behavior(session: RecordedSession, fixation: dict[str, Any] | None,
              unfinished: Sequence[tuple[int, dict[str, Any]]] = ()) -> dict[str, Any] | None:
    """Trials per block, total reward, and the gaze of the latest trial with the fixation window.

    Blocks the operator stopped before they finished count too (``unfinished``: their trials ran and their
    rewards were given), each as its own row before the block that was shown again when the session resumed.
    """
    showings: dict[tuple[int, bool], list[dict[str, Any]]] = {}
    for block in session.blocks:
        showings[(block.index, False)] = list(block.showings)
    for index, showing in unfinished:
        showings.setdefault((index, True), []).append(showing)
    rows, reward, trace = [], 0, None
    for (index, stopped), kept in sorted(showings.items(), key=lambda item: (item[0][0], not item[0][1])):
        with_trials = [s for s in kept if "trial_outcome" in s]
        outcomes = np.concatenate([s["trial_outcome"] for s in with_trials]) if with_trials else np.zeros(0, int)
        row = {"block": index, "completed": int(np.sum(outcomes == TrialOutcome.COMPLETED)),
               "broken": int(np.sum(outcomes == TrialOutcome.BROKE_FIXATION))}
        rows.append({**row, "unfinished": True} if stopped else row)
        for s in with_trials:
            reward += int(np.sum(s["trial_reward_pulses"]))
            kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in s.get("event_kinds", [])]
            reward += int(sum(v for k, v in zip(kinds, s["event_values"]) if k == "manual_reward"))
            if len(s["trial_start"]):
                start, stop = float(s["trial_start"][-1]), float(s["trial_stop"][-1])
                keep = (s["gaze_times"] >= start) & (s["gaze_times"] <= stop) & s["gaze_valid"].astype(bool)
                trace = {"x": [_num(v) for v in s["gaze_x"][keep]], "y": [_num(v) for v in s["gaze_y"][keep]],
                         "trial": int(s["trial_number"][-1])}
    if fixation is None and not any(r["completed"] or r["broken"] for r in rows):
        return None
    return {"trials": rows, "reward_pulses": reward, "gaze": trace, "fixation": fixation}


def _fixation(spec: ProtocolSpec) -> dict[str, Any] | None:
    behavior = spec.behavior
    return None if behavior is None else {"point": list(behavior.fixation_point_deg), "window_deg": behavior.window_deg}


#: The recorded protocol of the last session shown (parsed once: the page is redrawn at every block).
_SPECS: dict[str, ProtocolSpec] = {}


def _spec(session: RecordedSession) -> ProtocolSpec:
    key = f"{session.attrs.get('session_id')}:{session.attrs.get('protocol_sha256')}"
    if key not in _SPECS:
        _SPECS.clear()
        _SPECS[key] = recorded_spec(session)
    return _SPECS[key]


def snapshot(live: LiveSession, pending: Sequence[ControlRequest]) -> dict[str, Any]:
    """Everything the page draws, JSON-ready."""
    session = live.session
    if session is None:
        return {"revision": live.revision, "problem": live.problem or "the session has not been read yet"}
    spec = _spec(session)
    readers = resume_boundaries(session) | {0}  # where a live reader (its counters) began
    health = [_health(live, block, block.index in readers) for block in session.blocks]
    return {
        "revision": live.revision,
        "problem": live.problem,
        "name": spec.name,
        "path": str(session.path),
        "session_id": session.attrs.get("session_id"),
        "status": session_status(session, pending),
        "generation": len(session.blocks),
        "generations": _generations(session),
        "seconds_per_generation": [_seconds(b) for b in session.blocks],
        "threads": _threads(session) if session.blocks else [],
        "health": health,
        "behavior": _behavior(session, _fixation(spec), live.unfinished),
        "controls": session.controls,
        "pending": [{"id": r.id, "kind": r.kind, "value": r.value, "requested_utc": r.requested_utc} for r in pending],
    }
