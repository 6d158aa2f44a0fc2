"""The ``iohub`` gaze source: an eye tracker through PsychoPy's ioHub (DESIGN.md §9), or the mouse standing in.

A protocol says::

    [gaze]
    source = "iohub"
    device = "eyelink"            # "mouse" (MouseGaze) | "eyelink" | "tobii" | "gazepoint"
    sample_rate_hz = 1000         # none: the device's default (MouseGaze: 50 or 100; EyeLink: 250 ... 2000)
    eye = "average"               # binocular samples: "average" | "left" | "right"
    settings = { runtime_settings = { track_eyes = "RIGHT_EYE" }, network_settings = "100.1.1.1" }

``settings`` is the device's ioHub configuration, as in its
``default_eyetracker.yaml`` (EyeLink's ``model_name``, ``simulation_mode``,
``network_settings``; MouseGaze's ``controls``), merged over what this source
sets. The devices and their ioHub classes (PsychoPy 2026.2's ioHub; the
plugins' classes are re-exported under ``psychopy.iohub.devices``):

- ``mouse``: ``eyetracker.hw.mouse.EyeTracker`` (MouseGaze, part of PsychoPy);
- ``eyelink``: ``eyetracker.hw.sr_research.eyelink.EyeTracker``
  (pip ``psychopy-eyetracker-sr-research``, which brings ``sr-research-pylink``);
- ``tobii``: ``eyetracker.hw.tobii.EyeTracker`` (``psychopy-eyetracker-tobii``,
  with ``tobii-research``);
- ``gazepoint``: ``eyetracker.hw.gazepoint.gp3.EyeTracker``
  (``psychopy-eyetracker-gazepoint``).

A plugin that is not installed fails when the source is built, naming the
package. The source needs the PsychoPy display the gaze is on
(:meth:`IoHubGaze.attach_display`, before :meth:`~IoHubGaze.start`): where its
window lies on the screen, its geometry (pixels to degrees) and its clock.

**The hub.** :meth:`~IoHubGaze.start` launches ioHub's server process
(``psychopy.iohub.client.ioHubConnection``, what ``launchHubServer`` wraps,
called directly so that ioHub's Display gets this display's screen, size and
viewing distance: ``launchHubServer`` takes those only from a YAML file or the
window's PsychoPy Monitor, which the rig's window has none of, and without
them ioHub has no pixels per degree), on a UDP port the OS picks, with the Display reporting in ``pix`` and the tracker
last in the device list (ioHub stops creating devices at the first that
fails). It checks that the server's clock is this process's (below), starts
recording and waits for the first sample (:data:`FIRST_SAMPLE_TIMEOUT_S`): a
tracker that sends nothing fails there, before the first trial. One hub runs
per process (ioHub's own rule); a hub this source did not start is refused.
:meth:`~IoHubGaze.close` stops recording and quits the hub, killing the server
if it has not exited after :data:`QUIT_TIMEOUT_S`; twice is safe. From the
moment the server's process exists (a thread starts it while ioHub's client
waits for the server), a guard process (:mod:`rig.behavior.gaze.reaper`) watches
this one: if the rig dies without closing (SIGKILL, the OOM killer), the guard
ends the server (SIGTERM, then SIGKILL after :data:`GUARD_GRACE_S`), so no
orphan keeps the tracker's connection from the next run. A guard that cannot
start fails :meth:`~IoHubGaze.start`; ``describe()`` has ``server_pid`` and
``server_guard_pid``.

**Positions.** ioHub's ``pix`` coordinates are pixels from the centre of the
screen, +y up (PsychoPy's). The source subtracts the window's centre (where
the window lay at :meth:`~IoHubGaze.start`; a full-screen window's is 0) and
converts pixels to degrees with the display's geometry (the tangent formula of
:class:`~rig.display.monitor.MonitorGeometry`), so gaze at the fixation point
reads ``[behavior] fixation_point_deg`` wherever the window is.

**Validity.** Sample status words follow one convention in MouseGaze and the
EyeLink, Tobii and Gazepoint plugins: 0 is good; in a monocular sample 2 is
no eye; in a binocular one +20 is no left eye and +2 no right eye. An
invalid sample (a blink, lost tracking) has NaN position. Samples strictly
between a ``BlinkStartEvent`` and its ``BlinkEndEvent`` are invalid too,
whatever their status; the boundaries are left to the status (MouseGaze stamps
a blink's start at its last good sample, its end at its last missing one;
EyeLink's are its first and last missing samples). ``eye`` picks what a binocular
sample is: the mean of the eyes it has (``average``), or one eye.

**Clock.** ioHub stamps events with ``Computer.getTime()``, a
``psychopy.clock.MonotonicClock`` that the client starts the server with (its
reset time passed on the command line), i.e. PsychoPy's
``core.monotonicClock``: the clock ``win.flip()`` stamps frames with. On the
display's clock (``psychopy.core.monotonicClock``) a sample's time is ioHub's
plus the difference of the two clocks' reset times (exactly 0 unless one was
reset); on ``time.monotonic`` the measured difference is added; a clock the
source does not know is taken to run in real time and aligned at the end of
:meth:`~IoHubGaze.start` (``task.now`` is then). At start the server's clock is
read against this process's (an RPC between two readings); a difference
beyond half the round trip plus :data:`CLOCK_TOLERANCE_S` fails.

**Reading.** :meth:`~rig.behavior.gaze.base.GazeSource.read` asks the tracker
for its new events (``getEvents()``, one round trip to the server) only when
``until`` is past every earlier read's: the trial machine's reads always are,
and the same ``until`` again delivers nothing new. Samples stamped after
``until`` wait for a later read; ones before ``task.now`` are dropped; one not
after the last kept (a repeated stamp) is dropped and counted. A server that
does not answer within :data:`RPC_TIMEOUT_S`, or has exited, raises
:class:`~rig.behavior.gaze.base.GazeError`.

**MouseGaze** (desk tests): samples at 50 or 100 Hz on a grid from the start
of recording, each with the pointer's position when ioHub's poll (every 10 ms)
made it, so a sample's stamp can precede the movement it shows by up to one
sample period; holding the left and right buttons down together is a blink
(``settings = { controls = { blink = [...] } }`` changes which). On Linux
ioHub knows the pointer only from its movements: until the first, MouseGaze
reports the screen's centre. ioHub's Display needs ``psychopy.misc``, which in
psychopy-lib 2026.2.5 imports ``esprima`` (not among its requirements):
without it MouseGaze's sampling dies at the first movement, so a failed import
fails :meth:`~IoHubGaze.start` with the package to install.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from protocols.registry import Options, option
from rig.behavior.gaze.base import GAZE_SOURCES, GazeError, GazeSamples, GazeSource, GazeTask
from rig.behavior.gaze.reaper import GuardError, ServerGuard

__all__ = ["DEVICES", "IoHubDevice", "IoHubGaze", "IoHubGazeOptions"]

#: How long start() waits for the tracker's first sample after recording starts.
FIRST_SAMPLE_TIMEOUT_S = 5.0
#: How long one request to the ioHub server may take before the server counts as gone.
RPC_TIMEOUT_S = 2.0
#: How long close() waits for the server to exit before killing it.
QUIT_TIMEOUT_S = 10.0
#: How long the guard of a rig that died waits after SIGTERM before it SIGKILLs the server.
GUARD_GRACE_S = 2.0
#: The server's clock may differ from this process's by half an RPC's round trip plus this.
CLOCK_TOLERANCE_S = 0.002
#: Events ioHub keeps for the tracker between reads (the most its devices accept): 8 s at 1000 Hz.
EVENT_BUFFER = 8192
#: The PsychoPy monitor the server's Display is given (ioHub writes it to PsychoPy's monitor folder).
MONITOR_NAME = "rig-iohub"
#: Our name for the tracker device on the hub.
TRACKER = "tracker"
#: The clocks this source converts to exactly (rig.display.psychopy.CLOCK and PacedFrames').
PSYCHOPY_CLOCK = "psychopy.core.monotonicClock"
MONOTONIC = "time.monotonic"
EYES = ("average", "left", "right")

# ioHub's event type ids (psychopy.iohub.constants.EventConstants), fixed by its data files.
_MONOCULAR, _BINOCULAR, _GAZEPOINT = 51, 52, 60
_BLINK_START, _BLINK_END = 57, 58


@dataclass(frozen=True)
class IoHubDevice:
    """One kind of tracker: its ioHub class, the modules it needs (module, pip package), its sample rates."""

    ioclass: str
    needs: tuple[tuple[str, str], ...] = ()
    #: The rates its ioHub config accepts: a tuple of values, a (low, high) range, or None (its own, fixed).
    rates: tuple[int, ...] | None = None
    rate_range: tuple[int, int] | None = None

    @property
    def plugin(self) -> str | None:
        """The pip package of its ioHub plugin (None: built into PsychoPy)."""
        return self.needs[0][1] if self.needs else None


#: The devices a protocol can name, with their ioHub classes (PsychoPy 2026.2's ioHub and its plugins).
DEVICES: dict[str, IoHubDevice] = {
    "mouse": IoHubDevice("eyetracker.hw.mouse.EyeTracker", rates=(50, 100)),
    "eyelink": IoHubDevice("eyetracker.hw.sr_research.eyelink.EyeTracker",
                           (("psychopy_eyetracker_sr_research", "psychopy-eyetracker-sr-research"),
                            ("pylink", "sr-research-pylink")), rates=(250, 500, 1000, 2000)),
    "tobii": IoHubDevice("eyetracker.hw.tobii.EyeTracker",
                         (("psychopy_eyetracker_tobii", "psychopy-eyetracker-tobii"),
                          ("tobii_research", "tobii-research")), rate_range=(30, 1200)),
    "gazepoint": IoHubDevice("eyetracker.hw.gazepoint.gp3.EyeTracker",
                             (("psychopy_eyetracker_gazepoint", "psychopy-eyetracker-gazepoint"),)),
}


@dataclass(frozen=True)
class IoHubGazeOptions(Options):
    """``[gaze] source = "iohub"``: which tracker, its ioHub settings, its rate, which eye (module docstring)."""

    device: str = option("mouse", choices=tuple(DEVICES))
    #: The device's ioHub configuration, merged over the source's (its default_eyetracker.yaml's keys).
    settings: dict[str, Any] = option(default_factory=dict, valid="a table of the device's ioHub settings")
    #: runtime_settings.sampling_rate; none: the device's default.
    sample_rate_hz: int | None = option(None, low=1, high=100_000,
                                        valid="samples per second the device supports, or none (its default)")
    #: What a binocular sample is: the mean of the eyes it has, or one eye. Monocular samples are as they are.
    eye: str = option("average", choices=EYES)
    #: The ioHub server's UDP port; none: one the OS picks.
    udp_port: int | None = option(None, low=1024, high=65535, valid="a port in 1024..65535, or none (a free one)")

    def check(self) -> None:
        device = DEVICES[self.device]
        rate = self.sample_rate_hz
        runtime = self.settings.get("runtime_settings")
        if rate is not None and isinstance(runtime, dict) and "sampling_rate" in runtime:
            self.invalid("sample_rate_hz", "none when settings.runtime_settings.sampling_rate is given (one or the "
                                           "other)")
        if rate is None:
            return
        if device.rates is not None and rate not in device.rates:
            self.invalid("sample_rate_hz", f"one of {list(device.rates)} for device {self.device!r}, or none")
        if device.rate_range is not None and not device.rate_range[0] <= rate <= device.rate_range[1]:
            low, high = device.rate_range
            self.invalid("sample_rate_hz", f"in {low}..{high} for device {self.device!r}, or none")
        if device.rates is None and device.rate_range is None:
            self.invalid("sample_rate_hz", f"none for device {self.device!r} (it runs at its own rate)")


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys replacing its own, tables merged key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _window_centre_px(window: Any) -> tuple[float, float]:
    """The window's centre in ioHub's ``pix``: pixels from its screen's centre, +x right, +y up."""
    handle = window.winHandle  # the pyglet window
    screen = handle.screen
    left, top = handle.get_location()  # the client area's top-left on the desktop, +y down
    width, height = (float(v) for v in window.size)
    return (left + width / 2) - (screen.x + screen.width / 2), (screen.y + screen.height / 2) - (top + height / 2)


