"""Model features of the stimuli: one forward pass per model reads every requested layer.

Each layer's activation becomes one vector per image: CNN maps (C, H, W) are
averaged over space (``pool="mean"``) or over a K×K grid (``pool="grid=K"``, kept
as C·K·K numbers, for units with a place in the image); ViT token layers (T, D)
give their class token (``token="cls"``) or the mean of the patch tokens
(``token="mean"``). PCA to a bounded size happens in the readout (inside each
training fold), so what is cached here is the pooled features themselves.

The cache holds one file per session × model × layers × pooling, beside the
output (``DIR/features/``), keyed by the session file's SHA-256 and the model's
weights, so a second ``rig compare`` of the same sessions runs no forward pass.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from protocols.images import to_model_input
from simulators.layer_reads import read_layers
from simulators.models import ModelCfg, load_model, resolve_weights
from simulators.units import LayerInfo, probe_layers

#: Layers read when none are given: this many, spread over the model's depth.
DEFAULT_LAYER_COUNT = 5
POOLS = ("mean", "grid=K")
TOKENS = ("cls", "mean")
#: Bumped when cached features would differ for the same key.
CACHE_VERSION = 1
_NUMBERED = re.compile(r"^(\D+?)[._](\d+)$")


@dataclass(frozen=True)
class Readout:
    """How a layer's activation becomes one vector per image."""

    pool: str = "mean"
    token: str = "cls"

    def __post_init__(self) -> None:
        if self.token not in TOKENS:
            raise ValueError(f"--token must be one of {list(TOKENS)}, got {self.token!r}")
        if self.pool != "mean" and self.grid is None:
            raise ValueError(f"--pool must be 'mean' or 'grid=K' (K an int >= 1), got {self.pool!r}")

    @property
    def grid(self) -> int | None:
        match = re.fullmatch(r"grid=(\d+)", self.pool)
        return int(match.group(1)) if match and int(match.group(1)) >= 1 else None


class LayerFeatures:
    """A loaded model that turns images into pooled features of chosen layers, in one pass per batch."""

    def __init__(self, model_name: str, layers: Sequence[str] | None = None, readout: Readout = Readout(),
                 weights: str | None = None, device: str | torch.device = "cpu", max_batch: int = 16) -> None:
        self.device = torch.device(device)
        self.weights_source = resolve_weights(model_name, weights)
        self.model, self.cfg = load_model(model_name, weights=weights, device=self.device)
        self.info: dict[str, LayerInfo] = probe_layers(self.model, self.cfg)
        self.layers = list(layers) if layers else default_layers(self.info)
        check_layers(self.cfg, self.info, self.layers)
        self.readout = readout
        self.max_batch = max_batch
        # Token layers as long as the full sequence start with the class token(s); shorter ones have none.
        self._prefix = self.cfg.num_prefix_tokens if self.cfg.family == "vit" else 0

    @property
    def name(self) -> str:
        return self.cfg.name

    def relative_depth(self, layer: str) -> float:
        """Where ``layer`` runs in the forward pass: 0 first module, 1 last."""
        order = list(self.info)
        return order.index(layer) / max(len(order) - 1, 1)

    def key(self) -> dict:
        """What the features depend on (the cache key, beside the images)."""
        return {"model": self.cfg.name, "weights": self.weights_source, "sha256": self.cfg.pretrained.sha256,
                "layers": self.layers, "pool": self.readout.pool, "token": self.readout.token,
                "version": CACHE_VERSION}

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """Pooled features (N, D_layer) of (N, 3, H, W) images in [0, 1], per layer."""
        out: dict[str, list[np.ndarray]] = {layer: [] for layer in self.layers}
        with torch.inference_mode():
            for start in range(0, images.shape[0], self.max_batch):
                x = to_model_input(images[start:start + self.max_batch].to(self.device), self.cfg.input_size,
                                   self.cfg.mean, self.cfg.std)
                for layer, value in self._forward(x).items():
                    out[layer].append(value)
        return {layer: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for layer, v in out.items()}

    def _forward(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {}

        def read(layer: str, output: torch.Tensor) -> None:
            values[layer] = self._reduce(output).float().cpu().numpy()

        read_layers(self.model, x, {layer: self.info[layer].n_calls for layer in self.layers}, read)
        return values

    def _reduce(self, activation: torch.Tensor) -> torch.Tensor:
        if activation.dim() == 4:  # (N, C, H, W)
            grid = self.readout.grid
            if grid is None:
                return activation.mean(dim=(2, 3))
            return F.adaptive_avg_pool2d(activation, grid).flatten(1)
        if activation.dim() == 3:  # (N, T, D): tokens
            prefix = self._prefix if activation.shape[1] == self._full_length else 0
            if self.readout.token == "cls" and prefix:
                return activation[:, 0]
            return activation[:, prefix:].mean(dim=1)  # no class token here: the patch tokens' mean
        return activation.flatten(1)

    @property
    def _full_length(self) -> int:
        lengths = [i.shape[0] for i in self.info.values() if len(i.shape) == 2]
        return max(lengths) if lengths else 0


def default_layers(info: dict[str, LayerInfo], count: int = DEFAULT_LAYER_COUNT) -> list[str]:
    """``count`` of the model's numbered stages (``blocks.K``, ``features.K``, ``..._layer_K``), spread over depth."""
    families: dict[str, list[tuple[int, str]]] = {}
    for name, layer in info.items():
        match = _NUMBERED.match(name)
        if match and len(layer.shape) in (1, 2, 3):
            families.setdefault(match.group(1), []).append((int(match.group(2)), name))
    if not families:
        raise ValueError("this model has no numbered stages to pick default layers from; name them with --layers")
    stages = [name for _, name in sorted(max(families.values(), key=len))]
    picks = np.unique(np.round(np.linspace(0, len(stages) - 1, min(count, len(stages)))).astype(int))
    return [stages[i] for i in picks]


def check_layers(cfg: ModelCfg, info: dict[str, LayerInfo], layers: Sequence[str]) -> None:
    """Every layer must exist and output a tensor; the error lists the model's stage layers."""
    for layer in layers:
        if layer not in info:
            try:
                stages = default_layers(info, count=10**6)
            except ValueError:
                stages = list(info)[:40]
            raise ValueError(f"layer {layer!r} is not a layer of {cfg.name}; its layers include {stages} "
                             f"(`rig units {cfg.name}` lists every one)")
        if len(info[layer].shape) not in (1, 2, 3):
            raise ValueError(f"layer {layer!r} of {cfg.name} outputs {info[layer].shape}, not (C,H,W), (T,D) or "
                             f"(D); pick another layer")


def cache_path(folder: Path, session_sha256: str, key: dict) -> Path:
    """The cache file of one session's features under one key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"{key['model']}-{session_sha256[:16]}-{digest}.npz"


def session_features(features: LayerFeatures, chunks: Iterable[torch.Tensor], keys: Sequence[str],
                     session_sha256: str, cache: Path | None) -> tuple[dict[str, np.ndarray], bool]:
    """One session's features per layer, from the cache when it holds them; and whether it did."""
    path = cache_path(cache, session_sha256, features.key()) if cache is not None else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if list(data["keys"]) == list(keys):
                return {layer: data[f"layer/{layer}"] for layer in features.layers}, True
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in features.layers}
    for images in chunks:
        for layer, value in features(images).items():
            parts[layer].append(value)
    values = {layer: np.concatenate(v).astype(np.float32) for layer, v in parts.items()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, keys=np.array(list(keys)), **{f"layer/{k}": v for k, v in values.items()})
        partial.replace(path)  # renamed whole: a killed run never leaves half a cache
    return values, False
