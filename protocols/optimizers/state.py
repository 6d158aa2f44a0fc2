"""A pickle-free format for optimizer state: one ``.npz`` of arrays plus JSON scalars.

Session files may come from another lab or machine, so restoring a state must
not run code (a pickle would). ``np.load(..., allow_pickle=False)`` reads only
plain arrays, and the scalars (including a ``np.random.Generator``'s
``bit_generator.state``, whose integers JSON keeps exactly) travel as UTF-8
JSON in one uint8 array. Floats round-trip exactly: JSON numbers are written
with Python's shortest round-trip ``repr``.
"""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

__all__ = ["pack_state", "unpack_state", "new_rng", "rng_from_state"]

_META = "__meta__"


def new_rng(seed: int) -> np.random.Generator:
    """The private generator every optimizer draws from (never numpy's global one)."""
    return np.random.Generator(np.random.PCG64(seed))


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    """Rebuild a generator from its ``bit_generator.state`` (as saved in JSON)."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError(f"saved random generator state is not a PCG64 state: {str(state)[:80]}")
    bits = np.random.PCG64()
    bits.state = state
    return np.random.Generator(bits)


def pack_state(kind: str, version: int, config: dict[str, Any], scalars: dict[str, Any],
               arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise an optimizer state; ``config`` is what a restoring instance must match."""
    meta = json.dumps({"kind": kind, "version": version, "config": config, "scalars": scalars},
                      sort_keys=True).encode()
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    buffer = io.BytesIO()
    np.savez(buffer, **{_META: np.frombuffer(meta, dtype=np.uint8)}, **arrays)
    return buffer.getvalue()


def unpack_state(state: bytes, kind: str, version: int, config: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a state written by :func:`pack_state` for ``kind``, checking it fits ``config``.

    Raises:
        ValueError: not such a state, another kind or version, or made for
            another configuration (the differing fields are named, saved vs here).
    """
    try:
        with np.load(io.BytesIO(state), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(bytes(arrays.pop(_META)).decode())
    except Exception as exc:  # not a zip, no meta, bad JSON: all "not a state"
        raise ValueError(f"not a saved {kind} state ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind or meta.get("version") != version:
        found = (meta.get("kind"), meta.get("version")) if isinstance(meta, dict) else None
        raise ValueError(f"saved state is (kind, version) = {found}, expected ({kind!r}, {version})")
    theirs = meta.get("config", {})
    if theirs != config:
        diff = {k: (theirs.get(k), config.get(k)) for k in sorted(set(theirs) | set(config))
                if theirs.get(k) != config.get(k)}
        raise ValueError(f"saved {kind} state does not fit this optimizer: (saved, here) = {diff}")
    return meta["scalars"], arrays
