"""The operator's keys in the PsychoPy stimulus window (at a rig the fullscreen window has the keyboard):
pressed through XTest on a real X server, they reach the trial runner as in the terminal."""
from __future__ import annotations

import dataclasses
import os
import threading
import time

import numpy as np
import pytest

from helpers.display_conformance import PSYCHOPY_LAYOUT, solid_block, COLOURS
from helpers.protocols import tiny_protocol
from protocols.spec import DisplaySpec, parse_protocol
from rig.behavior.choice import gate_display
from rig.display import build_display

pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a screen (make test runs xvfb-run)")


def _press(key: str, after_s: float) -> threading.Thread:
    """Press and release ``key`` after ``after_s``, with the pointer over the screen's centre (X gives keys to
    the window under the pointer when no window manager sets a focus)."""
    from Xlib import X, XK, display
    from Xlib.ext import xtest

    def run() -> None:
        time.sleep(after_s)
        screen = display.Display()
        root = screen.screen()
        xtest.fake_input(screen, X.MotionNotify, x=root.width_in_pixels // 2, y=root.height_in_pixels // 2)
        code = screen.keysym_to_keycode(XK.string_to_keysym(key))
        xtest.fake_input(screen, X.KeyPress, code)
        xtest.fake_input(screen, X.KeyRelease, code)
        screen.sync()
        screen.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(120)
def test_keys_in_the_stimulus_window_reward_and_stop():
    spec = parse_protocol(tiny_protocol(extra='[behavior]\nstimuli_per_trial = 2\nhold_ms = 50\niti_ms = 300\n'
                                              '[gaze]\nsource = "none"\n'))
    layout = DisplaySpec(**{**PSYCHOPY_LAYOUT, "fixation_deg": 0.3}, on_frames=2, off_frames=2)
    display = gate_display(build_display("psychopy", layout), dataclasses.replace(spec, display=layout),
                           gaze={"source": "none"}, seed=0, say=lambda message: None)
    try:
        pressing = [_press("r", 0.5), _press("s", 1.0)]
        shown = display.present(solid_block(COLOURS * 4))
        for thread in pressing:
            thread.join()
    finally:
        display.close()
    log = shown.behavior
    kinds = [kind for _, kind, *_ in log.events]
    assert "manual_reward" in kinds and "operator_stop" in kinds
    assert display.stop_requested and log.trial_count < 12  # stopped after the trial it was in
    assert not np.isfinite(shown.onset_times).all()
