"""Replay and resume: run the same controller over a recorded session.

Replay is a wrapper, not a second loop (STYLE practice 2): the
:class:`~rig.loop.controller.Controller` runs the recorded protocol with a
:class:`~rig.display.recorded.RecordedDisplay` and a :class:`~rig.sources.replay.ReplaySource` that answer
each block from the file, after checking that the optimizer proposed exactly
the recorded codes. Codes follow from the thread seeds and the recorded
scores alone, so:

- ``rig replay FILE.h5`` re-runs a session from the file (no model, no images,
  no generator weights) and says where the codes diverge, if they do;
- ``rig run --resume FILE.h5`` restores the optimizer from the last checkpoint
  (data only, never a pickle: see protocols/optimizers/object_graph.py), replays the blocks
  recorded after it through the same wrapper, then carries on live. A screening
  resumes through the same path: it has no checkpoints, so every recorded block is
  replayed (its seeded order checked block by block) to give back its responses.
"""
from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from protocols.base import Block, Protocol, extendable_generations
from protocols.screening import Screening
from protocols.spec import ProtocolSpec
from rig.display.recorded import RecordedDisplay
from rig.loop.controller import Controller
from rig.loop.rebuild import (check_stream_allowed, is_loopback, rebuild, recorded_generations, recorded_spec,
                              recorded_thread_channels, recorded_thread_seeds)
from rig.loop.run_record import RunRecord
from rig.sources.replay import ReplayDivergence, ReplaySource
from rig.session import RecordedSession, SessionFileError, SessionWriter, package_versions, read_session
from rig.session.checkpoints import restore_latest
from rig.session.sink import SessionSink

if TYPE_CHECKING:
    from rig.loop.assemble import Assembly

__all__ = ["ReplayResult", "Resumed", "check_stream_allowed", "is_loopback", "rebuild", "recorded_generations",
           "recorded_spec", "recorded_thread_channels", "recorded_thread_seeds", "replay_session", "resume_session"]

#: Never due: a replay has no use for new optimizer checkpoints (they can be ~270 MB each).
_NO_CHECKPOINTS = 2**62


class _DiscardSession(SessionSink):
    """The session sink of a replay: nothing is ever written, least of all into the file being replayed."""

    def __init__(self) -> None:
        self.blocks = 0
        self.status = ""

    def append_block(self, block: Block, *args: Any, **kwargs: Any) -> None:
        self.blocks += 1

    def finish(self, status: str = "complete") -> None:
        self.status = status


def _contiguous(session: RecordedSession) -> None:
    indices = [b.index for b in session.blocks]
    if indices != list(range(len(indices))):
        missing = sorted(set(range(max(indices, default=-1) + 1)) - set(indices))
        raise SessionFileError(f"{session.path}: blocks {missing} are missing; blocks must run 0, 1, 2, ...")


@dataclass
class ReplayResult:
    """What ``rig replay`` found."""

    path: Path
    blocks_recorded: int
    blocks_checked: int
    divergence: str | None = None
    #: Blocks whose content does not match the SHA-256 written with them.
    altered_blocks: list[int] = field(default_factory=list)
    #: The protocol kind replayed ("evolution" or "screening").
    kind: str = "evolution"

    @property
    def ok(self) -> bool:
        return self.divergence is None and not self.altered_blocks


def replay_session(path: str | Path) -> ReplayResult:
    """Re-run a recorded session from the file alone: an evolution's codes are checked bit for bit, a
    screening's stimuli block by block in its seeded order, and, with behaviour, every showing's trials
    through the trial machine from the recorded frames and gaze."""
    session = read_session(path, verify=False)  # altered blocks are reported, not refused, so we can say where
    rebuilt = rebuild(session)
    _contiguous(session)
    protocol = rebuilt.replay_protocol()
    sink = _DiscardSession()
    result = ReplayResult(Path(path), len(session.blocks), 0,
                          altered_blocks=[b.index for b in session.blocks if b.digest_ok is False],
                          kind=rebuilt.spec.kind)
    try:  # the recorded blocks only: an unfinished screening's protocol shows more
        _step_through(protocol, session, 0, len(session.blocks), sink)
    except ReplayDivergence as exc:
        result.divergence = str(exc)
    result.blocks_checked = sink.blocks
    if result.divergence is None:
        from rig.behavior.check import check_behavior  # sessions with trials: they re-run exactly too

        result.divergence = check_behavior(session)
    return result


@dataclass
class Resumed:
    """A killed session brought back to where it stopped, ready for the controller to carry on."""

    spec: ProtocolSpec
    record: RunRecord
    parts: Assembly
    session: SessionWriter
    blocks_done: int
    restored_after: int | None
    replayed: int


