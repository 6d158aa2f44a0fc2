"""The ``iohub`` gaze source: a real ioHub server with MouseGaze under Xvfb, the pointer moved through XTest.

The pointer is moved (and its buttons pressed) by python-xlib's XTest, the
way a mouse moves it: the X server takes the events, ioHub's Mouse device
reads them through the RECORD extension in its own process, and MouseGaze
samples them. Each action's time is read on the display's clock once the X
server has processed it (``sync()``), so every expected time below is a
measured one. Where the pointer goes is written out independently of the
source: the window is placed at a known desktop position (off the screen's
centre, so the window offset matters) and degrees become pixels by the
definition of visual angle.

MouseGaze stamps a sample on its 10 ms grid with the pointer's position when
ioHub's poll (every 10 ms) made it, so a sample showing a movement can be
stamped up to a period before it, or a poll and the RECORD round trip after:
a movement's first sample is stamped within :data:`SEEN_S` of it (measured
here: -9..+9 ms, the same with two CPU hogs beside the test).

Without a screen the tests that need one skip; the rest (options, missing
plugins, how ioHub's events become samples, over a stand-in tracker) run.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import torch

from protocols.base import Block
from protocols.registry import OptionError
from protocols.spec import BehaviorSpec, DisplaySpec
from rig.behavior.gaze.base import GazeError, GazeTask
from rig.behavior.gaze.iohub import DEVICES, MONITOR_NAME, IoHubGaze
from rig.behavior.machine import StimulusTiming
from rig.behavior.outcomes import TrialOutcome
from rig.behavior.parts import part_registry
from rig.behavior.reward.base import RewardOutput
from rig.behavior.runner import TrialRunner
from rig.display.monitor import MonitorGeometry
from rig.display.psychopy import CLOCK, PsychoPyDisplay, dropped_frames

needs_screen = pytest.mark.skipif(
    not os.environ.get("DISPLAY"),
    reason='needs a screen: run under xvfb-run -a -s "-screen 0 1280x1024x24" (make test does)')

W, H = 400, 300
#: Where the window's top-left corner is on the desktop (Xvfb has no window manager to move it).
LEFT, TOP = 100, 50
WIDTH_CM, DISTANCE_CM = 20.0, 57.0
#: A movement shows in a sample stamped within this much of when it was made (either side).
SEEN_S = 0.035
#: Gaze parked here between trials: far outside a 2° window.
AWAY = (8.0, 0.0)


def gaze(**options):
    return part_registry("gaze").build("iohub", {"device": "mouse", **options})


# -- options and plugins (no screen) ---------------------------------------------------------------


def test_options_are_checked_with_what_is_valid():
    with pytest.raises(OptionError, match=r"device = 'eyetrack' is invalid.*one of \['mouse', 'eyelink'"):
        gaze(device="eyetrack")
    with pytest.raises(OptionError, match=r"sample_rate_hz = 60 is invalid.*one of \[50, 100\] for device 'mouse'"):
        gaze(sample_rate_hz=60)
    with pytest.raises(OptionError, match="one or the other"):
        gaze(sample_rate_hz=100, settings={"runtime_settings": {"sampling_rate": 50}})
    with pytest.raises(OptionError, match="eye = 'both' is invalid"):
        gaze(eye="both")
    source = gaze(sample_rate_hz=50, settings={"controls": {"blink": ["RIGHT_BUTTON"]}})
    assert source.options.sample_rate_hz == 50 and source.kind == "iohub" and source.realtime


@pytest.mark.parametrize("device", ["eyelink", "tobii", "gazepoint"])
def test_a_tracker_whose_plugin_is_missing_fails_at_build_naming_the_package(device):
    module, package = DEVICES[device].needs[0]
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(GazeError, match=f"pip install {package}"):
        gaze(device=device)


def test_it_needs_the_psychopy_display():
    source = gaze()
    with pytest.raises(GazeError, match="no display to map gaze onto; call attach_display"):
        source.start(GazeTask((0.0, 0.0), 1.5, CLOCK, 0.0))
    with pytest.raises(GazeError, match="needs the PsychoPy display.*got a SimpleNamespace"):
        source.attach_display(SimpleNamespace(window=None))
    source.close()
    source.close()


def test_the_device_configuration_merges_settings_over_the_sources():
    source = gaze(sample_rate_hz=100, settings={"controls": {"blink": ["RIGHT_BUTTON"]}, "name": "mine",
                                                "runtime_settings": {"track_eyes": "LEFT_EYE"}})
    screen = SimpleNamespace(x=0, y=0, width=1280, height=1024)
    window = SimpleNamespace(winHandle=SimpleNamespace(screen=screen), screen=0)
    source.attach_display(SimpleNamespace(window=window, geometry=MonitorGeometry(WIDTH_CM, DISTANCE_CM, (W, H))))
    devices = source._devices()
    assert [next(iter(d)) for d in devices] == ["Display", "Experiment", "Mouse", "eyetracker.hw.mouse.EyeTracker"]
    tracker = devices[-1]["eyetracker.hw.mouse.EyeTracker"]
    assert tracker["name"] == "tracker"  # the source's name for it, whatever the settings say
    assert tracker["controls"] == {"blink": ["RIGHT_BUTTON"]}
    assert tracker["runtime_settings"] == {"sampling_rate": 100, "track_eyes": "LEFT_EYE"}
    shown = devices[0]["Display"]
    assert shown["reporting_unit_type"] == "pix" and shown["psychopy_monitor_name"] == MONITOR_NAME
    # 20 px per cm: the 1280 px screen is 64 cm wide; the eye 57 cm away.
    assert shown["physical_dimensions"]["width"] == pytest.approx(640.0)
    assert shown["default_eye_distance"]["surface_center"] == pytest.approx(570.0)


# -- events to samples, over a stand-in tracker (no screen) ----------------------------------------


def sample(t, x, y, status=0):
    return SimpleNamespace(type=51, time=t, gaze_x=x, gaze_y=y, status=status)


def binocular(t, left, right, status):
    return SimpleNamespace(type=52, time=t, left_gaze_x=left[0], left_gaze_y=left[1], right_gaze_x=right[0],
                           right_gaze_y=right[1], status=status)


class StandInTracker:
    """Hands out the events queued for each getEvents() call, as ioHub's tracker view does."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.calls = 0

    def getEvents(self):  # noqa: N802 (ioHub's name)
        self.calls += 1
        return self.batches.pop(0) if self.batches else []


