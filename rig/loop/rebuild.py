"""``rebuild(session)``: a recorded session's parts, rebuilt from its protocol text and its run record.

One way back from a file to what ran, for resume and replay (rig/loop/replay.py),
the report and analysis images (rig/analysis/), the NWB export's ``--images``
and sweep sessions. The session file is not the user's own configuration, so:

- a ``kind = "module"`` generator named in it is built only when ``trust_generator``
  names the same factory (:meth:`Rebuilt.generator`, :meth:`Rebuilt.assemble`);
- a recording stream on another machine named anywhere in it is connected to only
  with ``allow_remote_stream`` or a ``confirmed_neuron`` that repeats the recorded one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlsplit

import numpy as np
import torch

from protocols.evolution import Evolution
from protocols.generators import require_trusted_factory
from protocols.generators.base import Generator
from protocols.generators.fourier import as_recorded
from protocols.optimizers import build_optimizer
from protocols.screening import Screening
from protocols.spec import MAX_GENERATIONS, ProtocolError, ProtocolSpec, parse_protocol
from rig.loop.run_record import ATTRIBUTE, RunRecord, RunRecordError, resolved_generator
from rig.session import RecordedSession, SessionFileError

if TYPE_CHECKING:
    from rig.loop.assemble import Assembly


#: What a showing must hold to recompute the drift offset (:meth:`Rebuilt.drift_offset`).
_DRIFT_DATASETS = ("gaze_times", "gaze_x", "gaze_y", "gaze_valid", "trial_acquired", "trial_first_onset",
                   "trial_break_time")


class NoImages(Generator):
    """A generator of 1×1 black images: a replay checks codes, and its responses come from the file."""

    def __init__(self, code_dim: int) -> None:
        super().__init__()
        self.code_dim = int(code_dim)
        self.image_size = 1

    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.zeros(codes.shape[0], 3, 1, 1)


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


def _legacy_choices(session: RecordedSession) -> dict[str, Any]:
    """Units, weights and display of a session written before the run record (``resume_with``, else the neuron)."""
    choices = session.provenance.get("resume_with")
    if isinstance(choices, dict) and "units" in choices:
        return choices
    neuron = session.provenance.get("neuron", {})
    kwargs = ((neuron.get("neuron", {}) if isinstance(neuron, dict) else {}) or {}).get("kwargs", {})
    if not isinstance(kwargs, dict) or "units" not in kwargs:
        return {"units": [], "weights": None, "display": "headless"}
    return {"units": kwargs["units"], "weights": kwargs.get("weights"), "display": "headless"}


def legacy_record(session: RecordedSession, spec: ProtocolSpec) -> RunRecord:
    """The run record of a session written before records existed, from what its provenance has."""
    choices = _legacy_choices(session)
    units = choices["units"]
    if not isinstance(units, list) or not all(isinstance(u, str) for u in units) or (
            "resume_with" in session.provenance and not units):
        raise SessionFileError(f"{session.path}: provenance resume_with units must be a non-empty list of unit "
                               f"specs, got {_short(units)}")
    weights = choices.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise SessionFileError(f"{session.path}: provenance resume_with weights must be a string, got {_short(weights)}")
    seeds = session.provenance.get("thread_seeds")
    evolution = spec.kind == "evolution"
    # A sweep changed threads without saying so: the recorded thread seeds say how many there were.
    threads = (len(seeds) if isinstance(seeds, list) and seeds else spec.threads) if evolution else 0
    generations = recorded_generations(session) if "generations" in session.provenance else spec.generations
    neuron = spec.neuron
    return RunRecord(kind=spec.kind, protocol_path=str(spec.path), units=tuple(units), weights=weights,
                     seed=int(session.attrs.get("seed", spec.seed)), generations=generations, threads=threads,
                     device=str(session.provenance.get("device", "cpu")),
                     display=str(choices.get("display", "headless")),
                     max_batch=neuron.max_batch if neuron is not None else None,
                     response=neuron.response if neuron is not None else None,
                     generator=resolved_generator(spec) if evolution else {})


def session_record(session: RecordedSession, spec: ProtocolSpec) -> RunRecord:
    """The session's run record: stored once (``run_record``), else read from an older file's provenance."""
    if ATTRIBUTE not in session.attrs:
        return legacy_record(session, spec)
    try:
        return RunRecord.from_json(session.attrs[ATTRIBUTE], str(session.path))
    except RunRecordError as exc:
        raise SessionFileError(str(exc)) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: ``localhost`` or a loopback address (names are not resolved)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_stream_allowed(path: Path, units: Sequence[str], confirmed: Sequence[str] | None,
                         allow_remote: bool, named: Sequence[str] = ()) -> None:
    """A session file may point a resume at a recording stream on another machine only when the user agrees.

    ``confirmed`` is ``--neuron`` as given with ``--resume``: it must repeat the
    recorded neuron, and then counts as agreement; so does ``allow_remote``.
    ``named`` are further addresses the file names (``--sim-link``): each is held to the same rule.
    """
    if confirmed and list(confirmed) != list(units):
        raise SessionFileError(f"{path}: --neuron {list(confirmed)} with --resume must repeat the recorded neuron "
                               f"{list(units)}; a resume cannot change it")
    for unit in [*named, *units]:
        if not unit.startswith(("zmq://", "tcp://")):
            continue
        host = urlsplit(unit).hostname or ""
        if not is_loopback(host) and not allow_remote and not confirmed:
            raise SessionFileError(f"{path} asks to connect to the recording stream {unit!r} on host {host!r}, "
                                   f"not this machine; add --allow-remote-stream (or repeat --neuron {unit}) "
                                   f"if you mean to connect there")


@dataclass(frozen=True)
class Rebuilt:
    """A recorded session with the protocol as it ran (threads and resolved generator from its record)."""

    session: RecordedSession
    spec: ProtocolSpec
    record: RunRecord

    @property
    def path(self) -> Path:
        return self.session.path

    def generator(self, trust_generator: str | None = None, weights: str | None = None) -> Generator:
        """The session's generator (``weights`` overrides a GAN weight path); a module only when trusted."""
        if self.spec.kind != "evolution":
            raise ValueError(f"{self.path}: no generator recorded (a {self.spec.kind} session has no prototypes)")
        self.require_trusted(trust_generator)
        from protocols.generators import build_generator

        options = dict(self.spec.generator)
        if weights is not None:
            options["weights"] = weights
        try:
            return build_generator(**options).eval()
        except (ValueError, TypeError, OSError) as exc:
            raise ValueError(f"{self.path}: cannot rebuild its generator {options}: {exc}") from None

    def require_trusted(self, trust_generator: str | None) -> None:
        """Refuse a ``kind = "module"`` generator unless ``trust_generator`` names its factory."""
        require_trusted_factory(self.spec.generator, trust_generator, str(self.path))

    def replay_protocol(self) -> Evolution | Screening:
        """The recorded protocol, rendering nothing: an Evolution with its recorded seeds over a generator
        that renders nothing, or a Screening of the recorded image ids (whose seeded order a replay checks)."""
        session, spec = self.session, self.spec
        if spec.kind not in ("evolution", "screening"):
            raise SessionFileError(f"{session.path}: a {spec.kind!r} session has nothing to replay")
        if not session.blocks:
            raise SessionFileError(f"{session.path}: no complete block recorded; nothing to replay")
        if spec.kind == "screening":
            return self._replay_screening()
        seeds = self.thread_seeds()
        channels = recorded_thread_channels(session, len(seeds), len(session.blocks[0].channel_names))
        dim = session.blocks[0].codes.shape[-1]
        try:
            optimizers = [build_optimizer(dim=dim, seed=s, **spec.optimizer) for s in seeds]
        except (ValueError, TypeError) as exc:
            raise SessionFileError(f"{session.path}: the recorded [optimizer] no longer validates with this rig: "
                                   f"{exc}") from None
        references = torch.zeros(len(session.reference_ids), 3, 1, 1)
        return Evolution(generator=NoImages(dim), optimizers=optimizers, channels=channels,
                         generations=len(session.blocks), references=references,
                         reference_ids=list(session.reference_ids), seed=self.record.seed, name=spec.name,
                         repeat_fraction=spec.repeat_fraction)

    def _replay_screening(self) -> Screening:
        """The recorded screening over its recorded image ids (``/references/ids``), with blank images."""
        ids = list(self.session.reference_ids)
        try:
            return Screening(images=torch.zeros(len(ids), 3, 1, 1), image_ids=ids, seed=self.record.seed,
                             block_size=self.spec.screening.block_size, repeats=self.spec.screening.repeats,
                             name=self.spec.name)
        except ValueError as exc:
            raise SessionFileError(f"{self.path}: its recorded image ids (/references/ids) do not make a "
                                   f"screening: {exc}") from None

    def thread_seeds(self) -> list[int]:
        """The recorded thread seeds, one per thread of the record."""
        seeds = recorded_thread_seeds(self.session)
        if len(seeds) != self.record.threads:
            raise SessionFileError(f"{self.path}: {len(seeds)} thread seeds recorded for the "
                                   f"{self.record.threads} thread(s) of its run record (the file was altered)")
        return seeds

    def assemble(self, device: torch.device | str, trust_generator: str | None = None,
                 confirmed_neuron: Sequence[str] | None = None, allow_remote_stream: bool = False) -> "Assembly":
        """The live parts again, as the record says they were built (a resume picks its own device)."""
        from rig.loop.assemble import assemble, resolve_neuron  # builds models: only when asked

        record = self.record
        self.require_trusted(trust_generator)
        if not record.units:
            raise SessionFileError(f"{self.path}: provenance does not say which neuron was run; cannot resume")
        check_stream_allowed(self.path, record.units, confirmed_neuron, allow_remote_stream,
                             [record.sim_link] if record.sim_link else [])
        # How units fire and how many images a pass takes come from the protocol text, validated again by
        # today's rules (the record keeps them as they were resolved, for readers of the file).
        neuron = resolve_neuron(self.spec, record.units, record.weights)
        # The forward pass runs as recorded (a bf16 session resumes in bf16; older records: fp32 eager).
        neuron = dataclasses.replace(neuron, precision=record.precision, runtime=record.runtime)
        parts = assemble(self.spec, neuron, device=device, seed=record.seed, generations=record.generations,
                         display_kind=record.display, sim_link=record.sim_link, pace=record.pace_s,
                         gaze=dict(record.gaze) if record.gaze else None, first_trial=self.trials_done(),
                         reward=dict(record.reward) if record.reward else None,
                         clock_start=self.last_flip(), gaze_offset=self.drift_offset())
        if self.spec.kind == "screening":  # no references or threads: its images must be the very ones recorded
            from rig.loop.session_images import check_taken_again

            check_taken_again(self.session, parts.protocol.image_ids, parts.provenance["screening"].get("taken"))
            return parts
        if list(parts.protocol.reference_ids) != list(self.session.reference_ids):
            raise SessionFileError(f"{self.path}: the reference images found now differ from the recorded ones "
                                   f"({parts.protocol.reference_ids[:3]}... vs {self.session.reference_ids[:3]}...)")
        if [int(s) for s in parts.provenance.get("thread_seeds", [])] != self.thread_seeds():
            raise SessionFileError(f"{self.path}: thread seeds rebuilt from the recorded seed differ from the "
                                   f"recorded ones")
        return parts

    def _behaviors(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Every recorded showing's behaviour datasets (None: none recorded), in order, with where it is."""
        from rig.behavior.log import read_behavior

        return [(f"block {block.index} showing {number}", read_behavior(showing))
                for block in self.session.blocks for number, showing in enumerate(block.showings)]

    def last_flip(self) -> float:
        """The latest frame time of the session's trials on a simulated clock (0 without, or on a real clock)."""
        if self.session.provenance.get("display", {}).get("clock") != "simulated":
            return 0.0
        times = [float(b["frame_times"].max()) for _, b in self._behaviors() if b is not None and len(b["frame_times"])]
        return max(times, default=0.0)

    def trials_done(self) -> int:
        """How many trials the session's blocks ran (a resumed session numbers its trials on from there)."""
        numbers = [int(b["trial_number"].max()) + 1 for _, b in self._behaviors()
                   if b is not None and len(b["trial_number"])]
        return max(numbers, default=0)

    def drift_fraction(self) -> float:
        """The recorded ``[gaze] drift_correction`` (0: off, or no ``[behavior]``); the source's options check it
        when it is built again, so only a positive number counts here."""
        if self.spec.behavior is None:
            return 0.0
        table = dict(self.record.gaze) if self.record.gaze else dict(self.spec.gaze or {})
        fraction = table.get("drift_correction", 0.0)
        return float(fraction) if isinstance(fraction, (int, float)) and not isinstance(fraction, bool) else 0.0

    def drift_offset(self) -> tuple[float, float] | None:
        """The drift offset the gaze source had after the session's recorded trials, recomputed from their gaze
        and trial tables (:func:`~rig.behavior.gaze.raw.drift_offset`); None when drift correction is off.

        A session that corrected drift and whose recorded gaze cannot give the offset (a showing without its
        trials or gaze, samples that do not line up) is refused, naming the file: starting from zero would read
        the monkey's gaze without the correction he had earned, and lose trials.
        """
        from rig.behavior.gaze import GazeSamples
        from rig.behavior.gaze.raw import baseline_holds, drift_offset

        fraction = self.drift_fraction()
        if fraction <= 0:
            return None
        samples, holds = [], []
        for where, behavior in self._behaviors():
            what = f"{self.path}: {where}"
            if behavior is None:
                raise SessionFileError(f"{what} recorded no trials or gaze, but [gaze] drift_correction = "
                                       f"{fraction:g} needs them to carry the drift offset on; cannot resume")
            missing = [k for k in _DRIFT_DATASETS if k not in behavior]
            if missing:
                raise SessionFileError(f"{what} lacks {', '.join(missing)}, which [gaze] drift_correction = "
                                       f"{fraction:g} needs to carry the drift offset on; cannot resume")
            try:
                samples.append(GazeSamples(*(behavior[f"gaze_{k}"] for k in ("times", "x", "y", "valid"))))
                table = [np.asarray(behavior[f"trial_{k}"], dtype=np.float64)
                         for k in ("acquired", "first_onset", "break_time")]
            except (ValueError, TypeError) as exc:
                raise SessionFileError(f"{what}: its gaze or trial table is damaged ({exc}); cannot resume "
                                       f"the drift offset") from None
            if len({len(column) for column in table}) != 1:
                raise SessionFileError(f"{what}: trial_acquired, trial_first_onset and trial_break_time differ in "
                                       f"length {[len(c) for c in table]}; cannot resume the drift offset")
            holds += baseline_holds(*table)
        point = self.spec.behavior.fixation_point_deg
        offset = drift_offset(GazeSamples.concat(samples), holds, point, fraction)
        if not all(np.isfinite(offset)):
            raise SessionFileError(f"{self.path}: the recorded gaze gives a drift offset of {offset} (valid samples "
                                   f"without a position); cannot resume the drift offset")
        return offset


def rebuild(session: RecordedSession) -> Rebuilt:
    """The session's protocol as it ran: its text re-validated, with the run record's threads and generator."""
    spec = recorded_spec(session)
    record = session_record(session, spec)
    if record.kind != spec.kind:
        raise SessionFileError(f"{session.path}: its run record is of a {record.kind!r} session, its protocol of a "
                               f"{spec.kind!r} one (the file was altered)")
    if spec.kind == "evolution":
        spec = dataclasses.replace(spec, threads=record.threads, generator=as_recorded(record.generator))
    return Rebuilt(session, spec, record)
