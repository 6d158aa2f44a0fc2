"""One way to plug in a part: register it by kind, beside its code, with a dataclass of options.

A part (a generator, an optimizer, ...) registers with its interface's
:class:`Registry`, giving its kind name and an :class:`Options` dataclass::

    @dataclass(frozen=True)
    class FourierOptions(Options):
        max_frequency: int = option(8, low=1, high=64)
        image_size: int = option(128, low=1, high=1024)

    @GENERATORS.register("fourier", FourierOptions)
    class FourierImageSpace(Generator): ...

The options dataclass is the only place a part's defaults, types and bounds
are written. A protocol table (``[generator]``, ``[optimizer]``) is checked
against it by :meth:`Registry.options`: an unknown key is rejected with its
close matches, a value of the wrong type or out of bounds names the field and
what is valid. :meth:`Registry.build` then calls the part with the checked
options as keyword arguments, and every built part describes itself the same
way (:func:`describe`): its class, its kind, its version and ``asdict(options)``.

:class:`Names` is the lookup underneath (unique names, close matches on a miss);
registries whose entries are not built from option tables (the simulated
models) use it directly.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Callable, Generic, Mapping, TypeVar

__all__ = [
    "Configurable",
    "Entry",
    "Names",
    "NoOptions",
    "OptionError",
    "Options",
    "Registry",
    "close_matches",
    "describe",
    "option",
]

T = TypeVar("T")
O = TypeVar("O", bound="Options")


class OptionError(ValueError):
    """An option value is missing, of the wrong type or out of bounds; names the field and what is valid."""

    def __init__(self, name: str, message: str, *, value: Any = MISSING, expected: str | None = None,
                 default: Any = MISSING) -> None:
        super().__init__(message)
        self.field = name
        #: The value found, what it must be (in words) and the field's default, for a caller that words its own
        #: message (``expected`` is None for an unknown or missing key; ``value``/``default`` MISSING when none).
        self.value, self.expected, self.default = value, expected, default


def option(default: Any = MISSING, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, choices: tuple[Any, ...] | None = None, valid: str = "",
           default_factory: Callable[[], Any] | Any = MISSING, high_open: bool = False) -> Any:
    """A dataclass field of an :class:`Options` class, with its bounds.

    Args:
        default: The default value (omit for a required option).
        low, high: Inclusive bounds of a number (``low_open``/``high_open``: that bound itself is excluded).
            For a tuple field (``tuple[float, float]``, ``tuple[str, ...]``) they bound every element.
        choices: The only values allowed.
        valid: What is valid, in words, when the bounds alone do not say it (used in messages).
        default_factory: For mutable defaults (a table).
    """
    metadata = {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "choices": choices,
                "valid": valid}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_TYPE_WORDS = {int: "an int", float: "a number", bool: "true or false", str: "a string", dict: "a table",
               tuple: "a list", type(None): "none"}


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    """``int`` -> (int,); ``str | None`` -> (str, NoneType); ``dict[str, Any]`` -> (dict,)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed_types(arg))
    origin = typing.get_origin(annotation)
    return (origin if origin is not None else annotation,)


def _fits(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # bool is an int in Python; `popsize = true` is a mistake
        return False
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real) and math.isfinite(value)
    if kind is type(None):
        return value is None
    return isinstance(value, kind)


def _valid_text(f: dataclasses.Field, allowed: tuple[type, ...]) -> str:
    meta = f.metadata
    if meta.get("valid"):
        return meta["valid"]
    if meta.get("choices") is not None:
        return f"one of {list(meta['choices'])}"
    words = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in allowed)
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return words
    if int in allowed and not meta.get("low_open"):
        if high is None:
            return f"{words} >= {low}"
        return f"{words} in {low}..{high}" if low is not None else f"{words} <= {high}"
    left = "(" if meta.get("low_open") else "["
    low_text = "-inf" if low is None else f"{low:g}"
    high_text = "inf)" if high is None else f"{high:g}" + (")" if meta.get("high_open") else "]")
    return f"{words} in {left}{low_text}, {high_text}"


_PLURAL_WORDS = {int: "ints", float: "numbers", bool: "trues or falses", str: "strings"}


def _tuple_text(f: dataclasses.Field, elements: tuple[Any, ...], allowed: tuple[type, ...]) -> str:
    """What a tuple field takes: ``a list of 2 ints in 1..10`` (the field's ``valid`` words first)."""
    if f.metadata.get("valid"):
        return f.metadata["valid"]
    variable = len(elements) == 2 and elements[1] is Ellipsis
    element = elements[0]
    bounds = _valid_text(f, (element,))[len(_TYPE_WORDS.get(element, "")):]
    count = "" if variable else f"{len(elements)} "
    none = " (or none)" if type(None) in allowed else ""
    return f"a list of {count}{_PLURAL_WORDS.get(element, element.__name__)}{bounds}{none}"


