"""A session file read as it is written: the header once, then each journal block as it lands.

A running session's blocks arrive one journal file at a time (rig/session);
the master is replaced whole only when the journal is merged (at the end, or
on resume). So :meth:`LiveSession.refresh` re-reads the master (through
:func:`read_session`, which probes it in a child process) only when it was
replaced, and otherwise reads just the journal files it has not seen, in this
process. It only ever opens files read-only: the run never waits on it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from rig.behavior.tables import unfinished_showings
from rig.session import RecordedBlock, RecordedSession, SessionFileError, journal_dir, read_session
from rig.session.layout import JOURNAL_BLOCK, JOURNAL_CONTROL, READ_ERRORS, block_name
from rig.session.reader import read_controls, read_journal_block

__all__ = ["LiveSession"]


def _identity(path: Path) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_ino, info.st_mtime_ns, info.st_size


@dataclass
class LiveSession:
    """The latest state of a session file that may still be written; call :meth:`refresh` to catch up."""

    path: Path
    session: RecordedSession | None = None
    #: Each block's showings' ``recording`` attribute (the stream's diagnostics), parsed; {} without a stream.
    recording: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    #: (block index, showing) of each block the operator stopped before it finished, as the master keeps them.
    unfinished: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    #: Bumped at every change seen, so a page knows when to redraw.
    revision: int = 0
    #: Why the last refresh could not read the file ("" when it could).
    problem: str = ""
    _master: tuple[int, int, int] | None = None
    _journal: tuple[str, ...] = ()

    @classmethod
    def open(cls, path: str | Path) -> "LiveSession":
        """Read ``path`` for the first time; SessionFileError (naming the file) when it is not a readable session."""
        live = cls(Path(path))
        try:
            live._refresh()
        except FileNotFoundError:
            raise SessionFileError(f"{path}: no such session file") from None
        live.revision = 1
        return live

    def refresh(self) -> bool:
        """Read what changed since the last call; whether anything did. Errors are kept in :attr:`problem`."""
        try:
            changed = self._refresh()
            self.problem = ""
        except (SessionFileError, FileNotFoundError) as exc:
            # Mid-merge a journal file can go between listing and reading it: the next refresh sees the new master.
            changed, self.problem = False, str(exc)
        if changed:
            self.revision += 1
        return changed

    def _refresh(self) -> bool:
        master = _identity(self.path)
        folder = journal_dir(self.path)
        try:  # whole blocks and controls only: a block being written (.partial) is no change yet
            names = tuple(sorted(e.name for e in os.scandir(folder)
                                 if JOURNAL_BLOCK.match(e.name) or JOURNAL_CONTROL.match(e.name)))
        except FileNotFoundError:
            names = ()
        if master != self._master or self.session is None:
            session = read_session(self.path)
            self.recording = {b.index: _recording(b) for b in session.blocks}
            # Only a merged master holds them: the run merges its journal when the operator stops it.
            self.unfinished = _unfinished(self.path)
            self.session, self._master, self._journal = session, master, names
            return True
        if names == self._journal:
            return False
        session = self.session
        known = {b.index for b in session.blocks}
        for name in names:
            match = JOURNAL_BLOCK.match(name)
            if match and int(match.group(1)) not in known:
                block = read_journal_block(folder / name, int(match.group(1)), str(session.attrs["session_id"]))
                session.blocks.append(block)
                self.recording[block.index] = _recording(block)
        session.blocks.sort(key=lambda b: b.index)
        session.controls = read_controls(self.path, _master_attrs(self.path))
        self._journal = names
        return True


def _master_attrs(path: Path) -> dict[str, Any]:
    """The master's root attributes as :func:`read_controls` needs them (only ``controls``)."""
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("controls", "[]")
    except READ_ERRORS as exc:
        raise SessionFileError(f"{path}: cannot read its controls: {exc}") from None
    return {"controls": value.decode() if isinstance(value, bytes) else str(value)}


def _unfinished(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        return unfinished_showings(path)
    except READ_ERRORS as exc:
        raise SessionFileError(f"{path}: cannot read the showings of its unfinished blocks: {exc}") from None


def _recording(block: RecordedBlock) -> list[dict[str, Any]]:
    """The stream diagnostics of each showing of ``block`` (the showings' ``recording`` attribute), if any."""
    if block.source is None:
        return []
    try:
        with h5py.File(block.source, "r") as f:
            showings = f["blocks"][block_name(block.index)].get("showings", {})
            found = [showings[name].attrs.get("recording") for name in sorted(showings)]
    except READ_ERRORS:
        return []  # the health panel goes without; the scores were read and checked already
    parsed = []
    for text in found:
        try:
            parsed.append(json.loads(text) if text is not None else {})
        except (TypeError, ValueError):
            parsed.append({})
    return parsed
