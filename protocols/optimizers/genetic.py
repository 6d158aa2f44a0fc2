"""The genetic algorithm of XDream, with the parameters of the labs' benchmarks.

Per generation (Xiao & Kreiman 2020, ``xdream/Optimizers.py`` ``Genetic``; the
Ponce lab's benchmark copy in ActMax ``core/Optimizers.py``):

1. sort the population by score, best first;
2. fitness is a softmax of the scores, ``exp((s - s_max) / kT)`` with the
   temperature ``kT = kT_multiplier · std(scores)`` following the spread of
   the scores (floored at 1e-8);
3. the ``n_conserve`` best codes pass unchanged;
4. every other slot is a child of two parents drawn with probability
   proportional to fitness; each gene comes from the first parent with
   probability ``parental_skew``, else from the second;
5. each child gene mutates with probability ``mutation_rate`` by adding
   ``N(0, mutation_size²)``.

The first population is ``x0 + N(0, init_sigma²)`` (XDream: standard normal).
Defaults are the labs' benchmark settings: population 40, mutation rate 0.25,
mutation size 0.75, kT multiplier 2, 10 conserved, parental skew 0.75.
Randomness comes from a private seeded ``np.random.Generator``; the draws are
vectorised, so the stream differs from XDream's (the distribution does not).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.registry import option

from .base import MAX_POPSIZE, OPTIMIZERS, Optimizer, PopulationOptions, step_option
from .state import new_rng, pack_state, rng_from_state, unpack_state

__all__ = ["Genetic", "GeneticOptions"]

_STATE_VERSION = 1


@dataclass(frozen=True)
class GeneticOptions(PopulationOptions):
    """``[optimizer] kind = "genetic"``: the labs' benchmark settings."""

    #: Probability that a child's gene mutates.
    mutation_rate: float = option(0.25, low=0, high=1)
    #: Standard deviation of a mutation.
    mutation_size: float = step_option(0.75)
    #: Softmax temperature in units of the scores' standard deviation.
    kT_multiplier: float = step_option(2.0)
    #: Best codes kept unchanged.
    n_conserve: int = option(10, low=0, high=MAX_POPSIZE - 1, valid="an int >= 0 and < popsize")
    #: Share of genes from the first parent.
    parental_skew: float = option(0.75, low=0.5, high=1)
    #: Spread of the first population around ``x0``.
    init_sigma: float = step_option(1.0)

    def check(self) -> None:
        if self.n_conserve >= self.popsize:
            self.invalid("n_conserve", f"< popsize = {self.popsize}")


@OPTIMIZERS.register("genetic", GeneticOptions)
class Genetic(Optimizer):
    """XDream's genetic algorithm, maximising scores.

    Args:
        dim: Code length.
        seed: Seed of the private random generator.
        x0: Centre of the first population; ``None`` is the zero code.
        **options: :class:`GeneticOptions` (``popsize``, ``mutation_rate``,
            ``mutation_size``, ``kT_multiplier``, ``n_conserve``, ``parental_skew``, ``init_sigma``).
    """

    def __init__(self, dim: int, *, seed: int, x0: np.ndarray | None = None, **options: Any) -> None:
        super().__init__(dim, seed=seed, x0=x0, **options)
        o = self.options
        self.mutation_rate = o.mutation_rate
        self.mutation_size = o.mutation_size
        self.kT_multiplier = o.kT_multiplier
        self.n_conserve = o.n_conserve
        self.parental_skew = o.parental_skew
        self.init_sigma = o.init_sigma
        self._rng = new_rng(self.seed)
        self._population = self.x0 + self.init_sigma * self._rng.standard_normal((self.popsize, self.dim))
        #: The last temperature used (None before the first tell).
        self.kT: float | None = None

    @property
    def mean(self) -> np.ndarray:
        """The mean code of the current population."""
        return self._population.mean(axis=0)

    @property
    def population(self) -> np.ndarray:
        """The codes the next :meth:`ask` returns (a copy)."""
        return self._population.copy()

    def _ask(self) -> np.ndarray:
        return self._population.copy()

    def _tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        order = np.argsort(-scores, kind="stable")
        ranked, ranked_scores = codes[order], scores[order]
        self.kT = max(float(np.std(scores)) * self.kT_multiplier, 1e-8)
        fitness = np.exp((ranked_scores - ranked_scores[0]) / self.kT)
        # XDream lifts underflowed (zero) fitness to the smallest positive value, which
        # with extreme selectivity makes every code equally likely; a zero here
        # just means "never a parent", which is what the softmax says.
        bins = np.cumsum(fitness)
        bins /= bins[-1]
        n_children = self.popsize - self.n_conserve
        parent1 = np.digitize(self._rng.random(n_children), bins)
        parent2 = np.digitize(self._rng.random(n_children), bins)
        from_first = self._rng.random((n_children, self.dim)) < self.parental_skew
        children = np.where(from_first, ranked[parent1], ranked[parent2])
        mutate = self._rng.random(children.shape) < self.mutation_rate
        children[mutate] += self._rng.normal(0.0, self.mutation_size, size=int(mutate.sum()))
        self._population = np.concatenate([ranked[: self.n_conserve], children])

    def _config(self) -> dict:
        return {"dim": self.dim, "popsize": self.popsize, "mutation_rate": self.mutation_rate,
                "mutation_size": self.mutation_size, "kT_multiplier": self.kT_multiplier,
                "n_conserve": self.n_conserve, "parental_skew": self.parental_skew}

    def _get_state(self) -> bytes:
        scalars = {"seed": self.seed, "init_sigma": self.init_sigma, "kT": self.kT,
                   "rng": self._rng.bit_generator.state}
        return pack_state("genetic", _STATE_VERSION, self._config(), scalars, {"population": self._population})

    def _set_state(self, state: bytes) -> None:
        scalars, arrays = unpack_state(state, "genetic", _STATE_VERSION, self._config())
        population = arrays.get("population")
        if population is None or population.shape != (self.popsize, self.dim):
            shape = None if population is None else population.shape
            raise ValueError(f"saved genetic state holds a population of shape {shape}, "
                             f"expected {(self.popsize, self.dim)}")
        try:
            self._rng = rng_from_state(scalars["rng"])
            self.seed, self.init_sigma, self.kT = scalars["seed"], scalars["init_sigma"], scalars["kT"]
        except KeyError as exc:
            raise ValueError(f"saved genetic state is missing {exc}") from None
        self._population = population
