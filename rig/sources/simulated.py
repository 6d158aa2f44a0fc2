"""The simulated source: a model unit scores the block's images (optionally through a response model)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from protocols.base import Block, Responses
from rig.display import Presentations
from rig.sources.base import ResponseSource
from simulators.response_model import ResponseModel


class SimulatedResponses(ResponseSource):
    """Scores the block's images with a simulated neuron: images in, (N, channels) out.

    A stimulus the display failed to show properly stays invalid: the neuron
    did not see it, so it gets no score (NaN), never a made-up one.

    With a ``response_model`` the scores are spike counts / window drawn from
    the activations, not the activations themselves. Its noise for a block
    comes from a generator keyed by (block index, showing), so a resumed
    session draws the same noise for the same block.
    """

    def __init__(self, neuron: Callable[[torch.Tensor], np.ndarray], channel_names: list[str], provenance: dict,
                 response_model: ResponseModel | None = None) -> None:
        self.neuron = neuron
        self.channel_names = list(channel_names)
        self._provenance = provenance
        self.response_model = response_model
        self._showings: dict[int, int] = {}  # block index -> times recorded (lost stimuli are shown again)

    def describe(self) -> dict:
        model = None if self.response_model is None else self.response_model.describe()
        return {**super().describe(), "neuron": self._provenance, "response_model": model}

    def _record(self, block: Block, presentations: Presentations) -> Responses:
        valid = presentations.valid.copy()
        if valid.all():
            scores = np.asarray(self.neuron(block.images), dtype=np.float64)
        else:
            # Only what was seen is scored: with fixation breaks a showing may hold many unseen stimuli, and a
            # forward pass over them would cost time and mean nothing. Unseen rows stay 0 until made NaN below,
            # so a response model draws its noise at the same positions either way.
            scores = np.zeros((len(block), len(self.channel_names)))
            if valid.any():
                seen = torch.from_numpy(np.flatnonzero(valid)).to(block.images.device)
                scores[valid] = np.asarray(self.neuron(block.images[seen]), dtype=np.float64)
        if self.response_model is not None:
            showing = self._showings.get(block.index, 0)
            self._showings[block.index] = showing + 1
            scores = self.response_model.respond(scores, self.response_model.rng_for(block.index, showing))
        scores[~valid] = np.nan
        return Responses(scores=scores, valid=valid, channel_names=self.channel_names)
