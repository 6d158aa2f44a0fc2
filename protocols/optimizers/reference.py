"""The reference optimizer: the smallest correct ask/tell evolution strategy.

Like pycma's ``purecma``, it is the spec of the interface and a test double:
a (μ/μ, λ)-ES with isotropic Gaussian samples around a mean, the new mean the
plain average of the best half, and the step size multiplied by ``decay``
each generation. Nothing is adapted, so its behaviour is easy to predict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.registry import option

from .base import OPTIMIZERS, Optimizer, PopulationOptions, step_option
from .state import new_rng, pack_state, rng_from_state, unpack_state

__all__ = ["SimpleES", "SimpleESOptions"]

_STATE_VERSION = 1


@dataclass(frozen=True)
class SimpleESOptions(PopulationOptions):
    """``[optimizer] kind = "simple-es"``."""

    #: Step size of the first generation.
    sigma0: float = step_option(3.0)
    #: Factor on the step size after each generation.
    decay: float = option(0.97, low=0, high=1, low_open=True)


@OPTIMIZERS.register("simple-es", SimpleESOptions)
class SimpleES(Optimizer):
    """(μ/μ, λ)-ES, μ = λ/2, maximising scores.

    Args:
        dim: Code length.
        seed: Seed of the private random generator.
        x0: Start mean; ``None`` is the zero code.
        **options: :class:`SimpleESOptions` (``popsize``: λ; ``sigma0``; ``decay``).
    """

    def __init__(self, dim: int, *, seed: int, x0: np.ndarray | None = None, **options: Any) -> None:
        super().__init__(dim, seed=seed, x0=x0, **options)
        self.sigma0 = self.options.sigma0
        self.decay = self.options.decay
        self.sigma = self.sigma0
        self._mean = self.x0.copy()
        self._rng = new_rng(self.seed)

    @property
    def mean(self) -> np.ndarray:
        """The distribution mean (a copy)."""
        return self._mean.copy()

    def _ask(self) -> np.ndarray:
        return self._mean + self.sigma * self._rng.standard_normal((self.popsize, self.dim))

    def _tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        best = np.argsort(-scores, kind="stable")[: self.popsize // 2]
        self._mean = codes[best].mean(axis=0)
        self.sigma *= self.decay

    def _config(self) -> dict:
        return {"dim": self.dim, "popsize": self.popsize, "decay": self.decay}

    def _get_state(self) -> bytes:
        scalars = {"seed": self.seed, "sigma0": self.sigma0, "sigma": self.sigma, "rng": self._rng.bit_generator.state}
        return pack_state("simple-es", _STATE_VERSION, self._config(), scalars, {"mean": self._mean})

    def _set_state(self, state: bytes) -> None:
        scalars, arrays = unpack_state(state, "simple-es", _STATE_VERSION, self._config())
        mean = arrays.get("mean")
        if mean is None or mean.shape != (self.dim,):
            raise ValueError(f"saved simple-es state has no mean of shape ({self.dim},)")
        try:
            self._rng = rng_from_state(scalars["rng"])
            self.seed, self.sigma0, self.sigma = scalars["seed"], scalars["sigma0"], scalars["sigma"]
        except KeyError as exc:
            raise ValueError(f"saved simple-es state is missing {exc}") from None
        self._mean = mean