@pytest.fixture
def stand_in(monkeypatch):
    """A source whose hub is a stand-in tracker: window centred at (-40, 10) px, 1 cm from the eye at 1 px/cm."""
    tracker = StandInTracker()

    def launch(self):
        self._tracker, self._centre, self._to_px = tracker, (-40.0, 10.0), 1.0

    monkeypatch.setattr(IoHubGaze, "_launch", launch)
    monkeypatch.setattr(IoHubGaze, "_clock_offset", lambda self, task: 0.5)
    source = gaze(eye="right")
    screen = SimpleNamespace(x=0, y=0, width=100, height=100)
    source.attach_display(SimpleNamespace(window=SimpleNamespace(winHandle=SimpleNamespace(screen=screen)),
                                          geometry=MonitorGeometry(1.0, 1.0, (10, 10))))
    source.start(GazeTask((0.0, 0.0), 1.0, "test", 10.0))
    return source, tracker


def test_positions_are_degrees_from_the_windows_centre_times_on_the_tasks_clock(stand_in):
    source, tracker = stand_in
    tracker.batches = [[sample(10.0, -40.0 + 1.0, 10.0 - 1.0), sample(10.01, -40.0, 10.0 + math.sqrt(3))]]
    got = source.read(11.0)
    np.testing.assert_allclose(got.times, [10.5, 10.51])  # the clock offset (0.5 s) added
    np.testing.assert_allclose(got.x, [45.0, 0.0])  # 1 px at 1 px/cm, 1 cm away: 45°
    np.testing.assert_allclose(got.y, [-45.0, 60.0])


