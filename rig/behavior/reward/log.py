"""The ``log`` reward output: for dry runs and simulations; records each reward and opens nothing.

A protocol without a ``[reward]`` table, or with ``kind = "log"``, gets this
output: every reward the trial machine earns is kept in
:attr:`LogReward.deliveries` (and logged at INFO), and nothing waits.
"""
from __future__ import annotations

import logging
from typing import Any

from rig.behavior.reward.base import REWARD_OUTPUTS, RewardDelivery, RewardOutput

__all__ = ["LogReward"]

_log = logging.getLogger(__name__)


@REWARD_OUTPUTS.register("log")
class LogReward(RewardOutput):
    """Records every reward in :attr:`deliveries`, in the order asked; no device, no waiting."""

    def __init__(self, **options: Any) -> None:
        self.configure(options)
        #: Every reward asked for, in order.
        self.deliveries: list[RewardDelivery] = []

    def _deliver(self, reward: RewardDelivery) -> None:
        self.deliveries.append(reward)
        _log.info("reward (log only): %d pulse(s) of %g ms, %g ms apart, at t = %.3f s%s", reward.pulses,
                  reward.pulse_ms, reward.pause_ms, reward.time, " (manual)" if reward.manual else "")
