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
_PARTIAL_PREFIX = ".partial-"  # schema 1 wrote blocks under this name before moving them into place
_JOURNAL_BLOCK = re.compile(r"^(\d{6})\.h5$")
_STR = h5py.string_dtype(encoding="utf-8")
# What a damaged or hand-made file can make h5py, numpy or json raise while we read it.
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError,
                UnicodeError, OverflowError, json.JSONDecodeError)


class SessionFileError(ValueError):
    """A session file cannot be created, read or resumed as a session."""


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour a session depends on."""
    versions = {"python": platform.python_version()}
    for name in ("rig-controller", "torch", "torchvision", "timm", "numpy", "cma", "h5py", "pyzmq", "psychopy-lib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def clock_anchor() -> dict[str, float]:
    """``time.monotonic()`` and Unix time read together, tying a process's display clock to the wall clock.

    Recorded when a session is created and at each resume (a resumed process
    may run after a reboot, when ``time.monotonic`` starts again).
    """
    return {"monotonic_s": time.monotonic(), "unix_s": time.time()}


def _block_name(index: int) -> str:
    return f"{index:06d}"


def journal_dir(path: str | Path) -> Path:
    """The folder holding the blocks of ``path`` not yet merged into it."""
    path = Path(path)
    return path.with_name(path.name + JOURNAL_SUFFIX)


def _fsync(path: Path) -> None:
    """Make ``path`` (a file or a folder, for the renames in it) durable across power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _strings_array(values: Sequence[str]) -> np.ndarray:
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


def _journal_files(folder: Path) -> list[tuple[int, Path]]:
    """Complete journal block files, in block order; ``.partial`` files (killed mid-write) are left out."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _JOURNAL_BLOCK.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)
