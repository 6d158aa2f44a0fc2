"""The PsychoPy display: a block's stimuli in rapid series on a real screen.

Each stimulus is on for ``on_frames`` and off for ``off_frames`` frames. Its
onset time is the time ``win.flip()`` returned for its first frame, on
PsychoPy's monotonic clock. A photodiode patch in a corner changes between
white and black at every onset, so a photodiode on the recording rig marks
onsets on the spike stream's own clock. Flip intervals are recorded, and a
frame dropped while a stimulus was on marks that presentation invalid (its
duration on screen was wrong), so the controller shows it again.

The next stimulus's texture is uploaded during the blank, after the frame that
removed the previous stimulus has been flipped, so uploads never delay an onset
or lengthen a stimulus. PsychoPy is imported only when a display is opened:
importing :mod:`rig` needs no screen.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from protocols.base import Block
from protocols.images import check_image_batch
from protocols.spec import DisplaySpec
from rig.display.base import DISPLAYS, Display, Presentations
from rig.behavior.operator import KEYS as OPERATOR_KEYS
from rig.display.monitor import MonitorGeometry

#: Called after a frame is drawn and before it is flipped: ``hook(position, frame, phase)``, phase "on" or "off",
#: ``frame`` counting from 0 within the phase. Tests read the back buffer (or stall) here.
FrameHook = Callable[[int, int, str], None]

#: A flip interval longer than this many frame periods means frames were dropped (PsychoPy's own threshold).
DROP_THRESHOLD = 1.2

CLOCK = "psychopy.core.monotonicClock"

#: Frames flipped at start to measure the monitor's refresh rate, and how far it may be from [display] refresh_hz.
REFRESH_FRAMES = 30
REFRESH_TOLERANCE = 0.05

#: How often (in frames) a trial surface looks for the operator's keys: 100 ms at 60 Hz, never on every frame.
KEY_POLL_FRAMES = 6

#: Scheduler niceness of the drawing thread while a block is shown (like PsychoPy's ``core.rush``, one thread only).
RUSH_NICE = -10


def _import_psychopy() -> tuple[Any, Any, Any]:
    """Import PsychoPy for a headless-safe, quiet session (DESIGN.md §7)."""
    # Without this PsychoPy rewrites PATH/PYTHONPATH on import to find plugin packages.
    os.environ.setdefault("PSYCHOPYNOPACKAGES", "1")
    # Mesa's software renderer (Xvfb, no GPU) renders on all cores by default; on a busy machine its threads wait
    # for each other and a 1 ms flip becomes 15 ms. One thread keeps flips short. GPU drivers ignore this.
    os.environ.setdefault("LP_NUM_THREADS", "1")
    # Triton (which torchvision pulls in through torch._dynamo) bundles its own LLVM: loading it after Mesa's
    # llvmpipe has loaded the system LLVM segfaults, so load it first when it is installed.
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401
    import pyglet

    # The shadow window would need a display at import time.
    pyglet.options["shadow_window"] = False
    from psychopy import core, logging, visual

    logging.console.setLevel(logging.ERROR)
    return visual, core, logging


def images_to_textures(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float RGB in [0, 1] → (N, H, W, 3) float32, rows bottom-up as OpenGL wants them.

    PsychoPy clips below 0 to black; an out-of-range image is a generator bug, not something to show, so the
    images are checked as every image batch is (:func:`protocols.images.check_image_batch`).
    """
    array = check_image_batch(images, who="block images").detach().to("cpu", torch.float32)
    return np.ascontiguousarray(array.permute(0, 2, 3, 1).numpy()[:, ::-1])


def dropped_frames(flip_times: np.ndarray, period: float) -> int:
    """Frames missed between consecutive flips: an interval of k periods (> 1.2) missed k - 1 frames (at least 1)."""
    intervals = np.diff(np.asarray(flip_times, dtype=np.float64)) / period
    late = intervals[intervals > DROP_THRESHOLD]
    return int(np.sum(np.maximum(np.rint(late) - 1, 1)))


