"""Protocol files: TOML in, a validated :class:`ProtocolSpec` out.

Every field is checked before anything runs. An error names the file, the
field and what was expected, because a scientist at the rig must be able to
fix the file without reading code.
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

PROTOCOL_KINDS = ("evolution", "screening")

# Limits: beyond them a protocol would exhaust memory or time before any check could say why.
#: Seeds are 32-bit, as numpy's SeedSequence entropy is recorded.
SEED_LIMIT = 2**32
MAX_GENERATIONS = 100_000
MAX_THREADS = 256
#: Reference images shown in every block, and images of a natural set.
MAX_REFERENCES = 10_000
MAX_NATURAL_IMAGES = 1_000_000
MAX_REPEATS = 1_000
#: Images per forward pass of a simulated neuron.
MAX_BATCH = 4_096
#: Pixels along either side of a display.
MAX_RESOLUTION = 32_768


class ProtocolError(ValueError):
    """A protocol file is missing, unreadable or invalid."""


@dataclass(frozen=True)
class ReferenceSpec:
    """Natural images shown in every block as a stable yardstick."""

    #: ``"foolbox-imagenet"`` (bundled) or a folder of images, relative to the protocol file.
    source: str
    count: int


@dataclass(frozen=True)
class ScreeningSpec:
    """The natural image set a ``kind = "screening"`` protocol shows (see protocols/screening.py)."""

    #: ``"foolbox-imagenet"`` (bundled) or an (ImageFolder-style) folder, relative to the protocol file.
    source: str
    #: How many images to show (0: all of them), in sorted order of their ids.
    count: int
    #: Stimuli per block (0: the whole set in one block).
    block_size: int
    #: Times each image is shown, each repeat in a fresh shuffled order.
    repeats: int
    image_size: int


@dataclass(frozen=True)
class NeuronSpec:
    """The neuron a protocol file suggests; the command line may replace it."""

    units: tuple[str, ...]
    weights: str | None
    #: The ``[neuron.response]`` table (activation → spikes), checked when the model is built; None: raw activations.
    response: dict[str, Any] | None = None
    #: Most images per forward pass of a simulated neuron; None: its device's default.
    max_batch: int | None = None


#: Where the photodiode patch sits: a screen corner, or "none" for no patch.
PHOTODIODE_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left", "none")


@dataclass(frozen=True)
class DisplaySpec:
    """The ``[display]`` table: the rig's monitor and how stimuli are shown on it (PsychoPy display only).

    Sizes and positions are in degrees of visual angle, durations in frames,
    colours RGB in [0, 1]. Defaults: a 53 cm wide 1920x1080 screen at 57 cm,
    a 4° stimulus at the centre, 6 frames on and 9 off at 60 Hz (100/150 ms).
    """

    width_cm: float = 53.0
    distance_cm: float = 57.0
    resolution: tuple[int, int] = (1920, 1080)
    refresh_hz: float = 60.0
    #: Sleep-pace flips to ``refresh_hz``: only for screens without vsync (Xvfb, some VMs).
    pace: bool = False
    fullscreen: bool = True
    screen: int = 0
    background: tuple[float, float, float] = (0.5, 0.5, 0.5)
    size_deg: float = 4.0
    position_deg: tuple[float, float] = (0.0, 0.0)
    #: Diameter of the fixation point; 0 draws none.
    fixation_deg: float = 0.2
    fixation_color: tuple[float, float, float] = (1.0, 0.0, 0.0)
    on_frames: int = 6
    off_frames: int = 9
    photodiode: str = "bottom-right"
    photodiode_size_px: int = 60


#: How the recording's response is baselined (DESIGN.md §4): the early post-onset window averaged over all
#: trials per channel, a pre-onset window per trial, or none.
RECORDING_BASELINES = ("early", "pre", "none")
#: Which TTL edges mark onsets (``[recording] ttl_edges``).
TTL_EDGES = ("rising", "falling", "both")


@dataclass(frozen=True)
class RecordingSpec:
    """The optional ``[recording]`` table: an Open Ephys ZMQ Interface stream and how to score it.

    Used only when the neuron is a recording (``--neuron zmq://HOST:PORT``); a
    simulated neuron ignores it, so one protocol file serves both. Windows are
    in ms after the onset TTL; ``units`` are channel selectors ``"*"``,
    ``"ELECTRODE"`` or ``"ELECTRODE:SORTED_ID"`` (one response channel each).
    """

    kind: str = "openephys-zmq"
    host: str = "127.0.0.1"
    data_port: int = 5556
    #: None: data port + 1, as the plugin does.
    heartbeat_port: int | None = None
    heartbeat: bool = True
    #: Only messages of this stream (None: every stream on the port).
    stream: str | None = None
    #: 0-based TTL line carrying stimulus onsets (photodiode or sync pulse).
    ttl_line: int = 0
    #: Which edges on ttl_line mark onsets: "both" for a photodiode under a patch that toggles at each onset
    #: (the PsychoPy display's), "rising" for a pulse per onset, "falling" for an inverted one.
    ttl_edges: str = "both"
    units: tuple[str, ...] = ("*",)
    response_window_ms: tuple[float, float] = (50.0, 200.0)
    baseline: str = "early"
    #: None: [0, 40] for "early", [-50, 0] for "pre".
    baseline_window_ms: tuple[float, float] | None = None
    #: How far a TTL may sit from where the display's timing puts it.
    ttl_tolerance_ms: float = 10.0
    #: Longest delay from an onset (the flip) to its TTL as the recording sees it: display input lag plus
    #: photodiode plus acquisition latency (10-100 ms on real monitors).
    pairing_window_ms: float = 200.0
    #: None: taken from the data messages.
    sample_rate: float | None = None
    #: Seconds past the last window's end before unfinished stimuli are marked invalid.
    timeout_s: float = 2.0
    #: Seconds to wait for the stream before the first block.
    connect_timeout_s: float = 5.0
    #: Keep continuous-data payloads in the session's raw log (headers are always kept).
    keep_data_payloads: bool = False

    def __post_init__(self) -> None:
        if self.baseline_window_ms is None:
            object.__setattr__(self, "baseline_window_ms", (-50.0, 0.0) if self.baseline == "pre" else (0.0, 40.0))


@dataclass(frozen=True)
class ProtocolSpec:
    """A validated protocol file."""

    path: Path
    text: str
    name: str
    kind: str
    generations: int
    seed: int
    threads: int
    generator: dict[str, Any]
    optimizer: dict[str, Any]
    references: ReferenceSpec
    neuron: NeuronSpec | None
    description: str = ""
    #: The optional ``[display]`` table (used by the PsychoPy display; the headless one ignores it).
    display: DisplaySpec | None = None
    #: The ``[screening]`` table; only for ``kind = "screening"``.
    screening: ScreeningSpec | None = None
    #: The optional ``[recording]`` table (used only when the neuron is a recording stream).
    recording: RecordingSpec | None = None

    @property
    def sha256(self) -> str:
        """Hash of the file as run, for provenance."""
        return hashlib.sha256(self.text.encode()).hexdigest()


class _Section:
    """Reads one TOML table, remembering which keys were used so leftovers are errors."""

    def __init__(self, path: Path, name: str, table: Any) -> None:
        self.path, self.name = path, name
        if not isinstance(table, dict):
            self.fail(None, f"expected a table [{name}], got {type(table).__name__}")
        self.table: dict[str, Any] = table
        self.used: set[str] = set()

    def fail(self, key: str | None, message: str) -> None:
        where = f"[{self.name}] {key}" if key else f"[{self.name}]"
        raise ProtocolError(f"{self.path}: {where}: {message}")

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Callable[[Any], bool] | None = None,
        expected: str = "",
    ) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                self.fail(key, f"missing; expected {expected or _type_name(kind)}")
            return default
        value = self.table[key]
        # bool is an int in Python; a protocol saying `generations = true` is a mistake.
        if isinstance(value, bool) and bool not in _as_tuple(kind):
            self.fail(key, f"expected {expected or _type_name(kind)}, got {value!r}")
        if not isinstance(value, kind) or (check is not None and not check(value)):
            self.fail(key, f"expected {expected or _type_name(kind)}, got {value!r}")
        return value

    def rest(self) -> dict[str, Any]:
        """Keys not read with :meth:`get`, passed on to a component that validates them."""
        return {k: v for k, v in self.table.items() if k not in self.used}

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            self.fail(None, f"unknown field(s) {unknown}; valid fields: {sorted(self.used)}")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def load_protocol(path: str | Path) -> ProtocolSpec:
    """Read and validate a protocol file; raise :class:`ProtocolError` naming the bad field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProtocolError(f"{path}: protocol file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{path}: cannot read protocol file: {exc}") from None
    return parse_protocol(text, path)


def parse_protocol(text: str, path: str | Path = "<protocol>") -> ProtocolSpec:
    """Validate protocol TOML ``text``; ``path`` is used in messages and for relative paths."""
    path = Path(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"{path}: not a usable protocol file: its tables or lists nest too deeply "
                            f"for the TOML reader") from None

    top = _Section(path, "top level", doc)
    for table in ("protocol", "generator", "optimizer", "references", "evolution", "neuron", "display"):
        top.used.add(table)
    top.used.add("screening")
    top.used.add("recording")
    top.finish()

    proto = _Section(path, "protocol", doc.get("protocol", {}))
    kind = proto.get("kind", str, check=lambda v: v in PROTOCOL_KINDS, expected=f"one of {list(PROTOCOL_KINDS)}")
    name = proto.get("name", str, default=path.stem)
    description = proto.get("description", str, default="")
    generations = proto.get("generations", int, default=1 if kind == "screening" else ...,
                            check=lambda v: 1 <= v <= MAX_GENERATIONS, expected=f"an integer in 1..{MAX_GENERATIONS}")
    seed = proto.get("seed", int, check=lambda v: 0 <= v < SEED_LIMIT, expected="an integer in [0, 2**32)")
    proto.finish()

    evolution = _Section(path, "evolution", doc.get("evolution", {}))
    threads = evolution.get("threads", int, default=1, check=lambda v: 1 <= v <= MAX_THREADS,
                            expected=f"an integer in 1..{MAX_THREADS}")
    evolution.finish()

    # A screening protocol shows a fixed image set: it has no generator or optimizer.
    generator = _component(path, "generator", doc) if kind != "screening" or "generator" in doc else {}
    optimizer = _component(path, "optimizer", doc) if kind != "screening" or "optimizer" in doc else {}
    screening = _screening(path, kind, doc)

    refs = _Section(path, "references", doc.get("references", {}))
    references = ReferenceSpec(
        source=refs.get("source", str, default="foolbox-imagenet"),
        count=refs.get("count", int, default=10, check=lambda v: 0 <= v <= MAX_REFERENCES,
                       expected=f"an integer in 0..{MAX_REFERENCES}"),
    )
    refs.finish()

    neuron = _neuron(path, doc["neuron"]) if "neuron" in doc else None
    display = _display(path, doc["display"]) if "display" in doc else None
    recording = _recording(path, doc["recording"]) if "recording" in doc else None
    return ProtocolSpec(
        path=path,
        text=text,
        name=name,
        kind=kind,
        generations=generations,
        seed=seed,
        threads=threads,
        generator=generator,
        optimizer=optimizer,
        references=references,
        neuron=neuron,
        description=description,
        display=display,
        screening=screening,
        recording=recording,
    )


def _component(path: Path, name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A ``[generator]`` or ``[optimizer]`` table: ``kind`` plus its options, checked against the kind's
    registered options dataclass (:mod:`protocols.registry`); returned as written, without defaults."""
    # Imported here: the registries import torch and pycma, which reading a protocol's other tables does not need.
    from protocols.generators import GENERATORS
    from protocols.optimizers import OPTIMIZERS
    from protocols.registry import OptionError

    registry = {"generator": GENERATORS, "optimizer": OPTIMIZERS}[name]
    section = _Section(path, name, doc.get(name, {}))
    kind = section.get("kind", str)
    options = section.rest()
    try:
        registry.entry(kind)
    except ValueError as exc:
        section.fail("kind", str(exc))
    try:
        registry.options(kind, options)
    except OptionError as exc:
        section.fail(None, str(exc))
    return {"kind": kind, **options}


def _neuron(path: Path, table: Any) -> NeuronSpec:
    section = _Section(path, "neuron", table)
    section.get("kind", str, default="simulated", check=lambda v: v == "simulated", expected='"simulated"')
    units = section.get(
        "units",
        list,
        check=lambda v: len(v) > 0 and all(isinstance(u, str) for u in v),
        expected='a non-empty list of unit specs such as ["efficientnet_lite0:blocks.5:unit=3"]',
    )
    weights = section.get("weights", str, default=None)
    response = section.get("response", dict, default=None, expected="a table [neuron.response]")
    max_batch = section.get("max_batch", int, default=None, check=lambda v: 1 <= v <= MAX_BATCH,
                            expected=f"an integer in 1..{MAX_BATCH}")
    section.finish()
    return NeuronSpec(units=tuple(units), weights=weights, response=response, max_batch=max_batch)


def _screening(path: Path, kind: str, doc: dict[str, Any]) -> ScreeningSpec | None:
    """The ``[screening]`` table of a screening protocol (all fields have defaults)."""
    if kind != "screening":
        if "screening" in doc:
            raise ProtocolError(f'{path}: [screening]: only valid with [protocol] kind = "screening"')
        return None
    section = _Section(path, "screening", doc.get("screening", {}))
    spec = ScreeningSpec(
        source=section.get("source", str, default="foolbox-imagenet"),
        count=section.get("count", int, default=0, check=lambda v: 0 <= v <= MAX_NATURAL_IMAGES,
                          expected=f"an integer in 0..{MAX_NATURAL_IMAGES} (0: all)"),
        block_size=section.get("block_size", int, default=0, check=lambda v: 0 <= v <= MAX_NATURAL_IMAGES,
                               expected=f"an integer in 0..{MAX_NATURAL_IMAGES} (0: the whole set in one block)"),
        repeats=section.get("repeats", int, default=1, check=lambda v: 1 <= v <= MAX_REPEATS,
                            expected=f"an integer in 1..{MAX_REPEATS}"),
        image_size=section.get("image_size", int, default=224, check=lambda v: 8 <= v <= 4096,
                               expected="an integer in 8..4096"),
    )
    section.finish()
    return spec


def _display(path: Path, table: Any) -> DisplaySpec:
    """The optional ``[display]`` table; every field has a default (see :class:`DisplaySpec`)."""
    section = _Section(path, "display", table)
    d = DisplaySpec()
    number = (int, float)

    def positive(key: str, default: float, high: float = 1e6) -> float:
        return float(section.get(key, number, default=default, check=lambda v: 0 < v <= high,
                                 expected=f"a number in (0, {high:g}]"))

    def count(key: str, default: int, low: int, high: int, expected: str = "") -> int:
        return section.get(key, int, default=default, check=lambda v: low <= v <= high,
                           expected=f"an integer in {low}..{high}{expected}")

    def numbers(key: str, default: tuple, count: int, low: float | None = None, high: float | None = None,
                expected: str = "", kinds: tuple[type, ...] = number) -> tuple:
        value = section.get(
            key, list, default=list(default),
            check=lambda v: len(v) == count and all(
                isinstance(x, kinds) and not isinstance(x, bool)
                and (low is None or x >= low) and (high is None or x <= high) for x in v),
            expected=expected)
        return tuple(value)

    spec = DisplaySpec(
        width_cm=positive("width_cm", d.width_cm),
        distance_cm=positive("distance_cm", d.distance_cm),
        resolution=tuple(int(v) for v in numbers(
            "resolution", d.resolution, 2, low=1, high=MAX_RESOLUTION,
            expected=f"[width, height] in pixels (1..{MAX_RESOLUTION}), e.g. [1920, 1080]",
            kinds=(int,))),
        refresh_hz=positive("refresh_hz", d.refresh_hz, high=1000.0),
        pace=section.get("pace", bool, default=d.pace),
        fullscreen=section.get("fullscreen", bool, default=d.fullscreen),
        screen=count("screen", d.screen, 0, 63),
        background=numbers("background", d.background, 3, 0.0, 1.0, "[r, g, b] with each in [0, 1]"),
        size_deg=float(section.get("size_deg", number, default=d.size_deg, check=lambda v: 0 < v < 180,
                                   expected="a number of degrees in (0, 180)")),
        position_deg=tuple(float(v) for v in numbers(
            "position_deg", d.position_deg, 2, -89.0, 89.0, "[x, y] in degrees from the screen centre")),
        fixation_deg=float(section.get("fixation_deg", number, default=d.fixation_deg, check=lambda v: 0 <= v < 180,
                                       expected="a number of degrees >= 0 (0: no fixation point)")),
        fixation_color=numbers("fixation_color", d.fixation_color, 3, 0.0, 1.0, "[r, g, b] with each in [0, 1]"),
        on_frames=count("on_frames", d.on_frames, 1, 100_000),
        off_frames=count("off_frames", d.off_frames, 1, 100_000, " (the next texture is prepared during the blank)"),
        photodiode=section.get("photodiode", str, default=d.photodiode, check=lambda v: v in PHOTODIODE_CORNERS,
                               expected=f"one of {list(PHOTODIODE_CORNERS)}"),
        photodiode_size_px=count("photodiode_size_px", d.photodiode_size_px, 1, MAX_RESOLUTION),
    )
    section.finish()
    return spec


def _recording(path: Path, table: Any) -> RecordingSpec:
    """The optional ``[recording]`` table; every field has a default (see :class:`RecordingSpec`)."""
    section = _Section(path, "recording", table)
    d = RecordingSpec()
    number = (int, float)
    port = dict(check=lambda v: 0 < v < 65536, expected="a TCP port in 1..65535")

    def window(key: str, default: tuple[float, float] | None, low: float) -> tuple[float, float] | None:
        value = section.get(key, list, default=None if default is None else list(default),
                            check=lambda v: len(v) == 2 and all(isinstance(x, number) and not isinstance(x, bool)
                                                                for x in v) and low <= v[0] < v[1],
                            expected=f"[start, stop] in ms with {low:g} <= start < stop")
        return None if value is None else (float(value[0]), float(value[1]))

    def positive(key: str, default: float) -> float:
        return float(section.get(key, number, default=default, check=lambda v: v > 0, expected="a number > 0"))

    units = section.get("units", list, default=list(d.units),
                        check=lambda v: len(v) > 0 and all(isinstance(u, str) and u.strip() for u in v),
                        expected='a non-empty list of selectors such as ["*"], ["Electrode 1:1", "Electrode 2:1"]')
    for unit in units:
        electrode, sep, sorted_id = unit.strip().rpartition(":")
        if sep and sorted_id != "*" and not sorted_id.lstrip("-").isdigit():
            section.fail("units", f"{unit!r}: the part after ':' must be a sorted unit id (an integer, 0 = unsorted) "
                                  f"or '*'; valid forms: '*', 'ELECTRODE', 'ELECTRODE:UNIT'")
    baseline = section.get("baseline", str, default=d.baseline, check=lambda v: v in RECORDING_BASELINES,
                           expected=f"one of {list(RECORDING_BASELINES)}")
    spec = RecordingSpec(
        kind=section.get("kind", str, default=d.kind, check=lambda v: v == "openephys-zmq",
                         expected='"openephys-zmq"'),
        host=section.get("host", str, default=d.host, check=lambda v: bool(v.strip()), expected="a host name"),
        data_port=section.get("data_port", int, default=d.data_port, **port),
        heartbeat_port=section.get("heartbeat_port", int, default=None, **port),
        heartbeat=section.get("heartbeat", bool, default=d.heartbeat),
        stream=section.get("stream", str, default=None),
        ttl_line=section.get("ttl_line", int, default=d.ttl_line, check=lambda v: 0 <= v < 256,
                             expected="a 0-based TTL line in 0..255"),
        ttl_edges=section.get("ttl_edges", str, default=d.ttl_edges, check=lambda v: v in TTL_EDGES,
                              expected=f"one of {list(TTL_EDGES)}"),
        units=tuple(u.strip() for u in units),
        response_window_ms=window("response_window_ms", d.response_window_ms, 0.0),
        baseline=baseline,
        baseline_window_ms=window("baseline_window_ms", None, -10_000.0),
        ttl_tolerance_ms=positive("ttl_tolerance_ms", d.ttl_tolerance_ms),
        pairing_window_ms=float(section.get("pairing_window_ms", number, default=d.pairing_window_ms,
                                            check=lambda v: 0 < v <= 2000, expected="a number of ms in (0, 2000]")),
        sample_rate=section.get("sample_rate", number, default=None, check=lambda v: v > 0,
                                expected="a number of samples per second > 0"),
        timeout_s=positive("timeout_s", d.timeout_s),
        connect_timeout_s=positive("connect_timeout_s", d.connect_timeout_s),
        keep_data_payloads=section.get("keep_data_payloads", bool, default=d.keep_data_payloads),
    )
    if spec.baseline == "early" and spec.baseline_window_ms[0] < 0:
        section.fail("baseline_window_ms", f"an 'early' baseline lies after onset, got {list(spec.baseline_window_ms)}; "
                                           f"use baseline = \"pre\" for a pre-onset window")
    if spec.pairing_window_ms < spec.ttl_tolerance_ms:
        section.fail("pairing_window_ms", f"must be >= ttl_tolerance_ms ({spec.ttl_tolerance_ms:g}), "
                                          f"got {spec.pairing_window_ms:g}")
    section.finish()
    return spec
