"""``rig calibrate``: map a raw eye signal to degrees from a 5- or 9-point grid of fixated targets.

The targets are shown one at a time (the fixation point, in random or fixed
order) on the protocol's screen (``[display]``; ``--display headless`` runs
on a simulated clock and nothing waits). At each target the raw signal is
watched for a stable fixation (the rule: rig/behavior/calibration.py), which is
rewarded through ``[reward]`` as ``[behavior]`` says (reward_ms, reward_pulses,
reward_pause_ms); a target with none within ``--timeout-s`` is shown again,
``--attempts`` times, then skipped with a message. The targets' raw means are
fitted to their positions by least squares (affine, or ``--kind poly2``), and
the map, each target's residual and how it was made go to ``--out``.

The gaze source is the protocol's ``[gaze]`` (``--gaze SOURCE`` replaces its
source), built raw: its own ``calibration`` and ``drift_correction`` are left
out, since they are what is being made. A calibration that cannot be trusted is
refused with exit status 1 and no file: too few targets fixated, targets
(or their raw signals) on one line, or a residual above ``--max-residual-deg``
(first the least trusted target is shown again, ``--refits`` times).
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from protocols.spec import BehaviorSpec, DisplaySpec, ProtocolSpec, load_protocol
from rig.behavior.calibration import (CALIBRATION_KINDS, Calibration, CalibrationError, FixationFinder,
                                      StabilityRule, TargetResult, TargetShowing, grid_targets, least_trusted,
                                      reward_for)
from rig.behavior.choice import gaze_table
from rig.behavior.gaze.base import GazeError, GazeTask
from rig.behavior.gaze.raw import RawGazeSource, build_raw
from rig.behavior.parts import part_registry
from rig.behavior.reward.base import RewardError
from rig.commands._options import bounded_int
from rig.display import DISPLAYS, build_display
from rig.display.monitor import MonitorGeometry

HELP = "calibrate a raw eye signal: fixated targets on a 5- or 9-point grid, fitted raw -> degrees"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig calibrate``."""
    parser.add_argument("protocol", type=Path, help="the protocol file (TOML) whose [display], [behavior], [gaze] "
                                                    "and [reward] the calibration uses")
    parser.add_argument("--out", type=Path, required=True, metavar="CAL.toml",
                        help="calibration file to write (replaced only when the new calibration is accepted)")
    parser.add_argument("--gaze", metavar="SOURCE", help="the gaze source to calibrate instead of [gaze] source")
    parser.add_argument("--neuron", metavar="zmq://HOST:PORT",
                        help="the recording stream, for a gaze source that reads it ([gaze] source = \"recording\": "
                             "the eye tracker's analog outputs on the acquisition board's ADC channels)")
    parser.add_argument("--sim-link", metavar="tcp://HOST:PORT",
                        help="rig sim-rig's side channel: its simulated monkey sees the targets")
    parser.add_argument("--points", type=int, choices=(5, 9), default=9,
                        help="targets: 5 (centre and a cross) or 9 (a 3 x 3 square); default 9")
    parser.add_argument("--kind", choices=tuple(CALIBRATION_KINDS), default="affine",
                        help="the map: affine (6 coefficients) or poly2 (second order, 12; needs 9 points); "
                             "default affine")
    parser.add_argument("--display", default="headless", choices=DISPLAYS.kinds(),
                        help="headless (a simulated clock, default) or psychopy (the protocol's [display] window)")
    parser.add_argument("--spacing-deg", type=_positive, default=5.0,
                        help="distance of the outer targets from the screen centre on each axis (default 5)")
    parser.add_argument("--max-residual-deg", type=_positive, default=1.0,
                        help="refuse the calibration if a target's residual is above this (default 1.0)")
    parser.add_argument("--order", choices=("random", "fixed"), default="random",
                        help="targets in random order (default; from --seed) or as listed (centre first)")
    parser.add_argument("--seed", type=bounded_int(0, 2**32 - 1),
                        help="seed of the order and of a simulated monkey (default: the protocol's)")
    parser.add_argument("--stable-ms", type=_positive, default=300.0,
                        help="a stable fixation lasts this long (default 300)")
    parser.add_argument("--dispersion", type=_positive, default=10.0,
                        help="a stable fixation's range on each raw axis, in raw noise SDs (default 10)")
    parser.add_argument("--timeout-s", type=_positive, default=4.0,
                        help="how long a target waits for a stable fixation before it is shown again (default 4)")
    parser.add_argument("--blank-ms", type=_positive, default=500.0,
                        help="blank screen before each target (default 500)")
    parser.add_argument("--attempts", type=bounded_int(1, 20), default=3,
                        help="showings of a target without a fixation before it is skipped (default 3)")
    parser.add_argument("--refits", type=bounded_int(0, 20), default=2,
                        help="with a residual above the limit, show the least trusted target again and refit, "
                             "this many times before refusing (default 2)")


