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
  recorded after it through the same wrapper, then carries on live.
"""
from __future__ import annotations

import hashlib
import ipaddress
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

import torch

from protocols.base import Block
from protocols.evolution import Evolution
from protocols.generators import require_trusted_factory
from protocols.generators.base import Generator
from protocols.optimizers import build_optimizer
from protocols.spec import MAX_GENERATIONS, ProtocolError, ProtocolSpec, parse_protocol
from rig.display.recorded import RecordedDisplay
from rig.loop.controller import Controller
from rig.sources.replay import ReplayDivergence, ReplaySource
from rig.session import RecordedSession, SessionFileError, SessionWriter, package_versions, read_session
from rig.session.checkpoints import restore_latest

#: Never due: a replay has no use for new optimizer checkpoints (they can be ~270 MB each).
_NO_CHECKPOINTS = 2**62


class _NoImages(Generator):
    """A generator of 1×1 black images: a replay checks codes, and its responses come from the file."""

    def __init__(self, code_dim: int) -> None:
        super().__init__()
        self.code_dim = int(code_dim)
        self.image_size = 1

    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.zeros(codes.shape[0], 3, 1, 1)


class _DiscardSession:
    """The session sink of a replay: nothing is ever written, least of all into the file being replayed."""

    def __init__(self) -> None:
        self.blocks = 0
        self.status = ""

    def append_block(self, block: Block, *args: Any, **kwargs: Any) -> None:
        self.blocks += 1

    def finish(self, status: str = "complete") -> None:
        self.status = status


def recorded_spec(session: RecordedSession) -> ProtocolSpec:
    """The protocol file as run, re-validated by today's rules; a clear error if it no longer validates."""
    text = session.attrs.get("protocol_toml")
    if not isinstance(text, str):
        raise SessionFileError(f"{session.path}: no protocol_toml attribute; not a complete session header")
    if session.attrs.get("protocol_sha256") not in (None, hashlib.sha256(text.encode()).hexdigest()):
        raise SessionFileError(f"{session.path}: the recorded protocol text does not match its protocol_sha256 "
                               f"(the file was altered)")
    try:
        return parse_protocol(text, session.attrs.get("protocol_path") or session.path)
    except ProtocolError as exc:
        raise SessionFileError(f"{session.path}: the protocol recorded in this session no longer validates "
                               f"with this rig: {exc}") from None


def _provenance(session: RecordedSession, key: str) -> Any:
    if key not in session.provenance:
        raise SessionFileError(f"{session.path}: provenance has no {key!r}; cannot rebuild the session")
    return session.provenance[key]


def recorded_thread_seeds(session: RecordedSession) -> list[int]:
    """The provenance's ``thread_seeds``: a non-empty list of integer seeds in [0, 2**32)."""
    seeds = _provenance(session, "thread_seeds")
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds):
        raise SessionFileError(f"{session.path}: provenance thread_seeds must be a non-empty list of integers in "
                               f"[0, 2**32), got {_short(seeds)}")
    return seeds


def recorded_thread_channels(session: RecordedSession, threads: int, channels: int) -> list[int]:
    """The provenance's ``thread_channels``: one channel index in 0..channels-1 per thread."""
    found = _provenance(session, "thread_channels")
    if not isinstance(found, list) or len(found) != threads or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < channels for c in found):
        raise SessionFileError(f"{session.path}: provenance thread_channels must list one channel index in "
                               f"0..{channels - 1} for each of the {threads} thread(s), got {_short(found)}")
    return found


def recorded_generations(session: RecordedSession) -> int:
    """The provenance's ``generations``: an integer in 1..MAX_GENERATIONS."""
    generations = _provenance(session, "generations")
    if isinstance(generations, bool) or not isinstance(generations, int) or not 1 <= generations <= MAX_GENERATIONS:
        raise SessionFileError(f"{session.path}: provenance generations must be an integer in 1..{MAX_GENERATIONS}, "
                               f"got {_short(generations)}")
    return generations


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _contiguous(session: RecordedSession) -> None:
    indices = [b.index for b in session.blocks]
    if indices != list(range(len(indices))):
        missing = sorted(set(range(max(indices, default=-1) + 1)) - set(indices))
        raise SessionFileError(f"{session.path}: blocks {missing} are missing; blocks must run 0, 1, 2, ...")


