"""The Evolution protocol: a generator plus one optimizer per thread.

Each block shows every thread's population (one generation) and the reference
images, in a seeded shuffled order. Thread ``t`` is scored on response channel
``channels[t]``. The protocol never learns where responses come from.

With ``repeat_fraction`` > 0 a seeded choice of that fraction of the block's
evolved images is shown a second time in the same block, for the noise ceiling
of ``rig compare``: such a showing has the id ``rep/<original id>``, kind
"generated" and no thread (-1), so no optimizer ever sees it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from protocols.base import GENERATED, REFERENCE, Block, Protocol, Responses
from protocols.generators.base import Generator
from protocols.optimizers.base import Optimizer

#: Stimulus ids of evolved images shown a second time in their block start with this.
REPEAT_PREFIX = "rep/"


@dataclass
class GenerationStats:
    """Score summary of one thread's generation."""

    mean: float
    max: float
    best_code: np.ndarray


@dataclass
class Timings:
    """Seconds spent in the protocol's own steps for the last block."""

    ask: float = 0.0
    generate: float = 0.0
    tell: float = 0.0


@dataclass
class Evolution(Protocol):
    """Evolve images for ``len(optimizers)`` independent threads, interleaved in one block.

    ``references`` are natural images (N, 3, H, W) in [0, 1] at the generator's
    image size; they are shown in every block so a drifting neuron shows up.
    """

    generator: Generator
    optimizers: list[Optimizer]
    channels: list[int]
    generations: int
    references: torch.Tensor
    reference_ids: list[str]
    seed: int
    name: str = "evolution"
    #: Fraction of each block's evolved images shown twice (0: none), for the noise ceiling.
    repeat_fraction: float = 0.0
    generation: int = 0
    history: list[list[GenerationStats]] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.optimizers):
            raise ValueError(f"{len(self.optimizers)} optimizers (threads) but {len(self.channels)} channels")
        dims = {opt.dim for opt in self.optimizers}
        if dims != {self.generator.code_dim}:
            raise ValueError(f"optimizer dims {sorted(dims)} must equal the generator's code_dim {self.generator.code_dim}")
        if self.references.shape[0] != len(self.reference_ids):
            raise ValueError(f"{self.references.shape[0]} reference images but {len(self.reference_ids)} ids")
        size = self.generator.image_size
        if self.references.shape[0] and tuple(self.references.shape[1:]) != (3, size, size):
            raise ValueError(f"reference images must be (N, 3, {size}, {size}), got {tuple(self.references.shape)}")
        if not 0.0 <= self.repeat_fraction <= 1.0:
            raise ValueError(f"repeat_fraction must be in [0, 1], got {self.repeat_fraction!r}")

    @property
    def threads(self) -> int:
        return len(self.optimizers)

    @property
    def finished(self) -> bool:
        return self.generation >= self.generations

    def propose(self) -> Block:
        """Ask every thread's optimizer for a generation and render it, plus the references."""
        if self.finished:
            raise RuntimeError(f"{self.name}: all {self.generations} generations are done")
        started = time.perf_counter()
        codes = np.stack([opt.ask() for opt in self.optimizers])
        asked = time.perf_counter()
        device = self.references.device
        with torch.inference_mode():
            flat = torch.from_numpy(codes.reshape(-1, codes.shape[-1])).to(device)
            generated = self.generator(flat).to(device=device, dtype=torch.float32)
        generated_at = time.perf_counter()
        self.timings = Timings(ask=asked - started, generate=generated_at - asked)

        popsize = codes.shape[1]
        ids = [f"g{self.generation:04d}/t{t}/c{i:03d}" for t in range(self.threads) for i in range(popsize)]
        ids += [f"ref/{rid}" for rid in self.reference_ids]
        kinds = [GENERATED] * len(generated) + [REFERENCE] * len(self.reference_ids)
        threads = np.concatenate([np.repeat(np.arange(self.threads), popsize), np.full(len(self.reference_ids), -1)])
        code_index = np.concatenate([np.tile(np.arange(popsize), self.threads), np.full(len(self.reference_ids), -1)])
        images = torch.cat([generated, self.references])
        repeats = self._repeats(len(generated))
        if len(repeats):
            ids += [f"{REPEAT_PREFIX}{ids[i]}" for i in repeats]
            kinds += [GENERATED] * len(repeats)
            threads = np.concatenate([threads, np.full(len(repeats), -1)])
            code_index = np.concatenate([code_index, np.full(len(repeats), -1)])
            images = torch.cat([images, generated[torch.from_numpy(repeats).to(generated.device)]])

        # Shuffle presentation order so adaptation and drift don't track thread or rank;
        # seeded per block so a resumed session shows the same order.
        order = np.random.default_rng([self.seed, self.generation]).permutation(len(ids))
        return Block(
            index=self.generation,
            stimulus_ids=[ids[i] for i in order],
            kinds=[kinds[i] for i in order],
            threads=threads[order],
            code_index=code_index[order],
            images=images[torch.from_numpy(order).to(images.device)],
            codes=codes,
            attrs={"generation": self.generation},
        )

    def _repeats(self, n_generated: int) -> np.ndarray:
        """Which evolved images this block shows twice: a seeded choice, the same again on resume."""
        count = int(round(self.repeat_fraction * n_generated))
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        rng = np.random.default_rng([self.seed, self.generation, 1])  # key 1: not the presentation order's
        return np.sort(rng.choice(n_generated, size=count, replace=False))

    def observe(self, block: Block, responses: Responses) -> None:
        """Tell each thread's optimizer the scores of its generation on its channel."""
        self.check_responses(block, responses, self.generation)
        if max(self.channels) >= responses.scores.shape[1]:
            raise ValueError(
                f"{self.name}: thread channels {self.channels} but responses have "
                f"{responses.scores.shape[1]} channels {responses.channel_names}"
            )
        started = time.perf_counter()
        stats = []
        for thread, (opt, channel) in enumerate(zip(self.optimizers, self.channels)):
            scores = responses.scores[block.indices_of_thread(thread), channel]
            opt.tell(block.codes[thread], scores)
            best = int(np.argmax(scores))
            stats.append(GenerationStats(float(scores.mean()), float(scores[best]), block.codes[thread][best].copy()))
        self.timings.tell = time.perf_counter() - started
        self.history.append(stats)
        self.generation += 1

    def last_timings(self) -> dict[str, float]:
        return asdict(self.timings)

    def checkpoint(self) -> dict[str, bytes]:
        """Each thread's optimizer state after the last observed generation."""
        return {f"thread{t}": opt.get_state() for t, opt in enumerate(self.optimizers)}

    def restore(self, checkpoint: dict[str, bytes], blocks_done: int) -> None:
        """Continue after ``blocks_done`` generations from a :meth:`checkpoint`."""
        for t, opt in enumerate(self.optimizers):
            opt.set_state(checkpoint[f"thread{t}"])
        self.generation = blocks_done
