"""Every display passes the shared Display suite (tests/helpers/display_conformance.py), parametrized from the registry.

Also: the Display base checks what an implementation's ``_show`` returns, so a
broken display fails at the first block, naming what is wrong.
"""
from __future__ import annotations

import numpy as np
import pytest
from helpers.display_conformance import COLOURS, MAKERS, UNREGISTERED, DisplayConformance, solid_block

from rig.display import DISPLAYS, Display, Presentations


class TestEveryDisplay(DisplayConformance):
    """The suite's tests, once per display kind (``-k headless`` etc. picks one)."""


def test_every_display_kind_has_a_maker_and_the_suite_covers_the_recorded_one():
    assert set(DISPLAYS.kinds()) | set(UNREGISTERED) == set(MAKERS)
    assert {"headless", "psychopy"} <= set(DISPLAYS.kinds())
    assert not set(UNREGISTERED) & set(DISPLAYS.kinds())


def test_unknown_display_kind_names_close_matches_and_the_valid_ones():
    from rig.display import build_display

    with pytest.raises(ValueError, match=r"unknown display kind 'headles'; close matches: \['headless'\]; "
                                         r"valid kinds: headless, psychopy"):
        build_display("headles")


class _Broken(Display):
    """Returns whatever the test sets as ``result(n)``."""

    def __init__(self, result) -> None:
        self.result = result

    def _show(self, block):
        return self.result(len(block))


def _shown(n: int, **changes) -> Presentations:
    fields = dict(onset_times=np.arange(n, dtype=float), offset_times=np.arange(n) + 0.5,
                  dropped_frames=np.zeros(n, dtype=np.int64), valid=np.ones(n, dtype=bool), clock="test")
    return Presentations(**{**fields, **changes})


@pytest.mark.parametrize("result, message", [
    (lambda n: _shown(n - 1), r"_Broken \(block 4\) reported 2 presentations for a block of 3 stimuli"),
    (lambda n: _shown(n, clock=""), r"named no clock for its times, got ''"),
    (lambda n: _shown(n, onset_times=[0.0, np.nan, 2.0]), r"1 stimuli shown without a finite onset time, "
                                                           r"first at position 1: nan"),
    (lambda n: _shown(n, dropped_frames=[0, -1, 0], valid=[True, False, True]), r"negative dropped-frame count: -1"),
    (lambda n: {"onset_times": []}, r"returned dict, not Presentations"),
])
def test_the_base_checks_what_a_display_returns(result, message):
    with pytest.raises(RuntimeError, match=message):
        _Broken(result).present(solid_block(COLOURS[:3], index=4))


def test_a_stimulus_not_shown_may_have_no_onset():
    shown = _Broken(lambda n: _shown(n, onset_times=[0.0, np.nan, 2.0], valid=[True, False, True]))
    assert np.isnan(shown.present(solid_block(COLOURS[:3])).onset_times[1])