def replay_protocol(session: RecordedSession, spec: ProtocolSpec) -> Evolution:
    """The recorded Evolution with its recorded seeds, over a generator that renders nothing."""
    if spec.kind != "evolution":
        raise SessionFileError(f"{session.path}: a {spec.kind!r} session has no optimizer to replay")
    if not session.blocks:
        raise SessionFileError(f"{session.path}: no complete block recorded; nothing to replay")
    seeds = recorded_thread_seeds(session)
    channels = recorded_thread_channels(session, len(seeds), len(session.blocks[0].channel_names))
    dim = session.blocks[0].codes.shape[-1]
    try:
        optimizers = [build_optimizer(dim=dim, seed=s, **spec.optimizer) for s in seeds]
    except (ValueError, TypeError) as exc:
        raise SessionFileError(f"{session.path}: the recorded [optimizer] no longer validates with this rig: {exc}") from None
    references = torch.zeros(len(session.reference_ids), 3, 1, 1)
    return Evolution(generator=_NoImages(dim), optimizers=optimizers, channels=channels,
                     generations=len(session.blocks), references=references,
                     reference_ids=list(session.reference_ids), seed=int(session.attrs["seed"]), name=spec.name)


@dataclass
class ReplayResult:
    """What ``rig replay`` found."""

    path: Path
    blocks_recorded: int
    blocks_checked: int
    divergence: str | None = None
    #: Blocks whose content does not match the SHA-256 written with them.
    altered_blocks: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.divergence is None and not self.altered_blocks


def replay_session(path: str | Path) -> ReplayResult:
    """Re-run a recorded evolution from the file alone and check every block's codes bit for bit."""
    session = read_session(path, verify=False)  # altered blocks are reported, not refused, so we can say where
    spec = recorded_spec(session)
    _contiguous(session)
    protocol = replay_protocol(session, spec)
    sink = _DiscardSession()
    controller = Controller(protocol, RecordedDisplay(session), ReplaySource(session), sink,
                            checkpoint_every=_NO_CHECKPOINTS, max_repeats=0)
    result = ReplayResult(Path(path), len(session.blocks), 0,
                          altered_blocks=[b.index for b in session.blocks if b.digest_ok is False])
    try:
        controller.run()
    except ReplayDivergence as exc:
        result.divergence = str(exc)
    result.blocks_checked = sink.blocks
    return result


@dataclass
class Resumed:
    """A killed session brought back to where it stopped, ready for the controller to carry on."""

    spec: ProtocolSpec
    neuron: Any
    parts: Any
    session: SessionWriter
    blocks_done: int
    restored_after: int | None
    replayed: int


def recorded_run_choices(session: RecordedSession) -> dict[str, Any]:
    """The neuron units, weights and display a session was run with (``rig run`` records them)."""
    choices = session.provenance.get("resume_with")
    if isinstance(choices, dict) and "units" in choices:
        return choices
    kwargs = (session.provenance.get("neuron", {}).get("neuron", {}) or {}).get("kwargs", {})
    if "units" not in kwargs:
        raise SessionFileError(f"{session.path}: provenance does not say which neuron was run; cannot resume")
    return {"units": kwargs["units"], "weights": kwargs.get("weights"), "display": "headless"}


