"""The screening source "images from sessions": which images a protocol takes from earlier session files.

A screening protocol with ``source = "sessions"`` shows images taken by
reference, each ``[[screening.take]]`` table one group of them::

    [[screening.take]]
    group = "evolved"              # a label: the first part of each image's id, compared by `rig report`
    session = "evo.h5"             # a session file, relative to the protocol file
    thread = 0                     # which evolution of it (default 0)
    final_best = 5                 # the best 5 of the thread's final generation, or:
    # top = 5                      #   the top 5 by score over the whole session, or:
    # images = [[12, 3], [14, 0]]  #   explicit [generation, index in that generation's population]
    # sha256 = "..."               # optional: the session file's SHA-256; another file is refused

    [[screening.take]]
    group = "natural"
    natural = "foolbox-imagenet"   # natural images: the bundled photos or a folder, relative to the protocol
    count = 10                     # the first 10 in sorted order (0: all)

This module only parses and checks the tables (protocols never read session
files); rig/loop/session_images.py regenerates the images through each
session's own generator and records where every one came from.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: ``[screening] source`` that takes its images from ``[[screening.take]]`` tables.
SESSIONS_SOURCE = "sessions"
#: The ways of choosing a session's images; exactly one per table.
SELECTIONS = ("final_best", "top", "images")
_GROUP = re.compile(r"[A-Za-z0-9_-]{1,40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_IMAGES = 10_000


@dataclass(frozen=True)
class SessionTake:
    """One ``[[screening.take]]`` table: a group of images from a session file, or from a natural image set."""

    group: str
    #: A session file (relative to the protocol file), or None when ``natural`` is given.
    session: str | None = None
    thread: int = 0
    #: The best N of the thread's final generation (0: not this selection).
    final_best: int = 0
    #: The top N by score over the whole session (0: not this selection).
    top: int = 0
    #: Explicit (generation, index) pairs.
    images: tuple[tuple[int, int], ...] = ()
    #: The session file's SHA-256, when pinned.
    sha256: str | None = None
    #: A natural image set (``"foolbox-imagenet"`` or a folder), or None when ``session`` is given.
    natural: str | None = None
    #: How many natural images (0: all).
    count: int = 0

    @property
    def selection(self) -> str:
        """Which of :data:`SELECTIONS` a session table uses ("natural" for a natural image set)."""
        if self.natural is not None:
            return "natural"
        return "final_best" if self.final_best else "top" if self.top else "images"


def parse_takes(tables: Any) -> tuple[SessionTake, ...]:
    """The ``[[screening.take]]`` array, checked; a ValueError names the table (by number and group) and field."""
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f'[[screening.take]]: source = "{SESSIONS_SOURCE}" needs at least one [[screening.take]] '
                         f"table, got {tables!r:.80}")
    return tuple(_parse_take(n, table) for n, table in enumerate(tables, start=1))


def _parse_take(number: int, table: dict[str, Any]) -> SessionTake:
    where = f"[[screening.take]] #{number}"
    group = table.get("group")
    if not isinstance(group, str) or not _GROUP.fullmatch(group):
        raise ValueError(f"{where} group: expected a label of 1-40 letters, digits, '_' or '-', got {group!r}")
    where = f"{where} (group {group!r})"

    def get(key: str, kind: type, default: Any, check=lambda v: True, expected: str = "") -> Any:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, kind) or not check(value):
            raise ValueError(f"{where} {key}: expected {expected}, got {value!r}")
        return value

    has_session, has_natural = "session" in table, "natural" in table
    if has_session == has_natural:
        raise ValueError(f"{where}: give exactly one of session = \"FILE.h5\" (images from a session) or "
                         f"natural = \"foolbox-imagenet\" or a folder (natural images)")
    if has_natural:
        allowed = {"group", "natural", "count"}
        take = SessionTake(group=group, natural=get("natural", str, None, bool, "a non-empty string"),
                           count=get("count", int, 0, lambda v: 0 <= v <= _MAX_IMAGES,
                                     f"an integer in 0..{_MAX_IMAGES} (0: all)"))
    else:
        allowed = {"group", "session", "thread", "sha256", *SELECTIONS}
        chosen = [key for key in SELECTIONS if key in table]
        if len(chosen) != 1:
            raise ValueError(f"{where}: choose the images with exactly one of final_best = N (the best N of the "
                             f"final generation), top = N (the top N over the session) or images = [[generation, "
                             f"index], ...]; got {chosen or 'none'}")
        take = SessionTake(
            group=group,
            session=get("session", str, None, lambda v: v.endswith((".h5", ".hdf5")), "a session file (.h5)"),
            thread=get("thread", int, 0, lambda v: v >= 0, "an integer >= 0"),
            final_best=get("final_best", int, 0, _is_count, f"an integer in 1..{_MAX_IMAGES}"),
            top=get("top", int, 0, _is_count, f"an integer in 1..{_MAX_IMAGES}"),
            images=_pairs(where, table.get("images", [])),
            sha256=get("sha256", str, None, lambda v: bool(_SHA256.fullmatch(v)), "64 lower-case hex digits"),
        )
        if chosen == ["images"] and not take.images:
            raise ValueError(f"{where} images: the list is empty; name at least one [generation, index]")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; valid fields: {sorted(allowed)}")
    return take


def _is_count(value: int) -> bool:
    return 1 <= value <= _MAX_IMAGES


def _pairs(where: str, value: Any) -> tuple[tuple[int, int], ...]:
    def is_index(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(value, list) or len(value) > _MAX_IMAGES or not all(
            isinstance(p, list) and len(p) == 2 and all(map(is_index, p)) for p in value):
        raise ValueError(f"{where} images: expected a list of [generation, index] pairs of integers >= 0, "
                         f"got {value!r:.80}")
    pairs = tuple((int(g), int(i)) for g, i in value)
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"{where} images: a [generation, index] pair is listed twice")
    return pairs
