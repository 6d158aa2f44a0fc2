"""A session's behaviour as whole tables: every trial, every gaze sample, every event, in the order they ran.

Each showing of each block keeps its own trials (rig/behavior/log.py); these
functions join them for analysis, the report and the NWB export, adding the
block and showing each row came from. Showings of a block the operator stopped
(``unfinished/``) are included, marked ``unfinished``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from rig.behavior.log import TRIAL_FIELDS, read_behavior

__all__ = ["BehaviorTables", "behavior_tables", "unfinished_showings"]


@dataclass
class BehaviorTables:
    """Columns of equal length per table; ``trials[name]`` for each of :data:`TRIAL_FIELDS`, plus ``block``,
    ``showing`` and ``unfinished``; ``gaze`` has ``times``, ``x``, ``y``, ``valid`` (degrees, display clock);
    ``events`` has ``times``, ``kinds``, ``values``; ``spec`` is the ``[behavior]`` table as run."""

    trials: dict[str, np.ndarray]
    gaze: dict[str, np.ndarray]
    events: dict[str, np.ndarray]
    spec: dict[str, Any]
    #: The clock every time is on (the display's; "simulated" in silico).
    clock: str

    @property
    def count(self) -> int:
        return len(self.trials["number"])


def unfinished_showings(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(block index, showing datasets) of every unfinished block's showings in a session's master, in order."""
    out = []
    with h5py.File(path, "r") as f:
        if "unfinished" not in f:
            return out
        for name in sorted(f["unfinished"]):
            group = f["unfinished"][name]
            index = int(group.attrs["index"])
            for number in sorted(group["showings"], key=int):
                s = group["showings"][number]
                out.append((index, {key: s[key][()] for key in s}))
    return out


def behavior_tables(session: Any) -> BehaviorTables | None:
    """The behaviour of ``session`` (a :class:`rig.session.RecordedSession`), or None when it ran no trials."""
    provenance = session.provenance.get("display", {}).get("behavior")
    if provenance is None:
        return None
    rows: list[tuple[int, int, bool, dict[str, np.ndarray]]] = []
    for block in session.blocks:
        for number, showing in enumerate(block.showings):
            behavior = read_behavior(showing)
            if behavior is not None:
                rows.append((block.index, number, False, behavior))
    counts: dict[int, int] = {}
    for index, showing in unfinished_showings(Path(session.path)):
        behavior = read_behavior(showing)
        if behavior is not None:
            rows.append((index, counts.get(index, 0), True, behavior))
            counts[index] = counts.get(index, 0) + 1

    def join(prefix: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        return {name: np.concatenate([b[f"{prefix}{name}"] for *_, b in rows]) if rows else np.zeros(0)
                for name in names}

    trials = join("trial_", TRIAL_FIELDS)
    sizes = [len(b["trial_number"]) for *_, b in rows]
    trials["block"] = np.repeat([r[0] for r in rows], sizes).astype(np.int64)
    trials["showing"] = np.repeat([r[1] for r in rows], sizes).astype(np.int64)
    trials["unfinished"] = np.repeat([r[2] for r in rows], sizes).astype(bool)
    order = np.argsort(trials["number"], kind="stable")
    trials = {name: column[order] for name, column in trials.items()}
    gaze = join("gaze_", ("times", "x", "y", "valid"))
    events = join("event_", ("times", "kinds", "values"))
    gaze_order = np.argsort(gaze["times"], kind="stable")
    event_order = np.argsort(events["times"], kind="stable")
    return BehaviorTables(trials, {k: v[gaze_order] for k, v in gaze.items()},
                          {k: v[event_order] for k, v in events.items()}, dict(provenance["spec"]),
                          str(provenance.get("clock", "")))
