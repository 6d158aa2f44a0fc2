"""Protocol files: TOML in, a validated :class:`ProtocolSpec` out.

Every field is checked before anything runs. An error names the file, the
field and what was expected, because a scientist at the rig must be able to
fix the file without reading code.
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

PROTOCOL_KINDS = ("evolution",)


class ProtocolError(ValueError):
    """A protocol file is missing, unreadable or invalid."""


@dataclass(frozen=True)
class ReferenceSpec:
    """Natural images shown in every block as a stable yardstick."""

    #: ``"foolbox-imagenet"`` (bundled) or a folder of images, relative to the protocol file.
    source: str
    count: int


@dataclass(frozen=True)
class NeuronSpec:
    """The neuron a protocol file suggests; the command line may replace it."""

    kind: str
    units: tuple[str, ...]
    weights: str | None


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
    extra: dict[str, Any] = field(default_factory=dict)

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

    top = _Section(path, "top level", doc)
    for table in ("protocol", "generator", "optimizer", "references", "evolution", "neuron"):
        top.used.add(table)
    top.finish()

    proto = _Section(path, "protocol", doc.get("protocol", {}))
    kind = proto.get("kind", str, check=lambda v: v in PROTOCOL_KINDS, expected=f"one of {list(PROTOCOL_KINDS)}")
    name = proto.get("name", str, default=path.stem)
    description = proto.get("description", str, default="")
    generations = proto.get("generations", int, check=lambda v: v >= 1, expected="an integer >= 1")
    seed = proto.get("seed", int, check=lambda v: 0 <= v < 2**32, expected="an integer in [0, 2**32)")
    proto.finish()

    evolution = _Section(path, "evolution", doc.get("evolution", {}))
    threads = evolution.get("threads", int, default=1, check=lambda v: 1 <= v <= 256, expected="an integer in 1..256")
    evolution.finish()

    generator = _component(path, "generator", doc)
    optimizer = _component(path, "optimizer", doc)

    refs = _Section(path, "references", doc.get("references", {}))
    references = ReferenceSpec(
        source=refs.get("source", str, default="foolbox-imagenet"),
        count=refs.get("count", int, default=10, check=lambda v: v >= 0, expected="an integer >= 0"),
    )
    refs.finish()

    neuron = _neuron(path, doc["neuron"]) if "neuron" in doc else None
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
    )


def _component(path: Path, name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A ``[generator]`` or ``[optimizer]`` table: ``kind`` plus options its builder checks."""
    section = _Section(path, name, doc.get(name, {}))
    kind = section.get("kind", str)
    return {"kind": kind, **section.rest()}


def _neuron(path: Path, table: Any) -> NeuronSpec:
    section = _Section(path, "neuron", table)
    kind = section.get("kind", str, default="simulated", check=lambda v: v == "simulated", expected='"simulated"')
    units = section.get(
        "units",
        list,
        check=lambda v: len(v) > 0 and all(isinstance(u, str) for u in v),
        expected='a non-empty list of unit specs such as ["efficientnet_lite0:blocks.5:unit=3"]',
    )
    weights = section.get("weights", str, default=None)
    section.finish()
    return NeuronSpec(kind=kind, units=tuple(units), weights=weights)
