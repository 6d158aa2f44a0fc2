"""List a model's addressable layers with their output shapes and an example unit spec."""
from __future__ import annotations

import argparse

from simulators.models import load_model
from simulators.units import SYNTAX, example_unit, probe_layers

HELP = "list a model's addressable layers and their output shapes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig units``."""
    parser.add_argument("model", help="registered model name; `rig models` lists them")
    parser.add_argument("--weights", default="random",
                        help="weights to build the model with (shapes don't depend on them; default random)")


def run(args: argparse.Namespace) -> int:
    """Print every addressable layer of a model with its output shape and an example spec."""
    model, cfg = load_model(args.model, weights=args.weights)
    layers = probe_layers(model, cfg)
    print(f"{cfg.name}: input {cfg.input_size}x{cfg.input_size}, {len(layers)} layers "
          f"(shape per image; spec {SYNTAX}; '-': not addressable)")
    width = max(len(name) for name in layers)
    for name, info in layers.items():
        # Examples are resolved against the model, so every one printed is valid as is.
        example = example_unit(model, cfg, name, layers)
        print(f"  {name:<{width}}  {'x'.join(map(str, info.shape)):<14}  {example or '-'}")
    return 0
