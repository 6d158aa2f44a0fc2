"""Export a session file to NWB (Neurodata Without Borders) through pynwb: ``rig export-nwb``.

One job: read a session with :func:`rig.session.read_session` (master plus
journal, read-only) and write one NWB file holding everything it recorded.
pynwb is an optional extra (``pip install 'rig-controller[nwb]'``) and is
imported only when an export runs, so the rest of rig works without it.

Layout of the NWB file (``NWB_LAYOUT`` below is the same, as a table):

- ``intervals/presentations`` (TimeIntervals): one row per showing of a
  stimulus, every pass of the display included (a stimulus whose response was
  lost is shown again, and both showings are rows). Times are on the display
  clock as recorded (``time.monotonic`` for the headless display), in seconds.
- ``stimulus/presentation/stimuli`` (DynamicTable): one row per stimulus of a
  block, with its latent code; ``presentations.stimulus`` points into it.
- ``units``: for sessions recorded from a stream, every spike decoded from the
  stored raw Open Ephys frames by the live parser, one row per (stream,
  electrode, sorted id), with spike times mapped onto the display clock by
  the onset-TTL pairs. In-silico sessions have no units table: nothing was
  recorded, and the file says so.
- with ``images``: ``stimulus/templates/stimulus_images`` (Images) rendered
  from the codes by the protocol's generator, plus the reference images, and
  ``stimulus/presentation/stimulus_shown`` (IndexSeries) over them.

Nothing is ever written into the session file: the NWB file is built beside
``out`` and renamed into place only when it is complete.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from protocols.spec import ProtocolSpec
from rig.recording.records import Spike
from rig.recording.replay_reader import NoRawStreamError
from rig.recording.spike_decoding import DecodedSpikes, decode_spikes
from rig.recording.source import UnitSelector
from rig.session import RecordedSession, SessionFileError, journal_dir, read_session
from rig.session.clock import SessionClock

INSTALL_HINT = "pip install 'rig-controller[nwb]'"

#: Where each part of a session goes in the NWB file (for docs and the README).
NWB_LAYOUT = """\
| NWB path | what |
|---|---|
| `identifier`, `session_id` | the session's `session_id` |
| `session_start_time` | `created_utc` (UTC) |
| `session_description` | the protocol's name and kind |
| `general/protocol` | the protocol file as run (TOML, verbatim) |
| `general/notes` | JSON: the session's root attributes (seed, status, protocol_sha256, resumes, ...) and `provenance` |
| `general/subject`, `experimenter`, `lab`, `institution` | from the command line (`--subject-id`, `--species`, ...); in silico the subject defaults to the simulated model |
| `general/stimulus_notes`, `general/data_collection` | how stimuli were made and shown; where responses came from (and, in silico, that no spikes exist) |
| `intervals/presentations` | one row per showing of a stimulus (every pass, re-shows included): `start_time`/`stop_time` (onset/offset, display clock, s; `stop_time` NaN for earlier showings in files that stored only the final showing's offset), `block`, `showing`, `position`, `stimulus` (row of `stimuli`), `stimulus_id`, `kind`, `thread`, `code_index`, `dropped_frames`, `presentation_valid`, `valid`, `final` (the showing the block's responses come from), `scores` (rows x channels; NaN where invalid); with a stream also `invalid_reason`, `ttl_sample`, `recording_epoch` |
| `stimulus/presentation/stimuli` | one row per stimulus of each block: `block`, `position`, `stimulus_id`, `kind`, `thread`, `code_index`, `reference_id`, `code` (code_dim; NaN for reference images), final `scores` and `valid` |
| `units` (stream sessions only) | one row per (stream, electrode, sorted id) decoded from the raw frames: `spike_times` (display clock, s), `spike_samples` and `spike_epochs` (recording clock, every spike), `stream`, `electrode_name`, `sorted_id`, `channels` (score channels whose selector takes the unit) |
| `stimulus/templates/stimulus_images` (`--images`) | one image per `stimuli` row: generated ones rendered from their code, reference images loaded |
| `stimulus/presentation/stimulus_shown` (`--images`) | IndexSeries: per shown presentation, the index of its image, at its onset |
"""


class NwbUnavailableError(ImportError):
    """pynwb (the ``nwb`` extra) is not installed."""


@dataclass(frozen=True)
class NwbMetadata:
    """Who and what was recorded: the session file does not hold these, the person exporting does.

    ``subject_id`` and ``species`` make the file acceptable to archives such as
    DANDI (which require a Subject); in silico, the subject defaults to the
    simulated model, described by its units.
    """

    subject_id: str | None = None
    species: str | None = None  # Latin binomial, e.g. "Macaca mulatta"
    sex: str | None = None  # "M", "F", "U" or "O"
    age: str | None = None  # ISO 8601 duration, e.g. "P6Y"
    experimenters: tuple[str, ...] = ()
    lab: str | None = None
    institution: str | None = None


@dataclass
class ExportSummary:
    """What :func:`export_nwb` wrote."""

    out: Path
    presentations: int
    stimuli: int
    units: int
    spikes: int
    #: Spikes kept only as recording-clock samples: their clock had no onset-TTL pairs to map it.
    spikes_without_display_time: int
    images: int
    clock_maps: list[dict[str, Any]] = field(default_factory=list)
    #: What the file lacks that an archive will ask for (e.g. no subject for a recorded session).
    warnings: list[str] = field(default_factory=list)


def _pynwb():
    """Import pynwb, or say how to install it."""
    try:
        import pynwb  # noqa: F401  (imported here: an optional extra)
    except ImportError as exc:
        raise NwbUnavailableError(f"NWB export needs pynwb, which is not installed ({exc}); "
                                  f"install the extra: {INSTALL_HINT}") from None
    return pynwb


# --------------------------------------------------------------------------- presentations and stimuli


@dataclass
class _Columns:
    """Columns of a table as lists, one entry per row."""

    values: dict[str, list] = field(default_factory=lambda: defaultdict(list))

    def add(self, **row: Any) -> None:
        for key, value in row.items():
            self.values[key].append(value)

    def __len__(self) -> int:
        return len(next(iter(self.values.values()), []))


def _reference_id(stimulus_id: str, kind: str) -> str:
    return stimulus_id.split("/", 1)[1] if kind == "reference" and stimulus_id.startswith("ref/") else (
        stimulus_id if kind == "reference" else "")


def _stimuli(session: RecordedSession) -> tuple[_Columns, dict[int, int], int]:
    """One row per stimulus of each block; the first row of each block; the code length."""
    code_dim = max((b.codes.shape[2] for b in session.blocks if b.codes.ndim == 3), default=0)
    rows, first = _Columns(), {}
    for b in session.blocks:
        first[b.index] = len(rows)
        for i, sid in enumerate(b.stimulus_ids):
            t, c = int(b.threads[i]), int(b.code_index[i])
            code = b.codes[t, c] if t >= 0 else np.full(code_dim, np.nan)
            rows.add(block=b.index, position=i, stimulus_id=sid, kind=b.kinds[i], thread=t, code_index=c,
                     reference_id=_reference_id(sid, b.kinds[i]), code=code, scores=b.scores[i],
                     valid=bool(b.valid[i]))
    return rows, first, code_dim


def _showings(block, path: Path) -> list[dict[str, np.ndarray]]:
    """Every showing of a block, checked; a file with none stored (schema 1) had exactly one, the final one.

    ``read_session`` checks a block's final arrays but not its showings', so a
    damaged showing is caught here rather than as an IndexError mid-export.
    """
    n = len(block.stimulus_ids)
    for number, s in enumerate(block.showings):
        where = f"{path}: /blocks/{block.index:06d}/showings/{number:02d}"
        needed = ("positions", "onset_times", "dropped_frames", "presentation_valid", "scores", "valid")
        missing = [k for k in needed if k not in s]
        if missing:
            raise SessionFileError(f"{where}: missing {missing}")
        positions = np.asarray(s["positions"])
        m = len(positions)
        wrong = {k: np.shape(s[k]) for k in needed[1:] + ("invalid_reasons",) if k in s and len(s[k]) != m}
        if np.ndim(s["scores"]) != 2 or np.shape(s["scores"])[1] != len(block.channel_names):
            wrong["scores"] = np.shape(s["scores"])
        if positions.ndim != 1 or (m and (positions.min() < 0 or positions.max() >= n)):
            wrong["positions"] = f"not 1-D indices below {n}"
        if wrong:
            raise SessionFileError(f"{where}: {m} positions but {wrong}")
    if block.showings:
        return block.showings
    return [{"positions": np.arange(n), "onset_times": block.onset_times, "dropped_frames": block.dropped_frames,
             "presentation_valid": block.presentation_valid if block.presentation_valid is not None
             else np.ones(n, bool), "scores": block.scores, "valid": block.valid}]


@dataclass(frozen=True)
class _Times:
    """How the file's times relate to the session: seconds since its start, or (older files) the display clock."""

    clock: SessionClock | None
    display_clock: str

    @classmethod
    def of(cls, session: RecordedSession) -> "_Times":
        return cls(SessionClock.from_session(session),
                   next((b.clock for b in session.blocks if b.clock), "unknown"))

    @property
    def reference(self) -> str:
        """The time base, in words, for the file's descriptions."""
        if self.clock is not None:
            return "s since session_start_time"
        return (f"s on the display clock {self.display_clock!r}, whose origin is arbitrary (this session was "
                f"recorded before sessions stored clock anchors, so its times cannot be tied to session_start_time)")

    def convert(self, display_times: np.ndarray | float, block: int) -> np.ndarray:
        """Display times of ``block`` in the file's time base."""
        if self.clock is None:
            return np.asarray(display_times, dtype=np.float64)
        return self.clock.since_start(display_times, block)