def test_blinks_and_missing_eyes_are_invalid(stand_in):
    source, tracker = stand_in
    # MouseGaze's order: the blink starts at the last good sample's time, ends at the last missing one's.
    tracker.batches = [[sample(10.00, 1, 1), sample(10.01, 1, 1), SimpleNamespace(type=57, time=10.01),
                        sample(10.02, 0, 0, status=2), sample(10.03, 1, 1)],  # status says good, the blink not
                       [SimpleNamespace(type=58, time=10.04), sample(10.05, 1, 1),
                        binocular(10.06, (1, 1), (2, 2), status=2),  # no right eye; eye = "right"
                        binocular(10.07, (1, 1), (2, 2), status=20),  # no left eye
                        binocular(10.08, (1, 1), (2, 2), status=22)]]
    got = source.read(20.0)
    assert list(got.valid) == [True, True, False, False]  # the blink is open: 10.03 is in it
    got = source.read(21.0)
    assert list(got.valid) == [True, False, True, False]
    assert np.isnan(got.x[~got.valid]).all()
    np.testing.assert_allclose(got.x[got.valid], np.degrees(np.arctan([41.0, 42.0])))


@pytest.mark.parametrize("eye, expected", [("average", [1.5, 1.0, 2.0]), ("left", [1.0, 1.0, None]),
                                           ("right", [2.0, None, 2.0])])
def test_a_binocular_sample_is_the_eye_asked_for(eye, expected):
    for status, want in zip((0, 2, 20), expected):
        x, _, ok = IoHubGaze._binocular(binocular(0.0, (1.0, 5.0), (2.0, 5.0), status), eye)
        assert ok == (want is not None) and (want is None or x == want)


def test_reads_hold_later_samples_drop_early_and_repeated_ones_and_ask_only_when_time_moves_on(stand_in):
    source, tracker = stand_in
    tracker.batches = [[sample(9.0, 0, 0), sample(9.6, 0, 0), sample(9.7, 0, 0), sample(9.7, 0, 0),
                        sample(9.8, 0, 0)]]
    assert source.read(10.25).times.tolist() == pytest.approx([10.1, 10.2])  # 9.0 + 0.5: before task.now (10)
    assert source.dropped_early == 1 and source.dropped_repeats == 1
    calls = tracker.calls
    assert len(source.read(10.25)) == 0 and tracker.calls == calls  # the same until: nothing asked, nothing new
    tracker.batches = [[sample(9.9, 0, 0)]]
    assert source.read(10.5).times.tolist() == pytest.approx([10.3, 10.4])  # held back, then the new one


# -- a real hub: MouseGaze under Xvfb --------------------------------------------------------------


class Pointer:
    """The X pointer, moved and clicked through XTest; positions in degrees from the window's centre."""

    def __init__(self, clock) -> None:
        from Xlib import X, display
        from Xlib.ext import xtest

        self.X, self.xtest, self.clock = X, xtest, clock
        self.x = display.Display()
        self.lock = threading.Lock()

    @staticmethod
    def desktop(x_deg: float, y_deg: float) -> tuple[int, int]:
        """Desktop pixels (+y down) of a point in degrees: visual angle written out, 20 px per cm at 57 cm."""
        per_cm = W / WIDTH_CM
        px, py = (DISTANCE_CM * math.tan(math.radians(a)) * per_cm for a in (x_deg, y_deg))
        return round(LEFT + W / 2 + px), round(TOP + H / 2 - py)

    def _fake(self, *args, **kwargs) -> float:
        with self.lock:
            self.xtest.fake_input(self.x, *args, **kwargs)
            self.x.sync()  # the X server has it
            return self.clock.getTime()

    def to(self, x_deg: float, y_deg: float) -> float:
        x, y = self.desktop(x_deg, y_deg)
        return self._fake(self.X.MotionNotify, x=x, y=y)

    def blink(self) -> float:
        """MouseGaze's blink: the left and right buttons down together (its default controls)."""
        self._fake(self.X.ButtonPress, 1)
        return self._fake(self.X.ButtonPress, 3)

    def open(self) -> float:
        t = self._fake(self.X.ButtonRelease, 3)
        self._fake(self.X.ButtonRelease, 1)
        return t

    def close(self) -> None:
        self.x.close()