def resume_session(path: str | Path, device: torch.device, trust_generator: str | None = None,
                   confirmed_neuron: Sequence[str] | None = None, allow_remote_stream: bool = False) -> Resumed:
    """Rebuild a killed session's parts, restore its protocol and replay the recorded blocks after that.

    Evolutions and screenings alike: an evolution's optimizers restore from their
    latest checkpoint, a screening replays every recorded block (:func:`_restore`).
    Everything is checked, and the recorded blocks are replayed, before the
    file is touched; then the writer merges the journal and records the resume.
    A ``kind = "module"`` generator in the file runs only when ``trust_generator``
    names the same factory (the file is not the user's own configuration), and a
    recording stream on another machine is connected to only with
    ``allow_remote_stream`` or a ``confirmed_neuron`` that repeats the recorded one.
    """
    path = Path(path)
    session = read_session(path)
    if session.attrs.get("status") == "complete":
        raise SessionFileError(f"{path}: the session is complete; there is nothing to resume")
    rebuilt = rebuild(session)
    rebuilt.require_trusted(trust_generator)
    _contiguous(session)
    parts = rebuilt.assemble(device, trust_generator, confirmed_neuron, allow_remote_stream)
    protocol = parts.protocol

    _extend(protocol, session)
    done = len(session.blocks)
    restored_after = _restore(protocol, session, done)
    start = 0 if restored_after is None else restored_after + 1
    _fast_forward(protocol, session, start, done)
    writer = SessionWriter.reopen(path, note={"host": socket.gethostname(), "versions": package_versions(),
                                              "device": str(device), "restored_after": restored_after,
                                              "replayed": done - start, "display": parts.display.describe()})
    return Resumed(rebuilt.spec, rebuilt.record, parts, writer, done, restored_after, done - start)


def _extend(protocol: Protocol, session: RecordedSession) -> None:
    """Add the operator's extensions, kept in the file's controls, to the generations the run record planned
    (before the recorded blocks are replayed: blocks past the planned count are recorded ones too)."""
    extra = session.extended_by
    if extra == 0:
        return
    if extendable_generations(protocol) is None:  # a screening shows a fixed image set: no extension applies
        raise SessionFileError(f"{session.path}: records an extension by {extra} generations, but a "
                               f"{protocol.name!r} {type(protocol).__name__} has no generation count to extend")
    protocol.generations += extra


def _restore(protocol: Protocol, session: RecordedSession, done: int) -> int | None:
    """Bring a freshly built protocol to its latest restorable state before block ``done``; the block that
    state was taken after (None: the start, every recorded block is to be replayed).

    An evolution restores its optimizers from the latest checkpoint that restores,
    passing over damaged ones with a warning. A screening takes no checkpoints
    (``Screening.checkpoint`` is empty, so its files hold none): its state is the
    responses of the blocks it showed, which are the recorded blocks themselves,
    so it always starts again from block 0, and a checkpoint found in its file
    (which no screening writes) is not read.
    """
    if isinstance(protocol, Screening):
        return None
    restored_after, warnings = restore_latest(protocol, session, done)
    for warning in warnings:
        print(f"rig run: warning: {warning}", file=sys.stderr)
    return restored_after


def _step_through(protocol: Protocol, session: RecordedSession, start: int, done: int,
                  sink: SessionSink | None = None) -> None:
    """Run blocks ``start``..``done - 1`` through the controller from the file: the protocol proposes each one
    (an evolution its codes, a screening its seeded order) and observes the recorded responses.

    Raises:
        ReplayDivergence: a block the protocol proposes is not the one the file records, or the file records
            more blocks than the protocol shows (naming the block).
    """
    if done <= start:  # nothing to step through (a session killed before its first block): no recorded parts
        return
    controller = Controller(protocol, RecordedDisplay(session), ReplaySource(session), sink or _DiscardSession(),
                            checkpoint_every=_NO_CHECKPOINTS, max_repeats=0)
    for index in range(start, done):
        if protocol.finished:  # a file with more blocks than its protocol shows
            total = getattr(protocol, "generations", index)
            raise ReplayDivergence(f"block {index} is recorded, but the protocol shows only {total} blocks")
        controller.step()


def _fast_forward(protocol: Protocol, session: RecordedSession, start: int, done: int) -> None:
    """:func:`_step_through` for a resume: a divergence is refused, naming the file and the block."""
    try:
        _step_through(protocol, session, start, done)
    except ReplayDivergence as exc:
        raise SessionFileError(f"{session.path}: cannot resume: the recorded blocks do not replay: {exc}") from None
