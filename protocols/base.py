"""The protocol interface and the records that cross it.

A protocol proposes a :class:`Block` of stimuli and observes the
:class:`Responses` to it. It never learns whether the responses came from a
simulated unit or a recorded neuron; that is the whole point of the interface.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

from typing import Any

import numpy as np
import torch

#: Stimulus kinds a block may hold.
GENERATED = "generated"
REFERENCE = "reference"
STIMULUS_KINDS = (GENERATED, REFERENCE)


@dataclass
class Block:
    """One block of stimuli to show, in presentation order.

    ``codes[t]`` holds the latent codes of thread ``t``. A generated stimulus
    belongs to thread ``threads[i]`` and shows code ``code_index[i]`` of it;
    both are -1 for stimuli that belong to no thread (reference images).
    Presentation order is free (protocols may shuffle it), so the
    stimulus-to-code mapping is explicit rather than implied by position.
    """

    index: int
    stimulus_ids: list[str]
    kinds: list[str]
    threads: np.ndarray
    code_index: np.ndarray
    images: torch.Tensor
    codes: np.ndarray
    #: Free-form per-block metadata the protocol wants in the session file.
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.stimulus_ids)
        self.threads = np.asarray(self.threads, dtype=np.int64)
        self.code_index = np.asarray(self.code_index, dtype=np.int64)
        lengths = {
            "kinds": len(self.kinds),
            "threads": len(self.threads),
            "code_index": len(self.code_index),
            "images": self.images.shape[0],
        }
        wrong = {name: length for name, length in lengths.items() if length != n}
        if wrong:
            raise ValueError(f"block {self.index}: {n} stimulus ids but {wrong}")
        bad = sorted(set(self.kinds) - set(STIMULUS_KINDS))
        if bad:
            raise ValueError(f"block {self.index}: unknown stimulus kinds {bad}; valid: {STIMULUS_KINDS}")
        if len(set(self.stimulus_ids)) != n:
            raise ValueError(f"block {self.index}: stimulus ids are not unique")

    def __len__(self) -> int:
        return len(self.stimulus_ids)

    def indices_of_thread(self, thread: int) -> np.ndarray:
        """Positions in the block of thread ``thread``'s generated stimuli, sorted by code index."""
        positions = np.flatnonzero(self.threads == thread)
        return positions[np.argsort(self.code_index[positions], kind="stable")]

    def subset(self, positions: np.ndarray) -> "Block":
        """The stimuli at ``positions``, in that order, e.g. to show lost ones again."""
        positions = np.asarray(positions, dtype=np.int64)
        return Block(
            index=self.index,
            stimulus_ids=[self.stimulus_ids[i] for i in positions],
            kinds=[self.kinds[i] for i in positions],
            threads=self.threads[positions],
            code_index=self.code_index[positions],
            images=self.images[torch.from_numpy(positions).to(self.images.device)],
            codes=self.codes,
            attrs=dict(self.attrs),
        )


@dataclass
class Responses:
    """One response per stimulus × channel, with a validity flag per stimulus.

    An invalid stimulus (lost spikes, dropped frame, broken fixation) has no
    usable response; its scores are NaN and must never be read as zero.
    """

    scores: np.ndarray
    valid: np.ndarray
    channel_names: list[str]

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.valid = np.asarray(self.valid, dtype=bool)
        if self.scores.ndim != 2:
            raise ValueError(f"scores must be (stimuli, channels), got shape {self.scores.shape}")
        if self.valid.shape != (self.scores.shape[0],):
            raise ValueError(
                f"valid must have one flag per stimulus ({self.scores.shape[0]}), got shape {self.valid.shape}"
            )
        if len(self.channel_names) != self.scores.shape[1]:
            raise ValueError(
                f"{len(self.channel_names)} channel names for {self.scores.shape[1]} score columns"
            )
        if not np.all(np.isfinite(self.scores[self.valid])):
            raise ValueError("valid stimuli must have finite scores")

    def showing_record(self) -> tuple[dict[str, Any], dict[str, str]]:
        """What the source saw during this showing beyond the scores, for the session file: (datasets,
        string attributes). A dataset is a numpy array, :class:`ByteStrings` or :class:`TextStrings`.
        Plain responses have nothing more to say."""
        return {}, {}


class ByteStrings(list):
    """A dataset of variable-length byte strings (e.g. network frames, which hold NUL bytes)."""


class TextStrings(list):
    """A dataset of text strings."""


def extendable_generations(protocol: object) -> int | None:
    """The generation count an operator's "extend" may raise, or None where there is none to raise.

    An int ``generations`` that can be set (an evolution's); not a read-only property, as a screening's is,
    whose block count follows from its image set.
    """
    generations = getattr(protocol, "generations", None)
    declared = getattr(type(protocol), "generations", None)
    if not isinstance(generations, int) or (isinstance(declared, property) and declared.fset is None):
        return None
    return generations


class Protocol(abc.ABC):
    """What an experiment is: propose stimuli, observe responses, know when to stop."""

    #: Short name stored in the session file.
    name: str = "protocol"

    @abc.abstractmethod
    def propose(self) -> Block:
        """Return the next block of stimuli to show."""

    @abc.abstractmethod
    def observe(self, block: Block, responses: Responses) -> None:
        """Take the responses to ``block`` (all valid) and update the protocol's state."""

    def check_responses(self, block: Block, responses: Responses, expected_index: int) -> None:
        """What every ``observe`` checks first: the block expected, one valid response per stimulus."""
        if block.index != expected_index:
            raise ValueError(f"{self.name}: got responses for block {block.index}, expected {expected_index}")
        rows, valid = len(responses.scores), len(responses.valid)
        if rows != len(block) or valid != len(block):
            raise ValueError(f"{self.name}: block {block.index} has {len(block)} stimuli but the responses have "
                             f"{rows} rows of scores and {valid} validity flags")
        if not responses.valid.all():
            missing = [block.stimulus_ids[i] for i in np.flatnonzero(~responses.valid)]
            raise ValueError(f"{self.name}: block {block.index} has stimuli without valid responses: {missing[:5]}")

    @property
    @abc.abstractmethod
    def finished(self) -> bool:
        """True once the protocol has nothing more to show."""

    def last_timings(self) -> dict[str, float]:
        """Seconds the protocol spent in its own steps (e.g. ask, generate, tell) for the last block."""
        return {}

    def checkpoint(self) -> dict[str, bytes]:
        """Opaque state blobs to store with the block just observed (e.g. optimizer state)."""
        return {}

    def restore(self, checkpoint: dict[str, bytes], blocks_done: int) -> None:
        """Continue from a :meth:`checkpoint` taken after ``blocks_done`` blocks."""
        raise NotImplementedError(f"{type(self).__name__} cannot resume from a checkpoint")