def run(args: argparse.Namespace) -> int:
    """Show the grid, collect a fixation per target, fit, and write ``--out``; 1 for a refused calibration."""
    spec = load_protocol(args.protocol)
    if spec.gaze is None and args.gaze is None:
        raise ValueError(f"{spec.path}: no [gaze] table to calibrate; add one, or name the source with --gaze")
    need = CALIBRATION_KINDS[args.kind]
    if args.points < need:
        raise ValueError(f"--kind {args.kind} needs at least {need} targets; --points {args.points} gives "
                         f"{args.points} (use --points 9)")
    if args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a folder; name the calibration file, e.g. {args.out / 'eye.toml'}")
    table = gaze_table(spec, args.gaze, recorded_neuron=False)
    targets = grid_targets(args.points, args.spacing_deg)
    layout = spec.display or DisplaySpec()
    _check_targets(layout, targets, args.display, spec)
    seed = spec.seed if args.seed is None else args.seed
    gaze = build_raw(table, where=f"{spec.path}: [gaze]")
    reward_table = spec.reward or {"kind": "log"}
    try:
        reward = part_registry("reward").build(reward_table["kind"],
                                               {k: v for k, v in reward_table.items() if k != "kind"})
    except RewardError as exc:  # the device is not there
        print(f"rig calibrate: error: {spec.path}: [reward]: {exc}", file=sys.stderr)
        return 1
    display = build_display(args.display, spec.display)
    stream = None
    try:
        stream, link = _attach_rig(args, spec, gaze, display)
        calibration = _calibrate(args, spec, table, gaze if link is None else _SceneTee(gaze, link), reward, display,
                                 targets, seed)
    except (CalibrationError, GazeError, RewardError) as exc:
        print(f"rig calibrate: error: {exc}; nothing was written to {args.out}", file=sys.stderr)
        return 1
    finally:
        try:
            gaze.close()
            reward.close()
            if stream is not None:
                stream.close()
        finally:
            display.close()
    _write(args.out, calibration.to_toml())
    print(f"rig calibrate: wrote {args.out}: {calibration.kind}, {len(calibration.targets)} targets, largest "
          f"residual {calibration.max_residual_deg:.3f}°. Use it with [gaze] calibration = \"{args.out}\"")
    return 0


def _attach_rig(args: argparse.Namespace, spec: ProtocolSpec, gaze: RawGazeSource, display: Any) -> tuple[Any, Any]:
    """With ``--neuron``: connect the recording stream and give it to the gaze source (analog eye signals); with
    ``--sim-link``: tell sim-rig's monkey the targets. Both in real time. Returns (stream, link), None for neither.
    """
    from rig.recording.choice import pace_headless, recording_source
    from rig.recording.sidechannel import SimRigLink

    offset = getattr(display, "monotonic_offset", 0.0 if args.display == "headless" else None)
    stream = link = None
    if args.neuron is not None or args.sim_link is not None:
        pace_headless(display, None)  # a rig runs in real time: the headless display's frames then do too
    if args.neuron is not None:
        stream = recording_source(spec, [args.neuron])
        if stream is None:
            raise ValueError(f"--neuron {args.neuron!r} is not a recording stream (zmq://HOST:PORT or lsl://NAME)")
        stream.start()
    if hasattr(gaze, "attach_recording"):
        gaze.attach_recording(stream, monotonic_offset=offset)
    if args.sim_link is not None:
        link = SimRigLink(args.sim_link, clock=type(display).__name__, monotonic_offset=offset)
    return stream, link


class _SceneTee:
    """The gaze source, with each scene change also told to sim-rig's monkey (as a trial runner's listener is)."""

    def __init__(self, gaze: RawGazeSource, link: Any) -> None:
        self._gaze, self._link = gaze, link

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gaze, name)

    def scene(self, time: float, fixation_on: bool, stimulus_on: bool,
              fixation_deg: tuple[float, float] | None = None) -> None:
        self._gaze.scene(time, fixation_on, stimulus_on, fixation_deg)
        self._link.on_trial_event("scene", time, {"fixation": fixation_on, "stimulus": 0 if stimulus_on else -1,
                                                  "fixation_deg": fixation_deg})


def _check_targets(layout: DisplaySpec, targets: list[tuple[float, float]], display: str, spec: ProtocolSpec) -> None:
    """Every target on the protocol's screen, and a fixation point to show them with."""
    if display == "psychopy" and layout.fixation_deg <= 0:
        raise ValueError(f"{spec.path}: [display] fixation_deg = 0 draws no fixation point, and the calibration "
                         f"shows its targets with it; give it a size, e.g. 0.2")
    geometry = MonitorGeometry(layout.width_cm, layout.distance_cm, tuple(layout.resolution))
    size = max(layout.fixation_deg, 0.1)
    for x, y in targets:
        if not (abs(x) < 89 and abs(y) < 89 and geometry.fits(*geometry.extent_to_pixels(x, y, size))):
            raise ValueError(f"{spec.path}: the calibration target at [{x:g}, {y:g}]° is off the "
                             f"{layout.resolution[0]}x{layout.resolution[1]} screen ([display] width_cm, distance_cm, "
                             f"resolution); use a smaller --spacing-deg")


