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

import numpy as np

from ._args import check_positive, check_seed, check_x0
from .base import Optimizer
from .state import new_rng, pack_state, rng_from_state, unpack_state

__all__ = ["Genetic"]

_STATE_VERSION = 1


class Genetic(Optimizer):
    """XDream's genetic algorithm, maximising scores.

    Args:
        dim: Code length.
        popsize: Codes per generation.
        seed: Seed of the private random generator.
        mutation_rate: Probability that a child's gene mutates, in [0, 1].
        mutation_size: Standard deviation of a mutation, > 0.
        kT_multiplier: Softmax temperature in units of the scores' standard deviation, > 0.
        n_conserve: Best codes kept unchanged, 0 <= n_conserve < popsize.
        parental_skew: Share of genes from the first parent, in [0.5, 1].
        init_sigma: Spread of the first population around ``x0``, > 0.
        x0: Centre of the first population; ``None`` is the zero code.
    """

    def __init__(self, dim: int, popsize: int = 40, *, seed: int, mutation_rate: float = 0.25,
                 mutation_size: float = 0.75, kT_multiplier: float = 2.0, n_conserve: int = 10,
                 parental_skew: float = 0.75, init_sigma: float = 1.0, x0: np.ndarray | None = None) -> None:
        super().__init__(dim, popsize)
        self.seed = check_seed(seed)
        if isinstance(mutation_rate, bool) or not isinstance(mutation_rate, (int, float)) or not 0 <= mutation_rate <= 1:
            raise ValueError(f"mutation_rate must be a number in [0, 1], got {mutation_rate!r}")
        if isinstance(parental_skew, bool) or not isinstance(parental_skew, (int, float)) or not 0.5 <= parental_skew <= 1:
            raise ValueError(f"parental_skew must be a number in [0.5, 1], got {parental_skew!r}")
        if isinstance(n_conserve, bool) or not isinstance(n_conserve, (int, np.integer)) or not 0 <= n_conserve < self.popsize:
            raise ValueError(f"n_conserve must be an int with 0 <= n_conserve < popsize = {self.popsize}, got {n_conserve!r}")
        self.mutation_rate = float(mutation_rate)
        self.mutation_size = check_positive("mutation_size", mutation_size)
        self.kT_multiplier = check_positive("kT_multiplier", kT_multiplier)
        self.n_conserve = int(n_conserve)
        self.parental_skew = float(parental_skew)
        self.init_sigma = check_positive("init_sigma", init_sigma)
        self._rng = new_rng(self.seed)
        x0 = check_x0(x0, self.dim)
        self._population = x0 + self.init_sigma * self._rng.standard_normal((self.popsize, self.dim))
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
