"""The registries of behaviour parts, by protocol table name, with every built-in kind imported.

Every module of :mod:`rig.behavior.gaze` and :mod:`rig.behavior.reward` is
imported (each registers its kinds beside its code), so a new gaze source or
reward output is one new module and nothing else.
"""
from __future__ import annotations

import importlib
import pkgutil

from protocols.registry import Registry

__all__ = ["part_registry"]


def _import_all(package: str) -> None:
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        importlib.import_module(f"{package}.{info.name}")


def part_registry(table: str) -> Registry:
    """The registry ``[gaze]`` (``"gaze"``) or ``[reward]`` (``"reward"``) is checked against."""
    from rig.behavior import gaze, reward

    if table not in ("gaze", "reward"):
        raise ValueError(f"no behaviour part table [{table}]; valid: [gaze], [reward]")
    _import_all(f"rig.behavior.{table}")
    return {"gaze": gaze.GAZE_SOURCES, "reward": reward.REWARD_OUTPUTS}[table]