def _presentations(session: RecordedSession, first_row: dict[int, int],
                   pairing: dict[tuple[int, int], tuple[np.ndarray, int]] | None, times: _Times) -> _Columns:
    """One row per showing of each stimulus, in the order they were shown."""
    rows = _Columns()
    for b in session.blocks:
        showings = _showings(b, session.path)
        final = np.full(len(b.stimulus_ids), -1)
        for number, s in enumerate(showings):  # as merge_showings: a stimulus's last showing is its final one
            final[np.asarray(s["positions"], dtype=np.int64)] = number
        for number, s in enumerate(showings):
            positions = np.asarray(s["positions"], dtype=np.int64)
            reasons = [r.decode() if isinstance(r, bytes) else str(r) for r in s.get("invalid_reasons", [])]
            ttl, epoch = pairing.get((b.index, number), (None, -1)) if pairing is not None else (None, -1)
            for j, i in enumerate(positions.tolist()):
                is_final = final[i] == number
                # Files written before showings had offsets store them for the final showing only.
                if "offset_times" in s:
                    offset = s["offset_times"][j]
                else:
                    offset = b.offset_times[i] if is_final and b.offset_times is not None else np.nan
                row = dict(start_time=float(times.convert(s["onset_times"][j], b.index)),
                           stop_time=float(times.convert(offset, b.index)), block=b.index,
                           showing=number, position=i, stimulus=first_row[b.index] + i,
                           stimulus_id=b.stimulus_ids[i], kind=b.kinds[i], thread=int(b.threads[i]),
                           code_index=int(b.code_index[i]), dropped_frames=int(s["dropped_frames"][j]),
                           presentation_valid=bool(s["presentation_valid"][j]), valid=bool(s["valid"][j]),
                           final=bool(is_final), scores=np.asarray(s["scores"][j], dtype=np.float64))
                if pairing is not None:
                    paired = ttl is not None and ttl[j] >= 0
                    row.update(invalid_reason=reasons[j] if j < len(reasons) else "",
                               ttl_sample=int(ttl[j]) if paired else -1, recording_epoch=epoch if paired else -1)
                rows.add(**row)
    return rows


