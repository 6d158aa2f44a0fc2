"""The ``module`` reward output: a lab's own reward code (NI-DAQ, LabJack, a parallel port), named in the protocol.

A protocol says::

    [reward]
    kind = "module"
    factory = "my_lab.juice:make_valve"   # importable "package.module:callable"
    [reward.options]                      # optional: keyword arguments for the factory
    device = "Dev1/port0/line0"

The contract for ``factory(**options)``: it opens the hardware (raising if it
cannot: that becomes a :class:`RewardError` before the session starts) and
returns either

- a :class:`~rig.behavior.reward.base.RewardOutput` (used as it is), or
- any object with a method ``deliver(pulses, pulse_ms, pause_ms)`` (called
  positionally: an int >= 1, and two floats in milliseconds) and optionally
  ``close()``. It is wrapped in :class:`ModuleReward`, which calls ``deliver``
  on one background thread, one reward at a time, in the order asked, so the
  display never waits for it. ``deliver`` may block until the pulses are done
  (software timing) or return once the hardware is started (a counter's pulse
  train): either way the next reward starts no sooner than the last one's
  pulses, and its pause, have run their course, so rewards never overlap.
  An exception from ``deliver`` becomes a :class:`RewardError` naming the
  factory, raised by the next ``check()`` or ``deliver()``; ``close()`` is
  called once, when the session ends.

Naming a factory imports and runs that code, as a protocol's generator
factory does (:mod:`protocols.generators.custom`): protocol files are trusted
configuration.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from protocols.generators.custom import resolve_factory
from protocols.registry import Options, option
from rig.behavior.reward.base import REWARD_OUTPUTS, RewardDelivery, RewardError, RewardOutput
from rig.behavior.reward.serial import QueuedRewardOutput, RewardWorker

__all__ = ["ModuleReward", "RewardModuleOptions", "build_module_reward"]


class ModuleReward(QueuedRewardOutput):
    """Adapts a lab's object with ``deliver(pulses, pulse_ms, pause_ms)`` to the RewardOutput contract.

    Args:
        device: The lab's object.
        factory: The factory that made it, for messages (``my_lab.juice:make_valve``).
    """

    def __init__(self, device: Any, factory: str) -> None:
        if not callable(getattr(device, "deliver", None)):
            raise ValueError(f"reward factory {factory!r} returned a {type(device).__name__}; it must return a "
                             f"RewardOutput or an object with deliver(pulses, pulse_ms, pause_ms)")
        self.device = device
        self.factory = factory
        self._worker = RewardWorker(self._run, f"reward factory {factory!r} ({type(device).__name__})")

    def _run(self, reward: RewardDelivery, stop: threading.Event) -> None:
        self.device.deliver(reward.pulses, reward.pulse_ms, reward.pause_ms)

    def _release(self) -> None:
        close = getattr(self.device, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:
                raise RewardError(f"reward factory {self.factory!r}: close() failed: "
                                  f"{type(exc).__name__}: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        """As every part (class, kind, version, options), plus the class of the lab's object."""
        cls = type(self.device)
        return {**super().describe(), "wraps": f"{cls.__module__}.{cls.__qualname__}"}


@dataclass(frozen=True)
class RewardModuleOptions(Options):
    """``[reward] kind = "module"``: a lab's factory and its keyword arguments."""

    #: ``"package.module:callable"``, imported and called (trusted configuration).
    factory: str = option(valid="'package.module:callable' (e.g. 'my_lab.juice:make_valve')")
    #: Keyword arguments for the factory (``[reward.options]``).
    options: dict[str, Any] | None = option(None, valid="a table of keyword arguments for the factory")


@REWARD_OUTPUTS.register("module", RewardModuleOptions)
def build_module_reward(factory: str, options: dict[str, Any] | None) -> RewardOutput:
    """Call the lab's ``factory(**options)`` and return a :class:`RewardOutput` (wrapping it if needed).

    Raises:
        ValueError: bad factory text or import, options the factory rejects, or a result without ``deliver``.
        RewardError: the factory failed otherwise (its hardware is missing).
    """
    options = {} if options is None else options
    make = resolve_factory(factory)
    try:
        device = make(**options)
    except TypeError as exc:  # wrong keyword arguments, the common mistake
        raise ValueError(f"reward factory {factory!r} rejected options {sorted(options)}: {exc}") from None
    except Exception as exc:
        raise RewardError(f"reward factory {factory!r} failed to open its device: "
                          f"{type(exc).__name__}: {exc}") from exc
    return device if isinstance(device, RewardOutput) else ModuleReward(device, factory)
