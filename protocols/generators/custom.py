"""User-supplied generators: any module from code to image, named in the protocol file.

A protocol says::

    [generator]
    kind = "module"
    factory = "my_lab.gans:load_biggan"   # importable "package.module:callable"
    [generator.options]                   # optional: keyword arguments for the factory
    weights = "/data/biggan-deep-256.pt"

The factory is called with the options and must return either a
:class:`~protocols.generators.base.Generator`, or any ``torch.nn.Module`` that
has integer attributes ``code_dim`` and ``image_size`` and maps a float tensor
(N, code_dim) to RGB images (N, 3, image_size, image_size) in [0, 1]. The
latter is wrapped in :class:`ModuleGenerator`, which checks every output, so a
GAN that emits [-1, 1] fails with a message instead of showing wrong pixels.

Naming a factory imports and runs that code, exactly as running a script
would: protocol files are trusted configuration. A session file is not: a
factory named inside one (its stored protocol or provenance) runs only when the
user names the same factory on the command line (``--trust-generator``), as
:func:`require_trusted_factory` checks.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from protocols.registry import Options, option

from .base import GENERATORS, Generator

__all__ = ["ModuleGenerator", "ModuleOptions", "UntrustedFactoryError", "build_module_generator",
           "require_trusted_factory", "resolve_factory"]

_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class UntrustedFactoryError(ValueError):
    """A file from elsewhere (a session file) names a generator factory the user did not trust."""


def require_trusted_factory(options: Mapping[str, Any], trusted: str | None, source: str) -> None:
    """Refuse a ``kind = "module"`` generator named in ``source`` unless ``trusted`` names the same factory.

    ``options`` is a ``[generator]`` table as stored in a session file; any other
    kind runs no user code and passes. ``trusted`` is what the user gave with
    ``--trust-generator`` (None: nothing trusted).

    Raises:
        UntrustedFactoryError: naming the factory the file asks to run and the option that allows it.
    """
    if options.get("kind") != "module":
        return
    factory = options.get("factory")
    if isinstance(factory, str) and factory == trusted:
        return
    if not isinstance(factory, str) or not _FACTORY.match(factory):
        raise UntrustedFactoryError(f"{source} names a malformed generator factory {factory!r}; it is not run")
    given = "" if trusted is None else f" (--trust-generator names {trusted!r}, not this factory)"
    raise UntrustedFactoryError(
        f"{source} asks to run the generator factory {factory!r} ([generator] kind = \"module\"), and a session "
        f"file runs no code unless you name it: if you trust that code, add --trust-generator {factory}{given}")


def resolve_factory(factory: Any) -> Any:
    """Import ``"package.module:attr[.attr]"`` and return the callable it names.

    Raises:
        ValueError: malformed text, module not importable, attribute missing or not callable.
    """
    if not isinstance(factory, str) or not _FACTORY.match(factory):
        raise ValueError(f"factory = {factory!r} must be 'package.module:callable' "
                         f"(e.g. 'my_lab.gans:load_biggan')")
    module_name, _, attr_path = factory.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"factory = {factory!r}: cannot import module {module_name!r} ({exc}); "
                         f"is it installed or on PYTHONPATH?") from None
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            public = sorted(a for a in dir(obj) if not a.startswith("_"))
            raise ValueError(f"factory = {factory!r}: {getattr(obj, '__name__', obj)!r} has no attribute {attr!r}; "
                             f"it has {public[:20]}")
        obj = getattr(obj, attr)
    if not callable(obj):
        raise ValueError(f"factory = {factory!r} names a {type(obj).__name__}, not something callable")
    return obj


class ModuleGenerator(Generator):
    """Adapts a plain ``nn.Module`` with ``code_dim`` and ``image_size`` to the Generator contract.

    Its every output is checked by the Generator base class: shape (N, 3,
    image_size, image_size), floating point, within [0, 1] (to a 1e-3
    tolerance, then clamped).
    """

    def __init__(self, module: nn.Module, name: str = "module") -> None:
        super().__init__()
        for attr in ("code_dim", "image_size"):
            value = getattr(module, attr, None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"generator {name!r} must have an int attribute {attr} >= 1, got {value!r}")
        self.module = module
        #: How messages name it: the factory.
        self.label = name
        self.code_dim = module.code_dim
        self.image_size = module.image_size

    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        """Run the wrapped module (the base class checks what it returns)."""
        return self.module(codes)


@dataclass(frozen=True)
class ModuleOptions(Options):
    """``[generator] kind = "module"``: a user factory and its keyword arguments."""

    #: ``"package.module:callable"``, imported and called (trusted configuration).
    factory: str = option(valid="'package.module:callable' (e.g. 'my_lab.gans:load_biggan')")
    #: Keyword arguments for the factory (``[generator.options]``).
    options: dict[str, Any] | None = option(None, valid="a table of keyword arguments for the factory")


@GENERATORS.register("module", ModuleOptions)
def build_module_generator(factory: str, options: dict[str, Any] | None) -> Generator:
    """Call the user's ``factory(**options)`` and return a checked :class:`Generator`.

    Raises:
        ValueError: bad factory text or import, the factory failing on its
            options, or a result that is not a usable generator.
    """
    options = {} if options is None else options
    make = resolve_factory(factory)
    try:
        module = make(**options)
    except TypeError as exc:  # wrong keyword arguments, the common mistake
        raise ValueError(f"factory = {factory!r} rejected options {sorted(options)}: {exc}") from None
    if isinstance(module, Generator):
        return module
    if not isinstance(module, nn.Module):
        raise ValueError(f"factory = {factory!r} returned a {type(module).__name__}; "
                         f"it must return a torch.nn.Module (a Generator, or a module with code_dim and image_size)")
    return ModuleGenerator(module, name=factory)
