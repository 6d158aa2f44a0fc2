"""Reward outputs behind one interface (:mod:`rig.behavior.reward.base`), registered by kind."""
from __future__ import annotations

from rig.behavior.reward.base import REWARD_OUTPUTS, RewardDelivery, RewardError, RewardOutput

__all__ = ["REWARD_OUTPUTS", "RewardDelivery", "RewardError", "RewardOutput"]
