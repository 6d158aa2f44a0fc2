"""Building a session's behaviour from its protocol: the gaze source, the reward output, the gated display.

With a ``[behavior]`` table the display runs each block as trials
(:class:`~rig.behavior.gated.GatedDisplay`); without one, nothing here runs
and blocks are one rapid stream, as before. ``[gaze]`` names the gaze source
(default: the simulated monkey for a simulated neuron; a recorded neuron needs
a real one named), ``[reward]`` the reward output (default: log only).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

from protocols.spec import BehaviorSpec, DisplaySpec, ProtocolError, ProtocolSpec, RecordingSpec
from rig.behavior.gated import GatedDisplay
from rig.behavior.gaze.base import GazeError
from rig.behavior.gaze.raw import carry_drift
from rig.behavior.machine import StimulusTiming
from rig.behavior.operator import Operator
from rig.behavior.parts import part_registry
from rig.behavior.reward.base import RewardError
from rig.behavior.runner import TrialRunner
from rig.display.base import Display
from rig.display.monitor import MonitorGeometry

__all__ = ["gate_display", "gaze_table", "check_window_fits"]

SIMULATED_MONKEY = "simulated"


def gaze_table(spec: ProtocolSpec, gaze: str | Mapping[str, Any] | None, recorded_neuron: bool,
               calibration: str | None = None) -> dict[str, Any]:
    """The ``[gaze]`` table to build: the protocol's, with ``gaze`` (``--gaze KIND``) replacing its source and
    ``calibration`` (``--calibration CAL.toml``) its calibration file.

    A different kind than the protocol's drops the protocol's options (they belong to that kind). A table
    (a resumed session's recorded one) is taken as it is. A calibration path in the protocol is relative to
    the protocol file, as weights are; every path is made absolute, so the session records the file it used.
    """
    if isinstance(gaze, Mapping):
        return dict(gaze)
    table = dict(spec.gaze) if spec.gaze is not None else None
    if gaze is not None:
        table = table if table is not None and table["source"] == gaze else {"source": gaze}
    elif table is None:
        if recorded_neuron:
            raise ProtocolError(f"{spec.path}: [behavior] with a recorded neuron needs a [gaze] table naming the "
                                f"eye tracker (source = ...), or --gaze; the simulated monkey stands in only for "
                                f"dry runs")
        table = {"source": SIMULATED_MONKEY}
    if calibration is not None:
        table["calibration"] = str(Path(calibration).expanduser().resolve())
    elif isinstance(table.get("calibration"), str) and table["calibration"] != "identity":
        table["calibration"] = str((spec.path.parent / table["calibration"]).expanduser().resolve())
    return table


def reward_table(spec: ProtocolSpec, reward: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``[reward]`` table to build: the protocol's (default: log only), ``reward`` (``--reward KIND``)
    replacing its kind (its options go with a different kind), or a resumed session's recorded table."""
    if isinstance(reward, Mapping):
        return dict(reward)
    table = dict(spec.reward) if spec.reward is not None else {"kind": "log"}
    if reward is not None and table["kind"] != reward:
        table = {"kind": reward}
    return table


def check_window_fits(spec: ProtocolSpec) -> None:
    """Refuse a fixation window that does not lie on the screen: no gaze could ever satisfy it honestly."""
    behavior = spec.behavior
    display = spec.display or DisplaySpec()
    geometry = MonitorGeometry(display.width_cm, display.distance_cm, tuple(display.resolution))
    to_deg = math.degrees
    half_w = to_deg(math.atan(display.resolution[0] / 2 / (geometry.distance_cm * geometry.pixels_per_cm)))
    half_h = to_deg(math.atan(display.resolution[1] / 2 / (geometry.distance_cm * geometry.pixels_per_cm)))
    x, y = behavior.fixation_point_deg
    r = behavior.window_deg
    if abs(x) + r > half_w or abs(y) + r > half_h:
        raise ProtocolError(
            f"{spec.path}: [behavior] window_deg = {r:g} around fixation_point_deg = [{x:g}, {y:g}] reaches "
            f"{abs(x) + r:.1f}° x {abs(y) + r:.1f}° from the centre, beyond the screen's ±{half_w:.1f}° x "
            f"±{half_h:.1f}° ([display] width_cm, distance_cm, resolution); make the window smaller")


def stimulus_timing(spec: ProtocolSpec) -> StimulusTiming:
    """Stimuli on/off as ``[display]`` says; fixation held to the end of the scoring window (``[recording]``)."""
    display = spec.display or DisplaySpec()
    recording = spec.recording or RecordingSpec()
    return StimulusTiming(display.on_frames, display.off_frames, recording.response_window_ms[1] / 1000)


def _build(table_name: str, key: str, table: Mapping[str, Any], where: str) -> Any:
    registry = part_registry(table_name)
    options = {k: v for k, v in table.items() if k != key}
    try:
        return registry.build(table[key], options)
    except (ValueError, RewardError, GazeError) as exc:  # bad options, or a device that is not there
        raise ProtocolError(f"{where}: [{table_name}]: {exc}") from None


def gate_display(display: Display, spec: ProtocolSpec, *, gaze: Mapping[str, Any], seed: int,
                 operator: Operator | None = None, say: Callable[[str], None] | None = None,
                 first_trial: int = 0, recording: Any = None, clock_start: float = 0.0,
                 reward: Mapping[str, Any] | None = None,
                 gaze_offset: tuple[float, float] | None = None) -> GatedDisplay:
    """``display`` running blocks as trials, as ``spec.behavior`` says, with ``gaze`` (a ``[gaze]`` table).

    A gaze source that needs the screen (a tracker's window) gets ``display`` through ``attach_display``; one
    that reads the recording's stream (analog eye signals) gets ``recording`` (None for a simulated neuron)
    through ``attach_recording``; both before it starts. ``gaze_offset`` (a resumed session's drift offset,
    rig/loop/rebuild.py) is where the source's drift correction starts from (None: a new session's zero).
    """
    behavior: BehaviorSpec = spec.behavior
    check_window_fits(spec)
    frames = getattr(display, "frames", None)
    if frames is None:
        raise ProtocolError(f"{spec.path}: [behavior]: the {type(display).__name__} cannot show single frames, "
                            f"so it cannot run trials")
    refresh_hz = (spec.display or DisplaySpec()).refresh_hz
    # A simulated clock carries on from a resumed session's last flip, so its times never run backwards.
    surface = frames(refresh_hz, clock_start) if clock_start else frames(refresh_hz)
    if hasattr(surface, "place_fixation"):
        surface.place_fixation(behavior.fixation_point_deg)
    gaze_source = _build("gaze", "source", gaze, str(spec.path))
    reward_output = _build("reward", "kind", reward if reward is not None else reward_table(spec, None),
                           str(spec.path))
    from rig.display.psychopy import dropped_frames  # the one definition of a dropped frame

    extra = {"say": say} if say is not None else {}
    runner = TrialRunner(behavior, stimulus_timing(spec), surface, gaze_source, reward_output,
                         dropped_frames=dropped_frames, operator=operator, session_seed=seed,
                         first_trial=first_trial, **extra)
    try:
        if hasattr(gaze_source, "attach_display"):  # a tracker reporting screen positions maps them on its window
            gaze_source.attach_display(display)
        if hasattr(gaze_source, "attach_recording"):  # analog eye signals on the recording's stream
            gaze_source.attach_recording(recording)
        runner.start()  # before provenance is taken: a simulated monkey then reports the seed it drew
        if gaze_offset is not None:  # start() zeroed the offset; nothing has been read yet
            carry_drift(gaze_source, gaze_offset)
    except GazeError as exc:  # no window, no stream, a tracker that does not start: before the first stimulus
        runner.close()
        raise ProtocolError(f"{spec.path}: [gaze] source = {gaze['source']!r}: {exc}") from None
    if hasattr(surface, "keys_to"):  # the stimulus window takes the operator's keys too
        surface.keys_to(runner.operator)
    return GatedDisplay(display, runner)
