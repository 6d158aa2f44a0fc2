"""The registries of behaviour parts, by protocol table name, with every built-in kind imported."""
from __future__ import annotations

from protocols.registry import Registry

__all__ = ["part_registry"]


def part_registry(table: str) -> Registry:
    """The registry ``[gaze]`` (``"gaze"``) or ``[reward]`` (``"reward"``) is checked against."""
    # Each import registers its kinds.
    from rig.behavior import gaze, reward  # noqa: F401
    from rig.behavior.gaze import none, simulated  # noqa: F401
    from rig.behavior.reward import log, module, serial  # noqa: F401

    return {"gaze": gaze.GAZE_SOURCES, "reward": reward.REWARD_OUTPUTS}[table]
