"""Ask/tell optimizers over latent codes, and the registry that builds them from a protocol file.

Every optimizer starts from the labs' defaults (DESIGN §5: λ = 40, σ₀ = 3, the
zero code, μ = λ/2; the genetic algorithm with XDream's benchmark settings);
a protocol's ``[optimizer]`` table overrides any of them by name, and a bad
name or value is rejected with what is valid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .base import Optimizer
from .cholesky import CholeskyCMAES
from .cmaes import CMAES
from .genetic import Genetic
from .reference import SimpleES

__all__ = [
    "CMAES",
    "CholeskyCMAES",
    "Genetic",
    "OPTIMIZER_KINDS",
    "Optimizer",
    "SimpleES",
    "build_optimizer",
    "optimizer_options",
    "optimizer_state_bytes",
    "optimizer_values",
]


@dataclass(frozen=True)
class _Option:
    check: Callable[[Any], bool]
    valid: str  # what is valid, for messages
    default: Any


def _int_in(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _number(low: float, high: float = math.inf, *, low_open: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > low if low_open else v >= low) and v <= high
    return check


#: Limits, beyond which a protocol would exhaust memory or overflow before any block could say why.
MAX_POPSIZE = 10_000
#: Step sizes in code units (codes are O(1); the labs start at 3).
MAX_STEP = 1e4
_POPSIZE = _Option(_int_in(2, MAX_POPSIZE), f"an int in 2..{MAX_POPSIZE}", 40)
_SIGMA0 = _Option(_number(0, MAX_STEP, low_open=True), f"a number in (0, {MAX_STEP:g}]", 3.0)
_STEP = f"a number in (0, {MAX_STEP:g}]"

#: kind -> (class, {option: spec})
_KINDS: dict[str, tuple[type[Optimizer], dict[str, _Option]]] = {
    "cmaes": (CMAES, {
        "popsize": _POPSIZE,
        "sigma0": _SIGMA0,
        "diagonal": _Option(lambda v: isinstance(v, bool), "true or false", False),
    }),
    "cholesky-cmaes": (CholeskyCMAES, {
        "popsize": _POPSIZE,
        "sigma0": _SIGMA0,
        "update_every": _Option(_int_in(1, 1_000_000), "an int in 1..1000000 (generations between factor updates)",
                                10),
    }),
    "genetic": (Genetic, {
        "popsize": _POPSIZE,
        "mutation_rate": _Option(_number(0, 1), "a number in [0, 1]", 0.25),
        "mutation_size": _Option(_number(0, MAX_STEP, low_open=True), _STEP, 0.75),
        "kT_multiplier": _Option(_number(0, MAX_STEP, low_open=True), _STEP, 2.0),
        "n_conserve": _Option(_int_in(0, MAX_POPSIZE - 1), "an int >= 0 and < popsize", 10),
        "parental_skew": _Option(_number(0.5, 1), "a number in [0.5, 1]", 0.75),
        "init_sigma": _Option(_number(0, MAX_STEP, low_open=True), _STEP, 1.0),
    }),
    "simple-es": (SimpleES, {
        "popsize": _POPSIZE,
        "sigma0": _SIGMA0,
        "decay": _Option(_number(0, 1, low_open=True), "a number in (0, 1]", 0.97),
    }),
}

#: The optimizer kinds :func:`build_optimizer` accepts.
OPTIMIZER_KINDS: tuple[str, ...] = tuple(_KINDS)


def optimizer_options(kind: str) -> dict[str, Any]:
    """The options of ``kind`` with their lab defaults (what a protocol may override)."""
    _check_kind(kind)
    return {name: spec.default for name, spec in _KINDS[kind][1].items()}


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"unknown optimizer kind {kind!r}; valid kinds: {', '.join(OPTIMIZER_KINDS)}")


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

    Kinds and options (as named in a protocol's ``[optimizer]`` table), defaults in brackets:
        ``"cmaes"`` (pycma): ``popsize`` [40], ``sigma0`` [3.0], ``diagonal`` [false].
        ``"cholesky-cmaes"``: ``popsize`` [40], ``sigma0`` [3.0], ``update_every`` [10].
        ``"genetic"``: ``popsize`` [40], ``mutation_rate`` [0.25], ``mutation_size`` [0.75],
        ``kT_multiplier`` [2.0], ``n_conserve`` [10], ``parental_skew`` [0.75], ``init_sigma`` [1.0].
        ``"simple-es"`` (the reference): ``popsize`` [40], ``sigma0`` [3.0], ``decay`` [0.97].

    Raises:
        ValueError: unknown kind, unknown option or invalid value; the message
            names it and says what is valid.
    """
    values = optimizer_values(kind, **options)
    return _KINDS[kind][0](dim, seed=seed, **values)


def optimizer_values(kind: str, **options: Any) -> dict[str, Any]:
    """Every option of ``kind``: the defaults overridden by ``options``, each checked (as :func:`build_optimizer`).

    Nothing is built, so sizes can be checked before any memory is spent.
    """
    _check_kind(kind)
    specs = _KINDS[kind][1]
    unknown = sorted(set(options) - set(specs))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for optimizer {kind!r}; "
            f"valid options: {', '.join(f'{k} ({s.valid}, default {s.default!r})' for k, s in specs.items())}"
        )
    for name, value in options.items():
        spec = specs[name]
        if not spec.check(value):
            raise ValueError(f"optimizer {kind!r}: {name} = {value!r} is invalid; "
                             f"{name} must be {spec.valid} (default {spec.default!r})")
    values = {name: spec.default for name, spec in specs.items()} | options
    if kind == "genetic" and values["n_conserve"] >= values["popsize"]:
        raise ValueError(f"optimizer 'genetic': n_conserve = {values['n_conserve']} is invalid; "
                         f"n_conserve must be < popsize = {values['popsize']}")
    return values
