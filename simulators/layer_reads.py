"""Read named layers of a model in one forward pass, ending the pass once the last of them has run.

The simulated neuron (:class:`simulators.runtime.UnitPass`) and ``rig compare``'s features
(:mod:`rig.predictivity.features`) both need a few layers' outputs, and nothing after them: a unit in
``blocks.4`` of a 12-block ViT needs 5 blocks' arithmetic, not 12. Forward hooks read each layer; once every
layer has had its last call of the pass, a hook raises to skip the rest of the model.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["read_layers"]


class _StopForward(Exception):
    """Raised from a hook once every layer read has had its last call, to skip the rest of the model."""


def read_layers(model: nn.Module, x: torch.Tensor, calls: Mapping[str, int],
                read: Callable[[str, torch.Tensor], None], stop_early: bool = True) -> None:
    """Run ``model(x)``, calling ``read(layer, output)`` on each layer's last call of the pass.

    ``calls`` maps each layer's name (as ``model.named_modules()`` gives it) to how many times it runs per pass
    (a module applied several times is read on its last call). ``read`` must copy what it keeps: a later
    in-place op (``ReLU(inplace=True)``) may overwrite the output. With ``stop_early`` the pass ends once every
    layer has been read. A layer that never reached its last call is simply not read; the caller decides
    whether that is an error.
    """
    fired = dict.fromkeys(calls, 0)

    def make_hook(layer: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            fired[layer] += 1
            if fired[layer] == calls[layer]:
                read(layer, output)
            if stop_early and all(fired[k] >= n for k, n in calls.items()):
                raise _StopForward
        return hook

    modules = dict(model.named_modules())
    handles = [modules[layer].register_forward_hook(make_hook(layer)) for layer in calls]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
