"""The reward interface: juice for the monkey, through whatever hardware the rig has.

A :class:`RewardOutput` delivers a reward of ``pulses`` pulses, each
``pulse_ms`` long with ``pause_ms`` between them, without blocking the caller:
the display keeps flipping frames while the solenoid is open. Outputs register
by kind in :data:`REWARD_OUTPUTS` (``[reward] kind = ...`` plus that kind's
options): ``log`` (dry runs: records, opens nothing), ``serial`` (a TTL on
DTR/RTS, or a command to a microcontroller, via pyserial) and ``module`` (a
lab's own factory, for NI-DAQ, LabJack or a parallel port).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from protocols.registry import Configurable, Registry

__all__ = ["REWARD_OUTPUTS", "RewardDelivery", "RewardError", "RewardOutput"]


class RewardError(RuntimeError):
    """The reward device is missing, unplugged or failed; the message names the device and what to check."""


@dataclass(frozen=True)
class RewardDelivery:
    """One reward as asked for: when (display clock, s), how many pulses, how long each, the pause between."""

    time: float
    pulses: int
    pulse_ms: float
    pause_ms: float
    #: Given by the operator (a key press), not earned in a trial.
    manual: bool = False

    @property
    def duration_s(self) -> float:
        """From the first pulse's start to the last one's end."""
        return (self.pulses * self.pulse_ms + max(self.pulses - 1, 0) * self.pause_ms) / 1000.0


class RewardOutput(Configurable, abc.ABC):
    """Delivers rewards. Subclasses implement :meth:`_deliver`; :meth:`deliver` checks the request first.

    :meth:`deliver` returns at once; the pulses run in the background (a
    thread, or hardware timing). A device that fails raises
    :class:`RewardError` from :meth:`deliver` or, for a failure during the
    pulses, from the next :meth:`check`.
    """

    interface: ClassVar[str] = "reward output"

    def deliver(self, reward: RewardDelivery) -> None:
        """Start delivering ``reward``; returns without waiting for the pulses."""
        if reward.pulses < 1 or reward.pulse_ms <= 0 or reward.pause_ms < 0:
            raise ValueError(f"reward: pulses must be >= 1, pulse_ms > 0 and pause_ms >= 0, got {reward}")
        self.check()
        self._deliver(reward)

    def check(self) -> None:
        """Raise :class:`RewardError` if the device has failed (e.g. it was unplugged during the last reward)."""

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the rewards started so far are delivered; False if ``timeout`` (s) ran out first."""
        return True

    def close(self) -> None:
        """Release the device; safe to call twice."""

    @abc.abstractmethod
    def _deliver(self, reward: RewardDelivery) -> None: ...


#: Every reward output kind, registered beside its code (``@REWARD_OUTPUTS.register("serial", SerialOptions)``).
REWARD_OUTPUTS: Registry[RewardOutput] = Registry("reward output")