def _unit_channels(selectors: list[str], stream: str, electrode: str, unit: int) -> str:
    """The score channels (selector texts) whose selector takes spikes of this unit, comma-separated."""
    probe = Spike(stream, 0, electrode, unit)
    return ",".join(s for s in selectors if UnitSelector.parse(s).matches(probe))


# --------------------------------------------------------------------------- images


def _generator_to_render(session: RecordedSession, trust_generator: str | None) -> ProtocolSpec:
    """The recorded protocol whose generator renders ``--images``, once it is known to run no untrusted code."""
    from protocols.generators import require_trusted_factory
    from rig.loop.replay import recorded_spec

    spec = recorded_spec(session)
    if spec.kind != "evolution":
        raise SessionFileError(f"{session.path}: --images needs an evolution session (a generator renders the "
                               f"stimuli); this is a {spec.kind} session")
    require_trusted_factory(spec.generator, trust_generator, str(session.path))
    return spec


def _render_images(session: RecordedSession, spec: ProtocolSpec, stimuli: _Columns,
                   batch: int = 32) -> np.ndarray:
    """(rows, H, W, 3) uint8: generated stimuli rendered from their codes, reference images loaded."""
    import torch

    from protocols.generators import build_generator
    from rig.loop.assemble import load_references

    options = dict(spec.generator)
    if isinstance(options.get("weights"), str):  # relative to the protocol file, as rig run resolved it
        options["weights"] = str((spec.path.parent / options["weights"]).expanduser())
    try:
        generator = build_generator(**options).eval()
    except (ValueError, TypeError, OSError) as exc:
        raise SessionFileError(f"{session.path}: cannot rebuild the [generator] to render --images: {exc}") from None
    references, reference_ids = load_references(spec, generator.image_size, torch.device("cpu"))
    by_id = dict(zip(reference_ids, references))
    size = generator.image_size
    out = np.zeros((len(stimuli), size, size, 3), dtype=np.uint8)
    generated = [i for i, t in enumerate(stimuli.values["thread"]) if t >= 0]
    codes = np.asarray([stimuli.values["code"][i] for i in generated], dtype=np.float32).reshape(len(generated), -1)

    def to_uint8(images: torch.Tensor) -> np.ndarray:
        return (images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)

    with torch.inference_mode():
        for start in range(0, len(generated), batch):
            chunk = generator(torch.from_numpy(codes[start:start + batch]))
            out[generated[start:start + batch]] = to_uint8(chunk)
    for i, (t, ref) in enumerate(zip(stimuli.values["thread"], stimuli.values["reference_id"])):
        if t < 0:
            if ref not in by_id:
                raise SessionFileError(f"{session.path}: reference image {ref!r} is not among the protocol's "
                                       f"references ({len(by_id)} loaded); cannot render --images")
            out[i] = to_uint8(by_id[ref][None])[0]
    return out


