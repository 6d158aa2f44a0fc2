"""Protocol files: TOML in, a validated :class:`ProtocolSpec` out.

Every field is checked before anything runs. An error names the file, the
field and what was expected, because a scientist at the rig must be able to
fix the file without reading code.
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from protocols.registry import OptionError, Options, close_matches, option
from protocols.session_images import SESSIONS_SOURCE, SessionTake, parse_takes

if TYPE_CHECKING:
    from rig.recording.openephys.control import OpenEphysOptions

O = TypeVar("O", bound=Options)

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
    #: With ``source = "sessions"``: the ``[[screening.take]]`` tables (protocols/session_images.py).
    take: tuple[SessionTake, ...] = ()


@dataclass(frozen=True)
class NeuronSpec:
    """The neuron a protocol file suggests; the command line may replace it."""

    units: tuple[str, ...]
    weights: str | None
    #: The ``[neuron.response]`` table (activation → spikes), checked when the model is built; None: raw activations.
    response: dict[str, Any] | None = None
    #: Most images per forward pass of a simulated neuron; None: its device's default.
    max_batch: int | None = None
    #: The forward pass's precision (:data:`NEURON_PRECISIONS`; "fp16" only on a GPU).
    precision: str = "fp32"
    #: What runs the forward pass (:data:`NEURON_RUNTIMES`); None: the default for the neuron and device
    #: (simulators.runtime.default_runtime: ONNX Runtime for fp32 model units on a CPU, else eager).
    runtime: str | None = None


#: ``[neuron] precision`` and ``[neuron] runtime``: how a simulated neuron's forward pass runs (simulators/runtime.py).
NEURON_PRECISIONS = ("fp32", "bf16", "fp16")
NEURON_RUNTIMES = ("eager", "compiled", "onnxruntime")


#: Where the photodiode patch sits: a screen corner, or "none" for no patch.
PHOTODIODE_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left", "none")


def _count(default: int, low: int, high: int, note: str = "") -> Any:
    """An integer option in ``low..high`` (as protocol messages word it)."""
    return option(default, low=low, high=high, valid=f"an integer in {low}..{high}{note}")


def _positive(default: float | None, high: float | None = None, valid: str = "") -> Any:
    """A number option > 0 (and <= ``high``)."""
    return option(default, low=0.0, low_open=True, high=high, valid=valid)


_RGB = "[r, g, b] with each in [0, 1]"


@dataclass(frozen=True)
class DisplaySpec(Options):
    """The ``[display]`` table: the rig's monitor and how stimuli are shown on it (PsychoPy display only).

    Sizes and positions are in degrees of visual angle, durations in frames,
    colours RGB in [0, 1]. Defaults: a 53 cm wide 1920x1080 screen at 57 cm,
    a 4° stimulus at the centre, 6 frames on and 9 off at 60 Hz (100/150 ms).
    Each field's type, default and bounds are written here only; the table is
    checked against them (:class:`~protocols.registry.Options`).
    """

    width_cm: float = _positive(53.0, high=1e6)
    distance_cm: float = _positive(57.0, high=1e6)
    resolution: tuple[int, int] = option(
        (1920, 1080), low=1, high=MAX_RESOLUTION,
        valid=f"[width, height] in pixels (1..{MAX_RESOLUTION}), e.g. [1920, 1080]")
    refresh_hz: float = _positive(60.0, high=1000.0)
    #: Sleep-pace flips to ``refresh_hz``: only for screens without vsync (Xvfb, some VMs).
    pace: bool = False
    fullscreen: bool = True
    screen: int = _count(0, 0, 63)
    background: tuple[float, float, float] = option((0.5, 0.5, 0.5), low=0.0, high=1.0, valid=_RGB)
    size_deg: float = option(4.0, low=0.0, low_open=True, high=180.0, high_open=True,
                             valid="a number of degrees in (0, 180)")
    position_deg: tuple[float, float] = option((0.0, 0.0), low=-89.0, high=89.0,
                                               valid="[x, y] in degrees from the screen centre, each in [-89, 89]")
    #: Diameter of the fixation point; 0 draws none.
    fixation_deg: float = option(0.2, low=0.0, high=180.0, high_open=True,
                                 valid="a number of degrees >= 0 and < 180 (0: no fixation point)")
    fixation_color: tuple[float, float, float] = option((1.0, 0.0, 0.0), low=0.0, high=1.0, valid=_RGB)
    on_frames: int = _count(6, 1, 100_000)
    #: At least 1: the next texture is uploaded during the blank.
    off_frames: int = _count(9, 1, 100_000, " (the next texture is prepared during the blank)")
    photodiode: str = option("bottom-right", choices=PHOTODIODE_CORNERS)
    photodiode_size_px: int = _count(60, 1, MAX_RESOLUTION)


#: How the recording's response is baselined (DESIGN.md §4): the early post-onset window averaged over all
#: trials per channel, a pre-onset window per trial, or none.
RECORDING_BASELINES = ("early", "pre", "none")
#: Which TTL edges mark onsets (``[recording] ttl_edges``).
TTL_EDGES = ("rising", "falling", "both")
#: The recording transports ``[recording] kind`` may name.
RECORDING_KINDS = ("openephys-zmq",)
_PORT = "a TCP port in 1..65535"
_UNITS = 'a non-empty list of selectors such as ["*"], ["Electrode 1:1", "Electrode 2:1"]'


def _window(default: tuple[float, float] | None, low: float) -> Any:
    """A ``[start, stop]`` window in ms, ``low <= start`` (``start < stop`` is checked by the spec)."""
    return option(default, low=low, valid=f"[start, stop] in ms with {low:g} <= start < stop")


@dataclass(frozen=True)
class RecordingSpec(Options):
    """The optional ``[recording]`` table: an Open Ephys ZMQ Interface stream and how to score it.

    Used only when the neuron is a recording (``--neuron zmq://HOST:PORT``); a
    simulated neuron ignores it, so one protocol file serves both. Windows are
    in ms after the onset TTL; ``units`` are channel selectors ``"*"``,
    ``"ELECTRODE"`` or ``"ELECTRODE:SORTED_ID"`` (one response channel each).
    Session files store these fields by name (``rig replay --rescore`` rebuilds
    the spec from them), so names and defaults stay as they are.
    """

    kind: str = option("openephys-zmq", choices=RECORDING_KINDS)
    host: str = option("127.0.0.1", valid="a host name")
    data_port: int = option(5556, low=1, high=65535, valid=_PORT)
    #: None: data port + 1, as the plugin does.
    heartbeat_port: int | None = option(None, low=1, high=65535, valid=_PORT)
    heartbeat: bool = True
    #: Only messages of this stream (None: every stream on the port).
    stream: str | None = None
    #: 0-based TTL line carrying stimulus onsets (photodiode or sync pulse).
    ttl_line: int = option(0, low=0, high=255, valid="a 0-based TTL line in 0..255")
    #: Which edges on ttl_line mark onsets: "both" for a photodiode under a patch that toggles at each onset
    #: (the PsychoPy display's), "rising" for a pulse per onset, "falling" for an inverted one.
    ttl_edges: str = option("both", choices=TTL_EDGES)
    units: tuple[str, ...] = option(("*",), valid=_UNITS)
    response_window_ms: tuple[float, float] = _window((50.0, 200.0), 0.0)
    baseline: str = option("early", choices=RECORDING_BASELINES)
    #: None: [0, 40] for "early", [-50, 0] for "pre".
    baseline_window_ms: tuple[float, float] | None = _window(None, -10_000.0)
    #: How far a TTL may sit from where the display's timing puts it.
    ttl_tolerance_ms: float = _positive(10.0)
    #: Longest delay from an onset (the flip) to its TTL as the recording sees it: display input lag plus
    #: photodiode plus acquisition latency (10-100 ms on real monitors).
    pairing_window_ms: float = _positive(200.0, high=2000.0, valid="a number of ms in (0, 2000]")
    #: None: taken from the data messages.
    sample_rate: float | None = _positive(None, valid="a number of samples per second > 0")
    #: Seconds past the last window's end before unfinished stimuli are marked invalid.
    timeout_s: float = _positive(2.0)
    #: Seconds to wait for the stream before the first block.
    connect_timeout_s: float = _positive(5.0)
    #: Keep continuous-data payloads in the session's raw log (headers are always kept).
    keep_data_payloads: bool = False

    def __post_init__(self) -> None:
        if self.baseline_window_ms is None:
            object.__setattr__(self, "baseline_window_ms", (-50.0, 0.0) if self.baseline == "pre" else (0.0, 40.0))
        super().__post_init__()

    def check(self) -> None:
        if not self.host.strip():
            self.invalid("host", "a host name")
        if not self.units or not all(u.strip() for u in self.units):
            self.invalid("units", _UNITS)
        for unit in self.units:
            electrode, sep, sorted_id = unit.strip().rpartition(":")
            if sep and sorted_id != "*" and not sorted_id.lstrip("-").isdigit():
                self.invalid("units", f"selectors whose part after ':' is a sorted unit id (an integer, 0 = unsorted) "
                                      f"or '*' ({unit!r} is not); valid forms: '*', 'ELECTRODE', 'ELECTRODE:UNIT'")
        object.__setattr__(self, "units", tuple(u.strip() for u in self.units))
        for name in ("response_window_ms", "baseline_window_ms"):
            start, stop = getattr(self, name)
            if not start < stop:
                self.invalid(name, "[start, stop] in ms with start < stop")
        if self.baseline == "early" and self.baseline_window_ms[0] < 0:
            self.invalid("baseline_window_ms", "a window after onset for an 'early' baseline (start >= 0); "
                                               "use baseline = \"pre\" for a pre-onset window")
        if self.pairing_window_ms < self.ttl_tolerance_ms:
            self.invalid("pairing_window_ms", f"a number >= ttl_tolerance_ms ({self.ttl_tolerance_ms:g})")


#: When a reward is earned: once per completed trial, or once per stimulus held to the end of its window.
REWARD_PER = ("trial", "stimulus")


def _ms(default: float, high: float = 600_000.0, low_open: bool = False) -> Any:
    """A duration in ms, >= 0 (or > 0)."""
    return option(default, low=0.0, low_open=low_open, high=high,
                  valid=f"a number of ms {'>' if low_open else '>='} 0 and <= {high:g}")


@dataclass(frozen=True)
class BehaviorSpec(Options):
    """The optional ``[behavior]`` table: a block is shown as trials gated by fixation (DESIGN.md §9).

    A trial: the fixation point appears; gaze must enter the window within
    ``acquire_ms`` and hold for ``hold_ms``; ``stimuli_per_trial`` stimuli are
    flashed (the ``[display]`` on/off frames); fixation must hold to the end of
    the last stimulus's response window; then the reward and the inter-trial
    interval. A break ends the trial at once (then ``timeout_ms`` before the
    interval); a gaze loss (blink) shorter than ``blink_grace_ms`` is forgiven.
    After ``not_working_s`` without a completed trial the session pauses for
    ``not_working_pause_s`` (blank screen, a console message) and offers
    fixation again. Without this table a block is one rapid stream, as before.
    """

    stimuli_per_trial: int = _count(4, 1, 1000)
    fixation_point_deg: tuple[float, float] = option(
        (0.0, 0.0), low=-89.0, high=89.0, valid="[x, y] in degrees from the screen centre, each in [-89, 89]")
    #: Radius of the fixation window around the point.
    window_deg: float = option(1.5, low=0.0, low_open=True, high=90.0, valid="a radius in degrees in (0, 90]")
    acquire_ms: float = _ms(2000.0, low_open=True)
    #: Baseline hold before the first stimulus.
    hold_ms: float = _ms(300.0)
    #: A gaze loss (missing samples) up to this long is a blink, not a break; 0 forgives none.
    blink_grace_ms: float = _ms(100.0, high=10_000.0)
    reward_ms: float = _ms(100.0, high=10_000.0, low_open=True)
    reward_pulses: int = _count(1, 1, 100)
    reward_pause_ms: float = _ms(50.0, high=10_000.0)
    #: "trial": reward_pulses per completed trial; "stimulus": reward_pulses per stimulus held to its window's end.
    reward_per: str = option("trial", choices=REWARD_PER)
    iti_ms: float = _ms(1000.0)
    #: Extra blank time after a break (or a trial without fixation), before the inter-trial interval.
    timeout_ms: float = _ms(1000.0)
    #: No completed trial for this long: the monkey is not working.
    not_working_s: float = option(60.0, low=0.0, low_open=True, high=86_400.0, valid="seconds in (0, 86400]")
    #: How long to pause (blank screen) before offering fixation again.
    not_working_pause_s: float = option(30.0, low=0.0, high=86_400.0, valid="seconds in [0, 86400]")


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
    #: The optional ``[behavior]`` table: trials gated by fixation. None: each block is one rapid stream.
    behavior: BehaviorSpec | None = None
    #: The ``[gaze]`` table as written (``source`` plus that source's options), checked against the gaze source
    #: registry; None: the simulated monkey for a simulated neuron (see rig/behavior/choice.py).
    gaze: dict[str, Any] | None = None
    #: The ``[reward]`` table as written (``kind`` plus that output's options); None: log only.
    reward: dict[str, Any] | None = None
    #: The optional ``[openephys]`` table: markers and control of the Open Ephys GUI (``rig run --openephys``).
    openephys: OpenEphysOptions | None = None
    #: ``[evolution] repeat_fraction``: the share of each block's evolved images shown twice (noise ceiling).
    repeat_fraction: float = 0.0

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
            valid = sorted(self.used)
            close = sorted({m for key in unknown for m in close_matches(key, valid)})
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            self.fail(None, f"unknown field(s) {unknown}{hint}; valid fields: {valid}")


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
    top.used.update(("recording", "behavior", "gaze", "reward", "openephys"))
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
    repeat_fraction = float(evolution.get("repeat_fraction", (int, float), default=0.0,
                                          check=lambda v: 0 <= v <= 1, expected="a number in [0, 1]"))
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
    display = _options(path, "display", doc["display"], DisplaySpec) if "display" in doc else None
    recording = _options(path, "recording", doc["recording"], RecordingSpec) if "recording" in doc else None
    behavior = _options(path, "behavior", doc["behavior"], BehaviorSpec) if "behavior" in doc else None
    openephys = _openephys(path, doc["openephys"], recording) if "openephys" in doc else None
    gaze = _part(path, "gaze", "source", doc["gaze"]) if "gaze" in doc else None
    reward = _part(path, "reward", "kind", doc["reward"]) if "reward" in doc else None
    for table, value in (("gaze", gaze), ("reward", reward)):
        if value is not None and behavior is None:
            raise ProtocolError(f"{path}: [{table}]: only used with a [behavior] table (trials gated by fixation)")
    return ProtocolSpec(
        path=path,
        text=text,
        name=name,
        kind=kind,
        generations=generations,
        seed=seed,
        threads=threads,
        repeat_fraction=repeat_fraction,
        generator=generator,
        optimizer=optimizer,
        references=references,
        neuron=neuron,
        description=description,
        display=display,
        screening=screening,
        recording=recording,
        behavior=behavior,
        gaze=gaze,
        reward=reward,
        openephys=openephys,
    )


def _openephys(path: Path, table: Any, recording: RecordingSpec | None) -> OpenEphysOptions:
    """The ``[openephys]`` table; its marker lines must leave the recording's onset line free."""
    # Imported here, as _part does: the options live beside the GUI's client, which reading a protocol needs
    # only when the protocol has this table (the module itself is standard library only).
    from rig.recording.openephys.control import OpenEphysOptions

    options = _options(path, "openephys", table, OpenEphysOptions)
    ttl_line = (recording or RecordingSpec()).ttl_line
    clash = options.collisions(ttl_line)
    if options.markers and clash:
        raise ProtocolError(f"{path}: [openephys] lines: {', '.join(clash)} would be recorded on 0-based line "
                            f"{ttl_line}, the [recording] ttl_line that marks onsets (NetworkEvents line N is "
                            f"recorded as N - 1): give them other lines")
    return options


def _part(path: Path, name: str, key: str, table: Any) -> dict[str, Any]:
    """A ``[gaze]`` or ``[reward]`` table: ``key`` names a registered kind, the rest are its options, checked
    against its options dataclass; returned as written, without defaults."""
    # Imported here: reading a protocol needs no behaviour code unless the protocol has these tables.
    from rig.behavior.parts import part_registry

    registry = part_registry(name)
    section = _Section(path, name, table)
    kind = section.get(key, str, expected=f"one of {list(registry.kinds())}")
    options = section.rest()
    try:
        registry.entry(kind)
    except ValueError as exc:
        section.fail(key, str(exc))
    try:
        registry.options(kind, options)
    except OptionError as exc:
        section.fail(None, str(exc))
    return {key: kind, **options}


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


def _options(path: Path, name: str, table: Any, cls: type[O]) -> O:
    """A table read into its :class:`~protocols.registry.Options` dataclass; errors name the file, table and field."""
    section = _Section(path, name, table)
    section.used.update(f.name for f in fields(cls))
    section.finish()
    try:
        return cls.from_table(table, f"[{name}]")
    except OptionError as exc:
        if exc.expected is None:
            section.fail(None, str(exc))
        said = "" if exc.default is MISSING else f" (default {_toml(exc.default)})"
        section.fail(exc.field, f"expected {exc.expected}, got {_toml(exc.value)}{said}")


def _toml(value: Any) -> str:
    """A value as a protocol file spells it (lists for tuples)."""
    return repr(list(value) if isinstance(value, tuple) else value)


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
    precision = section.get("precision", str, default="fp32", check=lambda v: v in NEURON_PRECISIONS,
                            expected=f"one of {list(NEURON_PRECISIONS)} (fp16 only on a GPU)")
    runtime = section.get("runtime", str, default=None, check=lambda v: v in NEURON_RUNTIMES,
                          expected=f"one of {list(NEURON_RUNTIMES)}")
    section.finish()
    return NeuronSpec(units=tuple(units), weights=weights, response=response, max_batch=max_batch,
                      precision=precision, runtime=runtime)


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
        take=_takes(path, section),
    )
    section.finish()
    return spec


def _takes(path: Path, section: _Section) -> tuple[SessionTake, ...]:
    """``[[screening.take]]``: only, and always, with ``source = "sessions"``."""
    tables = section.get("take", list, default=None, expected="an array of tables [[screening.take]]")
    if (section.table.get("source") == SESSIONS_SOURCE) != (tables is not None):
        section.fail("take", f'[[screening.take]] tables go with source = "{SESSIONS_SOURCE}", and that source '
                             f"needs them (protocols/session_images.py)")
    if tables is None:
        return ()
    if section.table.get("count", 0) != 0:
        section.fail("count", f'with source = "{SESSIONS_SOURCE}" each [[screening.take]] says how many images')
    try:
        return parse_takes(tables)
    except ValueError as exc:
        raise ProtocolError(f"{path}: {exc}") from None