@GAZE_SOURCES.register("iohub", IoHubGazeOptions)
class IoHubGaze(GazeSource):
    """Gaze from an ioHub eye tracker, on the display's clock, in degrees (module docstring).

    Args:
        **options: :class:`IoHubGazeOptions`.

    Raises:
        GazeError: the device's plugin (or what it needs) is not installed: the message names the pip package.
    """

    realtime: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        self.configure(options)
        device = DEVICES[self.options.device]
        for module, package in device.needs:
            if importlib.util.find_spec(module) is None:
                raise GazeError(f"gaze source 'iohub': device {self.options.device!r} needs the Python package "
                                f"{package!r} (module {module!r}), which is not installed: pip install {package}")
        self.device = device
        self._display: Any = None
        self._io: Any = None
        self._tracker: Any = None
        self._guard: ServerGuard | None = None
        self._started = False
        self._facts: dict[str, Any] = {}
        #: Samples kept, and those dropped: before ``task.now``, or not after the last one (a repeated stamp).
        self.samples = 0
        self.dropped_early = 0
        self.dropped_repeats = 0

    # -- wiring ---------------------------------------------------------------------------------------

    def attach_display(self, display: Any) -> None:
        """The PsychoPy display the gaze is on: its ``window``, ``geometry`` and clock. Call before :meth:`start`."""
        window, geometry = getattr(display, "window", None), getattr(display, "geometry", None)
        if window is None or geometry is None or not hasattr(window, "winHandle"):
            raise GazeError(f"gaze source 'iohub' needs the PsychoPy display (rig run --display psychopy): it maps "
                            f"the tracker's screen positions onto the window; got a {type(display).__name__}")
        if self._started:
            raise GazeError("gaze source 'iohub': attach the display before start(), not after")
        self._display = display

    # -- the interface --------------------------------------------------------------------------------

    def start(self, task: GazeTask) -> None:
        """Launch the hub (once), start recording and wait for the first sample; samples from ``task.now`` on.

        Started again, it begins anew on the hub already running: the new task's clock, nothing pending.
        """
        if self._display is None:
            raise GazeError("gaze source 'iohub': no display to map gaze onto; call attach_display(display) with "
                            "the PsychoPy display before start() (rig/behavior/choice.py does)")
        super().start(task)
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._asked = -math.inf
        self._blink_since: float | None = None
        self._kept_last = -math.inf
        if self._io is None:
            try:
                self._launch()
            except BaseException:
                self.close()
                raise
        self._offset = self._clock_offset(task)
        self._started = True

    def _read(self, until: float) -> GazeSamples:
        if not self._started:
            raise GazeError("gaze source 'iohub': start() it before reading")
        if until > self._asked:
            self._asked = until
            self._take(self._events())
        return self._deliver(until)

    def close(self) -> None:
        """Stop recording and quit the hub (killing its server if it hangs); safe to call twice."""
        hub, self._io = self._io, None
        tracker, self._tracker = self._tracker, None
        guard, self._guard = self._guard, None
        self._started = False
        if hub is None:
            if guard is not None:  # the hub never connected: a server left starting, the guard ends
                guard.release(server_gone=False)
            return
        server = getattr(hub, "_server_process", None)
        watchdog = threading.Timer(QUIT_TIMEOUT_S, lambda: server.poll() is None and server.kill())
        watchdog.daemon = True
        if server is not None:
            watchdog.start()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ioHub prints the server's exit code
                if tracker is not None and server is not None and server.poll() is None:
                    with contextlib.suppress(Exception):
                        tracker.setRecordingState(False)
                try:
                    hub.quit()
                except Exception:  # a server gone wrong: it must not outlive the session
                    if server is not None and server.poll() is None:
                        server.kill()
                    raise
        finally:
            watchdog.cancel()
            if guard is not None:  # "done" once the server is gone; a server still there the guard ends
                guard.release(server_gone=server is None or server.poll() is not None)
            window = getattr(self._display, "window", None)
            if window is not None and getattr(window, "backend", None) is not None:
                window.backend.onMoveCallback = None  # ioHub's, bound to the connection just closed

    def describe(self) -> dict[str, Any]:
        """Provenance: the options, the ioHub class and versions, and what start() found (clock, window, port)."""
        from importlib import metadata

        versions = {}
        for package in ("psychopy-lib", "psychopy", *(package for _, package in self.device.needs)):
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[package] = metadata.version(package)
        return {**super().describe(), "iohub_class": self.device.ioclass, "versions": versions,
                "samples": self.samples, "dropped_early": self.dropped_early,
                "dropped_repeats": self.dropped_repeats, **self._facts}

    # -- the hub --------------------------------------------------------------------------------------

    def _launch(self) -> None:
        from rig.display.psychopy import _import_psychopy

        _import_psychopy()  # headless-safe, quiet, before ioHub imports PsychoPy
        try:
            importlib.import_module("psychopy.misc")  # the server's Display needs it for pixels per degree
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            raise GazeError(f"gaze source 'iohub': psychopy.misc cannot be imported ({exc}); ioHub's Display needs "
                            f"it (pixels per degree, without which MouseGaze's sampling dies): pip install "
                            f"{missing}") from None
        from psychopy.iohub.client import ioHubConnection
        from psychopy.iohub.devices import Computer

        if ioHubConnection.getActiveConnection() is not None:
            raise GazeError("gaze source 'iohub': an ioHub server is already running in this process (ioHub allows "
                            "one); quit it first")
        display, o = self._display, self.options
        port = o.udp_port if o.udp_port is not None else _free_udp_port()
        config = {"udp_port": port, "monitor_devices": self._devices()}
        self._connect(config)
        self._io.udp_client.sock.settimeout(RPC_TIMEOUT_S)  # a hung server then fails a read instead of blocking it
        tracker = self._io.getDevice(TRACKER)
        if tracker is None or not hasattr(tracker, "setRecordingState"):
            raise GazeError(f"gaze source 'iohub': ioHub could not create the {o.device!r} device "
                            f"({self.device.ioclass}); its server printed why above (settings {o.settings!r})")
        self._tracker = tracker
        before = Computer.getTime()
        server = self._io.getTime()
        after = Computer.getTime()
        error = server - (before + after) / 2 if isinstance(server, float) else math.inf
        if abs(error) > (after - before) / 2 + CLOCK_TOLERANCE_S:
            raise GazeError(f"gaze source 'iohub': the ioHub server's clock reads {server} while this process's "
                            f"read {before:.6f}..{after:.6f}; their clocks differ")
        centre = _window_centre_px(display.window)
        self._centre = centre
        self._to_px = display.geometry.distance_cm * display.geometry.pixels_per_cm
        self._facts.update({"udp_port": port, "window_centre_px": list(centre), "server_clock_error_s": error,
                            "rpc_round_trip_s": after - before})
        tracker.setRecordingState(True)
        deadline = time.monotonic() + FIRST_SAMPLE_TIMEOUT_S
        events = self._events()
        while not any(event.type in (_MONOCULAR, _BINOCULAR, _GAZEPOINT) for event in events):
            if time.monotonic() > deadline:
                raise GazeError(f"gaze source 'iohub': the {o.device!r} tracker sent no sample within "
                                f"{FIRST_SAMPLE_TIMEOUT_S:g} s of recording; is it connected and tracking?")
            time.sleep(0.01)
            events = self._events()

    def _connect(self, config: dict[str, Any]) -> None:
        """``ioHubConnection(config)``, the server guarded from the moment its process exists.

        ioHub's client starts the server process, then waits seconds for it to be ready; a rig killed in
        those seconds would leave it behind. So a thread starts the guard as soon as ioHub has the server's
        pid (``Computer.iohub_process_id``, set right after its Popen), while the client waits.
        """
        from psychopy.iohub.client import ioHubConnection
        from psychopy.iohub.devices import Computer

        stale = Computer.iohub_process_id  # a pid from an earlier hub is not this one's
        stop = threading.Event()
        failed: list[GazeError] = []

        def guard_as_soon_as_started() -> None:
            while not stop.is_set():
                pid = Computer.iohub_process_id
                if pid is not None and pid != stale:
                    try:
                        self._guard_server(pid)
                    except GazeError as exc:
                        failed.append(exc)
                    return
                stop.wait(0.005)

        watcher = threading.Thread(target=guard_as_soon_as_started, name="iohub-guard", daemon=True)
        watcher.start()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self._io = ioHubConnection(config)
        except Exception as exc:  # ioHub raises RuntimeError/ioHubError with its own words
            raise GazeError(f"gaze source 'iohub': the ioHub server did not start ({exc})") from None
        finally:
            stop.set()
            watcher.join()
        if failed:
            raise failed[0]
        server = getattr(self._io, "_server_process", None)
        if server is None or self._guard is None or self._facts.get("server_pid") != server.pid:
            raise GazeError(f"gaze source 'iohub': the server guard is not watching ioHub's server (pid "
                            f"{getattr(server, 'pid', None)}; guarded: {self._facts.get('server_pid')})")

    def _guard_server(self, pid: int) -> None:
        """Start the guard that ends the server ``pid`` if this process dies without closing (module docstring)."""
        try:
            self._guard = ServerGuard(pid, grace_s=GUARD_GRACE_S)
        except GuardError as exc:
            raise GazeError(f"gaze source 'iohub': {exc}; without the guard an ioHub server would outlive a rig "
                            f"that dies, keeping the tracker from the next run") from None
        self._facts = {"server_pid": pid, "server_guard_pid": self._guard.pid}

    def _devices(self) -> list[dict[str, Any]]:
        """ioHub's device list: the Display as this display's screen, the Mouse for MouseGaze, the tracker last."""
        display, o = self._display, self.options
        window, geometry = display.window, display.geometry
        screen = window.winHandle.screen
        mm_per_px = 10.0 / geometry.pixels_per_cm
        devices: list[dict[str, Any]] = [
            {"Display": {"name": "display", "reporting_unit_type": "pix", "device_number": int(window.screen),
                         "psychopy_monitor_name": MONITOR_NAME, "override_using_psycho_settings": False,
                         "physical_dimensions": {"width": screen.width * mm_per_px, "height": screen.height * mm_per_px,
                                                 "unit_type": "mm"},
                         "default_eye_distance": {"surface_center": geometry.distance_cm * 10.0, "unit_type": "mm"}}},
            {"Experiment": {}},
        ]
        if o.device == "mouse":
            devices.append({"Mouse": {}})
        ours: dict[str, Any] = {"event_buffer_length": EVENT_BUFFER}
        if o.sample_rate_hz is not None:
            ours["runtime_settings"] = {"sampling_rate": o.sample_rate_hz}
        devices.append({self.device.ioclass: {**_merged(ours, o.settings), "name": TRACKER}})
        return devices

    def _clock_offset(self, task: GazeTask) -> float:
        """Add to an ioHub time to get ``task.clock``'s (module docstring)."""
        from psychopy.iohub.devices import Computer

        hub_clock = Computer.global_clock
        if task.clock == PSYCHOPY_CLOCK:
            target = getattr(self._display, "_clock", None)
            if target is None:
                from psychopy import logging

                target = logging.defaultClock
            offset, how = hub_clock.getLastResetTime() - target.getLastResetTime(), "reset times"
        elif task.clock == MONOTONIC:
            offset, how = time.monotonic() - Computer.getTime(), "measured"
        else:
            offset, how = task.now - Computer.getTime(), "aligned at start"
        self._facts["clock"] = {"name": task.clock, "offset_s": offset, "how": how}
        return offset

    # -- events to samples ----------------------------------------------------------------------------

    def _events(self) -> list[Any]:
        server = getattr(self._io, "_server_process", None)
        if server is not None and server.poll() is not None:
            raise GazeError(f"gaze source 'iohub': the ioHub server has exited (code {server.poll()})")
        events = self._tracker.getEvents()
        if events is None:
            raise GazeError(f"gaze source 'iohub': the ioHub server did not answer within {RPC_TIMEOUT_S:g} s")
        return events

    def _take(self, events: list[Any]) -> None:
        """Samples of ``events`` (in degrees, blinks applied) onto the pending queue."""
        if not events:
            return
        events = sorted(events, key=lambda event: event.time)  # ioHub orders them so; a stable sort keeps ties
        n = len(events)
        times, xs, ys, valid = np.empty(n), np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=bool)
        k = 0
        eye = self.options.eye
        for event in events:
            kind = event.type
            if kind == _BLINK_START:
                self._blink_since = float(event.time)
                continue
            if kind == _BLINK_END:
                self._blink_since = None
                continue
            if kind == _MONOCULAR:
                x, y, ok = event.gaze_x, event.gaze_y, event.status == 0
            elif kind in (_BINOCULAR, _GAZEPOINT):
                x, y, ok = self._binocular(event, eye)
            else:
                continue
            t = float(event.time)
            if self._blink_since is not None and t > self._blink_since:
                ok = False
            times[k] = t
            if ok and math.isfinite(x) and math.isfinite(y):
                xs[k], ys[k], valid[k] = x, y, True
            k += 1
        if not k:
            return
        times, xs, ys, valid = times[:k] + self._offset, xs[:k], ys[:k], valid[:k]
        keep = times >= self.task.now
        self.dropped_early += int(np.count_nonzero(~keep))
        later = times > np.maximum.accumulate(np.concatenate(([self._kept_last], times[:-1])))
        repeats = keep & ~later
        self.dropped_repeats += int(np.count_nonzero(repeats))
        keep &= later
        if not keep.any():
            return
        times, xs, ys, valid = times[keep], xs[keep], ys[keep], valid[keep]
        self._kept_last = float(times[-1])
        self.samples += len(times)
        cx, cy = self._centre
        x_deg = np.degrees(np.arctan((xs - cx) / self._to_px))
        y_deg = np.degrees(np.arctan((ys - cy) / self._to_px))
        self._pending.append((times, x_deg, y_deg, valid))

    @staticmethod
    def _binocular(event: Any, eye: str) -> tuple[float, float, bool]:
        status = int(event.status)
        left_ok, right_ok = (status // 10) % 10 != 2, status % 10 != 2
        left, right = (event.left_gaze_x, event.left_gaze_y), (event.right_gaze_x, event.right_gaze_y)
        if eye == "left":
            return left[0], left[1], left_ok
        if eye == "right":
            return right[0], right[1], right_ok
        if left_ok and right_ok:
            return (left[0] + right[0]) / 2, (left[1] + right[1]) / 2, True
        if left_ok or right_ok:
            x, y = left if left_ok else right
            return x, y, True
        return math.nan, math.nan, False

    def _deliver(self, until: float) -> GazeSamples:
        """Pending samples with time <= ``until``, in order; later ones stay."""
        parts, rest = [], []
        for chunk in self._pending:
            times = chunk[0]
            if rest or times[0] > until:
                rest.append(chunk)
                continue
            cut = int(np.searchsorted(times, until, side="right"))
            parts.append(tuple(column[:cut] for column in chunk))
            if cut < len(times):
                rest.append(tuple(column[cut:] for column in chunk))
        self._pending = rest
        if not parts:
            return GazeSamples.empty()
        return GazeSamples(*(np.concatenate(column) for column in zip(*parts)))