# --------------------------------------------------------------------------- the NWB file


def _start_time(session: RecordedSession) -> dt.datetime:
    text = session.attrs.get("created_utc")
    try:
        return dt.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise SessionFileError(f"{session.path}: root attribute created_utc {text!r} is not a UTC time "
                               f"YYYY-MM-DDTHH:MM:SSZ") from None


def _protocol_name(session: RecordedSession) -> tuple[str, str]:
    """The protocol's name and kind, read from the TOML as run (without re-validating it)."""
    try:
        table = tomllib.loads(str(session.attrs.get("protocol_toml", ""))).get("protocol", {})
    except tomllib.TOMLDecodeError as exc:
        raise SessionFileError(f"{session.path}: root attribute protocol_toml is not TOML: {exc}") from None
    return str(table.get("name", "unnamed")), str(table.get("kind", "evolution"))


def _identifier(session: RecordedSession) -> str:
    """The session's id; schema-1 files have none, so one is derived from what identifies the run."""
    if session.attrs.get("session_id"):
        return str(session.attrs["session_id"])
    key = f"{session.attrs.get('created_utc')}|{session.attrs.get('protocol_sha256')}|{session.attrs.get('seed')}"
    return "rig-session-v1-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _version() -> str:
    try:
        return metadata.version("rig-controller")
    except metadata.PackageNotFoundError:
        return "unknown"


def _check_paths(session: Path, out: Path, overwrite: bool) -> None:
    if out.resolve() == session.resolve() or journal_dir(session).resolve() in out.resolve().parents:
        raise ValueError(f"{out}: that is the session file (or its journal) being exported; choose another OUT")
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: already exists; pass --overwrite to replace it (nothing was written)")
    if out.exists() and not out.is_file():
        raise ValueError(f"{out}: exists and is not a file")