def _calibrate(args: argparse.Namespace, spec: ProtocolSpec, table: dict[str, Any], gaze: RawGazeSource,
               reward: Any, display: Any, targets: list[tuple[float, float]], seed: int) -> Calibration:
    behavior = spec.behavior or BehaviorSpec()
    layout = spec.display or DisplaySpec()
    surface = display.frames(layout.refresh_hz)
    if hasattr(gaze, "attach_display"):
        gaze.attach_display(display)
    gaze.start(GazeTask(targets[0], behavior.window_deg, surface.clock, surface.last_flip(), seed))
    rule = StabilityRule(stable_ms=args.stable_ms, dispersion=args.dispersion)
    showing = TargetShowing(surface, gaze, reward_for(reward, gaze, behavior.reward_pulses, behavior.reward_ms,
                                                      behavior.reward_pause_ms),
                            finder=FixationFinder(rule), timeout_s=args.timeout_s, attempts=args.attempts,
                            blank_s=args.blank_ms / 1000, say=_say)
    order = list(range(len(targets)))
    if args.order == "random":
        order = [int(i) for i in np.random.default_rng(seed).permutation(len(targets))]
    print(f"rig calibrate: {spec.path}: {len(targets)} targets {args.spacing_deg:g}° apart, {args.order} order, "
          f"gaze {table['source']} (raw), {args.kind} map")
    results = [showing.show(targets[i]) for i in order]
    info = {"created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "protocol": str(spec.path), "protocol_sha256": spec.sha256, "display": args.display,
            "gaze": {k: v for k, v in gaze.describe()["options"].items()
                     if v is not None and k not in ("calibration", "drift_correction")},
            "source": table["source"], "points": args.points, "spacing_deg": args.spacing_deg,
            "order": [list(targets[i]) for i in order], "seed": seed, "max_residual_deg": args.max_residual_deg,
            "timeout_s": args.timeout_s, "attempts": args.attempts, "blank_ms": args.blank_ms,
            "stability": {"stable_ms": rule.stable_ms, "dispersion_sd": rule.dispersion,
                          "min_latency_ms": rule.min_latency_ms, "before_ms": rule.before_ms},
            "raw_noise_sd": list(showing.finder.noise() or (math.nan, math.nan))}
    return _fit(args, showing, results, info)


def _fit(args: argparse.Namespace, showing: TargetShowing, results: list[TargetResult],
         info: dict[str, Any]) -> Calibration:
    """Fit the fixated targets; with a residual above the limit, show the least trusted one again and refit."""
    refits = args.refits
    need = CALIBRATION_KINDS[args.kind]
    while True:
        found = [k for k, r in enumerate(results) if r.fixation is not None]
        if len(found) < need:
            skipped = [list(r.target_deg) for r in results if r.fixation is None]
            raise CalibrationError(
                f"calibration: {len(found)} of {len(results)} targets had a stable fixation, too few for a "
                f"{args.kind} map (at least {need}); no fixation at {skipped} (is the monkey working? see "
                f"--timeout-s, --attempts, --dispersion)", "targets")
        raw = np.array([results[k].fixation.raw for k in found])
        degrees = np.array([results[k].target_deg for k in found])
        sem = np.array([results[k].fixation.raw_sem for k in found])
        details = [{"samples": results[k].fixation.samples, "raw_sd": list(results[k].fixation.raw_sd),
                    "fixation_s": [results[k].fixation.start, results[k].fixation.stop],
                    "attempts": results[k].attempts} for k in found]
        try:
            calibration = Calibration.fit(raw, degrees, args.kind, args.max_residual_deg, raw_sem=sem,
                                          details=details, info=info)
        except CalibrationError as exc:
            if exc.reason != "residual" or refits == 0:
                raise
            refits -= 1
            k = found[least_trusted(raw, degrees, args.kind)]
            _say(f"{exc}; showing the least trusted target, at {list(results[k].target_deg)}°, again")
            again = showing.show(results[k].target_deg)
            results[k] = TargetResult(again.target_deg, again.fixation, results[k].attempts + again.attempts)
            continue
        for target in calibration.targets:
            print(f"  target [{target['target_deg'][0]:6.2f}, {target['target_deg'][1]:6.2f}]°: raw "
                  f"[{target['raw'][0]:.4g}, {target['raw'][1]:.4g}], {target['samples']} samples, residual "
                  f"{target['residual_deg']:.3f}°")
        return calibration


def _say(message: str) -> None:
    print(f"rig calibrate: {message}", file=sys.stderr, flush=True)


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` in one step (a reader never sees half a file; a failed write leaves none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.writing")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
