"""The reference optimizer: the smallest correct ask/tell evolution strategy.

Like pycma's ``purecma``, it is the spec of the interface and a test double:
a (μ/μ, λ)-ES with isotropic Gaussian samples around a mean, the new mean the
plain average of the best half, and the step size multiplied by ``decay``
each generation. Nothing is adapted, so its behaviour is easy to predict.
"""
from __future__ import annotations

import numpy as np

from ._args import check_positive, check_seed, check_x0
from .base import Optimizer
from .state import new_rng, pack_state, rng_from_state, unpack_state

__all__ = ["SimpleES"]

_STATE_VERSION = 1


class SimpleES(Optimizer):
    """(μ/μ, λ)-ES, μ = λ/2, maximising scores.

    Args:
        dim: Code length.
        popsize: λ.
        sigma0: Step size of the first generation.
        seed: Seed of the private random generator.
        decay: Factor on the step size after each generation, in (0, 1].
        x0: Start mean; ``None`` is the zero code.
    """

    def __init__(self, dim: int, popsize: int = 40, sigma0: float = 3.0, *, seed: int,
                 decay: float = 0.97, x0: np.ndarray | None = None) -> None:
        super().__init__(dim, popsize)
        self.seed = check_seed(seed)
        self.sigma0 = check_positive("sigma0", sigma0)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise ValueError(f"decay must be a number in (0, 1], got {decay!r}")
        self.decay = float(decay)
        self.sigma = self.sigma0
        self._mean = check_x0(x0, self.dim)
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