@pytest.fixture(scope="module")
def hub():
    """A window off the screen's centre, MouseGaze at 100 Hz on a live hub, and the pointer."""
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs a screen")
    spec = DisplaySpec(width_cm=WIDTH_CM, distance_cm=DISTANCE_CM, resolution=(W, H), fullscreen=False, pace=True,
                       refresh_hz=60.0, fixation_deg=0.5, photodiode="none")
    display = PsychoPyDisplay(spec, pos=(LEFT, TOP))
    pointer = Pointer(display._clock)
    pointer.to(*AWAY)
    source = gaze(sample_rate_hz=100)
    source.attach_display(display)
    started = time.perf_counter()
    source.start(GazeTask((0.0, 0.0), 2.0, CLOCK, display._clock.getTime()))
    print(f"\nioHub hub up in {time.perf_counter() - started:.1f} s")
    yield SimpleNamespace(display=display, source=source, pointer=pointer)
    source.close()
    source.close()
    pointer.close()
    display.close()


def wait_until(clock, t: float) -> None:
    while (left := t - clock.getTime()) > 0:
        time.sleep(min(left, 0.002))


@needs_screen
@pytest.mark.timeout(60)
def test_mousegaze_positions_are_degrees_on_the_window_stamped_on_the_display_clock(hub):
    display, source, pointer = hub.display, hub.source, hub.pointer
    clock = display._clock
    assert display.window.winHandle.get_location() == (LEFT, TOP)  # where the test put it: off the screen's centre
    described = source.describe()
    assert described["clock"] == {"name": CLOCK, "offset_s": 0.0, "how": "reset times"}
    assert described["window_centre_px"] == [LEFT + W / 2 - 1280 / 2, 1024 / 2 - (TOP + H / 2)]
    assert abs(described["server_clock_error_s"]) < 0.003
    source.read(clock.getTime())
    latencies, stamp_errors = [], []
    for target in [(0.0, 0.0), (3.0, -2.0), (-4.0, 1.5), (0.5, 4.0), AWAY]:
        moved = pointer.to(*target)
        while True:  # read as the trial machine does, until a sample shows the new place
            now = clock.getTime()
            got = source.read(now)
            near = got.valid & (np.hypot(got.x - target[0], got.y - target[1]) < 0.1)
            if near.any():
                latencies.append(now - moved)
                stamp_errors.append(float(got.times[np.argmax(near)]) - moved)
                break
            assert now - moved < 1.0, f"no sample at {target} within 1 s of the move"
            time.sleep(0.001)
        time.sleep(0.1)
        got = source.read(clock.getTime())
        # One pixel is 0.05°: the samples sit where the pointer is, to the pixel.
        np.testing.assert_allclose(got.x, target[0], atol=0.06)
        np.testing.assert_allclose(got.y, target[1], atol=0.06)
        assert got.valid.all()
        np.testing.assert_allclose(np.diff(got.times), 0.01, atol=1e-6)  # 100 Hz, on a grid
        assert clock.getTime() - got.times[-1] < 0.05  # recent: stamped on this clock, not another
    print(f"\nMouseGaze: a move is first read {1e3 * np.median(latencies):.1f} ms (max {1e3 * max(latencies):.1f}) "
          f"after it is made; its first sample is stamped {1e3 * np.median(stamp_errors):+.1f} ms "
          f"({1e3 * min(stamp_errors):+.1f}..{1e3 * max(stamp_errors):+.1f}) from it")
    assert all(-SEEN_S < e < SEEN_S for e in stamp_errors), stamp_errors
    assert max(latencies) < 0.1