def _tuple_args(annotation: Any) -> tuple[Any, ...] | None:
    """The element types of the tuple in ``annotation`` (``tuple[float, float] | None`` -> (float, float)), or None."""
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    for candidate in typing.get_args(annotation) if union else (annotation,):
        if typing.get_origin(candidate) is tuple:
            return typing.get_args(candidate)
    return None


def _as_tuple(value: Any, args: tuple[Any, ...], meta: Mapping[str, Any]) -> tuple | None:
    """A TOML list (or tuple) as a tuple of ``args``' types, numbers bounded by ``meta``; None if it does not fit."""
    if not isinstance(value, (list, tuple)):
        return None
    kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
    if len(kinds) != len(value):
        return None
    out = []
    for item, kind in zip(value, kinds):
        if not _fits(item, kind) or not _in_bounds(item, {**meta, "choices": None}):
            return None
        out.append(float(item) if kind is float else item)
    return tuple(out)


def close_matches(key: str, names: list[str]) -> list[str]:
    """Names like ``key`` (difflib), or holding it (``size`` -> ``image_size``)."""
    similar = difflib.get_close_matches(key, names, n=2, cutoff=0.6)
    return similar + [n for n in names if len(key) >= 3 and key.lower() in n.lower() and n not in similar]


def _in_bounds(value: Any, meta: Mapping[str, Any]) -> bool:
    if meta.get("choices") is not None and value not in meta["choices"]:
        return False
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return True
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("low_open") else value < low):
        return False
    return high is None or (value < high if meta.get("high_open") else value <= high)


@dataclass(frozen=True)
class Options:
    """Base of every part's options: typed fields checked when an instance is made.

    Each field's annotation is its type (``int``, ``float``, ``bool``, ``str``,
    ``dict[...]`` or a union with ``None``); :func:`option` adds bounds. An int
    is accepted where a number is expected and stored as a float. Subclasses
    check relations between fields in :meth:`check`, raising :meth:`invalid`.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            allowed = _allowed_types(hints[f.name])
            value = getattr(self, f.name)
            elements = _tuple_args(hints[f.name])
            if elements is not None and not (value is None and type(None) in allowed):
                converted = _as_tuple(value, elements, f.metadata)
                if converted is None:
                    self.invalid(f.name, _tuple_text(f, elements, allowed))
                object.__setattr__(self, f.name, converted)
                continue
            if not any(_fits(value, t) for t in allowed) or not _in_bounds(value, f.metadata):
                self.invalid(f.name, _valid_text(f, allowed))
            if float in allowed and int not in allowed and isinstance(value, numbers.Real):
                object.__setattr__(self, f.name, float(value))
        self.check()

    def check(self) -> None:
        """Relations between fields (override); each field alone is already checked."""

    def invalid(self, name: str, must_be: str) -> typing.NoReturn:
        """Raise the :class:`OptionError` for field ``name``: its value, what it must be, its default."""
        default = self.defaults().get(name, MISSING)
        said = "" if default is MISSING else f" (default {default!r})"
        value = getattr(self, name)
        raise OptionError(name, f"{name} = {value!r} is invalid; {name} must be {must_be}{said}",
                          value=value, expected=must_be, default=default)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field that has a default, with it."""
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:
                out[f.name] = f.default_factory()
        return out

    @classmethod
    def help(cls) -> str:
        """``name (what is valid, default ...)`` for every field, for messages."""
        hints = typing.get_type_hints(cls)
        defaults = cls.defaults()
        parts = []
        for f in fields(cls):
            said = f", default {defaults[f.name]!r}" if f.name in defaults else ", required"
            parts.append(f"{f.name} ({_valid_text(f, _allowed_types(hints[f.name]))}{said})")
        return ", ".join(parts)

    @classmethod
    def from_table(cls: type[O], table: Mapping[str, Any], where: str) -> O:
        """Options from a protocol table (or keyword arguments); ``where`` starts every message.

        Raises:
            OptionError: an unknown key (its close matches named), a missing
                required one, or a value of the wrong type or out of bounds.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(table) - set(names))
        if unknown:
            close = sorted({m for key in unknown for m in close_matches(key, names)})
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise OptionError(unknown[0], f"unknown option(s) {', '.join(map(repr, unknown))} for {where}{hint}; "
                                          f"valid options: {cls.help()}")
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name not in table and f.default is MISSING and f.default_factory is MISSING:
                raise OptionError(f.name, f"{where} needs {f.name} = {_valid_text(f, _allowed_types(hints[f.name]))}")
        try:
            return cls(**table)
        except OptionError as exc:
            raise OptionError(exc.field, f"{where}: {exc}", value=exc.value, expected=exc.expected,
                              default=exc.default) from None

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments (one level deep, unlike :func:`dataclasses.asdict`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class NoOptions(Options):
    """For parts that take no options."""


class Names(Generic[T]):
    """Unique names for things of one ``noun`` (e.g. "model"); a miss lists close matches and every name."""

    def __init__(self, noun: str, plural: str | None = None) -> None:
        self.noun = noun
        self.plural = plural or f"{noun}s"
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; a name can be registered only once."""
        if name in self._items:
            raise ValueError(f"{self.noun} {name!r} is already registered")
        self._items[name] = item
        return item

    def names(self) -> tuple[str, ...]:
        """Every name, in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            valid = self.names()
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5) if isinstance(name, str) else []
            said = f"close matches: {close}; " if close else ""
            raise ValueError(f"unknown {self.noun} {name!r}; {said}valid {self.plural}: {', '.join(valid)}") from None


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered part: its kind, what builds it, its options and its version."""

    kind: str
    factory: Callable[..., T]
    options: type[Options]
    #: Bumped when the same options (and seed) would give a different output.
    version: int = 1


