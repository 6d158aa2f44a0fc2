"""The run as it ran: the protocol as resolved plus every override, frozen and stored once in the session.

``rig run``, ``rig run --resume`` and ``rig sweep`` all build their parts through
:func:`rig.loop.assemble.assemble`, which returns the :class:`RunRecord` of what it
built. The session writer stores it as the root attribute ``run_record`` (JSON,
versioned); :func:`rig.loop.rebuild.rebuild` reads it back to rebuild the same
parts for resume, replay, report, analysis images, the NWB export and sweep.

Sessions written before the record existed have their overrides spread over
provenance (``resume_with``, ``neuron.kwargs``, ``thread_seeds``, ``generations``,
``device``): :meth:`RunRecord.from_legacy` reads what they have.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from protocols.spec import MAX_GENERATIONS, NEURON_PRECISIONS, NEURON_RUNTIMES, ProtocolSpec

#: Root attribute of the session file that holds the record.
ATTRIBUTE = "run_record"
#: Version of the record's JSON layout; a newer one is refused, older ones read.
VERSION = 1


class RunRecordError(ValueError):
    """A stored run record that cannot be read (wrong type, unknown version, missing field)."""


def resolved_generator(spec: ProtocolSpec) -> dict[str, Any]:
    """The ``[generator]`` table with a ``weights`` path resolved against the protocol file (the one place)."""
    options = dict(spec.generator)
    if isinstance(options.get("weights"), str):
        # Weight paths in a protocol file are relative to that file, not to where rig runs.
        options["weights"] = str((spec.path.parent / options["weights"]).expanduser())
    return options


@dataclass(frozen=True)
class RunRecord:
    """Everything a session was built from, beyond the protocol text: resolved, with every override applied."""

    #: ``evolution`` or ``screening``.
    kind: str
    #: The protocol file as given (the recorded text is in ``protocol_toml``).
    protocol_path: str
    #: Neuron unit specs (``--neuron``, a sweep's units, else the protocol's ``[neuron] units``).
    units: tuple[str, ...]
    #: Model weights (``--weights``, else the protocol's); None: the model's default.
    weights: str | None
    seed: int
    generations: int
    #: Evolution threads (a sweep sets one per unit); 0 for screening.
    threads: int
    #: The torch device the session ran on (a resume picks its own).
    device: str
    #: ``--display`` kind.
    display: str = "headless"
    #: ``--sim-link`` (rig sim-rig's side channel), when the neuron is a recording.
    sim_link: str | None = None
    #: ``--pace-ms`` as (on_s, off_s).
    pace_s: tuple[float, float] | None = None
    #: ``[neuron] max_batch``.
    max_batch: int | None = None
    #: ``[neuron] precision`` and ``runtime`` of a simulated neuron; records written before them ran fp32 eager.
    precision: str = "fp32"
    runtime: str = "eager"
    #: ``[neuron.response]``: how simulated units fire; None scores raw activations.
    response: Mapping[str, Any] | None = None
    #: The ``[generator]`` table with weight paths resolved against the protocol file.
    generator: Mapping[str, Any] = field(default_factory=dict)
    #: What the recording attached with (``rig.recording.choice.attach``), when the neuron is a recording.
    recording: Mapping[str, Any] | None = None
    #: The sweep job this session is (model, seed, torch threads), when ``rig sweep`` ran it.
    sweep: Mapping[str, Any] | None = None
    #: The ``[gaze]`` table built (``--gaze`` and ``--calibration`` applied), when the protocol has ``[behavior]``.
    gaze: Mapping[str, Any] | None = None
    #: The ``[reward]`` table built (``--reward`` applied), when the protocol has ``[behavior]``.
    reward: Mapping[str, Any] | None = None
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: Any, where: str) -> "RunRecord":
        """Parse and type-check a stored record; :class:`RunRecordError` names the field that is wrong."""
        try:
            data = json.loads(text) if isinstance(text, str) else None
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise RunRecordError(f"{where}: attribute {ATTRIBUTE} is not a JSON object")
        version = data.get("version")
        if not _is_int(version) or not 1 <= version <= VERSION:
            raise RunRecordError(f"{where}: {ATTRIBUTE} version {version!r} is not one this rig reads "
                                 f"(1..{VERSION})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RunRecordError(f"{where}: {ATTRIBUTE} has unknown fields {unknown}")
        for required in ("kind", "protocol_path", "units", "seed", "generations", "threads", "device"):
            if required not in data:
                raise RunRecordError(f"{where}: {ATTRIBUTE} has no {required!r}")

        def bad(name: str, expected: str) -> RunRecordError:
            return RunRecordError(f"{where}: {ATTRIBUTE} {name} must be {expected}, got {_short(data.get(name))}")

        units = data["units"]
        if not isinstance(units, list) or not units or not all(isinstance(u, str) for u in units):
            raise bad("units", "a non-empty list of unit specs")
        for name in ("kind", "protocol_path", "device", "display"):
            if name in data and not isinstance(data[name], str):
                raise bad(name, "a string")
        for name, choices in (("precision", NEURON_PRECISIONS), ("runtime", NEURON_RUNTIMES)):
            if name in data and data[name] not in choices:
                raise bad(name, f"one of {list(choices)}")
        for name in ("weights", "sim_link"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise bad(name, "a string or null")
        if not _is_int(data["seed"]) or data["seed"] < 0:
            raise bad("seed", "a non-negative integer")
        if not _is_int(data["generations"]) or not 1 <= data["generations"] <= MAX_GENERATIONS:
            raise bad("generations", f"an integer in 1..{MAX_GENERATIONS}")
        if not _is_int(data["threads"]) or not 0 <= data["threads"] <= 4096:
            raise bad("threads", "an integer in 0..4096")
        if data.get("max_batch") is not None and (not _is_int(data["max_batch"]) or data["max_batch"] < 1):
            raise bad("max_batch", "a positive integer or null")
        pace = data.get("pace_s")
        if pace is not None and (not isinstance(pace, list) or len(pace) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                for v in pace)):
            raise bad("pace_s", "two positive numbers (on_s, off_s) or null")
        for name in ("response", "recording", "sweep", "gaze", "reward"):
            if data.get(name) is not None and not isinstance(data[name], dict):
                raise bad(name, "a JSON object or null")
        if not isinstance(data.get("generator", {}), dict):
            raise bad("generator", "a JSON object")
        data["units"] = tuple(units)
        data["pace_s"] = tuple(pace) if pace is not None else None
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
