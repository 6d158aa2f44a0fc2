"""List a model's addressable layers with their output shapes and an example unit spec."""
from __future__ import annotations

import argparse

from simulators.models import load_model
from simulators.units import list_layers

HELP = "list a model's addressable layers and their output shapes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig units``."""
    parser.add_argument("model", help="registered model name; `rig models` lists them")
    parser.add_argument("--weights", default="random",
                        help="weights to build the model with (shapes don't depend on them; default random)")


def run(args: argparse.Namespace) -> int:
    """Print every addressable layer of a model with its output shape and an example spec."""
    model, cfg = load_model(args.model, weights=args.weights)
    layers = list_layers(model, cfg)
    print(f"{cfg.name}: input {cfg.input_size}x{cfg.input_size}, {len(layers)} layers "
          f"(shape per image; spec MODEL:LAYER:unit=N[:pos=Y,X][:token=cls|mean|N])")
    width = max(len(name) for name, _ in layers)
    for name, shape in layers:
        print(f"  {name:<{width}}  {'x'.join(map(str, shape)):<14}  {cfg.name}:{name}:unit=0")
    return 0
