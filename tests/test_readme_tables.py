"""The README's ``[display]``, ``[recording]`` and ``[behavior]`` examples are the options dataclasses, field for field.

A field is spelled once, in its :class:`~protocols.registry.Options` dataclass
(protocols/spec.py); the README shows the table with every field at its
default. A field whose default TOML cannot write (None) appears commented out.
This test fails when a field is added, renamed or given another default without
the README following.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from protocols.spec import BehaviorSpec, DisplaySpec, RecordingSpec

README = Path(__file__).parents[1] / "README.md"


def toml_block(table: str) -> str:
    """The README's ```toml block that starts with ``[table]``."""
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if b.startswith(f"[{table}]\n")]
    assert len(found) == 1, f"README.md: expected one ```toml block starting with [{table}], found {len(found)}"
    return found[0]


@pytest.mark.parametrize("table, spec", [("display", DisplaySpec), ("recording", RecordingSpec),
                                         ("behavior", BehaviorSpec)])
def test_readme_table_lists_every_field_at_its_default(table, spec):
    block = toml_block(table)
    written = tomllib.loads(block)[table]
    commented = set(re.findall(r"^# ?(\w+) = ", block, flags=re.M))
    names = [f.name for f in fields(spec)]
    missing = [n for n in names if n not in written and n not in commented]
    assert not missing, f"README.md [{table}] does not show {missing}"
    unknown = sorted((set(written) | commented) - set(names))
    assert not unknown, f"README.md [{table}] shows {unknown}, which {spec.__name__} does not have"
    defaults = spec.defaults()
    for name in commented:
        assert defaults[name] is None, f"README.md [{table}] comments {name} out, but its default is {defaults[name]!r}"
    # The table as written is the default spec (lists become tuples, ints numbers).
    assert spec.from_table(written, f"README [{table}]") == spec()
    for name, value in written.items():
        assert value == (list(defaults[name]) if isinstance(defaults[name], tuple) else defaults[name]), name
