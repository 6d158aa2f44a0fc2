"""The ask/tell optimizer interface, in the spirit of pycma's ``OOOptimizer``.

The optimizer knows nothing but codes and scores: the controller owns the loop.
Scores are *maximised* (firing rates), whatever the underlying library does.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.registry import Configurable, Options, Registry, option

__all__ = ["MAX_POPSIZE", "MAX_STEP", "OPTIMIZERS", "Optimizer", "PopulationOptions", "popsize_option",
           "step_option"]

#: Every optimizer kind, registered beside its class (``@OPTIMIZERS.register("cmaes", CMAESOptions)``).
OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")

#: Limits, beyond which a protocol would exhaust memory or overflow before any block could say why.
MAX_POPSIZE = 10_000
#: Step sizes in code units (codes are O(1); the labs start at 3).
MAX_STEP = 1e4


def popsize_option(default: int = 40) -> Any:
    """λ, codes per generation (DESIGN §5: the labs use 40)."""
    return option(default, low=2, high=MAX_POPSIZE)


def step_option(default: float) -> Any:
    """A step size or spread in code units, in (0, MAX_STEP]."""
    return option(default, low=0, high=MAX_STEP, low_open=True)


@dataclass(frozen=True)
class PopulationOptions(Options):
    """What every optimizer takes: the population size (the labs' λ = 40)."""

    popsize: int = popsize_option()


class Optimizer(Configurable, abc.ABC):
    """Proposes ``popsize`` codes of length ``dim`` per generation and learns from their scores.

    The base class checks the constructor's arguments (``dim``, ``seed``, ``x0``
    and the options, against the registered options dataclass) and the
    ask/tell protocol once; subclasses implement :meth:`_ask`, :meth:`_tell`,
    :meth:`_get_state` and :meth:`_set_state`.
    """

    interface = "optimizer"
    Options = PopulationOptions

    def __init__(self, dim: int, *, seed: int, x0: np.ndarray | None = None, **options: Any) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.configure(options)
        self.dim = int(dim)
        self.seed = int(seed)
        self.popsize = int(self.options.popsize)
        self.generation = 0
        self._pending: np.ndarray | None = None
        if x0 is None:
            x0 = np.zeros(self.dim)
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.shape != (self.dim,) or not np.all(np.isfinite(x0)):
            raise ValueError(f"x0 must be a finite vector of shape ({self.dim},), got shape {x0.shape}")
        #: The start code (a copy): the zero code unless given.
        self.x0 = x0.copy()

    def ask(self) -> np.ndarray:
        """Return the next generation's codes, shape (popsize, dim), float64."""
        if self._pending is not None:
            raise RuntimeError(
                f"ask() called twice without tell(): generation {self.generation} is still pending"
            )
        codes = np.asarray(self._ask(), dtype=np.float64)
        if codes.shape != (self.popsize, self.dim):
            raise RuntimeError(f"{type(self).__name__} produced codes of shape {codes.shape}")
        self._pending = codes.copy()
        return codes

    def tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        """Report ``scores`` (higher is better) for the ``codes`` returned by the last :meth:`ask`."""
        if self._pending is None:
            raise RuntimeError("tell() without a pending ask(): each generation is told exactly once")
        codes = np.asarray(codes, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64).ravel()
        if codes.shape != self._pending.shape:
            raise ValueError(f"codes shape {codes.shape} must equal the asked shape {self._pending.shape}")
        if len(scores) != len(codes):
            raise ValueError(f"#scores = {len(scores)} must equal #codes = {len(codes)}")
        if not np.array_equal(codes, self._pending):
            raise ValueError("tell() must receive the codes returned by the last ask(), unchanged and in order")
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"scores must be finite; got non-finite at positions {np.flatnonzero(~np.isfinite(scores)).tolist()}")
        self._tell(codes, scores)
        self._pending = None
        self.generation += 1

    @property
    @abc.abstractmethod
    def mean(self) -> np.ndarray:
        """The current centre of the search distribution."""

    def get_state(self) -> bytes:
        """Everything needed to continue bit-identically, as bytes (between generations only)."""
        if self._pending is not None:
            raise RuntimeError("cannot save optimizer state between ask() and tell()")
        return self.generation.to_bytes(8, "little") + self._get_state()

    def set_state(self, state: bytes) -> None:
        """Restore a state returned by :meth:`get_state`."""
        if len(state) < 8:
            raise ValueError(f"optimizer state is {len(state)} bytes long; too short to be a saved state")
        self._set_state(state[8:])
        self.generation = int.from_bytes(state[:8], "little")
        self._pending = None

    @abc.abstractmethod
    def _ask(self) -> np.ndarray: ...

    @abc.abstractmethod
    def _tell(self, codes: np.ndarray, scores: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _get_state(self) -> bytes: ...

    @abc.abstractmethod
    def _set_state(self, state: bytes) -> None: ...