class PsychoPyDisplay(Display):
    """Shows blocks in a PsychoPy window laid out by a :class:`~protocols.spec.DisplaySpec`.

    The window opens here, so a missing screen fails before the first block.
    ``frame_hook`` is for tests; ``window_kwargs`` go to ``visual.Window``.
    """

    def __init__(self, spec: DisplaySpec | None = None, *, frame_hook: FrameHook | None = None,
                 **window_kwargs: Any) -> None:
        super().__init__()
        # A DisplaySpec is checked when made (frames >= 1, refresh_hz > 0, ...); only the layout is checked here.
        self.spec = spec = spec if spec is not None else DisplaySpec()
        self.geometry = MonitorGeometry(spec.width_cm, spec.distance_cm, tuple(spec.resolution))
        left, right, bottom, top = self.geometry.extent_to_pixels(*spec.position_deg, spec.size_deg)
        if not self.geometry.fits(left, right, bottom, top):
            raise ValueError(
                f"display: a {spec.size_deg}° stimulus at {list(spec.position_deg)}° spans x {left:.0f}..{right:.0f}, "
                f"y {bottom:.0f}..{top:.0f} px from the centre, off a {spec.resolution[0]}x{spec.resolution[1]} screen")
        #: The stimulus box in pixels from the screen centre, (left, right, bottom, top).
        self.stimulus_box = (left, right, bottom, top)
        self.period = 1.0 / spec.refresh_hz
        self.frame_hook = frame_hook
        #: Flip-to-flip intervals (s) of the last block, lead-in included.
        self.frame_intervals = np.zeros(0)
        self._photodiode_white = False
        self._pace_origin: float | None = None
        #: Whether blocks run at raised priority (see :meth:`_rushed`); tried once here so describe() can say.
        with self._rushed():
            pass

        visual, _, logging = _import_psychopy()
        self._clock = logging.defaultClock  # the clock win.flip() stamps frames with
        #: Add to a display time to get ``time.monotonic()`` (PsychoPy's clock is perf_counter from its import;
        #: both are CLOCK_MONOTONIC on Linux), e.g. for a side channel that speaks time.monotonic.
        self.monotonic_offset = time.monotonic() - self._clock.getTime()
        options = dict(size=spec.resolution, fullscr=spec.fullscreen, screen=spec.screen, units="pix",
                       color=spec.background, colorSpace="rgb1", winType="pyglet", allowGUI=False,
                       checkTiming=False, waitBlanking=True)
        options.update(window_kwargs)
        self.window = visual.Window(**options)
        self.window.mouseVisible = False
        self.window.refreshThreshold = DROP_THRESHOLD * self.period
        self._build_stimuli(visual)
        self._warm_up()
        #: The monitor's refresh rate measured at start; None on a paced window (no vsync there to measure).
        self.measured_refresh_hz = None if spec.pace else self._checked_refresh()

    def _build_stimuli(self, visual: Any) -> None:
        spec, win = self.spec, self.window
        left, right, bottom, top = self.stimulus_box
        self._stimulus = visual.ImageStim(win, image=np.zeros((2, 2, 3), np.float32), units="pix",
                                          pos=((left + right) / 2, (bottom + top) / 2), size=(right - left, top - bottom),
                                          colorSpace="rgb1", interpolate=True, autoLog=False)
        self._box_px = (right - left, top - bottom)
        self._fixation = None
        if spec.fixation_deg > 0:
            radius = max(self.geometry.size_to_pixels(spec.fixation_deg) / 2, 1.0)
            self._fixation = visual.Circle(win, radius=radius, pos=(0, 0), units="pix", fillColor=spec.fixation_color,
                                           lineColor=None, colorSpace="rgb1", edges=32, autoLog=False)
        self._photodiode = None
        if spec.photodiode != "none":
            size = spec.photodiode_size_px
            half_w, half_h = spec.resolution[0] / 2, spec.resolution[1] / 2
            x = half_w - size / 2 if "right" in spec.photodiode else -half_w + size / 2
            y = half_h - size / 2 if "top" in spec.photodiode else -half_h + size / 2
            self._photodiode = visual.Rect(win, width=size, height=size, pos=(x, y), units="pix", fillColor=(0, 0, 0),
                                           lineColor=None, colorSpace="rgb1", autoLog=False)

    def _warm_up(self) -> None:
        """Draw everything once, unseen: the first draw compiles shaders and would otherwise drop a frame."""
        self._draw_frame(stimulus_on=True)
        self.window.clearBuffer()
        for _ in range(2):
            self._draw_frame(stimulus_on=False)
            self._flip()

    def _checked_refresh(self) -> float:
        """The median flip rate over :data:`REFRESH_FRAMES` blank frames; refused unless it is [display] refresh_hz.

        Every duration and onset spacing is counted in frames of ``refresh_hz``: a monitor running at another
        rate would show every stimulus for the wrong time, and frame drops would go unseen.
        """
        flips = []
        for _ in range(REFRESH_FRAMES + 1):
            self._draw_frame(stimulus_on=False)
            flips.append(self._flip())
        measured = 1.0 / float(np.median(np.diff(flips)))
        wanted = self.spec.refresh_hz
        if abs(measured - wanted) <= REFRESH_TOLERANCE * wanted:
            return measured
        self.close()
        # A rate alone cannot tell a fast monitor from a screen with no vsync: say both when it is too fast.
        hint = (" If this screen has no vsync (Xvfb, some virtual machines: it flips as fast as it can), set "
                "[display] pace = true there instead." if measured > wanted else "")
        raise ValueError(f"[display] refresh_hz = {wanted:g}, but this screen flips at {measured:.1f} Hz (median of "
                         f"{REFRESH_FRAMES} frames): set the monitor to {wanted:g} Hz, or refresh_hz (and the "
                         f"frame counts) to its rate.{hint}")

    # -- the frame loop -------------------------------------------------------------------------------

    def _set_image(self, texture: np.ndarray) -> None:
        """Upload one stimulus; non-square images keep their aspect ratio inside the stimulus box."""
        height, width = texture.shape[:2]
        box_w, box_h = self._box_px
        scale = min(box_w / width, box_h / height)
        self._stimulus.size = (width * scale, height * scale)
        self._stimulus.image = texture

    def _draw_frame(self, stimulus_on: bool) -> None:
        if stimulus_on:
            self._stimulus.draw()
        if self._fixation is not None:
            self._fixation.draw()
        if self._photodiode is not None:
            self._photodiode.draw()

    def _flip(self) -> float:
        """Flip and return the flip time; with ``pace``, wait for the next tick of a ``refresh_hz`` grid first.

        The grid stands in for vsync on screens that have none (Xvfb): a late frame lands on the following tick,
        as it would on a real monitor, so a stall shows up as a long interval.
        """
        if self.spec.pace:
            now = self._clock.getTime()
            if self._pace_origin is None:
                self._pace_origin = now
            ticks = max(1, math.ceil((now - self._pace_origin) / self.period))
            target = self._pace_origin + ticks * self.period
            # Sleep most of the way, then spin: sleep alone overshoots by up to a millisecond or more.
            if target - now > 0.002:
                time.sleep(target - now - 0.0015)
            while self._clock.getTime() < target:
                pass
        return float(self.window.flip())

    @contextlib.contextmanager
    def _rushed(self):
        """Raise this thread's scheduling priority while a block is shown, where the OS allows it.

        Other work on the machine then delays flips less. Only the drawing thread is raised (not torch's
        workers), and only during presentation; without permission (CAP_SYS_NICE) it runs at normal priority.
        """
        thread = threading.get_native_id()
        before = None
        try:
            before = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(before, RUSH_NICE))
            self.rushed = True
        except (OSError, AttributeError):  # no permission, or not a POSIX system
            self.rushed = False
        try:
            yield
        finally:
            if self.rushed and before is not None:
                os.setpriority(os.PRIO_PROCESS, thread, before)

    def _show(self, block: Block) -> Presentations:
        with self._rushed():
            return self._show_frames(block)

    def _show_frames(self, block: Block) -> Presentations:
        textures = images_to_textures(block.images)
        n = len(block)
        on, off = self.spec.on_frames, self.spec.off_frames
        onsets, offsets = np.full(n, np.nan), np.full(n, np.nan)
        dropped = np.zeros(n, dtype=np.int64)
        flips: list[float] = []
        self.window.recordFrameIntervals = True
        # The screen is blank between blocks: upload the first texture now; the lead-in blank's flip then anchors
        # the first stimulus's frame intervals.
        self._set_image(textures[0])
        self._draw_frame(stimulus_on=False)
        flips.append(self._flip())
        for i in range(n):
            self._photodiode_white = not self._photodiode_white
            if self._photodiode is not None:
                self._photodiode.fillColor = (1, 1, 1) if self._photodiode_white else (0, 0, 0)
            first_on = len(flips)
            for frame in range(on):
                self._draw_frame(stimulus_on=True)
                if self.frame_hook is not None:
                    self.frame_hook(i, frame, "on")
                flips.append(self._flip())
                if frame == 0:
                    onsets[i] = flips[-1]
                    self._notify_onset(block, i, onsets[i])
            for frame in range(off):
                self._draw_frame(stimulus_on=False)
                if self.frame_hook is not None:
                    self.frame_hook(i, frame, "off")
                flips.append(self._flip())
                if frame == 0:
                    offsets[i] = flips[-1]
                    # The blank is on screen now: upload the next stimulus while it is.
                    if i + 1 < n:
                        self._set_image(textures[i + 1])
            # The stimulus was on from its onset flip to the flip that removed it.
            dropped[i] = dropped_frames(flips[first_on:first_on + on + 1], self.period)
        self.window.recordFrameIntervals = False
        self.frame_intervals = np.diff(flips)
        return Presentations(onset_times=onsets, offset_times=offsets, dropped_frames=dropped, valid=dropped == 0,
                             clock=CLOCK)

    def frames(self, refresh_hz: float | None = None) -> "PsychoPyFrames":
        """This window as single frames for a trial machine (``refresh_hz`` is the window's own: [display])."""
        return PsychoPyFrames(self)

    # -- bookkeeping --------------------------------------------------------------------------------------

    @property
    def n_dropped_frames(self) -> int:
        """PsychoPy's own count of long frame intervals since the window opened (any phase)."""
        return int(self.window.nDroppedFrames)

    def describe(self) -> dict:
        """Provenance: the layout as run, in degrees and in pixels, and the clock."""
        import psychopy

        spec = self.spec
        return {
            **super().describe(),
            "psychopy": psychopy.__version__,
            "clock": CLOCK,
            "raised_priority": self.rushed,
            "monotonic_offset_s": self.monotonic_offset,
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(spec).items()},
            "pixels_per_degree": self.geometry.pixels_per_degree,
            "stimulus_box_px": list(self.stimulus_box),
            "window_size_px": [int(v) for v in self.window.size],
            "measured_refresh_hz": self.measured_refresh_hz,
        }

    def close(self) -> None:
        """Close the window; safe to call twice."""
        window, self.window = getattr(self, "window", None), None
        if window is not None:
            window.close()

    def __enter__(self) -> "PsychoPyDisplay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PsychoPyFrames:
    """A PsychoPy window as the trial machine's frame surface (:class:`rig.behavior.frames.FrameSurface`).

    Gaze is read :data:`~rig.behavior.frames.DRAW_MARGIN_S` before the next flip is due, so a break seen then
    takes the stimulus off at that flip. On a paced window (``[display] pace``, no vsync) the next flip is the
    next tick of the display's pace grid, never "last flip + period": ``win.flip()`` returns a few ms after its
    tick (Xvfb copies the frame), and a horizon that much later lands past the tick, so every frame would wait
    for the one after (a dropped frame at every flip). The photodiode patch changes at each stimulus onset, as in
    a rapid series; the fixation point sits where ``[behavior] fixation_point_deg`` puts it. The drawing thread
    runs at raised priority through a whole showing (horizons, gaze reads and draws, not just flips).
    """

    clock = CLOCK
    realtime = True

    def __init__(self, display: PsychoPyDisplay) -> None:
        self.display = display
        self.period = display.period
        self._last = display._clock.getTime()
        self._textures: np.ndarray | None = None
        self._loaded = -1
        self._previous = -1
        self._last_shown = -1
        self._flips: list[float] = []
        self._rush = contextlib.ExitStack()

    def place_fixation(self, position_deg: tuple[float, float]) -> None:
        """Put the fixation point at ``position_deg`` (degrees from the screen centre)."""
        if self.display._fixation is not None:
            self.display._fixation.pos = self.display.geometry.position_to_pixels(*position_deg)

    def begin(self, block: Block) -> None:
        self._textures = images_to_textures(block.images)
        self._loaded = self._previous = self._last_shown = -1
        self._flips = []
        self._load(0)  # before the first frame: the first onset then uploads nothing
        self.display.window.recordFrameIntervals = True
        self._rush.enter_context(self.display._rushed())

    def end(self) -> None:
        self._rush.close()
        self.display.window.recordFrameIntervals = False
        self.display.frame_intervals = np.diff(self._flips)

    def last_flip(self) -> float:
        return self._last

    def next_flip(self) -> float:
        display, period = self.display, self.period
        now = display._clock.getTime()
        origin = display._pace_origin if display.spec.pace else None
        if origin is None:  # vsync: a period after the last flip, or the first refresh from now after a pause
            return self._last + period * max(1, math.ceil((now - self._last) / period))
        # The tick the last flip waited for (win.flip() returns after it), then the first one not yet passed.
        last_tick = math.floor((self._last - origin) / period + 1e-6)
        return origin + period * max(last_tick + 1, math.ceil((now - origin) / period))

    def horizon(self) -> float:
        from rig.behavior.frames import DRAW_MARGIN_S

        clock = self.display._clock
        due = self.next_flip() - DRAW_MARGIN_S
        left = due - clock.getTime()
        if left > 0.002:  # sleep most of the way, then spin: sleep alone overshoots by a millisecond or more
            time.sleep(left - 0.0015)
        while clock.getTime() < due:
            pass
        return clock.getTime()

    def draw(self, scene: Any, position: int) -> None:
        display = self.display
        if position >= 0:
            self._load(position)  # normally loaded already, in a blank (see flip)
            self._last_shown = max(self._last_shown, position)
        if position >= 0 and position != self._previous and display._photodiode is not None:
            display._photodiode_white = not display._photodiode_white
            display._photodiode.fillColor = (1, 1, 1) if display._photodiode_white else (0, 0, 0)
        self._previous = position
        if position >= 0:
            display._stimulus.draw()
        if scene.fixation and display._fixation is not None:
            display._fixation.draw()
        if display._photodiode is not None:
            display._photodiode.draw()

    def keys_to(self, operator: Any) -> None:
        """Post the operator's key presses in this window (r reward, p pause/resume, s stop, a abort) to
        ``operator``: at a rig the fullscreen stimulus window usually has the keyboard, not the terminal."""
        self._operator = operator

    def flip(self) -> float:
        self._last = self.display._flip()
        self._flips.append(self._last)
        operator = getattr(self, "_operator", None)
        if operator is not None and len(self._flips) % KEY_POLL_FRAMES == 0:
            from psychopy import event  # imported with the window already

            for key in event.getKeys(keyList=list(OPERATOR_KEYS)):  # r, p, s, a
                operator.press(key)
        if self._previous < 0:
            # A blank is on screen: upload the stimulus most likely next (a showing goes through its positions in
            # order), as the rapid series does, so an onset's frame does not carry the upload. After a break
            # the guess may miss; that onset then uploads its own texture in its draw.
            self._load(self._last_shown + 1)
        return self._last

    def _load(self, position: int) -> None:
        if position != self._loaded and self._textures is not None and position < len(self._textures):
            self.display._set_image(self._textures[position])
            self._loaded = position


@DISPLAYS.register("psychopy", DisplaySpec)
def open_psychopy_display(**layout: Any) -> PsychoPyDisplay:
    """The PsychoPy display laid out by ``[display]`` (the registry passes its fields).

    A window that cannot open (no screen, no OpenGL) is a ``ValueError`` saying so, raised before anything runs.
    """
    try:
        return PsychoPyDisplay(DisplaySpec(**layout))
    except ValueError:
        raise
    except Exception as exc:  # pyglet/OpenGL raise their own types; the user needs to know the window failed
        screen = os.environ.get("DISPLAY", "<unset>")
        raise ValueError(
            f"--display psychopy: cannot open a PsychoPy window on DISPLAY={screen}: {type(exc).__name__}: {exc}. "
            f'Without a monitor, run under xvfb-run -a -s "-screen 0 1280x1024x24" (24-bit) with [display] pace = true'
        ) from exc
