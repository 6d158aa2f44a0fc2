"""The digital twin as a neuron: a model layer's features through a readout fitted to a recorded neuron.

``rig compare ... --save-twin TWIN.npz`` stores the best layer's readout;
``--neuron twin:TWIN.npz`` then answers images like any simulated unit::

    response = ridge(PCA(pool(layer(model(image)))))

The file (numpy ``.npz``, read without pickles) holds the model, layer and how
its activation was pooled (``pool`` for CNN maps, ``token`` for ViT tokens),
the PCA (mean, components), the ridge weights and
intercept, the responses' scale (mean, SD, min, max of what it was fitted to,
in the recording's units) and its provenance as JSON (the source sessions'
paths and SHA-256, the channel, the cross-validated r, the model weights'
digest). A session run against a twin records its file, the readout's digest,
the model and the layer in its provenance, like any unit.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from simulators.models import file_sha256

#: A neuron spec naming a twin file.
PREFIX = "twin:"
#: Version of the file's layout; a newer one is refused.
VERSION = 1
_ARRAYS = ("pca_mean", "pca_components", "coef")


def is_twin(units: Sequence[str]) -> bool:
    """Whether the neuron choice names a twin file (``twin:PATH``)."""
    return any(u.startswith(PREFIX) for u in units)


def save_twin(path: str | Path, *, model: str, layer: str, pool: str, token: str, readout: Any,
              weights_source: str, responses: np.ndarray, provenance: dict) -> Path:
    """Write a twin file (see the module docstring); ``readout`` is a fitted PCA + ridge."""
    path = Path(path)
    responses = np.asarray(responses, dtype=np.float64)
    header = {"version": VERSION, "model": model, "layer": layer, "pool": pool, "token": token,
              "weights_source": weights_source,
              "weights_sha256": None if weights_source == "random" else file_sha256(weights_source),
              "intercept": float(readout.intercept), "alpha": float(readout.alpha),
              "response": {"mean": float(responses.mean()), "sd": float(responses.std()),
                           "min": float(responses.min()), "max": float(responses.max())},
              "provenance": provenance}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, header=np.array(json.dumps(header)), pca_mean=readout.mean,
             pca_components=readout.components, coef=readout.coef)
    partial.replace(path)
    return path


def read_twin(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and arrays of a twin file; a clear error naming the file and the field that is wrong."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"twin file {path} not found (make one with rig compare ... --save-twin {path})")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {name: np.asarray(data[name], dtype=np.float64) for name in _ARRAYS}
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"twin file {path}: not a twin written by rig compare --save-twin ({exc})") from None
    if not isinstance(header, dict) or header.get("version") not in range(1, VERSION + 1):
        raise ValueError(f"twin file {path}: version {header.get('version') if isinstance(header, dict) else None!r} "
                         f"is not one this rig reads (1..{VERSION})")
    for name in ("model", "layer", "pool", "token", "weights_source"):
        if not isinstance(header.get(name), str):
            raise ValueError(f"twin file {path}: field {name!r} must be a string, got {header.get(name)!r}")
    k, d = arrays["pca_components"].shape if arrays["pca_components"].ndim == 2 else (-1, -1)
    if arrays["pca_mean"].shape != (d,) or arrays["coef"].shape != (k,):
        raise ValueError(f"twin file {path}: readout arrays do not fit together (components "
                         f"{arrays['pca_components'].shape}, mean {arrays['pca_mean'].shape}, coef "
                         f"{arrays['coef'].shape})")
    if not all(np.all(np.isfinite(a)) for a in arrays.values()):
        raise ValueError(f"twin file {path}: readout arrays hold non-finite values")
    return header, arrays


class TwinNeuron:
    """A fitted twin answering images with one value per image: the same interface as a simulated neuron."""

    def __init__(self, spec: str, weights: str | None = None, device: str | torch.device = "cpu",
                 max_batch: int | None = None) -> None:
        from rig.predictivity.features import LayerFeatures, Readout  # the one way layers are read and pooled
        from simulators.neuron import default_max_batch

        if not spec.startswith(PREFIX) or not spec[len(PREFIX):]:
            raise ValueError(f"--neuron {spec!r}: a twin is named twin:PATH (a file from rig compare --save-twin)")
        self.path = Path(spec[len(PREFIX):]).expanduser().resolve()
        self.header, self.arrays = read_twin(self.path)
        self.readout_sha256 = file_sha256(self.path)
        self.device = torch.device(device)
        self.max_batch = max_batch or default_max_batch(self.device)
        recorded = self.header["weights_source"]
        self.weights = weights if weights is not None else (None if recorded != "random" else "random")
        self.features = LayerFeatures(self.header["model"], [self.header["layer"]],
                                      Readout(self.header["pool"], self.header["token"]), weights=self.weights,
                                      device=self.device, max_batch=self.max_batch)
        if (recorded == "random") != (self.features.weights_source == "random"):
            raise ValueError(f"twin file {self.path}: fitted on {self.header['model']} with weights {recorded!r}, "
                             f"asked to run with {self.features.weights_source!r}; drop --weights (or the "
                             f"protocol's [neuron] weights) to use the ones it was fitted on")
        digest = self.header.get("weights_sha256")
        if digest and self.features.weights_source != "random" and file_sha256(self.features.weights_source) != digest:
            raise ValueError(f"twin file {self.path}: fitted on {self.header['model']} weights with SHA-256 "
                             f"{digest[:16]}..., but {self.features.weights_source} differs; pass the weights it "
                             f"was fitted on with --weights")
        width = self._width()
        if width != self.arrays["pca_mean"].shape[0]:
            raise ValueError(f"twin file {self.path}: its readout takes {self.arrays['pca_mean'].shape[0]} features, "
                             f"but layer {self.header['layer']} pooled with {self.header['pool']!r} gives {width}")
        self.cfg = self.features.cfg
        self.channel_names = [f"{PREFIX}{self.path}"]
        self.weights_source = self.features.weights_source

    def _width(self) -> int:
        """How many features the layer gives per image (one blank image through the model)."""
        probe = torch.zeros(1, 3, 8, 8)
        return int(self.features(probe)[self.header["layer"]].shape[1])

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """The twin's response to (N, 3, H, W) images in [0, 1], shape (N, 1), float64."""
        images = torch.as_tensor(images)
        if images.shape[0] == 0:
            return np.zeros((0, 1), dtype=np.float64)
        x = self.features(images)[self.header["layer"]].astype(np.float64)
        a = self.arrays
        z = (x - a["pca_mean"]) @ a["pca_components"].T
        return (z @ a["coef"] + self.header["intercept"])[:, None]

    def describe(self) -> dict:
        """Provenance for the session file: the twin file, its digest, model, layer and what it was fitted to."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "kwargs": {"units": list(self.channel_names), "weights": self.weights, "device": str(self.device),
                       "max_batch": self.max_batch},
            "model": self.cfg.name,
            "layer": self.header["layer"],
            "pool": self.header["pool"],
            "token": self.header["token"],
            "twin_file": str(self.path),
            "readout_sha256": self.readout_sha256,
            "coef_sha256": hashlib.sha256(self.arrays["coef"].tobytes()).hexdigest(),
            "weights_source": self.weights_source,
            "weights_sha256": self.header.get("weights_sha256"),
            "response": self.header.get("response"),
            "fitted_to": self.header.get("provenance"),
            "units": list(self.channel_names),
            "input_size": self.cfg.input_size,
            "device": str(self.device),
        }


def build_neuron(units: Sequence[str], weights: str | None = None, device: str | torch.device = "cpu",
                 max_batch: int | None = None):
    """The neuron a ``--neuron`` choice names: a twin (``twin:PATH``, alone) or simulated model units."""
    if is_twin(units):
        if len(units) != 1:
            raise ValueError(f"--neuron: a twin is one neuron (twin:PATH) and nothing else, got {list(units)}")
        return TwinNeuron(units[0], weights=weights, device=device, max_batch=max_batch)
    from simulators.neuron import SimulatedNeuron

    return SimulatedNeuron(units, weights=weights, device=device, max_batch=max_batch)