def _recorded_units(session: RecordedSession, choices: dict[str, Any]) -> list[str]:
    units = choices["units"]
    if not isinstance(units, list) or not units or not all(isinstance(u, str) for u in units):
        raise SessionFileError(f"{session.path}: provenance resume_with units must be a non-empty list of unit "
                               f"specs, got {_short(units)}")
    return units


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: ``localhost`` or a loopback address (names are not resolved)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_stream_allowed(path: Path, units: Sequence[str], confirmed: Sequence[str] | None,
                         allow_remote: bool) -> None:
    """A session file may point a resume at a recording stream on another machine only when the user agrees.

    ``confirmed`` is ``--neuron`` as given with ``--resume``: it must repeat the
    recorded neuron, and then counts as agreement; so does ``allow_remote``.
    """
    if confirmed and list(confirmed) != list(units):
        raise SessionFileError(f"{path}: --neuron {list(confirmed)} with --resume must repeat the recorded neuron "
                               f"{list(units)}; a resume cannot change it")
    for unit in units:
        if not unit.startswith("zmq://"):
            continue
        host = urlsplit(unit).hostname or ""
        if not is_loopback(host) and not allow_remote and not confirmed:
            raise SessionFileError(f"{path} asks to connect to the recording stream {unit!r} on host {host!r}, "
                                   f"not this machine; add --allow-remote-stream (or repeat --neuron {unit}) "
                                   f"if you mean to connect there")


def resume_session(path: str | Path, device: torch.device, trust_generator: str | None = None,
                   confirmed_neuron: Sequence[str] | None = None, allow_remote_stream: bool = False) -> Resumed:
    """Rebuild a killed session's parts, restore the optimizer and replay the recorded blocks after it.

    Everything is checked, and the recorded blocks are replayed, before the
    file is touched; then the writer merges the journal and records the resume.
    A ``kind = "module"`` generator in the file runs only when ``trust_generator``
    names the same factory (the file is not the user's own configuration), and a
    recording stream on another machine is connected to only with
    ``allow_remote_stream`` or a ``confirmed_neuron`` that repeats the recorded one.
    """
    from rig.loop.assemble import assemble, resolve_neuron  # builds models: only when resuming

    path = Path(path)
    session = read_session(path)
    if session.attrs.get("status") == "complete":
        raise SessionFileError(f"{path}: the session is complete; there is nothing to resume")
    spec = recorded_spec(session)
    if spec.kind != "evolution":
        raise SessionFileError(f"{path}: only evolution sessions can be resumed, this one is {spec.kind!r}")
    require_trusted_factory(spec.generator, trust_generator, str(path))
    _contiguous(session)
    choices = recorded_run_choices(session)
    units = _recorded_units(session, choices)
    check_stream_allowed(path, units, confirmed_neuron, allow_remote_stream)
    recorded_seeds = recorded_thread_seeds(session)
    weights = choices.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise SessionFileError(f"{path}: provenance resume_with weights must be a string, got {_short(weights)}")
    neuron = resolve_neuron(spec, units, weights)
    parts = assemble(spec, neuron, device=device, seed=int(session.attrs["seed"]),
                     generations=recorded_generations(session),
                     display_kind=choices.get("display", "headless"))
    protocol = parts.protocol
    if list(protocol.reference_ids) != list(session.reference_ids):
        raise SessionFileError(f"{path}: the reference images found now differ from the recorded ones "
                               f"({protocol.reference_ids[:3]}... vs {session.reference_ids[:3]}...)")
    if [int(s) for s in parts.provenance["thread_seeds"]] != recorded_seeds:
        raise SessionFileError(f"{path}: thread seeds rebuilt from the recorded seed differ from the recorded ones")

    done = len(session.blocks)
    restored_after, warnings = restore_latest(protocol, session, done)  # past damaged checkpoints, saying so
    for warning in warnings:
        print(f"rig run: warning: {warning}", file=sys.stderr)
    start = 0 if restored_after is None else restored_after + 1
    try:
        if done > start:
            fast_forward = Controller(protocol, RecordedDisplay(session), ReplaySource(session),
                                      _DiscardSession(), checkpoint_every=_NO_CHECKPOINTS, max_repeats=0)
            for _ in range(start, done):
                fast_forward.step()
    except ReplayDivergence as exc:
        raise SessionFileError(f"{path}: cannot resume: the recorded blocks do not replay: {exc}") from None
    writer = SessionWriter.reopen(path, note={"host": socket.gethostname(), "versions": package_versions(),
                                              "device": str(device), "restored_after": restored_after,
                                              "replayed": done - start, "display": parts.display.describe()})
    return Resumed(spec, neuron, parts, writer, done, restored_after, done - start)
