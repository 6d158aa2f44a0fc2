"""Salvage: copy every intact block of a damaged session, up to the damage, into a new session file.

A damaged or missing block makes :func:`~rig.session.read_session` refuse the
whole session (nothing is guessed). :func:`salvage_session` reads it block by
block instead, keeps blocks 0..k-1 before the first damaged block k (the
optimizer's record must run without a gap to replay), with the checkpoints
among them that still verify, and writes them to a new file with status
``salvaged``, which ``rig run --resume`` continues. The damaged file is only
read; blocks after the damage are not copied, and stay where they are.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from rig.session.layout import SessionFileError, block_name, claim_path, journal_dir, utc_now
from rig.session.reader import scan_session

__all__ = ["Salvaged", "salvage_session"]

SALVAGED = "salvaged"


@dataclass
class Salvaged:
    """What :func:`salvage_session` kept and what it could not."""

    source: Path
    out: Path
    kept: list[int]
    #: Why blocks were left out: one line per damaged or missing block.
    damage: list[str] = field(default_factory=list)
    #: Intact blocks that follow the damage (not copied: the record would have a gap).
    after_damage: list[int] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    #: Checkpoints among the kept blocks that do not verify (resuming replays past them).
    bad_checkpoints: list[str] = field(default_factory=list)

    @property
    def lost(self) -> bool:
        return bool(self.damage or self.after_damage or self.bad_checkpoints)


def salvage_session(source: str | Path, out: str | Path) -> Salvaged:
    """Copy ``source``'s intact blocks before its first damaged one into the new session file ``out``.

    Raises:
        SessionFileError: ``out`` is ``source`` or exists already, or the
            session's header (root attributes, references) is itself damaged.
    """
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise SessionFileError(f"{out}: salvage writes a new file; it never writes over the session it reads")
    if os.path.lexists(out) or os.path.lexists(journal_dir(out)):
        raise SessionFileError(f"{out}: already exists (or its journal does); choose another OUT (nothing was overwritten)")
    scan = scan_session(source)
    session = scan.session
    cut = scan.first_damaged
    kept = [b for b in session.blocks if cut is None or b.index < cut]
    result = Salvaged(source, out, [b.index for b in kept], [d.message for d in scan.damage],
                      [b.index for b in session.blocks if cut is not None and b.index > cut])
    for index in sorted(i for i in session.checkpoints if cut is None or i < cut):
        try:
            session.checkpoint(index)
            result.checkpoints.append(index)
        except SessionFileError as exc:
            result.bad_checkpoints.append(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.creating")
    try:
        _write(tmp, source, session, kept, result)
        claim_path(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return result


def _write(tmp: Path, source: Path, session, kept, result: Salvaged) -> None:
    """The salvaged session: the source's header, its kept blocks and checkpoints, and what was lost."""
    with h5py.File(tmp, "w") as f:
        for key, value in session.attrs.items():
            f.attrs[key] = value
        f.attrs["status"] = SALVAGED
        f.attrs["salvaged"] = json.dumps({
            "utc": utc_now(), "from": str(source), "status_found": session.attrs.get("status"),
            "blocks_kept": len(kept), "damage": result.damage, "after_damage": result.after_damage,
            "bad_checkpoints": result.bad_checkpoints})
        with h5py.File(source, "r") as master:
            master.copy(master["references"], f, name="references")
        f.create_group("blocks")
        f.create_group("checkpoints")
        for block in kept:
            _copy(block.source or source, "blocks", block.index, f)
        for index in result.checkpoints:
            _copy(session.checkpoints[index], "checkpoints", index, f)


def _copy(path: Path, group: str, index: int, into: h5py.File) -> None:
    with h5py.File(path, "r") as f:
        f.copy(f[group][block_name(index)], into[group], name=block_name(index))
