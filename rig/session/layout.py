"""The session file's fixed parts: schema constants, errors, names, digests, durable writes."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np


SCHEMA = "rig.session"
SCHEMA_VERSION = 2
#: Versions :func:`read_session` understands (1: blocks written in place, no journal or digests).
READABLE_VERSIONS = (1, 2)
JOURNAL_SUFFIX = ".journal"
PARTIAL_PREFIX = ".partial-"  # schema 1 wrote blocks under this name before moving them into place
JOURNAL_BLOCK = re.compile(r"^(\d{6})\.h5$")
#: A block the operator stopped before it finished: its showings, kept under ``unfinished/`` (never a block).
JOURNAL_UNFINISHED = re.compile(r"^unfinished-(\d{6})-(\d+)\.h5$")
#: An operator's control (pause, stop, extend, note, ...) as the controller took it: one JSON object per file.
JOURNAL_CONTROL = re.compile(r"^control-(\d{6})\.json$")
#: The dtype of every text dataset (UTF-8).
STRING_DTYPE = h5py.string_dtype(encoding="utf-8")
# What a damaged or hand-made file can make h5py, numpy or json raise while we read it. MemoryError is a
# backstop: declared sizes are checked first (check_size), so a crafted shape is refused before allocating.
READ_ERRORS = (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError,
               UnicodeError, OverflowError, MemoryError, json.JSONDecodeError)

#: A dataset or attribute may declare at most this many bytes plus DECLARED_PER_FILE_BYTE per byte of its file.
#: The writer stores everything uncompressed, so a real one is never bigger than its file; the margin admits a
#: file repacked with compression. A crafted shape (2**40 x 2 floats, in a 10 kB file) is refused by name.
DECLARED_BASE_BYTES = 64 * 2**20
DECLARED_PER_FILE_BYTE = 16
#: Deepest nesting of a JSON attribute (the writer's deepest is about 6).
MAX_JSON_DEPTH = 64


class SessionFileError(ValueError):
    """A session file cannot be created, read or resumed as a session."""


class SessionWriteError(OSError):
    """A session file could not be written (disk full, read-only folder, a file in the way).

    An OSError, so callers treat it as a failed run (exit 1), not as bad input;
    its message names the file and says what was kept.
    """


def declared_limit(path: Path) -> int:
    """Most bytes one dataset or attribute of ``path`` may declare (see DECLARED_BASE_BYTES)."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return DECLARED_BASE_BYTES + DECLARED_PER_FILE_BYTE * size


def check_size(obj: Any, where: str, limit: int) -> None:
    """Refuse a dataset (or attribute id) whose declared shape holds more than ``limit`` bytes, before reading it.

    Raises:
        SessionFileError: naming ``where``, the declared shape and the limit.
    """
    shape = obj.shape
    if shape is None:  # an empty (null) dataspace holds nothing
        return
    elements = 1
    for extent in shape:
        elements *= int(extent)
    size = elements * max(int(obj.dtype.itemsize), 1)
    if size > limit:
        raise SessionFileError(f"{where}: declares shape {tuple(int(e) for e in shape)} of {obj.dtype} "
                               f"({size / 2**20:.3g} MiB), more than a session file of this size can hold "
                               f"({limit / 2**20:.3g} MiB); the file is damaged or crafted")


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(text: Any, where: str) -> Any:
    """A JSON attribute's value; a SessionFileError naming ``where`` when it is not JSON or nested too deep."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SessionFileError(f"{where} is not JSON ({type(exc).__name__}): {str(text)[:80]!r}") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise SessionFileError(f"{where} is JSON nested more than {MAX_JSON_DEPTH} levels deep; "
                               f"the file is damaged or crafted")
    return value


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour a session depends on."""
    versions = {"python": platform.python_version()}
    for name in ("rig-controller", "torch", "torchvision", "timm", "numpy", "cma", "h5py", "pyzmq", "psychopy-lib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def utc_now() -> str:
    """Now, as the session file writes times: ``YYYY-MM-DDTHH:MM:SSZ`` (UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def clock_anchor() -> dict[str, float]:
    """``time.monotonic()`` and Unix time read together, tying a process's display clock to the wall clock.

    Recorded when a session is created and at each resume (a resumed process
    may run after a reboot, when ``time.monotonic`` starts again).
    """
    return {"monotonic_s": time.monotonic(), "unix_s": time.time()}


def block_name(index: int) -> str:
    """The name of block ``index`` in the file and its journal: six digits."""
    return f"{index:06d}"


def journal_dir(path: str | Path) -> Path:
    """The folder holding the blocks of ``path`` not yet merged into it."""
    path = Path(path)
    return path.with_name(path.name + JOURNAL_SUFFIX)


def fsync_path(path: Path) -> None:
    """Make ``path`` (a file or a folder, for the renames in it) durable across power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def claim_path(tmp: Path, path: Path) -> None:
    """Make the complete file ``tmp`` appear at ``path`` atomically and durably, only if nothing is there yet.

    A hard link, unlike a rename, never replaces what is at ``path``; so two
    writers racing for one path cannot overwrite each other. ``tmp`` is removed.

    Raises:
        SessionFileError: something appeared at ``path`` first (nothing was overwritten).
    """
    fsync_path(tmp)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise SessionFileError(f"{path}: appeared while this file was being created (another writer?); "
                               f"nothing was overwritten") from None
    tmp.unlink()
    fsync_path(path.parent)


def strings_array(values: Sequence[str]) -> np.ndarray:
    """Strings as h5py writes them with :data:`STRING_DTYPE`."""
    return np.array(list(values), dtype=object)


def block_digest(fields: dict[str, Any]) -> str:
    """SHA-256 of a block's recorded content, in a canonical form independent of HDF5 storage.

    ``fields``: index, channel_names, stimulus_ids, kinds (strings) and codes,
    threads, code_index, onset_times, offset_times, dropped_frames,
    presentation_valid, scores, valid (arrays). Stored as the block's
    ``sha256`` attribute so a corrupted or edited block is recognised.
    """
    h = hashlib.sha256()
    h.update(f"index={int(fields['index'])}\n".encode())
    for name in ("channel_names", "stimulus_ids", "kinds"):
        h.update(f"{name}=".encode() + "\x00".join(fields[name]).encode() + b"\n")
    canonical = {"codes": np.float64, "threads": np.int64, "code_index": np.int64, "onset_times": np.float64,
                 "offset_times": np.float64, "dropped_frames": np.int64, "presentation_valid": np.uint8,
                 "scores": np.float64, "valid": np.uint8}
    for name, dtype in canonical.items():
        array = np.ascontiguousarray(np.asarray(fields[name]).astype(dtype))
        h.update(f"{name}{array.shape}=".encode() + array.tobytes() + b"\n")
    return h.hexdigest()


def unfinished_files(folder: Path) -> list[Path]:
    """Journal files of unfinished (stopped) blocks, in the order they were written."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(2)), e) for e in folder.iterdir() if (m := JOURNAL_UNFINISHED.match(e.name)) and e.is_file()]
    return [path for _, path in sorted(found)]


def control_files(folder: Path) -> list[Path]:
    """Journal files of controls not yet merged into the master, in the order they were taken."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), e) for e in folder.iterdir() if (m := JOURNAL_CONTROL.match(e.name)) and e.is_file()]
    return [path for _, path in sorted(found)]


def journal_files(folder: Path) -> list[tuple[int, Path]]:
    """Complete journal block files, in block order; ``.partial`` files (killed mid-write) are left out."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = JOURNAL_BLOCK.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)
