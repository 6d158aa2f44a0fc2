"""The response source interface: where a block's responses come from.

Implementations: :mod:`rig.sources.simulated` (a model unit scores the images),
:mod:`rig.recording.source` (spikes from a recording stream) and
:mod:`rig.sources.replay` (the responses a session recorded). Each returns one
:class:`~protocols.base.Responses` per block.
"""
from __future__ import annotations

import abc

from protocols.base import Block, Responses
from rig.display import Presentations


class ResponseSource(abc.ABC):
    """Turns a presented block into responses, one per stimulus × channel."""

    channel_names: list[str]

    def record(self, block: Block, presentations: Presentations) -> Responses:
        """Responses to ``block`` as shown in ``presentations``."""
        if len(presentations.onset_times) != len(block):
            raise ValueError(
                f"block {block.index}: {len(block)} stimuli but {len(presentations.onset_times)} presentations"
            )
        responses = self._record(block, presentations)
        if responses.scores.shape != (len(block), len(self.channel_names)):
            raise RuntimeError(
                f"{type(self).__name__} returned scores of shape {responses.scores.shape}, "
                f"expected {(len(block), len(self.channel_names))}"
            )
        return responses

    def describe(self) -> dict:
        """Provenance for the session file."""
        return {"class": type(self).__name__, "channels": list(self.channel_names)}

    def close(self) -> None:
        """Release sockets, processes or models."""

    def explain_invalid(self) -> str:
        """Why the latest stimuli had no valid response, in words for the operator ("" when nothing to say)."""
        return ""

    @abc.abstractmethod
    def _record(self, block: Block, presentations: Presentations) -> Responses: ...
