"""What every Display must do, whatever shows the stimuli (STYLE practice 10).

A display's test module subclasses :class:`DisplayConformance` and defines
``make_display()``; the suite's tests then run against that display.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from protocols.base import REFERENCE, Block
from rig.display import Display

#: Distinct solid colours, RGB in [0, 1].
COLOURS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0)]


def solid_block(colours: list[tuple[float, float, float]], size: int = 16, index: int = 0) -> Block:
    """A block of solid-colour reference images, one per colour, ids ``c0``, ``c1``, ..."""
    images = torch.tensor(colours, dtype=torch.float32)[:, :, None, None].expand(-1, -1, size, size).contiguous()
    n = len(colours)
    return Block(index=index, stimulus_ids=[f"c{i}" for i in range(n)], kinds=[REFERENCE] * n,
                 threads=np.full(n, -1), code_index=np.full(n, -1), images=images, codes=np.zeros((0, 0, 0)))


class DisplayConformance:
    """The shared suite. Subclasses define :meth:`make_display`; the suite closes what it makes."""

    def make_display(self) -> Display:
        raise NotImplementedError

    @pytest.fixture
    def display(self):
        display = self.make_display()
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
