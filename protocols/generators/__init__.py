"""Generators (image spaces) and the registry that builds them from a protocol file.

``build_generator("fourier")`` works everywhere; ``build_generator("deepsim-fc6",
weights=...)`` needs a user-supplied weight file (DESIGN §5).
"""
from __future__ import annotations

from typing import Any, Callable

from .base import Generator
from .deepsim import WEIGHTS_HELP, DeePSiMFc6, load_deepsim_fc6
from .fourier import FourierImageSpace

__all__ = [
    "GENERATOR_KINDS",
    "DeePSiMFc6",
    "FourierImageSpace",
    "Generator",
    "build_generator",
    "load_deepsim_fc6",
]


def _build_fourier(max_frequency: int = 8, image_size: int = 128) -> Generator:
    return FourierImageSpace(max_frequency=max_frequency, image_size=image_size)


def _build_deepsim(weights: str | None = None, device: str = "cpu") -> Generator:
    if weights is None:
        raise ValueError(f"generator 'deepsim-fc6' needs the option weights = <path>: {WEIGHTS_HELP}")
    return load_deepsim_fc6(weights, device=device)


#: kind -> (builder, accepted options)
_REGISTRY: dict[str, tuple[Callable[..., Generator], tuple[str, ...]]] = {
    "fourier": (_build_fourier, ("max_frequency", "image_size")),
    "deepsim-fc6": (_build_deepsim, ("weights", "device")),
}

#: The generator kinds :func:`build_generator` accepts.
GENERATOR_KINDS: tuple[str, ...] = tuple(_REGISTRY)


def build_generator(kind: str, **options: Any) -> Generator:
    """Build the generator ``kind`` with ``options`` (as named in a protocol's ``[generator]`` table).

    Kinds and options:
        ``"fourier"``: ``max_frequency`` (default 8), ``image_size`` (default 128).
        ``"deepsim-fc6"``: ``weights`` (path, required), ``device`` (default ``"cpu"``).

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
    return builder(**options)