def export_nwb(session_path: str | Path, out: str | Path, *, images: bool = False,
               overwrite: bool = False, metadata: NwbMetadata | None = None,
               trust_generator: str | None = None) -> ExportSummary:
    """Write the session in ``session_path`` to the NWB file ``out`` (layout: :data:`NWB_LAYOUT`).

    ``images`` renders every stimulus with the protocol's generator (and loads
    the reference images) into the file; it costs a generator pass per stimulus. A
    ``kind = "module"`` generator runs only when ``trust_generator`` names its factory.

    Raises:
        NwbUnavailableError: pynwb is not installed.
        SessionFileError: the session file cannot be read (the message names it and where).
        ValueError: ``out`` exists (without ``overwrite``) or is the session file, or
            ``metadata`` has a malformed field.
    """
    session_path, out = Path(session_path), Path(out)
    metadata = metadata or NwbMetadata()
    pynwb = _pynwb()
    from hdmf.common import DynamicTable, DynamicTableRegion, VectorData
    from pynwb.epoch import TimeIntervals

    _check_paths(session_path, out, overwrite)
    session = read_session(session_path)
    if not session.blocks:
        raise SessionFileError(f"{session_path}: the session has no completed block; nothing to export")
    generator_spec = _generator_to_render(session, trust_generator) if images else None
    for block in session.blocks:
        _showings(block, session_path)  # every showing checked before anything reads it
    name, kind = _protocol_name(session)
    channels = list(session.blocks[0].channel_names)
    try:
        spikes = decode_spikes(session)
    except NoRawStreamError:
        spikes = None
    recorded_from = "an Open Ephys ZMQ stream" if spikes else "a simulated neuron (in silico)"

    stimuli, first_row, code_dim = _stimuli(session)
    times = _Times.of(session)
    shown = _presentations(session, first_row, spikes.pairing if spikes else None, times)
    session_attrs = {k: v for k, v in session.attrs.items() if k not in ("protocol_toml", "provenance")}
    nwb = pynwb.NWBFile(
        session_description=f"{name}: {kind} session of the rig closed-loop image-evolution controller",
        identifier=_identifier(session),
        session_id=str(session.attrs.get("session_id", "")),
        session_start_time=times.clock.start if times.clock is not None else _start_time(session),
        experiment_description=f"closed-loop {kind}: a generator proposes images, a display shows them, "
                               f"responses from {recorded_from} are scored and fed back to the optimizer",
        protocol=str(session.attrs.get("protocol_toml", "")),
        notes=json.dumps({"session_file": str(session_path), "attrs": session_attrs,
                          "provenance": session.provenance}, default=str),
        stimulus_notes=(f"Images were made by the protocol's [generator] from latent codes (stimulus/presentation/"
                        f"stimuli, column code) or are reference images (reference_id). Presentation times: "
                        f"{times.reference}; as measured on the display clock {times.display_clock!r}"
                        + (", tied to the wall clock by the anchors the session recorded when it started and at "
                           "each resume." if times.clock is not None else ".")),
        data_collection=(f"Scores per channel ({', '.join(channels)}) in intervals/presentations. " + (
            "Spikes decoded from the raw Open Ephys frames stored in the session are in units; spike_times are "
            "mapped onto the display clock through a linear fit of onset-TTL pairs per recording clock epoch."
            if spikes else
            "In silico: responses are a simulated neuron's (model unit) scores; no spikes were recorded, so "
            "this file has no units table.")),
        keywords=["closed-loop", "image evolution", "rig-controller"],
        was_generated_by=[["rig-controller", _version()]],
        experimenter=list(metadata.experimenters) or None,
        lab=metadata.lab,
        institution=metadata.institution,
    )
    warnings: list[str] = []
    subject = _subject(pynwb, metadata, session, in_silico=spikes is None)
    if subject is None:
        warnings.append("no subject: pass --subject-id and --species (archives such as DANDI require them)")
    else:
        nwb.subject = subject

    stimuli_table = DynamicTable(name="stimuli", description=(
        "One row per stimulus of each block. code: the latent code shown (NaN for reference images); "
        f"scores/valid: the block's final responses per channel ({', '.join(channels)})."), columns=[
        VectorData(name=k, description=d, data=_data(stimuli.values[k])) for k, d in _STIMULUS_COLUMNS
        if k != "code" or code_dim > 0])
    nwb.add_stimulus(stimuli_table)

    columns = [VectorData(name=k, description=d.format(time=times.reference, channels=", ".join(channels)),
                          data=_data(shown.values[k])) for k, d in _PRESENTATION_COLUMNS if k in shown.values]
    columns.append(DynamicTableRegion(name="stimulus", data=_data(shown.values["stimulus"]), table=stimuli_table,
                                      description="row of stimulus/presentation/stimuli shown"))
    nwb.add_time_intervals(TimeIntervals(name="presentations", columns=columns, description=(
        f"Every showing of every stimulus (re-shows of stimuli whose responses were lost included), times in "
        f"{times.reference}. Responses from {recorded_from}.")))

    n_spikes = n_unconverted = 0
    clock_maps: list[dict[str, Any]] = []
    if spikes is not None:
        clock_maps = [{"epoch": e, **(c or {"pairs": 0})} for e, c in enumerate(spikes.clocks)]
        n_spikes, n_unconverted = _add_units(nwb, spikes, times, clock_maps)

    n_images = 0
    if images:
        n_images = _add_images(nwb, session, generator_spec, stimuli, shown, times)

    tmp = out.with_name(f".{out.stem}.writing.nwb")  # pynwb warns about names not ending in .nwb
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with pynwb.NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportSummary(out, len(shown), len(stimuli), len(spikes.units) if spikes else 0, n_spikes,
                         n_unconverted, n_images, clock_maps, warnings)


