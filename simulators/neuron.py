"""The simulated neuron: many units of one model read in one batched forward pass."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from protocols.images import to_model_input
from simulators.models import ModelCfg, file_sha256, load_model, resolve_weights
from simulators.runtime import UnitPass, build_forward
from simulators.units import ResolvedUnit, UnitAddress, parse_unit, probe_layers, resolve_unit

__all__ = ["DEFAULT_MAX_BATCH", "SimulatedNeuron", "default_max_batch", "preprocess_for", "read_units"]

def preprocess_for(cfg: ModelCfg, images: torch.Tensor) -> torch.Tensor:
    """Resize (N,3,H,W) images in [0,1] to ``cfg.input_size`` and normalise with cfg mean/std.

    Resizing is bilinear with antialiasing, to a square; nothing is cropped.
    The pixels are the shared definition in :mod:`protocols.images`.
    """
    return to_model_input(images, cfg.input_size, cfg.mean, cfg.std)


def read_units(
    model: nn.Module, units: Sequence[ResolvedUnit], x: torch.Tensor, stop_early: bool = True
) -> torch.Tensor:
    """Forward ``x`` once and return each unit's value per image, shape (N, len(units)).

    With ``stop_early`` the pass ends once every needed layer has fired (:class:`~simulators.runtime.UnitPass`).
    """
    return UnitPass(model, units, stop_early)(x)


#: Images per forward pass when none is given. On a CPU, passes of a few images already run the
#: model's matrix products near the cores' peak (bench/threads.py prints both), while a pass of
#: hundreds of images allocates activations of a GB and more; a GPU wants larger passes.
DEFAULT_MAX_BATCH = {"cpu": 16, "cuda": 256, "mps": 64}


def default_max_batch(device: torch.device) -> int:
    """Images per forward pass on ``device`` when the protocol sets none (64 for other devices)."""
    return DEFAULT_MAX_BATCH.get(device.type, 64)


class SimulatedNeuron:
    """Units of one registered model, answering images with one value per unit.

    All units are parsed and checked against the model at construction, so a
    bad spec fails before anything runs. Images go through the model in passes
    of at most ``max_batch`` (default: :data:`DEFAULT_MAX_BATCH` for the device),
    which bounds memory however many threads share a block. ``precision`` and
    ``runtime`` say how each pass runs (:mod:`simulators.runtime`).
    """

    def __init__(
        self,
        units: Sequence[UnitAddress | str],
        weights: str | None = None,
        device: str | torch.device = "cpu",
        max_batch: int | None = None,
        precision: str = "fp32",
        runtime: str = "eager",
    ) -> None:
        if isinstance(units, (str, UnitAddress)):
            units = [units]
        addresses = [parse_unit(u) if isinstance(u, str) else u for u in units]
        if not addresses:
            raise ValueError("SimulatedNeuron needs at least one unit")
        models = sorted({a.model for a in addresses})
        if len(models) > 1:
            raise ValueError(f"all units must name the same model, got models {models}")
        self.device = torch.device(device)
        if max_batch is None:
            max_batch = default_max_batch(self.device)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        self.max_batch = max_batch
        self.weights = weights
        self.weights_source = resolve_weights(models[0], weights)
        self.model, self.cfg = load_model(models[0], weights=weights, device=self.device)
        layers = probe_layers(self.model, self.cfg)
        self.units: list[ResolvedUnit] = [
            resolve_unit(self.model, self.cfg, a, layers=layers) for a in addresses
        ]
        self.channel_names: list[str] = [str(a) for a in addresses]
        self._weights_sha256: str | None = None
        self.run_as(precision, runtime)

    def run_as(self, precision: str, runtime: str) -> None:
        """Run the forward passes from now on in ``precision`` with ``runtime`` (:mod:`simulators.runtime`)."""
        self._forward = build_forward(self.model, self.units, precision=precision, runtime=runtime,
                                      device=self.device, model_key=self._model_key(),
                                      input_size=self.cfg.input_size)
        self.precision, self.runtime = precision, runtime

    def _model_key(self) -> str:
        """The model and its weights, for caches of what is built from them (an ONNX export)."""
        if self.weights_source == "random":
            return f"{self.cfg.name}|random"
        stat = os.stat(self.weights_source)  # a file replaced in place gets another size or time
        return f"{self.cfg.name}|{self.weights_source}|{stat.st_size}|{stat.st_mtime_ns}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize and normalise (N,3,H,W) images in [0,1] for this model."""
        return preprocess_for(self.cfg, images)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Responses of every unit to (N,3,H,W) images in [0,1], shape (N, n_units), float64."""
        images = torch.as_tensor(images)
        if images.shape[0] == 0:
            return np.zeros((0, len(self.units)), dtype=np.float64)
        passes = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], self.max_batch):
                x = self.preprocess(images[start:start + self.max_batch].to(self.device))
                passes.append(self.unit_values(x).double().cpu())
        return torch.cat(passes).numpy()

    def unit_values(self, x: torch.Tensor) -> torch.Tensor:
        """Unit values (N, n_units) of one batch of model input (:meth:`preprocess`), left on its device.

        One pass, no checks, no batching and no copy to the host: what :meth:`__call__` runs per batch, and
        what a CUDA graph can capture (bench/cuda_graphs.py; the input checks read values back to the host).
        """
        return self._forward(x)

    def describe(self) -> dict:
        """Provenance for the session file: enough to rebuild this neuron exactly."""
        if self._weights_sha256 is None and self.weights_source != "random":
            self._weights_sha256 = file_sha256(self.weights_source)
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "kwargs": {
                "units": list(self.channel_names),
                "weights": self.weights,
                "device": str(self.device),
                "max_batch": self.max_batch,
                "precision": self.precision,
                "runtime": self.runtime,
            },
            "model": self.cfg.name,
            "weights_default": self.cfg.weights,
            "weights_source": self.weights_source,
            "weights_sha256": self._weights_sha256,
            "units": list(self.channel_names),
            "resolved_units": [str(u.address) for u in self.units],
            "input_size": self.cfg.input_size,
            "mean": list(self.cfg.mean),
            "std": list(self.cfg.std),
            "device": str(self.device),
            "precision": self.precision,
            "runtime": self.runtime,
        }

    def __repr__(self) -> str:
        return (f"SimulatedNeuron({self.channel_names!r}, weights={self.weights!r}, device='{self.device}', "
                f"max_batch={self.max_batch}, precision={self.precision!r}, runtime={self.runtime!r})")
