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
- sessions with a ``[behavior]`` table only (``NWB_BEHAVIOR_LAYOUT``): the
  ``trials`` table (one row per trial, ML2 outcome codes, NaN for times that
  did not happen), ``processing/behavior/EyeTracking/eye_position`` (degrees
  from the screen centre, NaN in blinks) and ``events/`` (EventsTables of
  rewards, not-working pauses and the operator's requests). A session
  without behaviour gets none of these.

Every time is on one time base: display times converted per block (``Times``),
so trials, gaze and events line up with the presentations. In silico the
trials' frame clock is simulated, starting at 0 in each run; its times count
from their run's start.

Each part is written by its own module: :mod:`.metadata` (identity, descriptions,
subject), :mod:`.tables` (stimuli, presentations and their clock), :mod:`.units`
(spikes), :mod:`.images` and :mod:`.behavior`; this one reads the session and puts them together.

Nothing is ever written into the session file: the NWB file is built beside
``out`` and renamed into place only when it is complete.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.export.nwb.behavior import NWB_BEHAVIOR_LAYOUT, add_behavior
from rig.export.nwb.images import _generator_to_render, add_images
from rig.export.nwb.metadata import INSTALL_HINT, NwbMetadata, NwbUnavailableError, import_pynwb, new_file
from rig.export.nwb.tables import (Times, add_presentations, add_stimuli, checked_showings, presentation_rows,
                                   stimulus_rows)
from rig.export.nwb.units import add_units
from rig.recording.replay_reader import NoRawStreamError
from rig.recording.spike_decoding import DecodedSpikes, decode_spikes
from rig.session import RecordedSession, SessionFileError, journal_dir, read_session

__all__ = ["INSTALL_HINT", "NWB_BEHAVIOR_LAYOUT", "NWB_LAYOUT", "ExportSummary", "NwbMetadata", "NwbUnavailableError", "export_nwb"]

#: Where each part of a session goes in the NWB file (for docs and the README); a session with behaviour
#: also has the parts in :data:`NWB_BEHAVIOR_LAYOUT`.
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
    #: Trials, gaze samples and behaviour events written (all 0 for a session without behaviour).
    trials: int = 0
    gaze_samples: int = 0
    behavior_events: int = 0


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
    pynwb = import_pynwb()
    _check_paths(session_path, out, overwrite)
    session = _read(session_path)
    generator_spec = _generator_to_render(session, trust_generator) if images else None
    spikes = _decoded_spikes(session)
    recorded_from = "an Open Ephys ZMQ stream" if spikes else "a simulated neuron (in silico)"
    channels = list(session.blocks[0].channel_names)
    times = Times.of(session)
    stimuli, first_row, code_dim = stimulus_rows(session)
    shown = presentation_rows(session, first_row, spikes.pairing if spikes else None, times)

    nwb, warnings = new_file(pynwb, session, metadata or NwbMetadata(), times, recorded_from,
                             in_silico=spikes is None)
    stimuli_table = add_stimuli(nwb, stimuli, code_dim, channels)
    add_presentations(nwb, shown, stimuli_table, times, channels, recorded_from)
    clock_maps, n_spikes, n_unconverted = add_units(nwb, spikes, times) if spikes is not None else ([], 0, 0)
    n_images = add_images(nwb, session, generator_spec, stimuli, shown, times) if images else 0
    behavior = add_behavior(nwb, session, times)

    _write(pynwb, nwb, out)
    return ExportSummary(out, len(shown), len(stimuli), len(spikes.units) if spikes else 0, n_spikes,
                         n_unconverted, n_images, clock_maps, warnings,
                         *((behavior.trials, behavior.gaze_samples, behavior.events) if behavior else ()))


def _check_paths(session: Path, out: Path, overwrite: bool) -> None:
    if out.resolve() == session.resolve() or journal_dir(session).resolve() in out.resolve().parents:
        raise ValueError(f"{out}: that is the session file (or its journal) being exported; choose another OUT")
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: already exists; pass --overwrite to replace it (nothing was written)")
    if out.exists() and not out.is_file():
        raise ValueError(f"{out}: exists and is not a file")


def _read(session_path: Path) -> RecordedSession:
    """The session, with at least one block and every showing checked before anything reads it."""
    session = read_session(session_path)
    if not session.blocks:
        raise SessionFileError(f"{session_path}: the session has no completed block; nothing to export")
    for block in session.blocks:
        checked_showings(block, session_path)
    return session


def _decoded_spikes(session: RecordedSession) -> DecodedSpikes | None:
    """Every spike in the session's stored raw frames; None for a session without them (in silico)."""
    try:
        return decode_spikes(session)
    except NoRawStreamError:
        return None


def _write(pynwb, nwb, out: Path) -> None:
    """Write beside ``out`` and rename into place, so that ``out`` is complete or absent."""
    tmp = out.with_name(f".{out.stem}.writing.nwb")  # pynwb warns about names not ending in .nwb
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with pynwb.NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