_SEXES = ("M", "F", "U", "O")
_AGE = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$")


def _subject(pynwb, metadata: NwbMetadata, session: RecordedSession, in_silico: bool):
    """The NWB Subject: as given, or in silico the simulated model; None for a recording given none."""
    if metadata.sex is not None and metadata.sex not in _SEXES:
        raise ValueError(f"subject sex must be one of {list(_SEXES)}, got {metadata.sex!r}")
    if metadata.age is not None and not _AGE.match(metadata.age):
        raise ValueError(f"subject age must be an ISO 8601 duration such as P6Y or P30D, got {metadata.age!r}")
    if metadata.species is not None and len(metadata.species.split()) < 2:
        raise ValueError(f"species must be a Latin binomial such as 'Macaca mulatta', got {metadata.species!r}")
    description = None
    subject_id = metadata.subject_id
    if in_silico:
        units = list(session.provenance.get("neuron", {}).get("neuron", {}).get("units", []))
        models = sorted({u.split(":", 1)[0] for u in units})
        subject_id = subject_id or f"in-silico {', '.join(models) or 'model'}"
        description = "a simulated neuron: units " + ", ".join(units) if units else "a simulated neuron"
    if subject_id is None:
        return None
    return pynwb.file.Subject(subject_id=subject_id, species=metadata.species, sex=metadata.sex, age=metadata.age,
                              description=description)


_STIMULUS_COLUMNS = (
    ("block", "block (generation) index"),
    ("position", "position of the stimulus in its block"),
    ("stimulus_id", "stimulus id, e.g. g0003/t0/c017 or ref/<id>"),
    ("kind", "generated or reference"),
    ("thread", "evolution thread of a generated stimulus; -1 for reference images"),
    ("code_index", "index of the code within its thread's block; -1 for reference images"),
    ("reference_id", "identity of a reference image; empty for generated stimuli"),
    ("code", "latent code given to the generator; NaN for reference images"),
    ("scores", "the block's final scored response per channel; NaN where invalid"),
    ("valid", "the stimulus got a usable response in some showing"),
)

_PRESENTATION_COLUMNS = (
    ("start_time", "onset, {time}"),
    ("stop_time", "offset, {time}; NaN for an earlier showing in files written "
                  "before showings stored their offsets"),
    ("block", "block (generation) index"),
    ("showing", "pass of the display over the block: 0 shows every stimulus, later ones re-show lost stimuli"),
    ("position", "position of the stimulus in its block"),
    ("stimulus_id", "stimulus id, e.g. g0003/t0/c017 or ref/<id>"),
    ("kind", "generated or reference"),
    ("thread", "evolution thread; -1 for reference images"),
    ("code_index", "index of the code within its thread; -1 for reference images"),
    ("dropped_frames", "frames the display dropped while showing it"),
    ("presentation_valid", "the display showed it as intended"),
    ("valid", "the response of this showing was usable"),
    ("final", "this showing's response is the block's response for the stimulus"),
    ("scores", "scored response per channel ({channels}); NaN where invalid"),
    ("invalid_reason", "why the response was lost: display, missing-ttl, gap, restart, silent; empty if valid"),
    ("ttl_sample", "onset TTL paired with this showing, sample number on the recording clock; -1 if unpaired"),
    ("recording_epoch", "recording clock epoch of ttl_sample (acquisition restarts and resumes begin one); -1 "
                        "if unpaired"),
)


