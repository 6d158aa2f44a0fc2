"""JSON text exactly as JUCE's ``JSON::toString(var)`` writes it: the header text of every Open Ephys ZMQ message.

The ZMQ Interface plugin (open-ephys-plugins/zmq-interface, ``Source/ZmqInterface.cpp``:
``sendData``, ``sendEvent``, ``sendSpikeEvent``) fills a ``DynamicObject`` with
``setProperty`` calls and sends ``JSON::toString (json)``: the defaults
``allOnOneLine = false``, ``maximumDecimalPlaces = 15``. The rules below were read
from the JUCE copy the Open Ephys GUI 1.0 builds with
(open-ephys/plugin-GUI ``JuceLibraryCode/modules/juce_core``, JUCE 8):

- **Layout** (``json/juce_JSON.cpp``, ``JSONFormatter`` and
  ``containers/juce_DynamicObject.cpp``, ``DynamicObject::writeAsJSON``): an
  object is ``{``, a newline, then each property on its own line indented by
  the object's indent + 2 spaces as ``"key": value``, separated by ``,`` and a
  newline, a newline after the last one, the object's indent, ``}``. An empty
  object still gets its newline: ``{`` newline ``}``. Arrays are the same with
  ``[``/``]``, but an empty array is ``[]``. Nothing follows the final brace.
- **Newline** (``text/juce_NewLine.h``, ``NewLine::getDefault``; the
  ``MemoryOutputStream`` keeps that default): ``"\\r\\n"`` (CRLF), on every platform.
- **Key order**: ``DynamicObject`` keeps properties in insertion order
  (a ``NamedValueSet``), i.e. the order of the plugin's ``setProperty`` calls.
  Python dicts keep insertion order too, so build them in the plugin's order.
- **Integers** (``int``/``int64`` vars, ``var::toString``): plain decimal.
  ``bool``: ``true``/``false``; ``void``: ``null``.
- **Doubles** (``JSON::writeToStream`` → ``serialiseDouble (d, 15)`` in
  ``text/juce_String.cpp``): non-finite → ``null``. If ``|d| >= 1e6`` or
  ``|d| <= 1e-5`` (zero included): ``%.15e`` then shortened by
  ``reduceLengthOfFloatString`` (trailing mantissa zeros dropped but one digit
  kept after the point, exponent's ``+`` and leading zeros dropped, a zero
  exponent dropped): ``1e7`` → ``1.0e7``, ``0.0`` → ``0.0``. Else, an
  integral value → ``%.1f`` (``30000.0``); any other → ``%.15f``, shortened the
  same way. The plugin's ``sample_rate`` and spike ``threshold`` are C++
  ``float`` widened to double, so pass them through ``numpy.float32`` first
  to get the digits a real rig writes.
- **Strings** (``JSONFormatter::writeString``, UTF-8 encoding by default):
  ``"`` and ``\\`` are escaped, ``\\b \\f \\t \\r \\n`` by name, other code points
  below 32 as ``\\u00XX`` (lower-case hex); everything else verbatim as UTF-8
  (no ``\\/``). A NUL ends the string (JUCE strings are NUL-terminated).

Facts carried over from those sources; no code copied.
"""
from __future__ import annotations

import math
from typing import Any

NEWLINE = "\r\n"
INDENT = 2

_NAMED_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\t": "\\t", "\r": "\\r", "\n": "\\n"}


def _string(text: str) -> str:
    text = text.split("\x00", 1)[0]
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'  # the common case: nothing to escape
    out = []
    for ch in text:
        if ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif ord(ch) < 32:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _reduce(text: str) -> str:
    """``reduceLengthOfFloatString``: drop trailing fraction zeros (keeping one digit) and a padded exponent."""
    mantissa, e, exponent = text.partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0")
        if mantissa.endswith("."):
            mantissa += "0"
    if not e:
        return mantissa
    sign = "-" if exponent.startswith("-") else ""
    digits = exponent.lstrip("+-").lstrip("0")
    return mantissa + (f"e{sign}{digits}" if digits else "")


def format_double(value: float) -> str:
    """A double as JUCE's ``serialiseDouble (value, 15)`` writes it inside JSON (non-finite: ``null``)."""
    value = float(value)
    if not math.isfinite(value):
        return "null"
    magnitude = abs(value)
    if magnitude >= 1.0e6 or magnitude <= 1.0e-5:
        return _reduce(f"{value:.15e}")
    if float(int(value)) == value:
        return f"{value:.1f}"
    return _reduce(f"{value:.15f}")


def _write(out: list[str], value: Any, indent: int) -> None:
    if value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(format_double(value))
    elif isinstance(value, dict):
        inner = " " * (indent + INDENT)
        out.append("{" + NEWLINE)
        for i, (key, item) in enumerate(value.items()):
            out.append(inner + _string(str(key)) + ": ")
            _write(out, item, indent + INDENT)
            out.append("," + NEWLINE if i < len(value) - 1 else NEWLINE)
        out.append(" " * indent + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        inner = " " * (indent + INDENT)
        out.append("[" + NEWLINE)
        for i, item in enumerate(value):
            out.append(inner)
            _write(out, item, indent + INDENT)
            out.append("," + NEWLINE if i < len(value) - 1 else NEWLINE)
        out.append(" " * indent + "]")
    elif hasattr(value, "item"):  # numpy scalars
        _write(out, value.item(), indent)
    else:
        raise TypeError(f"JUCE's JSON writer has no form for {type(value).__name__}")


def dumps(obj: Any) -> str:
    """``obj`` (dicts in the plugin's key order, lists, str, int, float, bool, None) as JUCE's toString writes it."""
    out: list[str] = []
    _write(out, obj, 0)
    return "".join(out)
