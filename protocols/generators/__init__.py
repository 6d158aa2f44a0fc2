"""Generators (image spaces) and the registry that builds them from a protocol file.

``build_generator("fourier")`` works everywhere; the DeePSiM kinds need a
user-supplied weight file (DESIGN §5), named with ``weights = ...`` or found in
:func:`deepsim_cache_dir`; ``kind = "module"`` plugs in any user generator
(:mod:`protocols.generators.custom`).
"""
from __future__ import annotations

from typing import Any, Callable

from .base import Generator
from .custom import ModuleGenerator, UntrustedFactoryError, build_module_generator, require_trusted_factory
from .deepsim import (
    DEEPSIM_VARIANTS,
    DeePSiM,
    DeePSiMFc6,
    DeePSiMFc7,
    DeePSiMFc8,
    DeePSiMPool5,
    deepsim_cache_dir,
    find_cached_weights,
    load_deepsim,
    load_deepsim_fc6,
    weights_help,
)
from .fourier import FourierImageSpace

__all__ = [
    "DEEPSIM_VARIANTS",
    "GENERATOR_KINDS",
    "DeePSiM",
    "DeePSiMFc6",
    "DeePSiMFc7",
    "DeePSiMFc8",
    "DeePSiMPool5",
    "FourierImageSpace",
    "Generator",
    "ModuleGenerator",
    "UntrustedFactoryError",
    "build_generator",
    "deepsim_cache_dir",
    "find_cached_weights",
    "load_deepsim",
    "load_deepsim_fc6",
    "require_trusted_factory",
]


def _build_fourier(max_frequency: int = 8, image_size: int = 128) -> Generator:
    return FourierImageSpace(max_frequency=max_frequency, image_size=image_size)


def _deepsim_builder(variant: str) -> Callable[..., Generator]:
    def build(weights: str | None = None, device: str = "cpu") -> Generator:
        if weights is None:
            cached = find_cached_weights(variant)
            if cached is None:
                raise ValueError(f"generator 'deepsim-{variant}' needs weights: none given (weights = <path>) "
                                 f"and none found in the cache directory; {weights_help(variant)}")
            weights = cached
        return load_deepsim(variant, weights, device=device)
    return build


#: kind -> (builder, accepted options)
_REGISTRY: dict[str, tuple[Callable[..., Generator], tuple[str, ...]]] = {
    "fourier": (_build_fourier, ("max_frequency", "image_size")),
    **{f"deepsim-{v}": (_deepsim_builder(v), ("weights", "device")) for v in DEEPSIM_VARIANTS},
    "module": (build_module_generator, ("factory", "options")),
}

#: The generator kinds :func:`build_generator` accepts.
GENERATOR_KINDS: tuple[str, ...] = tuple(_REGISTRY)


def build_generator(kind: str, **options: Any) -> Generator:
    """Build the generator ``kind`` with ``options`` (as named in a protocol's ``[generator]`` table).

    Kinds and options:
        ``"fourier"``: ``max_frequency`` (default 8), ``image_size`` (default 128).
        ``"deepsim-fc6"``, ``"deepsim-fc7"``, ``"deepsim-fc8"``, ``"deepsim-pool5"``:
        ``weights`` (path; default: the file in :func:`deepsim_cache_dir`), ``device`` (default ``"cpu"``).
        ``"module"``: ``factory`` (``"package.module:callable"``, required), ``options``
        (a table of keyword arguments for it).

    Raises:
        ValueError: unknown kind or option (the message lists the valid ones),
            or a missing required option.
    """
    if kind not in _REGISTRY:
        raise ValueError(f"unknown generator kind {kind!r}; valid kinds: {', '.join(GENERATOR_KINDS)}")
    builder, accepted = _REGISTRY[kind]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for generator {kind!r}; "
            f"valid options: {', '.join(accepted)}"
        )
    if kind == "module" and "factory" not in options:
        raise ValueError("generator 'module' needs factory = 'package.module:callable'")
    return builder(**options)