class Rewards(RewardOutput):
    def __init__(self) -> None:
        self.given = []

    def _deliver(self, reward) -> None:
        self.given.append(reward)


#: Each trial's script, from its first frame (the fixation point's): gaze enters the window at IN_S; trial 1
#: breaks at OUT_S; trials 2 and 3 blink at BLINK_S, for less and for more than the grace.
IN_S, OUT_S, BLINK_S = 0.3, 0.75, 0.7
SCRIPT = {0: ("hold", 0.0), 1: ("break", 0.0), 2: ("blink", 0.06), 3: ("blink", 0.4)}
GRACE_MS = 150


@needs_screen
@pytest.mark.timeout(60)
def test_the_trial_machine_sees_acquisition_a_break_and_blinks_when_they_happen(hub):
    """Four trials on the PsychoPy window, gaze from the pointer through ioHub: fixation acquired when the pointer
    enters the window; a break when it leaves; a 60 ms blink forgiven (grace 150 ms); a 400 ms one a break dated
    from its start."""
    display, source, pointer = hub.display, hub.source, hub.pointer
    clock = display._clock
    spec = BehaviorSpec(stimuli_per_trial=2, window_deg=2.0, acquire_ms=2000, hold_ms=300, blink_grace_ms=GRACE_MS,
                        iti_ms=300, timeout_ms=300)
    runner = TrialRunner(spec, StimulusTiming(6, 9, 0.2), display.frames(), source, Rewards(),
                         dropped_frames=dropped_frames, say=lambda message: None)
    orders: queue.Queue = queue.Queue()
    runner.add_listener(lambda kind, t, info: orders.put((kind, info.get("trial"), t))
                        if kind in ("trial_start", "reward", "break") else None)
    made: dict[int, dict[str, float]] = {}

    def drive() -> None:  # the monkey: acts at set times after each trial's first frame
        while (order := orders.get())[0] != "stop":
            kind, trial, t0 = order
            if kind != "trial_start":  # rewarded, or broke: look away before the next trial
                pointer.to(*AWAY)
                continue
            what, length = SCRIPT.get(trial, ("hold", 0.0))
            times = made.setdefault(trial, {})
            wait_until(clock, t0 + IN_S)
            times["in"] = pointer.to(0.2, -0.1)
            if what == "break":
                wait_until(clock, t0 + OUT_S)
                times["out"] = pointer.to(*AWAY)
            elif what == "blink":
                wait_until(clock, t0 + BLINK_S)
                times["blink"] = pointer.blink()
                wait_until(clock, t0 + BLINK_S + length)
                times["open"] = pointer.open()

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    runner.start()  # the source, started already, begins anew on the frames' clock
    block = Block(0, [f"s{i}" for i in range(8)], ["generated"] * 8, np.zeros(8), np.arange(8),
                  torch.full((8, 3, 8, 8), 0.5), np.zeros((8, 2)))
    try:
        result = runner.run(block, lambda position, t: None)
    finally:
        orders.put(("stop", None, 0.0))
        driver.join(5)
    trials = result.log.trials
    assert trials["outcome"] == [TrialOutcome.COMPLETED, TrialOutcome.BROKE_FIXATION, TrialOutcome.COMPLETED,
                                 TrialOutcome.BROKE_FIXATION]
    for trial in range(4):  # acquired when the pointer entered, within a few samples
        assert trials["acquired"][trial] == pytest.approx(made[trial]["in"], abs=SEEN_S)
    assert trials["break_time"][1] == pytest.approx(made[1]["out"], abs=SEEN_S)
    # A long blink is a break dated from its first missing sample, decided once the grace has run out.
    assert trials["break_time"][3] == pytest.approx(made[3]["blink"], abs=SEEN_S)
    assert math.isnan(trials["break_time"][0]) and math.isnan(trials["break_time"][2])
    # The short blink was seen, as missing samples where it was, and forgiven.
    samples = result.log.samples()
    during = (samples.times > made[2]["blink"] - SEEN_S) & (samples.times < made[2]["open"] + SEEN_S)
    assert 3 <= np.count_nonzero(~samples.valid[during]) <= 10
    acquired = [round(1e3 * (trials["acquired"][k] - made[k]["in"]), 1) for k in range(4)]
    print(f"\ntrial machine: acquired - moved in {acquired} ms; break - moved out "
          f"{1e3 * (trials['break_time'][1] - made[1]['out']):.1f} ms; break - blink "
          f"{1e3 * (trials['break_time'][3] - made[3]['blink']):.1f} ms")


