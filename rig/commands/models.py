"""List the registered models, their family, input size and where their weights come from."""
from __future__ import annotations

import argparse

from simulators.models import get_cfg, list_models

HELP = "list registered models and where their weights come from"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``rig models`` takes no options."""


def run(args: argparse.Namespace) -> int:
    """Print one line per registered model."""
    for name in list_models():
        cfg = get_cfg(name)
        print(f"{name:<22} {cfg.family:<4} {cfg.input_size:>4}px  weights: {cfg.weights}")
    return 0
