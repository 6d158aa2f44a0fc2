"""The closed loop: protocol → display → response source → protocol, one block at a time.

The same loop runs in silico and in vivo; only the display and the response
source differ. Stimuli whose responses were lost (a gap in the stream, a
dropped frame) are shown again at the end of the block; every showing is kept
for the session file. Every block is written the moment its responses are in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from protocols.base import Block, Protocol, Responses
from rig.display import Display, Presentations
from rig.sources import ResponseSource
from rig.session.sink import SessionSink

if TYPE_CHECKING:
    from rig.dashboard.channel import ControlChannel


class IncompleteBlockError(RuntimeError):
    """Some stimuli of a block had no valid response even after being shown again."""


class StopRequested(Exception):
    """The operator asked to stop; the block in progress is unfinished (its showings are kept)."""

    def __init__(self, block: Block, showings: list["Showing"]) -> None:
        super().__init__(f"stopped by the operator during block {block.index}")
        self.block, self.showings = block, showings


@dataclass
class Showing:
    """One pass of the display over some of a block's stimuli, and what was recorded."""

    positions: np.ndarray
    presentations: Presentations
    responses: Responses


@dataclass
class BlockReport:
    """What the loop tells its progress callback after each block."""

    index: int
    total: int | None
    seconds: float
    timings: dict[str, float]
    repeats: int
    #: Trial outcomes in the block by label ("completed": 9, "broke fixation": 3), when it ran as trials.
    trial_outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def trials(self) -> str:
        """The block's trials in words for a progress line ("" without behaviour)."""
        if not self.trial_outcomes:
            return ""
        total = sum(self.trial_outcomes.values())
        return f"  trials {total}: " + ", ".join(f"{n} {label}" for label, n in self.trial_outcomes.items())


def trial_outcomes(showings: list["Showing"]) -> dict[str, int]:
    """How the trials of a block's showings ended, counted by outcome label."""
    from rig.behavior.outcomes import TrialOutcome  # only sessions with behaviour have trials

    counts: dict[str, int] = {}
    for showing in showings:
        log = showing.presentations.behavior
        for code in ([] if log is None else log.trials["outcome"]):
            label = TrialOutcome(code).label
            counts[label] = counts.get(label, 0) + 1
    return counts


