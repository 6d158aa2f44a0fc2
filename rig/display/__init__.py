"""Displays: the interface (:mod:`rig.display.base`) and its implementations, registered by kind.

- :mod:`rig.display.headless`: ``headless``, no screen (in silico; paced in front of a recording);
- :mod:`rig.display.psychopy`: ``psychopy``, a PsychoPy window laid out by ``[display]`` (:mod:`rig.display.monitor`);
- :mod:`rig.display.recorded`: reports a session's recorded presentations (replay builds it from the
  session, not by name, so it is not registered).

A new display is one module that subclasses :class:`Display` and registers with
:data:`DISPLAYS`, plus its import below; ``--display`` and the conformance suite
pick it up from the registry.
"""
from __future__ import annotations

from protocols.spec import DisplaySpec
from rig.display.base import DISPLAYS, Display, Presentations
from rig.display import headless, psychopy  # noqa: F401  (each registers its kind)

__all__ = ["DISPLAYS", "Display", "Presentations", "build_display"]


def build_display(kind: str, spec: DisplaySpec | None = None) -> Display:
    """The display of ``kind``; one whose options are a :class:`~protocols.spec.DisplaySpec` is laid out by
    ``spec`` (the protocol's ``[display]`` table, or its defaults), the others ignore it.

    Raises:
        ValueError: an unknown kind (close matches and the valid kinds named), or a display that cannot open.
    """
    entry = DISPLAYS.entry(kind)
    options = spec if isinstance(spec, entry.options) else entry.options()
    return DISPLAYS.create(kind, options)

