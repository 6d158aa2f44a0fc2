"""Which spikes make a response channel: ``[recording] units`` selectors."""
from __future__ import annotations

from dataclasses import dataclass

from rig.recording.records import Spike


@dataclass(frozen=True)
class UnitSelector:
    """Spikes of ``electrode`` (None: any) with sorted id ``unit`` (None: any, unsorted included)."""

    electrode: str | None
    unit: int | None

    @classmethod
    def parse(cls, text: str) -> "UnitSelector":
        """``"*"`` (all spikes), ``"ELECTRODE"`` (all units on it) or ``"ELECTRODE:UNIT"`` (a sorted id)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"unit selector {text!r}: expected '*', 'ELECTRODE' or 'ELECTRODE:UNIT'")
        text = text.strip()
        if text == "*":
            return cls(None, None)
        electrode, sep, unit = text.rpartition(":")
        if not sep:
            return cls(text, None)
        if unit == "*":
            return cls(electrode or None, None)
        try:
            return cls(electrode if electrode not in ("", "*") else None, int(unit))
        except ValueError:
            raise ValueError(f"unit selector {text!r}: the part after ':' must be a sorted unit id "
                             f"(an integer, 0 = unsorted) or '*'") from None

    def matches(self, spike: Spike) -> bool:
        """Whether ``spike`` belongs to this channel."""
        return (self.electrode is None or spike.electrode == self.electrode) and (
            self.unit is None or spike.unit == self.unit)
