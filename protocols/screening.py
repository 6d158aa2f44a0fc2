"""The Screening protocol: show a fixed set of natural images and record the responses.

Used for natural-image score distributions, against which evolved prototypes
are judged. Each repeat shows every image once, in a seeded shuffled order,
split into blocks of ``block_size``. Like every protocol it never learns where
responses come from. A killed screening resumes by observing its recorded
blocks again in order (rig/loop/replay.py), which the seeded order makes exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from protocols.base import REFERENCE, Block, Protocol, Responses

#: Stimulus ids are ``nat/<image id>``; the image id is the file's path in its folder without suffix.
ID_PREFIX = "nat/"


@dataclass
class Screening(Protocol):
    """Show ``images`` (N, 3, H, W) in [0, 1] ``repeats`` times, ``block_size`` per block (0: all at once)."""

    images: torch.Tensor
    image_ids: list[str]
    seed: int
    block_size: int = 0
    repeats: int = 1
    name: str = "screening"
    blocks_done: int = 0
    #: Every valid response, per image id: a list of per-channel score rows.
    responses: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"screening images must be (N, 3, H, W), got {tuple(self.images.shape)}")
        if self.images.shape[0] != len(self.image_ids) or not self.image_ids:
            raise ValueError(f"{self.images.shape[0]} screening images but {len(self.image_ids)} ids (need >= 1)")
        if len(set(self.image_ids)) != len(self.image_ids):
            raise ValueError("screening image ids are not unique")
        if self.block_size < 0 or self.repeats < 1:
            raise ValueError(f"block_size must be >= 0 and repeats >= 1, got {self.block_size}, {self.repeats}")

    @property
    def per_repeat(self) -> int:
        """Blocks needed to show every image once."""
        size = self.block_size or len(self.image_ids)
        return -(-len(self.image_ids) // size)

    @property
    def generations(self) -> int:
        """Total number of blocks (named as in Evolution so progress reports read the same)."""
        return self.per_repeat * self.repeats

    @property
    def finished(self) -> bool:
        return self.blocks_done >= self.generations

    def _positions(self, block: int) -> np.ndarray:
        repeat, part = divmod(block, self.per_repeat)
        # Seeded per repeat: a resumed session shows the same order.
        order = np.random.default_rng([self.seed, repeat]).permutation(len(self.image_ids))
        size = self.block_size or len(self.image_ids)
        return order[part * size:(part + 1) * size]

    def propose(self) -> Block:
        """The next block of natural images."""
        if self.finished:
            raise RuntimeError(f"{self.name}: all {self.generations} blocks are done")
        positions = self._positions(self.blocks_done)
        n = len(positions)
        return Block(
            index=self.blocks_done,
            stimulus_ids=[ID_PREFIX + self.image_ids[i] for i in positions],
            kinds=[REFERENCE] * n,
            threads=np.full(n, -1),
            code_index=np.full(n, -1),
            images=self.images[torch.from_numpy(positions).to(self.images.device)],
            codes=np.zeros((0, 0, 0)),
            attrs={"repeat": self.blocks_done // self.per_repeat},
        )

    def observe(self, block: Block, responses: Responses) -> None:
        """Keep each image's responses."""
        self.check_responses(block, responses, self.blocks_done)
        for sid, row in zip(block.stimulus_ids, responses.scores):
            self.responses.setdefault(sid[len(ID_PREFIX):], []).append(row.copy())
        self.blocks_done += 1

    def mean_responses(self) -> tuple[list[str], np.ndarray]:
        """Image ids (in set order) and their mean response per channel, (N, channels); NaN if never shown."""
        shown = [np.mean(self.responses[i], axis=0) for i in self.image_ids if i in self.responses]
        channels = shown[0].shape[0] if shown else 0
        means = np.full((len(self.image_ids), channels), np.nan)
        for row, image_id in enumerate(self.image_ids):
            if image_id in self.responses:
                means[row] = np.mean(self.responses[image_id], axis=0)
        return list(self.image_ids), means

    # No checkpoint/restore of its own (the base's: nothing to store, and restore refuses): its state is the
    # responses it was given, so a resumed screening replays its recorded blocks instead (rig/loop/replay.py).
