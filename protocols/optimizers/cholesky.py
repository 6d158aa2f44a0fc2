"""The Cholesky-update CMA-ES the labs use for speed (Ponce lab, ``CholeskyCMAES``).

Samples are ``mean + σ z A`` with ``z ~ N(0, I)`` and ``AᵀA = C``. Instead of
eigendecomposing ``C``, the factor ``A`` and its inverse get a rank-one update
from the evolution path ``p_c`` once every ``update_every`` generations
(Igel, Suttorp & Hansen 2006). Parameters follow the reference: μ = λ/2 with
log-rank weights, ``c_c = 4/(N+4)``, ``c_σ = √μ_eff/(√μ_eff+√N)``,
``c_1 = 2/(N+√2)²``, and the update fires when more than ``update_every · λ``
evaluations have passed since the last one.

Why it is cheap here: every update adds one rank-one term, so
``A = g (I + Σ uⱼᵀwⱼ)`` and ``A⁻¹ = h (I + Σ rⱼᵀsⱼ)`` are kept as a scalar and
``k`` pairs of vectors instead of two dense N×N matrices (2 × 134 MB at
N = 4096). Sampling costs O(λ N k) rather than O(λ N²), and the saved state is
a few vectors, not 268 MB. The algebra is the reference's, term for term.

Two deliberate differences from the reference code: the first generation is
sampled around the start code (the reference instead averages an externally
supplied first generation), and all randomness comes from a private seeded
``np.random.Generator``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.registry import option

from .base import OPTIMIZERS, Optimizer, PopulationOptions, step_option
from .state import new_rng, pack_state, rng_from_state, unpack_state

__all__ = ["CholeskyCMAES", "CholeskyCMAESOptions"]

_STATE_VERSION = 1


@dataclass(frozen=True)
class CholeskyCMAESOptions(PopulationOptions):
    """``[optimizer] kind = "cholesky-cmaes"``: the labs' defaults (λ = 40, σ₀ = 3, the reference's update interval)."""

    #: Initial step size.
    sigma0: float = step_option(3.0)
    #: Update the factor once more than this many generations' evaluations have passed since the
    #: last update (the reference's ``Aupdate_freq``).
    update_every: int = option(10, low=1, high=1_000_000,
                               valid="an int in 1..1000000 (generations between factor updates)")


@OPTIMIZERS.register("cholesky-cmaes", CholeskyCMAESOptions)
class CholeskyCMAES(Optimizer):
    """CMA-ES with a rank-one-updated Cholesky factor, maximising scores.

    Args:
        dim: Code length N.
        seed: Seed of the private random generator.
        x0: Start code; ``None`` is the zero code.
        **options: :class:`CholeskyCMAESOptions` (``popsize``: λ, μ = λ/2 parents;
            ``sigma0``; ``update_every``).
    """

    def __init__(self, dim: int, *, seed: int, x0: np.ndarray | None = None, **options: Any) -> None:
        super().__init__(dim, seed=seed, x0=x0, **options)
        self.sigma0 = self.options.sigma0
        self.update_every = self.options.update_every
        n, lam = self.dim, self.popsize
        mu = lam / 2
        weights = math.log(mu + 0.5) - np.log(np.arange(1, math.floor(mu) + 1))
        self.mu = int(math.floor(mu))
        self.weights = weights / weights.sum()
        self.mueff = float(self.weights.sum() ** 2 / np.sum(self.weights**2))
        self.cc = 4 / (n + 4)
        self.cs = math.sqrt(self.mueff) / (math.sqrt(self.mueff) + math.sqrt(n))
        self.c1 = 2 / (n + math.sqrt(2)) ** 2
        self.damps = 1 + self.cs + 2 * max(0.0, math.sqrt((self.mueff - 1) / (n + 1)) - 1)
        self.chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))

        self._rng = new_rng(self.seed)
        self._mean = self.x0.copy()
        self.sigma = self.sigma0
        self._ps = np.zeros(n)
        self._pc = np.zeros(n)
        self._evaluations = 0
        self._last_update = 0
        # A = g (I + Uᵀ W), A⁻¹ = h (I + Rᵀ S); one row per factor update.
        self._g = 1.0
        self._h = 1.0
        self._U = np.zeros((0, n))
        self._W = np.zeros((0, n))
        self._R = np.zeros((0, n))
        self._S = np.zeros((0, n))
        self._z: np.ndarray | None = None

    @property
    def mean(self) -> np.ndarray:
        """The distribution mean (a copy)."""
        return self._mean.copy()

    @property
    def factor_updates(self) -> int:
        """How many rank-one updates the factor has had."""
        return len(self._U)

    def factor(self) -> np.ndarray:
        """The dense factor A (N×N): for inspection and tests, not used by the algorithm."""
        return self._g * (np.eye(self.dim) + self._U.T @ self._W)

    def factor_inverse(self) -> np.ndarray:
        """The dense A⁻¹ (N×N), kept alongside A as in the reference."""
        return self._h * (np.eye(self.dim) + self._R.T @ self._S)

    def _times_a(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` times A."""
        return self._g * (x + (x @ self._U.T) @ self._W)

    def _ask(self) -> np.ndarray:
        self._z = self._rng.standard_normal((self.popsize, self.dim))
        return self._mean + self.sigma * self._times_a(self._z)

    def _tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        best = np.argsort(-scores, kind="stable")[: self.mu]
        self._mean = self.weights @ codes[best]
        zw = self.weights @ self._z[best]
        cs, cc = self.cs, self.cc
        self._ps = (1 - cs) * self._ps + math.sqrt(cs * (2 - cs) * self.mueff) * zw
        self._pc = (1 - cc) * self._pc + math.sqrt(cc * (2 - cc) * self.mueff) * self._times_a(zw)
        self.sigma *= math.exp((cs / self.damps) * (np.linalg.norm(self._ps) / self.chi_n - 1))
        self._evaluations += self.popsize
        if self._evaluations - self._last_update > self.update_every * self.popsize:
            self._last_update = self._evaluations
            self._update_factor()
        self._z = None

    def _update_factor(self) -> None:
        c1, pc = self.c1, self._pc
        v = self._h * (pc + (pc @ self._R.T) @ self._S)  # v = p_c A⁻¹
        normv = float(v @ v)
        if normv == 0.0:  # no path yet: the update would be the identity
            return
        root = math.sqrt(1 + normv * c1 / (1 - c1))
        # A' = √(1-c1) A + √(1-c1)/‖v‖² (root - 1) vᵀ p_c
        coef_a = math.sqrt(1 - c1) / normv * (root - 1)
        # A⁻¹' = A⁻¹/√(1-c1) - 1/(√(1-c1)‖v‖²) (1 - 1/root) A⁻¹ vᵀ v
        coef_inv = 1 / math.sqrt(1 - c1) / normv * (1 - 1 / root)
        y = self._h * (v + (v @ self._S.T) @ self._R)  # (A⁻¹ vᵀ)ᵀ
        self._g *= math.sqrt(1 - c1)
        self._h /= math.sqrt(1 - c1)
        self._U = np.vstack([self._U, (coef_a / self._g) * v])
        self._W = np.vstack([self._W, pc])
        self._R = np.vstack([self._R, (-coef_inv / self._h) * y])
        self._S = np.vstack([self._S, v])

    def _config(self) -> dict:
        return {"dim": self.dim, "popsize": self.popsize, "update_every": self.update_every}

    def _get_state(self) -> bytes:
        scalars = {"seed": self.seed, "sigma0": self.sigma0, "sigma": self.sigma, "g": self._g, "h": self._h,
                   "evaluations": self._evaluations, "last_update": self._last_update,
                   "rng": self._rng.bit_generator.state}
        arrays = {"mean": self._mean, "ps": self._ps, "pc": self._pc,
                  "U": self._U, "W": self._W, "R": self._R, "S": self._S}
        return pack_state("cholesky-cmaes", _STATE_VERSION, self._config(), scalars, arrays)

    def _set_state(self, state: bytes) -> None:
        scalars, arrays = unpack_state(state, "cholesky-cmaes", _STATE_VERSION, self._config())
        n = self.dim
        try:
            shapes_ok = all(arrays[k].shape == (n,) for k in ("mean", "ps", "pc")) and all(
                arrays[k].ndim == 2 and arrays[k].shape[1] == n and len(arrays[k]) == len(arrays["U"])
                for k in ("U", "W", "R", "S"))
            rng = rng_from_state(scalars["rng"])
            values = (scalars["seed"], float(scalars["sigma0"]), float(scalars["sigma"]), float(scalars["g"]),
                      float(scalars["h"]), int(scalars["evaluations"]), int(scalars["last_update"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"saved cholesky-cmaes state is incomplete ({type(exc).__name__}: {exc})") from None
        if not shapes_ok:
            raise ValueError(f"saved cholesky-cmaes state has arrays of the wrong shape for dim {n}: "
                             f"{ {k: a.shape for k, a in arrays.items()} }")
        self.seed, self.sigma0, self.sigma, self._g, self._h, self._evaluations, self._last_update = values
        self._rng = rng
        self._mean, self._ps, self._pc = arrays["mean"], arrays["ps"], arrays["pc"]
        self._U, self._W, self._R, self._S = arrays["U"], arrays["W"], arrays["R"], arrays["S"]
        self._z = None
