"""``rig units`` and ``rig models``: what can be addressed, and where weights come from."""
from __future__ import annotations

import argparse

from simulators.models import get_cfg, list_models, load_model
from simulators.units import list_layers


def units_command(args: argparse.Namespace) -> int:
    """Print every addressable layer of a model with its output shape and an example spec."""
    model, cfg = load_model(args.model, weights=args.weights)
    layers = list_layers(model, cfg)
    print(f"{cfg.name}: input {cfg.input_size}x{cfg.input_size}, {len(layers)} layers "
          f"(shape per image; spec MODEL:LAYER:unit=N[:pos=Y,X][:token=cls|mean|N])")
    width = max(len(name) for name, _ in layers)
    for name, shape in layers:
        print(f"  {name:<{width}}  {'x'.join(map(str, shape)):<14}  {cfg.name}:{name}:unit=0")
    return 0


def models_command() -> int:
    """Print the registered models with family, input size and weight source."""
    for name in list_models():
        cfg = get_cfg(name)
        print(f"{name:<22} {cfg.family:<4} {cfg.input_size:>4}px  weights: {cfg.weights}")
    return 0
