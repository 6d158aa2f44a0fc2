"""The NWB file's own fields: identifiers, start time, descriptions, subject and the software that wrote it.

pynwb is an optional extra; :func:`import_pynwb` imports it when an export
runs, or says how to install it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from importlib import metadata as importlib_metadata

from rig.export.nwb.tables import Times
from rig.session import RecordedSession, SessionFileError

INSTALL_HINT = "pip install 'rig-controller[nwb]'"


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


def import_pynwb():
    """Import pynwb, or say how to install it."""
    try:
        import pynwb  # noqa: F401  (imported here: an optional extra)
    except ImportError as exc:
        raise NwbUnavailableError(f"NWB export needs pynwb, which is not installed ({exc}); "
                                  f"install the extra: {INSTALL_HINT}") from None
    return pynwb


def new_file(pynwb, session: RecordedSession, metadata: NwbMetadata, times: Times, recorded_from: str,
             in_silico: bool) -> tuple[object, list[str]]:
    """The NWBFile with the session's identity, descriptions and subject; and what it lacks for an archive.

    ``recorded_from`` says where the responses came from, in words.
    """
    name, kind = _protocol_name(session)
    channels = ", ".join(session.blocks[0].channel_names)
    session_attrs = {k: v for k, v in session.attrs.items() if k not in ("protocol_toml", "provenance")}
    nwb = pynwb.NWBFile(
        session_description=f"{name}: {kind} session of the rig closed-loop image-evolution controller",
        identifier=_identifier(session),
        session_id=str(session.attrs.get("session_id", "")),
        session_start_time=times.clock.start if times.clock is not None else _start_time(session),
        experiment_description=f"closed-loop {kind}: a generator proposes images, a display shows them, "
                               f"responses from {recorded_from} are scored and fed back to the optimizer",
        protocol=str(session.attrs.get("protocol_toml", "")),
        notes=json.dumps({"session_file": str(session.path), "attrs": session_attrs,
                          "provenance": session.provenance}, default=str),
        stimulus_notes=(f"Images were made by the protocol's [generator] from latent codes (stimulus/presentation/"
                        f"stimuli, column code) or are reference images (reference_id). Presentation times: "
                        f"{times.reference}; as measured on the display clock {times.display_clock!r}"
                        + (", tied to the wall clock by the anchors the session recorded when it started and at "
                           "each resume." if times.clock is not None else ".")),
        data_collection=(f"Scores per channel ({channels}) in intervals/presentations. " + (
            "Spikes decoded from the raw Open Ephys frames stored in the session are in units; spike_times are "
            "mapped onto the display clock through a linear fit of onset-TTL pairs per recording clock epoch."
            if not in_silico else
            "In silico: responses are a simulated neuron's (model unit) scores; no spikes were recorded, so "
            "this file has no units table.")),
        keywords=["closed-loop", "image evolution", "rig-controller"],
        was_generated_by=[["rig-controller", _version()]],
        experimenter=list(metadata.experimenters) or None,
        lab=metadata.lab,
        institution=metadata.institution,
    )
    warnings: list[str] = []
    subject = _subject(pynwb, metadata, session, in_silico=in_silico)
    if subject is None:
        warnings.append("no subject: pass --subject-id and --species (archives such as DANDI require them)")
    else:
        nwb.subject = subject
    return nwb, warnings


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
        return importlib_metadata.version("rig-controller")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
