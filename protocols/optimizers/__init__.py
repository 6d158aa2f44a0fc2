"""Ask/tell optimizers over latent codes, registered by kind in :data:`OPTIMIZERS`.

Every optimizer starts from the labs' defaults (DESIGN §5: λ = 40, σ₀ = 3, the
zero code, μ = λ/2; the genetic algorithm with XDream's benchmark settings),
written once, in its options dataclass beside its class; a protocol's
``[optimizer]`` table overrides any of them by name, and a bad name or value is
rejected with what is valid (:mod:`protocols.registry`).
"""
from __future__ import annotations

from typing import Any

from .base import MAX_POPSIZE, MAX_STEP, OPTIMIZERS, Optimizer
# Imported in this order so that kinds list as cmaes, cholesky-cmaes, genetic, simple-es.
from .cmaes import CMAES, CMAESOptions  # noqa: I001
from .cholesky import CholeskyCMAES, CholeskyCMAESOptions
from .genetic import Genetic, GeneticOptions
from .reference import SimpleES, SimpleESOptions

__all__ = [
    "CMAES",
    "CMAESOptions",
    "CholeskyCMAES",
    "CholeskyCMAESOptions",
    "Genetic",
    "GeneticOptions",
    "MAX_POPSIZE",
    "MAX_STEP",
    "OPTIMIZERS",
    "OPTIMIZER_KINDS",
    "Optimizer",
    "SimpleES",
    "SimpleESOptions",
    "build_optimizer",
    "optimizer_options",
    "optimizer_state_bytes",
    "optimizer_values",
]

#: The optimizer kinds :func:`build_optimizer` accepts.
OPTIMIZER_KINDS: tuple[str, ...] = OPTIMIZERS.kinds()


def optimizer_options(kind: str) -> dict[str, Any]:
    """The options of ``kind`` with their lab defaults (what a protocol may override)."""
    return OPTIMIZERS.entry(kind).options.defaults()


def optimizer_state_bytes(kind: str, dim: int, popsize: int, diagonal: bool = False) -> int:
    """Roughly how many bytes one optimizer of ``kind`` holds for codes of length ``dim`` (float64 arrays).

    Full-covariance strategies hold a few ``dim x dim`` matrices (pycma: the
    covariance, its eigenbasis and a work copy; Cholesky: the factor and its
    inverse); the others, and every kind's asked and told populations, scale
    with ``popsize x dim``.
    """
    matrices = {"cmaes": 0 if diagonal else 4, "cholesky-cmaes": 3}.get(kind, 0)
    return 8 * (matrices * dim * dim + 4 * popsize * dim + 32 * dim)


def build_optimizer(kind: str, dim: int, seed: int, **options: Any) -> Optimizer:
    """Build the optimizer ``kind`` for codes of length ``dim``, seeded with ``seed``.

    ``options`` are a protocol's ``[optimizer]`` table without ``kind``; each
    kind's options, defaults and bounds are its options dataclass
    (:class:`CMAESOptions`, :class:`CholeskyCMAESOptions`, :class:`GeneticOptions`,
    :class:`SimpleESOptions`).

    Raises:
        ValueError: unknown kind, unknown option or invalid value; the message
            names it and says what is valid.
    """
    return OPTIMIZERS.build(kind, options, dim, seed=seed)


def optimizer_values(kind: str, **options: Any) -> dict[str, Any]:
    """Every option of ``kind``: the defaults overridden by ``options``, each checked (as :func:`build_optimizer`).

    Nothing is built, so sizes can be checked before any memory is spent.
    """
    return OPTIMIZERS.options(kind, options).as_kwargs()
