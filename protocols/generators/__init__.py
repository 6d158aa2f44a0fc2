"""Generators (image spaces), registered by kind in :data:`GENERATORS`.

``build_generator("fourier")`` works everywhere; the DeePSiM kinds need a
user-supplied weight file (DESIGN §5), named with ``weights = ...`` or found in
:func:`deepsim_cache_dir`; ``kind = "module"`` plugs in any user generator
(:mod:`protocols.generators.custom`). Each kind's options, defaults and bounds
are its options dataclass, beside its code (:mod:`protocols.registry`).
"""
from __future__ import annotations

from typing import Any

from .base import GENERATORS, Generator
# Imported in this order so that kinds list as fourier, deepsim-fc6 ... deepsim-pool5, module.
from .fourier import FourierImageSpace, FourierOptions  # noqa: I001
from .deepsim import (
    DEEPSIM_VARIANTS,
    DeePSiM,
    DeePSiMFc6,
    DeePSiMFc7,
    DeePSiMFc8,
    DeePSiMOptions,
    DeePSiMPool5,
    deepsim_cache_dir,
    find_cached_weights,
    load_deepsim,
    load_deepsim_fc6,
    weights_help,
)
from .custom import (
    ModuleGenerator,
    ModuleOptions,
    UntrustedFactoryError,
    build_module_generator,
    require_trusted_factory,
)

__all__ = [
    "DEEPSIM_VARIANTS",
    "GENERATORS",
    "GENERATOR_KINDS",
    "DeePSiM",
    "DeePSiMFc6",
    "DeePSiMFc7",
    "DeePSiMFc8",
    "DeePSiMOptions",
    "DeePSiMPool5",
    "FourierImageSpace",
    "FourierOptions",
    "Generator",
    "ModuleGenerator",
    "ModuleOptions",
    "UntrustedFactoryError",
    "build_generator",
    "build_module_generator",
    "deepsim_cache_dir",
    "find_cached_weights",
    "load_deepsim",
    "load_deepsim_fc6",
    "require_trusted_factory",
    "weights_help",
]

#: The generator kinds :func:`build_generator` accepts.
GENERATOR_KINDS: tuple[str, ...] = GENERATORS.kinds()


def build_generator(kind: str, **options: Any) -> Generator:
    """Build the generator ``kind`` with ``options`` (a protocol's ``[generator]`` table without ``kind``).

    Raises:
        ValueError: unknown kind or option (the message names close matches and
            lists the valid ones), an invalid value, or a missing required option.
    """
    return GENERATORS.build(kind, options)
