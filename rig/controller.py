"""The closed loop: protocol → display → response source → protocol, one block at a time.

The same loop runs in silico and in vivo; only the display and the response
source differ. Every block is written to the session file the moment its
responses are in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from protocols.base import Protocol
from rig.display import Display
from rig.responses import ResponseSource
from rig.session import SessionWriter


@dataclass
class BlockReport:
    """What the loop tells its progress callback after each block."""

    index: int
    total: int | None
    seconds: float
    timings: dict[str, float]


class Controller:
    """Runs a protocol to completion against a display and a response source."""

    def __init__(self, protocol: Protocol, display: Display, source: ResponseSource, session: SessionWriter,
                 progress: Callable[[BlockReport], None] | None = None, checkpoint_every: int = 10) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.checkpoint_every = checkpoint_every
        self.protocol = protocol
        self.display = display
        self.source = source
        self.session = session
        self.progress = progress

    def run(self) -> int:
        """Run blocks until the protocol is finished; return the number of blocks run.

        The session file is marked ``complete`` at the end, or ``interrupted`` /
        ``failed`` if the loop stops early; blocks already written stay intact.
        """
        blocks = 0
        try:
            while not self.protocol.finished:
                self.step()
                blocks += 1
        except KeyboardInterrupt:
            self.session.finish("interrupted")
            raise
        except BaseException:
            self.session.finish("failed")
            raise
        self.session.finish("complete")
        return blocks

    def step(self) -> BlockReport:
        """Run one block: propose, present, record, observe, write."""
        started = time.perf_counter()
        block = self.protocol.propose()
        proposed = time.perf_counter()
        presentations = self.display.present(block)
        presented = time.perf_counter()
        responses = self.source.record(block, presentations)
        recorded = time.perf_counter()
        self.protocol.observe(block, responses)
        observed = time.perf_counter()
        timings = {
            "propose": proposed - started,
            "present": presented - proposed,
            "record": recorded - presented,
            "observe": observed - recorded,
            **{f"protocol_{k}": v for k, v in self.protocol.last_timings().items()},
        }
        # Optimizer state can be large (a full CMA-ES covariance at n = 4096 pickles to ~270 MB), so it is
        # stored every few blocks and at the end; the blocks in between are enough to replay up to any point.
        due = (block.index + 1) % self.checkpoint_every == 0 or self.protocol.finished
        checkpoint = self.protocol.checkpoint() if due else {}
        self.session.append_block(block, presentations, responses, checkpoint, timings)
        timings["write"] = time.perf_counter() - observed
        report = BlockReport(
            index=block.index,
            total=getattr(self.protocol, "generations", None),
            seconds=time.perf_counter() - started,
            timings=timings,
        )
        if self.progress is not None:
            self.progress(report)
        return report
