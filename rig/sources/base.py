"""The response source interface: where a block's responses come from.

Implementations: :mod:`rig.sources.simulated` (a model unit scores the images),
:mod:`rig.recording.source` (spikes from a recording stream) and
:mod:`rig.sources.replay` (the responses a session recorded). Each returns one
:class:`~protocols.base.Responses` per block. :meth:`ResponseSource.record`
checks what ``_record`` returns, once for all of them: one row per stimulus and
one column per channel, the source's channels, a finite score for every valid
stimulus and NaN for every invalid one (never a made-up zero).
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np

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
        if not np.isfinite(presentations.onset_times).any() and not presentations.valid.any():
            # Nothing reached the screen (a trial machine stopped before the first onset): nothing to record.
            n = len(block)
            return Responses(np.full((n, len(self.channel_names)), np.nan), np.zeros(n, dtype=bool),
                             list(self.channel_names))
        responses = self._record(block, presentations)
        self._check_responses(block, responses)
        return responses

    def _check_responses(self, block: Block, responses: Any) -> None:
        """What every source must return (:class:`Responses` checks valid ⇒ finite itself)."""
        who = f"{type(self).__name__} (block {block.index})"
        if not isinstance(responses, Responses):
            raise RuntimeError(f"{who} returned {type(responses).__name__}, not Responses")
        if responses.scores.shape != (len(block), len(self.channel_names)):
            raise RuntimeError(f"{type(self).__name__} returned scores of shape {responses.scores.shape}, "
                               f"expected {(len(block), len(self.channel_names))}")
        if list(responses.channel_names) != list(self.channel_names):
            raise RuntimeError(f"{who} returned channels {list(responses.channel_names)}, "
                               f"expected its own {list(self.channel_names)}")
        invalid = ~responses.valid
        scored = invalid & ~np.all(np.isnan(responses.scores), axis=1)
        if scored.any():
            first = int(np.flatnonzero(scored)[0])
            raise RuntimeError(f"{who} scored {int(scored.sum())} invalid stimuli (first at position {first}: "
                               f"{responses.scores[first].tolist()}); an invalid stimulus's scores must be NaN")

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
