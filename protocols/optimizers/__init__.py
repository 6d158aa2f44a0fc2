"""Ask/tell optimizers over latent codes, and the registry that builds them from a protocol file."""
from __future__ import annotations

import math
from typing import Any

from .base import Optimizer
from .cmaes import CMAES

__all__ = ["CMAES", "OPTIMIZER_KINDS", "Optimizer", "build_optimizer"]

#: kind -> {option: description of valid values}
_OPTIONS: dict[str, dict[str, str]] = {
    "cmaes": {
        "popsize": "an int >= 2 (default 40)",
        "sigma0": "a finite number > 0 (default 3.0)",
        "diagonal": "true or false (default false)",
    },
}

#: The optimizer kinds :func:`build_optimizer` accepts.
OPTIMIZER_KINDS: tuple[str, ...] = tuple(_OPTIONS)


def _check_cmaes_options(options: dict[str, Any]) -> None:
    valid = _OPTIONS["cmaes"]
    if "popsize" in options:
        v = options["popsize"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ValueError(f"optimizer 'cmaes': popsize = {v!r} is invalid; popsize must be {valid['popsize']}")
    if "sigma0" in options:
        v = options["sigma0"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"optimizer 'cmaes': sigma0 = {v!r} is invalid; sigma0 must be {valid['sigma0']}")
    if "diagonal" in options and not isinstance(options["diagonal"], bool):
        raise ValueError(
            f"optimizer 'cmaes': diagonal = {options['diagonal']!r} is invalid; diagonal must be {valid['diagonal']}"
        )


def build_optimizer(kind: str, dim: int, seed: int, **options: Any) -> Optimizer:
    """Build the optimizer ``kind`` for codes of length ``dim``, seeded with ``seed``.

    Kinds and options (as named in a protocol's ``[optimizer]`` table):
        ``"cmaes"``: ``popsize`` (int >= 2, default 40), ``sigma0`` (> 0, default 3.0),
        ``diagonal`` (bool, default False).

    Raises:
        ValueError: unknown kind, unknown option or invalid value; the message
            names it and says what is valid.
    """
    if kind not in _OPTIONS:
        raise ValueError(f"unknown optimizer kind {kind!r}; valid kinds: {', '.join(OPTIMIZER_KINDS)}")
    valid = _OPTIONS[kind]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for optimizer {kind!r}; "
            f"valid options: {', '.join(f'{k} ({d})' for k, d in valid.items())}"
        )
    _check_cmaes_options(options)
    return CMAES(dim, seed=seed, **options)