class Registry(Generic[T]):
    """The kinds of one interface (``"generator"``, ``"optimizer"``) and how to build each from a table."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self._entries: Names[Entry[T]] = Names(f"{interface} kind", "kinds")

    def register(self, kind: str, options: type[Options] = NoOptions, *, version: int = 1
                 ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register a class or factory function as ``kind``, built with ``options``' fields.

        A registered class gets ``kind``, ``Options`` and ``version`` as class attributes.
        """
        if not (isinstance(options, type) and issubclass(options, Options) and dataclasses.is_dataclass(options)):
            raise TypeError(f"{self.interface} {kind!r}: options must be an Options dataclass, got {options!r}")

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            self._entries.add(kind, Entry(kind, factory, options, version))
            if isinstance(factory, type):
                factory.kind, factory.Options, factory.version = kind, options, version
            return factory
        return add

    def kinds(self) -> tuple[str, ...]:
        """Every registered kind, in registration order."""
        return self._entries.names()

    def entry(self, kind: str) -> Entry[T]:
        """The entry of ``kind``; an unknown kind lists close matches and the valid kinds."""
        return self._entries[kind]

    def where(self, kind: str) -> str:
        """How messages name ``kind``: ``optimizer 'cmaes'``."""
        return f"{self.interface} {kind!r}"

    def options(self, kind: str, table: Mapping[str, Any]) -> Options:
        """``table`` (without ``kind``) checked against ``kind``'s options dataclass, defaults filled in."""
        return self.entry(kind).options.from_table(table, self.where(kind))

    def build(self, kind: str, table: Mapping[str, Any], *args: Any, **kwargs: Any) -> T:
        """Check ``table`` and build ``kind`` with ``args``, ``kwargs`` and the options as keyword arguments.

        The built part carries ``kind``, ``options`` and ``version`` (for :func:`describe`).
        """
        return self.create(kind, self.options(kind, table), *args, **kwargs)

    def create(self, kind: str, options: Options, *args: Any, **kwargs: Any) -> T:
        """Build ``kind`` from ``options`` already checked (an instance of its options class), as :meth:`build` does."""
        entry = self.entry(kind)
        if not isinstance(options, entry.options):
            raise TypeError(f"{self.where(kind)} takes {entry.options.__name__}, got {type(options).__name__}")
        part = entry.factory(*args, **kwargs, **options.as_kwargs())
        part.kind, part.options, part.version = kind, options, entry.version
        return part


class Configurable:
    """Mixin of an interface's base class: the part's kind, options and version, and :meth:`describe`.

    :meth:`Registry.register` sets ``kind``, ``Options`` and ``version`` on a
    registered class; its constructor calls :meth:`configure` with its keyword
    arguments, so defaults and checks live in the options dataclass only.
    """

    #: The interface's name in messages ("generator", "optimizer"); set by the interface's base class.
    interface: typing.ClassVar[str] = "part"
    kind: typing.ClassVar[str | None] = None
    Options: typing.ClassVar[type[Options]] = NoOptions
    version: typing.ClassVar[int] = 1
    options: Options

    def configure(self, options: Mapping[str, Any]) -> Options:
        """Check keyword arguments against ``Options`` and keep them as ``self.options``."""
        where = f"{self.interface} {self.kind!r}" if self.kind else type(self).__name__
        self.options = type(self).Options.from_table(options, where)
        return self.options

    def describe(self) -> dict[str, Any]:
        """See :func:`describe`."""
        return describe(self)


def describe(part: Any) -> dict[str, Any]:
    """What a registered part is, the same for every part: class, kind, version, ``asdict(options)``."""
    cls = type(part)
    options = getattr(part, "options", None)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "kind": getattr(part, "kind", None),
        "version": getattr(part, "version", None),
        "options": asdict(options) if options is not None else {},
    }