class Controller:
    """Runs a protocol to completion against a display and a response source.

    ``max_repeats`` bounds how often lost stimuli are shown again within one
    block; ``checkpoint_every`` sets how often optimizer state is stored.
    ``controls`` (a :class:`rig.dashboard.channel.ControlChannel`) brings a viewer's
    requests (pause, stop, extend, note), applied and recorded between blocks.
    """

    def __init__(self, protocol: Protocol, display: Display, source: ResponseSource, session: SessionSink,
                 progress: Callable[[BlockReport], None] | None = None, checkpoint_every: int = 10,
                 max_repeats: int = 3, controls: ControlChannel | None = None) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        if max_repeats < 0:
            raise ValueError(f"max_repeats must be >= 0, got {max_repeats}")
        self.protocol = protocol
        self.display = display
        self.source = source
        self.session = session
        self.progress = progress
        self.checkpoint_every = checkpoint_every
        self.max_repeats = max_repeats
        self.controls = controls

    def run(self) -> int:
        """Run blocks until the protocol is finished; return the number of blocks run.

        The session file is marked ``complete`` at the end, ``stopped`` when the operator stops it, or
        ``interrupted`` / ``failed`` if the loop ends early; blocks already written stay intact.
        """
        blocks = 0
        try:
            while True:
                # A viewer's controls, before every block and after the last (an extension may come during it).
                next_block = getattr(self.protocol, "generation", blocks)  # a resumed session's count goes on
                if self.controls is not None and self.controls.between_blocks(self.protocol, self.session, next_block):
                    self.session.finish("stopped")  # "stop after this block": every block is whole
                    return blocks
                if self.protocol.finished:
                    break
                self.step()
                blocks += 1
        except StopRequested as stop:
            # Stopped by the operator: the unfinished block's showings (its trials, its gaze) are kept, and the
            # session can be resumed from the last whole block.
            keep = getattr(self.session, "append_unfinished", None)
            if keep is not None:
                keep(stop.block, stop.showings)
            self.session.finish("stopped")
            return blocks
        except KeyboardInterrupt:
            self.session.finish("interrupted")
            raise
        except BaseException:
            self.session.finish("failed")
            raise
        self.session.finish("complete")
        return blocks

    def step(self) -> BlockReport:
        """Run one block: propose, present (and re-present lost stimuli), observe, write."""
        started = time.perf_counter()
        block = self.protocol.propose()
        proposed = time.perf_counter()
        showings = self._show_until_valid(block)
        recorded = time.perf_counter()
        presentations, responses = merge_showings(len(block), showings)
        self.protocol.observe(block, responses)
        observed = time.perf_counter()
        timings = {
            "propose": proposed - started,
            "present_and_record": recorded - proposed,
            "observe": observed - recorded,
            **{f"protocol_{k}": v for k, v in self.protocol.last_timings().items()},
        }
        # Optimizer state can be large (a full CMA-ES covariance at n = 4096 is ~270 MB), so it is
        # stored every few blocks and at the end; the recorded blocks replay the optimizer in between.
        due = (block.index + 1) % self.checkpoint_every == 0 or self.protocol.finished
        checkpoint = self.protocol.checkpoint() if due else {}
        self.session.append_block(block, presentations, responses, checkpoint, timings, showings)
        timings["write"] = time.perf_counter() - observed
        report = BlockReport(
            index=block.index,
            total=getattr(self.protocol, "generations", None),
            seconds=time.perf_counter() - started,
            timings=timings,
            repeats=len(showings) - 1,
            trial_outcomes=trial_outcomes(showings),
        )
        if self.progress is not None:
            self.progress(report)
        return report

    def _show_until_valid(self, block: Block) -> list[Showing]:
        """Show the block, then its lost stimuli again (at the end) until each has a valid response.

        A stimulus lost to the rig (a dropped frame, a gap in the stream) is shown at most ``max_repeats`` more
        times; one lost to behaviour (fixation not held) comes back without limit, as a monkey's breaks are
        normal. With a trial machine, the operator's stop ends the block after the current trial.
        """
        positions = np.arange(len(block))
        losses = np.zeros(len(block), dtype=np.int64)
        showings: list[Showing] = []
        while True:
            shown = block if not showings else block.subset(positions)
            presentations = self.display.present(shown)
            responses = self.source.record(shown, presentations)
            showings.append(Showing(positions, presentations, responses))
            lost = ~responses.valid
            losses[positions[lost & ~presentations.lost_to_behavior]] += 1
            positions = positions[lost]
            if len(positions) == 0:
                return showings
            if getattr(self.display, "stop_requested", False):
                raise StopRequested(block, showings)
            if np.any(losses[positions] > self.max_repeats):
                break
        lost_ids = [block.stimulus_ids[i] for i in positions[losses[positions] > self.max_repeats]]
        explain = getattr(self.source, "explain_invalid", None)  # duck-typed sources may not say
        why = explain() if explain is not None else ""
        raise IncompleteBlockError(
            f"block {block.index}: {len(lost_ids)} stimuli still had no valid response after "
            f"{self.max_repeats} repeats: {lost_ids[:5]}{' ...' if len(lost_ids) > 5 else ''}"
            f"{f' ({why})' if why else ''}; the session file keeps every block before this one"
        )


def merge_showings(n: int, showings: list[Showing]) -> tuple[Presentations, Responses]:
    """Per stimulus, the presentation and response of its last (valid) showing."""
    first = showings[0]
    onsets = np.full(n, np.nan)
    offsets = np.full(n, np.nan)
    dropped = np.zeros(n, dtype=np.int64)
    shown_valid = np.zeros(n, dtype=bool)
    scores = np.full((n, first.responses.scores.shape[1]), np.nan)
    valid = np.zeros(n, dtype=bool)
    for showing in showings:
        p, r, pos = showing.presentations, showing.responses, showing.positions
        onsets[pos], offsets[pos], dropped[pos], shown_valid[pos] = p.onset_times, p.offset_times, p.dropped_frames, p.valid
        scores[pos], valid[pos] = r.scores, r.valid
    presentations = Presentations(onsets, offsets, dropped, shown_valid, first.presentations.clock)
    return presentations, Responses(scores, valid, first.responses.channel_names)
