"""One contract for every response source (STYLE practice 10), and the ResponseSource base's output checks.

The suite runs over every ``ResponseSource`` subclass in ``rig`` (found, not
listed): the simulated source and the replay source here. The recording
source (``rig.recording``) is covered by the reader contract suite
(tests/helpers/reader_conformance.py: ZMQ live, LSL live, file replay) and the
fidelity tests against ``rig sim-rig`` (tests/test_rig_fidelity.py), which need
a live stream; it is exempt here by module. A new source without a maker in
:data:`MAKERS` fails here, saying so.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.display_conformance import COLOURS, recorded_session, solid_block

import rig.recording.source  # noqa: F401  (so its source is found, and exempted)
from protocols.base import Responses
from rig.display import Presentations
from rig.sources import ResponseSource
from rig.sources.replay import ReplaySource
from rig.sources.simulated import SimulatedResponses

CHANNELS = 2


def _mean_colour(images: torch.Tensor) -> np.ndarray:
    """A stand-in neuron: the mean of the red and green planes, two channels."""
    return images[:, :CHANNELS].mean(dim=(2, 3)).numpy()


MAKERS = {
    SimulatedResponses: lambda: SimulatedResponses(_mean_colour, [f"ch{c}" for c in range(CHANNELS)],
                                                   {"model": "mean-colour"}),
    ReplaySource: lambda: ReplaySource(recorded_session(channels=CHANNELS)),
}
#: Sources covered elsewhere, by module prefix, with where.
EXEMPT = {"rig.recording.": "tests/helpers/reader_conformance.py and tests/test_rig_fidelity.py (needs a live stream)"}


def _sources() -> list[type]:
    found, stack = [], list(ResponseSource.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("rig.") and not cls.__module__.startswith(tuple(EXEMPT)):
            found.append(cls)
    return sorted(set(found), key=lambda c: c.__qualname__)


def test_every_source_in_rig_has_a_maker():
    assert set(_sources()) == set(MAKERS), "a ResponseSource without a maker here (or a maker for a gone one)"


def shown(n: int, valid: np.ndarray | None = None) -> Presentations:
    onsets = 10.0 + 0.25 * np.arange(n)
    return Presentations(onsets, onsets + 0.1, np.zeros(n, dtype=np.int64),
                         np.ones(n, dtype=bool) if valid is None else valid, "test")


@pytest.fixture(params=list(MAKERS), ids=lambda cls: cls.__name__)
def source(request):
    made = MAKERS[request.param]()
    yield made
    made.close()


def test_one_row_per_stimulus_and_a_column_per_channel(source):
    # The block the replayed session recorded (a replay answers only the blocks it recorded, whole).
    block = solid_block(COLOURS)
    responses = source.record(block, shown(len(COLOURS)))
    assert isinstance(responses, Responses)
    assert responses.scores.shape == (len(COLOURS), len(source.channel_names))
    assert responses.channel_names == source.channel_names
    assert np.isfinite(responses.scores[responses.valid]).all()
    assert np.isnan(responses.scores[~responses.valid]).all()


def test_presentations_that_do_not_match_the_block_are_refused_with_the_numbers(source):
    with pytest.raises(ValueError, match=f"block 0: {len(COLOURS)} stimuli but 3 presentations"):
        source.record(solid_block(COLOURS), shown(3))


def test_describes_itself_for_the_session_file(source):
    described = source.describe()
    assert described["class"] == type(source).__name__
    assert described["channels"] == source.channel_names
    json.dumps(described)


def test_close_twice(source):
    source.close()
    source.close()


def test_the_simulated_source_never_scores_a_stimulus_not_shown():
    source = MAKERS[SimulatedResponses]()
    responses = source.record(solid_block(COLOURS[:3]), shown(3, valid=np.array([True, False, True])))
    np.testing.assert_array_equal(responses.valid, [True, False, True])
    assert np.isnan(responses.scores[1]).all()


class _Broken(ResponseSource):
    channel_names = ["a", "b"]

    def __init__(self, result) -> None:
        self.result = result

    def _record(self, block, presentations):
        return self.result(len(block))


@pytest.mark.parametrize("result, message", [
    (lambda n: Responses(np.zeros((n, 3)), np.ones(n, bool), ["a", "b", "c"]),
     r"returned scores of shape \(3, 3\), expected \(3, 2\)"),
    (lambda n: Responses(np.zeros((n, 2)), np.ones(n, bool), ["a", "x"]),
     r"returned channels \['a', 'x'\], expected its own \['a', 'b'\]"),
    (lambda n: Responses(np.zeros((n, 2)), np.array([True, False, True]), ["a", "b"]),
     r"scored 1 invalid stimuli \(first at position 1: \[0.0, 0.0\]\); an invalid stimulus's scores must be NaN"),
    (lambda n: np.zeros((n, 2)), r"returned ndarray, not Responses"),
])
def test_the_base_checks_what_a_source_returns(result, message):
    with pytest.raises(RuntimeError, match=message):
        _Broken(result).record(solid_block(COLOURS[:3], index=2), shown(3))
