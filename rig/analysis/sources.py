"""Loaders: session files (HDF5) and CSV score tables into the arrays the analyses take.

Every loader accepts either kind of file, so results from another tool sit on
the same footing as a session run here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rig.analysis.tables import MAX_COLUMNS, MEAN_COLUMNS, read_score_table
from rig.analysis.trajectory import Trajectory, score_trajectory, trajectory_from_summary
from rig.session import RecordedSession, read_session

SESSION_SUFFIXES = (".h5", ".hdf5")


def is_session_file(path: str | Path) -> bool:
    """True for HDF5 session files, False for CSV tables; anything else is an error."""
    suffix = Path(path).suffix.lower()
    if suffix in SESSION_SUFFIXES:
        return True
    if suffix == ".csv":
        return False
    raise ValueError(f"{path}: expected a session file ({', '.join(SESSION_SUFFIXES)}) or a CSV score table (.csv)")


@dataclass(frozen=True)
class Thread:
    """One evolution of a session: its thread index, the channel it followed and that channel's name."""

    thread: int
    channel: int
    name: str


def session_threads(session: RecordedSession) -> list[Thread]:
    """The evolutions in an evolution session (none in a screening session)."""
    channels = session.provenance.get("thread_channels", [])
    if not session.blocks:
        raise ValueError(f"{session.path}: no complete blocks recorded")
    names = session.blocks[0].channel_names
    return [Thread(t, c, names[c]) for t, c in enumerate(channels)]


def session_thread(session: RecordedSession, thread: int) -> Thread:
    """Thread ``thread`` of an evolution session, or a ValueError listing the valid threads."""
    threads = session_threads(session)
    if not threads:
        raise ValueError(f"{session.path}: not an evolution session (it has no threads)")
    if not 0 <= thread < len(threads):
        raise ValueError(f"{session.path}: no thread {thread}; valid threads: 0..{len(threads) - 1}")
    return threads[thread]


def session_trajectory(session: RecordedSession, thread: int = 0) -> Trajectory:
    """Mean and max per generation of one thread, with the reference images' mean on its channel."""
    t = session_thread(session, thread)
    return score_trajectory(
        [b.thread_scores(t.thread, t.channel) for b in session.blocks],
        [b.reference_scores(t.channel) for b in session.blocks],
        [b.index for b in session.blocks],
    )


def load_trajectory(path: str | Path, thread: int = 0) -> Trajectory:
    """A trajectory from a session file (one thread) or a CSV table with mean and max columns."""
    if is_session_file(path):
        return session_trajectory(read_session(path), thread)
    table = read_score_table(path)
    return trajectory_from_summary(table.column(aliases=MEAN_COLUMNS), table.column(aliases=MAX_COLUMNS),
                                   table.labels)


def best_prototype_score(session: RecordedSession, thread: int = 0) -> tuple[float, int]:
    """The highest score any image of a thread reached, and the generation it came from."""
    t = session_thread(session, thread)
    best, where = -np.inf, -1
    for block in session.blocks:
        scores = block.thread_scores(t.thread, t.channel)
        scores = scores[np.isfinite(scores)]
        if scores.size and scores.max() > best:
            best, where = float(scores.max()), block.index
    return best, where


def natural_scores(session: RecordedSession, channel: int | str = 0) -> tuple[list[str], np.ndarray]:
    """Per natural image (reference kind), its mean valid response on ``channel`` over all its showings.

    In a screening session these are the screened images; in an evolution
    session, the reference images shown in every generation.
    """
    if not session.blocks:
        raise ValueError(f"{session.path}: no complete blocks recorded")
    names = session.blocks[0].channel_names
    if isinstance(channel, str):
        if channel not in names:
            raise ValueError(f"{session.path}: no channel {channel!r}; channels: {names}")
        channel = names.index(channel)
    if not 0 <= channel < len(names):
        raise ValueError(f"{session.path}: no channel {channel}; channels 0..{len(names) - 1}: {names}")
    sums: dict[str, list[float]] = {}
    for block in session.blocks:
        for i, (sid, kind) in enumerate(zip(block.stimulus_ids, block.kinds)):
            if kind == "reference" and block.valid[i]:
                sums.setdefault(_image_id(sid), []).append(float(block.scores[i, channel]))
    if not sums:
        raise ValueError(f"{session.path}: no natural (reference) image responses recorded")
    ids = sorted(sums)
    return ids, np.array([np.mean(sums[i]) for i in ids])


def _image_id(stimulus_id: str) -> str:
    # Stimulus ids are "ref/<image id>" (evolution) or "nat/<image id>" (screening).
    prefix, sep, rest = stimulus_id.partition("/")
    return rest if sep and prefix in ("ref", "nat") else stimulus_id


def load_scores(path: str | Path, column: str | None = None, channel: int | str = 0) -> np.ndarray:
    """Natural-image scores from a session file (per image, on ``channel``) or a CSV column."""
    if is_session_file(path):
        return natural_scores(read_session(path), channel)[1]
    return read_score_table(path).column(column)


def load_prototype_scores(path: str | Path, column: str | None = None, thread: int | None = None) -> np.ndarray:
    """Prototype scores: each thread's best score from a session file, or a CSV column (one per prototype)."""
    if is_session_file(path):
        session = read_session(path)
        threads = [thread] if thread is not None else [t.thread for t in session_threads(session)]
        return np.array([best_prototype_score(session, t)[0] for t in threads])
    return read_score_table(path).column(column)