def _data(values: list) -> np.ndarray | list:
    """A column's values as an array (strings stay a list, which pynwb writes as UTF-8 text)."""
    if values and isinstance(values[0], str):
        return list(values)
    return np.asarray(values)


def _add_units(nwb, spikes: DecodedSpikes, times: _Times, clock_maps: list[dict[str, Any]]) -> tuple[int, int]:
    """One unit per (stream, electrode, sorted id); returns the spikes written and those with no display time."""
    from pynwb.misc import Units

    nwb.units = Units(name="units", description=(
        f"Spikes decoded from the raw Open Ephys ZMQ frames stored in the session, by the live parser. "
        f"spike_times: {times.reference}, mapped from the recording clock ({spikes.sample_rate:g} Hz) onto the display "
        f"clock {times.display_clock!r} "
        f"by a linear fit of the onset-TTL pairs of each recording epoch (clock_maps: {json.dumps(clock_maps)}); "
        f"spikes of an epoch with fewer than two pairs, or of another stream than the TTLs', have no display time "
        f"and are only in spike_samples/spike_epochs (every spike, recording clock)."))
    nwb.add_unit_column("stream", "Open Ephys stream name")
    nwb.add_unit_column("electrode_name", "Open Ephys electrode name")
    nwb.add_unit_column("sorted_id", "sorted unit id (0 = unsorted threshold crossings)")
    nwb.add_unit_column("channels", "score channels (unit selectors) that count this unit's spikes")
    nwb.add_unit_column("spike_samples", "every spike, sample number on the recording clock", index=True)
    nwb.add_unit_column("spike_epochs", "recording clock epoch of each spike_samples entry; -1: another stream "
                                        "than the TTLs'", index=True)
    total = unconverted = 0
    for (stream, electrode, unit), found in sorted(spikes.units.items()):
        epochs = np.array([e for e, _ in found], dtype=np.int64)
        samples = np.array([s for _, s in found], dtype=np.int64)
        order = np.lexsort((samples, epochs))
        epochs, samples = epochs[order], samples[order]
        converted = []
        for e in np.unique(epochs):
            fit = spikes.clocks[e] if e >= 0 else None
            if fit is None:
                unconverted += int((epochs == e).sum())
                continue
            s = samples[epochs == e].astype(np.float64)
            display = (s - fit["sample_at_display_mean"]) / fit["samples_per_display_second"] + fit["display_mean"]
            converted.append(times.convert(display, spikes.epoch_first_block[e]))
        total += len(samples)
        nwb.add_unit(spike_times=np.sort(np.concatenate(converted)) if converted else np.zeros(0), stream=stream,
                     electrode_name=electrode, sorted_id=int(unit),
                     channels=_unit_channels(spikes.selectors, stream, electrode, unit),
                     spike_samples=samples, spike_epochs=epochs)
    return total, unconverted


def _add_images(nwb, session: RecordedSession, spec: ProtocolSpec, stimuli: _Columns, shown: _Columns,
                times: _Times) -> int:
    """Images of every stimulus (stimulus templates) and an IndexSeries of which one each onset showed."""
    from pynwb.base import ImageReferences, Images
    from pynwb.image import IndexSeries, RGBImage

    pixels = _render_images(session, spec, stimuli)
    frames = [RGBImage(name=f"stimulus_{i:06d}", data=pixels[i], description=stimuli.values["stimulus_id"][i])
              for i in range(len(pixels))]
    library = Images(name="stimulus_images", images=frames, order_of_images=ImageReferences(name="order_of_images", data=frames),
                     description="one image per row of stimulus/presentation/stimuli, in row order: generated "
                                 "stimuli rendered from their codes, reference images as loaded")
    nwb.add_stimulus_template(library)
    onsets = np.asarray(shown.values["start_time"], dtype=np.float64)
    index = np.asarray(shown.values["stimulus"], dtype=np.int64)
    keep = np.isfinite(onsets)
    order = np.argsort(onsets[keep], kind="stable")
    nwb.add_stimulus(IndexSeries(name="stimulus_shown", data=index[keep][order].astype(np.uint32),
                                 indexed_images=library, unit="N/A", timestamps=onsets[keep][order],
                                 description=f"index into stimulus_images of each presentation, at its onset "
                                             f"({times.reference})"))
    return len(frames)
