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
        self._cached_block: int | None = None
        self._cache: dict[str, np.ndarray] = {}

    def describe(self) -> dict:
        model = None if self.response_model is None else self.response_model.describe()
        return {**super().describe(), "neuron": self._provenance, "response_model": model}

    def _record(self, block: Block, presentations: Presentations) -> Responses:
        valid = presentations.valid.copy()
        scores = self._activations(block)
        if self.response_model is not None:
            showing = self._showings.get(block.index, 0)
            self._showings[block.index] = showing + 1
            scores = self.response_model.respond(scores, self.response_model.rng_for(block.index, showing))
        scores[~valid] = np.nan
        return Responses(scores=scores, valid=valid, channel_names=self.channel_names)

    def _activations(self, block: Block) -> np.ndarray:
        """The unit's activations to ``block``'s images, each computed once per block.

        A block's first showing holds every stimulus, so its activations come from the same forward pass, in
        the same batch, as they would with no stimulus lost; stimuli shown again (after a fixation break or a
        dropped frame) reuse them. A deterministic unit so answers exactly as if nothing had been lost, and
        showing stimuli again costs no forward pass. (Batches of other sizes may round differently.)
        """
        if self._cached_block != block.index:
            self._cached_block, self._cache = block.index, {}
        missing = [i for i, sid in enumerate(block.stimulus_ids) if sid not in self._cache]
        if missing:
            images = block.images if len(missing) == len(block) else \
                block.images[torch.as_tensor(missing, device=block.images.device)]
            rows = np.asarray(self.neuron(images), dtype=np.float64)
            for i, row in zip(missing, rows):
                self._cache[block.stimulus_ids[i]] = row
        return np.stack([self._cache[sid] for sid in block.stimulus_ids]).astype(np.float64, copy=True)
