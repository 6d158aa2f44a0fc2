"""What every Display must do, whatever shows the stimuli (STYLE practice 10).

The suite (:class:`DisplayConformance`) runs over every registered display
kind (:data:`rig.display.DISPLAYS`) plus the unregistered recorded display of a
replay (tests/test_display_conformance.py): registering a display puts it
under the suite, and a kind without a maker in :data:`MAKERS` fails there,
saying so.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from protocols.base import REFERENCE, Block
from protocols.spec import DisplaySpec
from rig.display import DISPLAYS, Display, build_display
from rig.session import RecordedBlock, RecordedSession

#: Distinct solid colours, RGB in [0, 1].
COLOURS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0)]


def solid_block(colours: list[tuple[float, float, float]], size: int = 16, index: int = 0) -> Block:
    """A block of solid-colour reference images, one per colour, ids ``c0``, ``c1``, ..."""
    images = torch.tensor(colours, dtype=torch.float32)[:, :, None, None].expand(-1, -1, size, size).contiguous()
    n = len(colours)
    return Block(index=index, stimulus_ids=[f"c{i}" for i in range(n)], kinds=[REFERENCE] * n,
                 threads=np.full(n, -1), code_index=np.full(n, -1), images=images, codes=np.zeros((0, 0, 0)))


def recorded_session(indices: tuple[int, ...] = (0, 7), n: int = len(COLOURS), channels: int = 2) -> RecordedSession:
    """A session, in memory, that recorded blocks ``indices`` of ``solid_block(COLOURS[:n])``: one valid
    presentation each, 250 ms apart, 100 ms on, and finite scores on ``channels`` channels."""
    rng = np.random.default_rng(0)
    blocks = []
    for index in indices:
        block = solid_block(COLOURS[:n], index=index)
        onsets = 10.0 + 0.25 * np.arange(n)
        blocks.append(RecordedBlock(
            index=index, codes=block.codes, stimulus_ids=list(block.stimulus_ids), kinds=list(block.kinds),
            threads=block.threads, code_index=block.code_index, onset_times=onsets,
            dropped_frames=np.zeros(n, dtype=np.int64), scores=rng.normal(10, 2, (n, channels)),
            valid=np.ones(n, dtype=bool), channel_names=[f"ch{c}" for c in range(channels)], timings={},
            offset_times=onsets + 0.1, clock="recorded-test"))
    return RecordedSession(path=Path("recorded-test.h5"), attrs={}, provenance={}, reference_ids=[], blocks=blocks)


#: A 400x300 window, paced (Xvfb has no vsync); as tests/test_psychopy_display.py lays it out.
PSYCHOPY_LAYOUT = dict(width_cm=20.0, distance_cm=57.0, resolution=(400, 300), fullscreen=False, pace=True,
                       refresh_hz=60.0, background=(0.5, 0.5, 0.5), fixation_deg=0.0, photodiode="none")


def _psychopy() -> Display:
    if not os.environ.get("DISPLAY"):
        pytest.skip('needs a screen: run under xvfb-run -a -s "-screen 0 1280x1024x24" (make test does)')
    return build_display("psychopy", DisplaySpec(**PSYCHOPY_LAYOUT, on_frames=1, off_frames=1))


def _recorded() -> Display:
    from rig.display.recorded import RecordedDisplay

    return RecordedDisplay(recorded_session())


def _gated(inner: Callable[[], Display]) -> Callable[[], Display]:
    """``inner`` running blocks as trials ([behavior] with gaze "none": fixation taken as held, so every
    stimulus is shown; tests/test_behavior_*.py cover breaks)."""

    def make() -> Display:
        from protocols.spec import parse_protocol
        from rig.behavior.choice import gate_display
        from helpers.protocols import tiny_protocol

        spec = parse_protocol(tiny_protocol(extra='[behavior]\nstimuli_per_trial = 2\nhold_ms = 50\niti_ms = 50\n'
                                                  '[gaze]\nsource = "none"\n'))
        layout = DisplaySpec(**PSYCHOPY_LAYOUT, on_frames=1, off_frames=1)
        import dataclasses

        return gate_display(inner(), dataclasses.replace(spec, display=layout), gaze={"source": "none"}, seed=0,
                            say=lambda message: None)

    return make


#: How the suite makes each display: every registered kind, by name, the replay's (built from a session), and
#: each frame-capable kind running blocks as trials.
MAKERS: dict[str, Callable[[], Display]] = {
    "headless": lambda: build_display("headless"),
    "psychopy": _psychopy,
    "recorded": _recorded,
    "gated-headless": _gated(lambda: build_display("headless")),
    "gated-psychopy": _gated(_psychopy),
}
#: Displays not built by name: the replay builds its display from the session it replays; a gated display wraps
#: a registered one when the protocol has [behavior].
UNREGISTERED = ("recorded", "gated-headless", "gated-psychopy")


def display_kinds() -> list[str]:
    """Every registered display kind, then the unregistered ones."""
    return [*DISPLAYS.kinds(), *UNREGISTERED]


class DisplayConformance:
    """The shared suite, over every display of :func:`display_kinds`; the suite closes what it makes."""

    @pytest.fixture(params=display_kinds())
    def display(self, request):
        if request.param not in MAKERS:
            pytest.fail(f"display kind {request.param!r} is registered but tests/helpers/display_conformance.py has no "
                        f"maker for it: add one to MAKERS")
        display = MAKERS[request.param]()
        yield display
        display.close()

    @pytest.mark.timeout(60)
    def test_one_presentation_per_stimulus(self, display):
        block = solid_block(COLOURS[:4])
        shown = display.present(block)
        for name in ("onset_times", "offset_times", "dropped_frames", "valid"):
            assert getattr(shown, name).shape == (4,), name
        assert np.isfinite(shown.onset_times).all() and np.isfinite(shown.offset_times).all()
        assert isinstance(shown.clock, str) and shown.clock
        # A presentation is valid exactly when no frame was dropped while it was on.
        np.testing.assert_array_equal(shown.valid, shown.dropped_frames == 0)

    @pytest.mark.timeout(60)
    def test_onsets_in_order_and_offsets_after_them(self, display):
        shown = display.present(solid_block(COLOURS[:4]))
        assert np.all(np.diff(shown.onset_times) >= 0)
        assert np.all(shown.offset_times >= shown.onset_times)
        assert np.all(shown.onset_times[1:] >= shown.offset_times[:-1])

    @pytest.mark.timeout(60)
    def test_onset_listener_hears_every_onset_in_order(self, display):
        heard = []
        display.add_onset_listener(lambda block, position, t: heard.append((block.index, position, t)))
        block = solid_block(COLOURS[:3], index=7)
        shown = display.present(block)
        assert [(b, p) for b, p, _ in heard] == [(7, 0), (7, 1), (7, 2)]
        np.testing.assert_array_equal([t for _, _, t in heard], shown.onset_times)

    @pytest.mark.timeout(60)
    def test_shows_a_subset_again(self, display):
        """What the controller does with lost stimuli: show some of a block again, in a new order."""
        block = solid_block(COLOURS[:4])
        shown = display.present(block.subset(np.array([3, 1])))
        assert shown.onset_times.shape == (2,)

    def test_rejects_an_empty_block(self, display):
        empty = Block(index=3, stimulus_ids=[], kinds=[], threads=[], code_index=[],
                      images=torch.zeros(0, 3, 8, 8), codes=np.zeros((0, 0, 0)))
        with pytest.raises(ValueError, match="block 3 has no stimuli"):
            display.present(empty)

    def test_describes_itself_for_the_session_file(self, display):
        described = display.describe()
        assert described["class"] == type(display).__name__
        json.dumps(described)  # the session file stores it as JSON

    def test_close_twice(self, display):
        display.close()
        display.close()
