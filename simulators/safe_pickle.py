"""Read data-only pickles (CIFAR-10 python batches) without running any code from them.

The CIFAR-10 python batches are pickles: a dict of plain values (bytes, str,
ints, lists) and numpy arrays. Unpickling an arbitrary pickle can call any
importable function, so :func:`load_data_pickle` allows no global at all
except stand-ins for the few numpy names an array pickles through
(``_reconstruct``/``ndarray``/``dtype``, or ``_frombuffer`` for protocol 5)
and ``_codecs.encode`` (how protocol 2 writes bytes). The stand-ins only
record shape, dtype and raw bytes; arrays are then made with
``np.frombuffer`` of a plain numeric dtype. Everything else is refused
before it runs.
"""
from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "load_data_pickle"]

#: Plain numeric dtypes an array may have (no objects, no structured or string types).
_DTYPES = frozenset({"b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"})
#: How deep containers may nest in a data pickle.
_MAX_DEPTH = 16


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something beyond plain data and numeric numpy arrays."""


class _DType:
    """Stands in for ``numpy.dtype(spec, align, copy)`` plus its pickled state (the byte order)."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        self.spec, self.byteorder = spec, "|"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]

    def resolve(self) -> np.dtype:
        spec = self.spec.decode("ascii", "replace") if isinstance(self.spec, bytes) else self.spec
        if not isinstance(spec, str) or spec not in _DTYPES:
            raise UnsafePickleError(f"array dtype {spec!r} is not a plain numeric type")
        dtype = np.dtype(spec)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in "<>" else dtype


class _NdArray:
    """Stands in for ``numpy.ndarray`` as the class argument of ``_reconstruct``."""


class _ArrayState:
    """Stands in for ``numpy.core.multiarray._reconstruct(ndarray, shape, typecode)``; records the array's state."""

    def __init__(self, cls: Any, shape: Any, typecode: Any) -> None:
        if cls is not _NdArray:
            raise UnsafePickleError("_reconstruct of something other than numpy.ndarray")
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def resolve(self) -> np.ndarray:
        if not (isinstance(self.state, tuple) and len(self.state) == 5):
            raise UnsafePickleError("numpy array without the (version, shape, dtype, fortran, data) state")
        _version, shape, dtype, fortran, data = self.state
        return _array(data, dtype, shape, "F" if fortran else "C")


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stands in for ``numpy.core.numeric._frombuffer`` (protocol 5 arrays)."""
    return _array(buffer, dtype, shape, order)


def _array(data: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise UnsafePickleError("numpy array whose dtype is not a plain numpy.dtype")
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"numpy array data is a {type(data).__name__}, not bytes (object arrays are refused)")
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                             for n in shape)):
        raise UnsafePickleError(f"numpy array shape {shape!r} is not a tuple of sizes")
    resolved = dtype.resolve()
    if math.prod(shape) * resolved.itemsize != len(data):
        raise UnsafePickleError(f"numpy array of shape {shape} and dtype {resolved} needs "
                                f"{math.prod(shape) * resolved.itemsize} bytes, the pickle holds {len(data)}")
    return np.frombuffer(bytearray(data), dtype=resolved).reshape(shape, order="F" if order == "F" else "C")


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Stands in for ``_codecs.encode``: protocol 2 writes ``bytes`` as ``encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with {encoding!r} is not how bytes are pickled")
    return text.encode("latin1")


_ALLOWED = {
    **{(module, "_reconstruct"): _ArrayState for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _NdArray,
    ("numpy", "dtype"): _DType,
    ("_codecs", "encode"): _latin1_encode,
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(f"it asks for {module}.{name}; a data file may name no code, so it is refused")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("it uses persistent ids, which a data file does not need")


def _resolve(value: Any, depth: int = 0) -> Any:
    """Replace the stand-ins by numpy arrays, in dicts, lists and tuples of plain values."""
    if depth > _MAX_DEPTH:
        raise UnsafePickleError(f"containers nest deeper than {_MAX_DEPTH} levels")
    if isinstance(value, (_ArrayState,)):
        return value.resolve()
    if isinstance(value, (_DType, _NdArray)) or value is _NdArray or value is _DType:
        raise UnsafePickleError("a numpy type outside an array")
    if isinstance(value, dict):
        return {_resolve(k, depth + 1): _resolve(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_resolve(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if value is None or isinstance(value, (bool, int, float, str, bytes, bytearray, np.ndarray)):
        return value
    raise UnsafePickleError(f"a {type(value).__name__} is not plain data")


def load_data_pickle(path: str | Path) -> Any:
    """The plain data (dicts, lists, bytes, str, numbers, numeric numpy arrays) pickled in ``path``.

    Strings pickled by Python 2 come back as bytes (``encoding="bytes"``), as the
    CIFAR-10 batches expect.

    Raises:
        UnsafePickleError: the pickle names any other global or holds other objects (nothing was run).
        pickle.UnpicklingError, EOFError, ValueError: the file is not a well-formed pickle.
        OSError: the file cannot be read.
    """
    data = Path(path).read_bytes()
    try:
        loaded = _DataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (UnsafePickleError, EOFError):
        raise
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            RecursionError, MemoryError) as exc:
        raise pickle.UnpicklingError(f"not a well-formed pickle ({type(exc).__name__}: {exc})") from None
    return _resolve(loaded)
