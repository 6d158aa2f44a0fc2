"""How much memory one block of an evolution needs, checked before the first block.

A protocol's sizes multiply (threads x popsize images of image_size² pixels,
optimizer matrices of code_dim²), so settings that each pass their own bound
can still ask for more memory than the machine has. :func:`check_block_fits`
estimates a block roughly and refuses, with the estimate, what will not fit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from protocols.optimizers import optimizer_state_bytes
from protocols.spec import ProtocolError

#: Bytes of work per generated float32 pixel value: the image, the generator's intermediates (the Fourier space's
#: complex spectrum and its inverse FFT), the display's copy.
_GENERATOR_BYTES_PER_VALUE = 4 * 8
#: A model's intermediate activations per image, as a multiple of its float32 input.
_ACTIVATION_FACTOR = 40
#: Refuse when the estimate exceeds this share of the memory available now.
_USABLE_SHARE = 0.9


@dataclass
class BlockEstimate:
    """Estimated bytes per part of a block, split by where they live (host memory or the device's)."""

    host: dict[str, int] = field(default_factory=dict)
    device: dict[str, int] = field(default_factory=dict)

    def describe(self, parts: dict[str, int]) -> str:
        return ", ".join(f"{name} {gib(size)}" for name, size in parts.items())


def gib(size: float) -> str:
    """``size`` bytes as GiB with 2 decimals, e.g. ``'3.50 GiB'``."""
    return f"{size / 2**30:.2f} GiB"


def available_host_bytes() -> int | None:
    """Memory available to new allocations now (``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def available_device_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device; None for the CPU (whose memory is the host's)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def estimate_block(*, threads: int, popsize: int, code_dim: int, image_size: int, references: int,
                   optimizer: dict, model_input: int | None, max_batch: int | None) -> BlockEstimate:
    """A rough upper estimate of one block's memory (see the module docstring)."""
    generated = threads * popsize
    values = (generated + references) * 3 * image_size * image_size
    estimate = BlockEstimate()
    kind = str(optimizer.get("kind", ""))
    diagonal = bool(optimizer.get("diagonal", False))
    estimate.host["optimizer state"] = threads * optimizer_state_bytes(kind, code_dim, popsize, diagonal)
    estimate.host["codes"] = 3 * generated * code_dim * 8
    estimate.device["images and generator work"] = values * _GENERATOR_BYTES_PER_VALUE
    if model_input is not None and max_batch is not None:
        batch = min(max_batch, generated + references)
        estimate.device["model activations"] = batch * 3 * model_input * model_input * 4 * _ACTIVATION_FACTOR
    return estimate


def check_block_fits(estimate: BlockEstimate, device: torch.device, source: str) -> None:
    """Refuse (ProtocolError naming ``source`` and the estimate) a block that will not fit in memory now."""
    host_need = sum(estimate.host.values())
    device_free = available_device_bytes(device)
    if device_free is None:  # CPU: everything is host memory
        host_need += sum(estimate.device.values())
    else:
        _refuse_if_over(sum(estimate.device.values()), device_free, f"{device} memory",
                        estimate.describe(estimate.device), source)
    host_free = available_host_bytes()
    if host_free is not None:
        parts = estimate.host if device_free is not None else {**estimate.host, **estimate.device}
        _refuse_if_over(host_need, host_free, "memory", estimate.describe(parts), source)


def _refuse_if_over(need: int, free: int, where: str, parts: str, source: str) -> None:
    if need > _USABLE_SHARE * free:
        raise ProtocolError(f"{source}: one block needs about {gib(need)} of {where} ({parts}), but only "
                            f"{gib(free)} is available; lower [optimizer] popsize, [evolution] threads, the "
                            f"generator's image_size or max_frequency, or [neuron] max_batch")
