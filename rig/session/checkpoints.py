"""Restoring an optimizer from a session's checkpoints, falling back past damaged ones.

Checkpoints are a shortcut, not the record: the recorded scores replay the
optimizer exactly from block 0. So a checkpoint that fails its sha256 or does
not restore costs time, not the session: the previous one is tried, and then
the start; each one passed over is named in a warning.
"""
from __future__ import annotations

from typing import Protocol

from rig.session.reader import RecordedSession

__all__ = ["Checkpointed", "restore_latest"]

#: What a damaged or crafted checkpoint makes reading or restoring it raise (SessionFileError is a ValueError).
_RESTORE_ERRORS = (KeyError, ValueError, TypeError, IndexError, OverflowError)


class Checkpointed(Protocol):
    """A protocol whose optimizers can be checkpointed and restored (protocols.evolution.Evolution)."""

    def checkpoint(self) -> dict[str, bytes]: ...

    def restore(self, checkpoint: dict[str, bytes], blocks_done: int) -> None: ...


def restore_latest(protocol: Checkpointed, session: RecordedSession, done: int) -> tuple[int | None, list[str]]:
    """Restore ``protocol`` (freshly built) from the latest checkpoint taken before block ``done`` that restores.

    Returns the block the restored checkpoint was taken after (None: nothing
    restored, replay from block 0) and one warning per checkpoint passed over.
    A failed restore is undone (the fresh state is put back) before the next try.
    """
    fresh = protocol.checkpoint()
    warnings = []
    candidates = sorted((i for i in session.checkpoints if i < done), reverse=True)
    for number, index in enumerate(candidates):
        try:
            protocol.restore(session.checkpoint(index), index + 1)
            return index, warnings
        except _RESTORE_ERRORS as exc:
            protocol.restore(fresh, 0)
            instead = f"the checkpoint after block {candidates[number + 1]}" if number + 1 < len(candidates) \
                else "block 0 (the recorded scores replay the optimizer exactly)"
            warnings.append(f"{session.path}: the optimizer checkpoint after block {index} cannot be restored "
                            f"({exc}); replaying from {instead} instead")
    return None, warnings