# -- a rig that dies: the guard ends its server ------------------------------------------------------

KILLED = "test_a_rig_killed_outright_takes_its_iohub_server_with_it"


@pytest.fixture(scope="module", autouse=True)
def dying_rig(request):
    """tests/helpers/iohub_rig.py, started when this module starts if the test that kills it is to run.

    Started early on purpose: it boots (torch, PsychoPy, a window, an ioHub server: about 10 s on this 2-core
    machine) on the core the in-process hub's tests leave idle, instead of on the clock of the test that needs it.
    Its window is away from the hub's, in the screen's far corner.
    """
    if not os.environ.get("DISPLAY") or not any(item.name == KILLED for item in request.session.items):
        yield None
        return
    rig = subprocess.Popen([sys.executable, "-m", "helpers.iohub_rig"], cwd=Path(__file__).parent,
                           stdout=subprocess.PIPE, text=True)
    try:
        yield rig
    finally:
        rig.kill()
        rig.wait()


def running(process: psutil.Process) -> bool:
    """Still there and not a zombie (a zombie whose parent is gone waits only to be reaped)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@needs_screen
@pytest.mark.timeout(60)
def test_a_rig_killed_outright_takes_its_iohub_server_with_it(dying_rig):
    """SIGKILL the rig (tests/helpers/iohub_rig.py) with its guard held (SIGSTOP): the server outlives the rig;
    let the guard go on: it ends the server."""
    rig = dying_rig
    server = guard = None
    try:
        line = ""
        for line in rig.stdout:  # Xlib's warnings come first, on stdout
            if line.startswith("pids "):
                break
        assert line.startswith("pids "), (f"the rig printed no pids (exit code {rig.poll()}); its stderr is in the "
                                          f"output captured from the tests that ran while it booted")
        server, guard = (psutil.Process(int(pid)) for pid in line.split()[1:])
        assert server.ppid() == rig.pid and running(server)  # the rig's ioHub server, alive before the kill
        assert guard.ppid() == rig.pid and os.getsid(guard.pid) == guard.pid  # a session of its own: no Ctrl-C
        guard.suspend()
        rig.kill()
        rig.wait()
        deadline = time.monotonic() + 5.0
        while server.ppid() == rig.pid and time.monotonic() < deadline:
            time.sleep(0.02)
        # ioHub's server has a parent check of its own (checkForPsychopyProcess, every 0.5 s), yet the process
        # stays (seen here 8 s on): past two of its checks, the orphan is still there.
        time.sleep(1.2)
        assert server.ppid() != rig.pid and running(server)  # an orphan, still serving: what the guard is for
        guard.resume()
        resumed = time.monotonic()
        deadline = resumed + 5.0
        while running(server) and time.monotonic() < deadline:
            time.sleep(0.02)
        print(f"\nthe guard started {guard.create_time() - server.create_time():.2f} s after the ioHub server and "
              f"ended the orphan {time.monotonic() - resumed:.2f} s after it resumed")
        assert not running(server), "the guard did not end the ioHub server of a rig that died"
        deadline = time.monotonic() + 2.0
        while running(guard) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not running(guard)  # its work done, it exits too
    finally:
        for process in (guard, server):  # never leave a server behind, even when the test fails
            if process is not None and running(process):
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.resume()
                    process.kill()
