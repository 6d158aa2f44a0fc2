"""What behaviour costs: how fast a break takes the stimulus off a PsychoPy screen, and what trials add to a dry run.

    PSYCHOPYNOPACKAGES=1 xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python bench/behavior.py \\
        [--breaks 50] [--generations 5] [--rounds 1] [--only latency|overhead] [--profile]

Without a screen (DISPLAY unset) it runs itself again under that xvfb-run.

1. Abort latency: from the first gaze sample outside the fixation window to
   the flip that takes the stimulus off, on the PsychoPy display paced at
   60 Hz (trials run by the TrialRunner on ``PsychoPyDisplay.frames()``), for
   two gaze sources: a real-time source made here that samples at 500 Hz on
   PsychoPy's clock up to the present and steps out of the window at a random
   time in one stimulus of every trial, and the simulated monkey (breaking
   often). Only breaks with a stimulus on screen and at least a few frames of
   it left count, so the flip that removes it is the abort, never the offset.
   In frames: the time from that sample to the removing flip over the frame
   period, and how many flips it took (1: the very next one). Also: how late
   flips land after their 60 Hz tick, how often a tick is missed, and where
   gaze is read (``DRAW_MARGIN_S`` before the flip), which together bound it.
2. In-silico overhead: the same dry run (protocols/dry-run.toml: its model and
   generator, fewer generations) with and without a ``[behavior]`` table (the
   simulated monkey with default hazards), sessions interleaved in one run:
   s/gen of each and their ratio, and the trials' own time measured directly
   (frames per block, µs per frame). ``--profile`` shows where the trials'
   time goes.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.base import REFERENCE, Block  # noqa: E402
from protocols.spec import BehaviorSpec, DisplaySpec, load_protocol  # noqa: E402
from rig.behavior.frames import DRAW_MARGIN_S  # noqa: E402
from rig.behavior.gaze.base import GazeSamples, GazeSource, GazeTask  # noqa: E402
from rig.behavior.gaze.simulated import SimulatedMonkey  # noqa: E402
from rig.behavior.log import BehaviorLog  # noqa: E402
from rig.behavior.machine import StimulusTiming  # noqa: E402
from rig.behavior.outcomes import TrialOutcome  # noqa: E402
from rig.behavior.reward.log import LogReward  # noqa: E402
from rig.behavior.runner import TrialRunner  # noqa: E402

XVFB = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"]
RATE_HZ = 500.0
#: On long enough that a step in its first frames is always removed by the abort, not the offset.
ON_FRAMES, OFF_FRAMES = 12, 3
#: A break counts when at least this many frames of its stimulus were left (so the offset cannot hide the abort).
FRAMES_LEFT = 4
#: Trials as short as possible around the stimuli: many breaks per minute.
#: The controller's timings of a generation, in the order it runs them.
STEPS = ("protocol_generate", "present_and_record", "protocol_ask", "protocol_tell", "write")
TRIALS = dict(stimuli_per_trial=3, hold_ms=50.0, iti_ms=50.0, timeout_ms=50.0, reward_ms=10.0,
              not_working_s=3600.0)


class StepGaze(GazeSource):
    """Real-time gaze: samples on ``clock`` at ``rate_hz`` up to the present, never ahead of it.

    On the fixation point from the flip that shows it; out of the window (6° away) from a random time in the first
    ``span_s`` of one random stimulus of each trial, until the point next appears. ``steps`` keeps each step time.
    """

    realtime = True

    def __init__(self, clock: Any, rng: np.random.Generator, span_s: float, stimuli: int) -> None:
        self.clock, self.rng, self.span_s, self.stimuli = clock, rng, span_s, stimuli
        self.steps: list[float] = []

    def start(self, task: GazeTask) -> None:
        super().start(task)
        self._t0, self._next = task.now, 1
        self._changes, self._inside = [-math.inf], [False]  # gaze is inside from _changes[i] while _inside[i]
        self._fixation = self._stimulus = False
        self._onsets, self._target = 0, 0

    def scene(self, time_: float, fixation_on: bool, stimulus_on: bool) -> None:
        if fixation_on and not self._fixation:
            self._changes.append(time_)
            self._inside.append(True)
            self._onsets, self._target = 0, int(self.rng.integers(self.stimuli))
        if stimulus_on and not self._stimulus:
            if self._onsets == self._target and self._inside[-1]:
                step = time_ + float(self.rng.uniform(0.0, self.span_s))
                self._changes.append(step)
                self._inside.append(False)
                self.steps.append(step)
            self._onsets += 1
        self._fixation, self._stimulus = fixation_on, stimulus_on

    def _read(self, until: float) -> GazeSamples:
        stop = math.floor((min(until, self.clock.getTime()) - self._t0) * RATE_HZ)
        times = self._t0 + np.arange(self._next, stop + 1) / RATE_HZ
        times = times[times <= until]
        self._next += len(times)
        inside = np.asarray(self._inside)[np.searchsorted(self._changes, times, side="right") - 1]
        return GazeSamples(times, np.where(inside, 0.1, 6.0), np.zeros(len(times)), np.ones(len(times), dtype=bool))


def random_block(index: int, n: int, size: int, generator: torch.Generator) -> Block:
    images = torch.rand(n, 3, size, size, generator=generator)
    return Block(index=index, stimulus_ids=[f"b{index}s{i}" for i in range(n)], kinds=[REFERENCE] * n,
                 threads=np.full(n, -1), code_index=np.full(n, -1), images=images, codes=np.zeros((0, 0, 0)))


def abort_latencies(log: BehaviorLog, origin: float, period: float) -> list[tuple[float, int, float, float, bool]]:
    """Each break by a saccade with a stimulus on screen and at least :data:`FRAMES_LEFT` of its frames left:
    (its time, flips from the first gaze sample outside to the removing one, 1 = the next flip; seconds to that
    flip's tick; seconds to that flip's return; whether that flip missed a tick). Ticks are the display's 60 Hz
    pace grid from ``origin``: a flip waits for its tick, then ``win.flip()`` returns a few ms later (Xvfb copies
    the frame); that return is what the log keeps."""
    frames, positions = np.asarray(log.frame_times), np.asarray(log.frame_position)
    ticks = np.floor((frames - origin) / period + 1e-6)
    gaze = log.samples()
    out = []
    for outcome, brk in zip(log.trials["outcome"], log.trials["break_time"]):
        if int(outcome) != int(TrialOutcome.BROKE_FIXATION):
            continue
        sample = np.flatnonzero(gaze.times == brk)
        if len(sample) == 0 or not gaze.valid[sample[0]]:
            continue  # a long blink: it counts from its first missing sample, after the grace
        following = int(np.searchsorted(ticks, (brk - origin) / period, side="right"))  # the first tick after it
        if following == 0 or following >= len(frames) or positions[following - 1] < 0:
            continue
        shown = positions[following - 1]
        onset = int(np.flatnonzero(positions == shown)[0])
        if following - onset > ON_FRAMES - FRAMES_LEFT:
            continue
        removed = following + int(np.argmax(positions[following:] != shown))
        tick_time = origin + ticks[removed] * period
        missed = bool(ticks[removed] - ticks[removed - 1] > 1)  # the removing flip came a tick (or more) late
        out.append((float(brk), removed - following + 1, float(tick_time - brk), float(frames[removed] - brk), missed))
    return out


def measure_latency(display: Any, make_gaze: Callable[[], GazeSource], breaks: int, limit_s: float,
                    generator: torch.Generator) -> dict[str, Any]:
    """Run trials on ``display`` with the gaze ``make_gaze`` builds until ``breaks`` breaks count (or ``limit_s``)."""
    spec = BehaviorSpec(**TRIALS)
    gaze = make_gaze()
    runner = TrialRunner(spec, StimulusTiming(ON_FRAMES, OFF_FRAMES, 0.2), display.frames(), gaze, LogReward(),
                         dropped_frames=_dropped_frames(), say=lambda message: None)
    runner.surface.place_fixation(spec.fixation_point_deg)
    found: list[tuple[float, int, float, float, bool]] = []
    frames, leads, trials, block = [], [], 0, 0
    started = time.monotonic()
    try:
        while len(found) < breaks and time.monotonic() - started < limit_s:
            log = runner.run(random_block(block, 30, 128, generator), lambda position, onset: None).log
            found += abort_latencies(log, display._pace_origin, display.period)
            frames.append(np.asarray(log.frame_times))
            leads.append(_read_ahead(log, display._pace_origin, display.period))
            trials += log.trial_count
            block += 1
    finally:
        runner.close()
    flips = np.concatenate(frames)
    intervals = np.concatenate([np.diff(f) for f in frames]) / display.period
    return {"found": found, "trials": trials, "flips": len(flips), "missed": int((intervals > 1.5).sum()),
            "lag": (flips - display._pace_origin) % display.period, "lead": np.concatenate(leads),
            "steps": getattr(gaze, "steps", None), "seconds": time.monotonic() - started}


def _read_ahead(log: BehaviorLog, origin: float, period: float) -> np.ndarray:
    """For each flip that gaze was read for: how long before the flip's tick it was read (the last read since the
    flip before; frames of the reward, timeout and interval read none)."""
    frames, horizons = np.asarray(log.frame_times), np.asarray(log.horizons)
    if len(frames) < 2 or len(horizons) == 0:
        return np.zeros(0)
    last = np.searchsorted(horizons, frames[1:]) - 1  # the last read before each flip
    since = np.searchsorted(horizons, frames[:-1])  # the first read after the flip before it
    read = last >= since
    ticks = origin + np.floor((frames[1:] - origin) / period + 1e-6) * period
    return (ticks - horizons[np.maximum(last, 0)])[read]


def _dropped_frames():
    from rig.display.psychopy import dropped_frames

    return dropped_frames


def latency_bench(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    from rig.display.psychopy import PsychoPyDisplay

    spec = DisplaySpec(width_cm=40.0, distance_cm=57.0, resolution=(800, 600), fullscreen=False, pace=True,
                       size_deg=8.0, on_frames=ON_FRAMES, off_frames=OFF_FRAMES)
    generator, rng = torch.Generator().manual_seed(0), np.random.default_rng(args.seed)
    load_before = os.getloadavg()[0]
    rows = []
    print(f"abort latency: PsychoPy {spec.resolution[0]}x{spec.resolution[1]} window, pace at {spec.refresh_hz:g} Hz, "
          f"gaze {RATE_HZ:g} Hz read {DRAW_MARGIN_S * 1000:g} ms (DRAW_MARGIN_S) before each flip; stimuli "
          f"{ON_FRAMES} frames on, breaks counted with >= {FRAMES_LEFT} frames of the stimulus left")
    with PsychoPyDisplay(spec) as display:
        period = display.period
        sources = {
            "step (real time)": lambda: StepGaze(display._clock, rng, (ON_FRAMES - FRAMES_LEFT - 1) * period,
                                                 TRIALS["stimuli_per_trial"]),
            "simulated monkey": lambda: SimulatedMonkey(seed=args.seed, break_hazard_hz=4.0, acquire_latency_ms=100.0,
                                                        acquire_latency_sd_ms=20.0, acquire_latency_min_ms=60.0,
                                                        rest_hazard_hz=0.0, rest_hazard_per_reward_hz=0.0),
        }
        for name, make in sources.items():
            m = measure_latency(display, make, args.breaks, args.latency_limit_s, generator)
            found = m["found"]
            if not found:
                print(f"  {name}: no break counted in {m['seconds']:.0f} s")
                continue
            breaks, flips, to_tick, to_return, late = (np.array(column) for column in zip(*found))
            to_tick, to_return = to_tick / period, to_return / period
            truth = ""
            if m["steps"]:  # the source's own step times: each recorded break must be the first sample after one
                steps = np.array(m["steps"])
                first = [np.any((b >= steps) & (b < steps + 1 / RATE_HZ + 1e-9)) for b in breaks]
                truth = f"; {sum(first)}/{len(breaks)} breaks recorded at the first sample after a step"
            lag, missed = m["lag"] * 1000, m["missed"] / m["flips"]
            print(f"  {name}: {len(found)} breaks in {m['trials']} trials, {m['seconds']:.0f} s{truth}")
            print(f"    first sample outside -> the removing flip's tick: median {np.median(to_tick):.2f} frames, max "
                  f"{to_tick.max():.2f}; -> its return: median {np.median(to_return):.2f}, max {to_return.max():.2f}; "
                  f"flips taken (1 = the next): median {np.median(flips):g}, max {flips.max()}")
            lead = "" if not len(m["lead"]) else (
                f"; gaze read before the flip's tick: median {np.median(m['lead']) * 1e3:.2f} ms, "
                f"min {m['lead'].min() * 1e3:.2f}")
            print(f"    win.flip() returns after its tick: median {np.median(lag):.2f} ms, p99 "
                  f"{np.percentile(lag, 99):.2f} ms; ticks missed: {m['missed']} of {m['flips']} flips "
                  f"({missed:.1%}){lead}")
            # On time, the removing flip is the first tick after the read that saw the sample: at most one frame
            # plus the read-ahead (DRAW_MARGIN_S) later. Longer means a tick was missed.
            bound = 1 + DRAW_MARGIN_S / period
            slow = to_tick > bound + 0.05
            print(f"    breaks over {bound:.2f} frames (one frame + DRAW_MARGIN_S): {slow.sum()}, of them "
                  f"{(slow & late).sum()} with the removing flip a tick late")
            verdict = "met" if np.median(to_tick) <= 1 and to_tick.max() <= 2 else "NOT met"
            rows.append((f"abort latency, {name}", f"median {np.median(to_tick):.2f}, max {to_tick.max():.2f} frames "
                         f"({np.median(flips):g} / {flips.max()} flips; {missed:.0%} ticks missed)",
                         f"<= 1 / <= 2: {verdict}"))
    print(f"  load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return rows


# -- in-silico overhead -------------------------------------------------------------------------------------------

def dry_run(protocol: Path, behavior: bool, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One dry run of ``args.generations`` (+1 warm-up) generations; s/gen, and the trials' own time and frames."""
    from rig.loop.assemble import assemble, pick_device, resolve_neuron
    from rig.loop.controller import BlockReport, Controller
    from rig.session import SessionWriter

    path = folder / f"{'behavior' if behavior else 'plain'}.toml"
    path.write_text(protocol.read_text() + ("\n[behavior]\n" if behavior else ""))
    spec = load_protocol(path)
    units = args.units.split(",") if args.units else None
    parts = assemble(spec, resolve_neuron(spec, units, args.weights), device=pick_device(args.device),
                     generations=args.generations + 1)
    reports: list[BlockReport] = []
    trials = {"seconds": [], "cpu": [], "frames": [], "trials": []}
    profile = cProfile.Profile() if behavior and args.profile else None
    if behavior:
        runner = parts.display.runner
        run = runner.run

        def timed(block: Block, on_onset: Callable[[int, float], None]):
            started, cpu = time.perf_counter(), time.thread_time()
            if profile is not None:
                profile.enable()
            try:
                result = run(block, on_onset)
            finally:
                if profile is not None:
                    profile.disable()
            trials["seconds"].append((block.index, time.perf_counter() - started))
            trials["cpu"].append((block.index, time.thread_time() - cpu))  # CPU: what others' load does not inflate
            trials["frames"].append((block.index, len(result.log.frame_times)))
            trials["trials"].append((block.index, result.log.trial_count))
            return result

        runner.run = timed
        trials["gaze"] = _time_gaze(runner.gaze)
    out = folder / f"{path.stem}.h5"
    session = SessionWriter(out, protocol_text=spec.text, protocol_sha256=spec.sha256, protocol_path=str(spec.path),
                            seed=parts.seed, provenance=parts.provenance, reference_ids=parts.protocol.reference_ids)
    Controller(parts.protocol, parts.display, parts.source, session, reports.append).run()
    parts.display.close()
    out.unlink()
    timed_blocks = {r.index for r in reports[1:]}  # the first generation pays one-off warm-up costs

    def per_block(key: str) -> list[float]:
        sums: dict[int, float] = {}
        for index, value in trials[key]:
            if index in timed_blocks:
                sums[index] = sums.get(index, 0.0) + value
        return list(sums.values())

    # The trials against the rest of the same generation: both under the same load at the same moment.
    own = [trials_s / (report.seconds - trials_s) for report, trials_s in zip(reports[1:], per_block("seconds"))]
    return {"s_per_gen": [r.seconds for r in reports[1:]], "steps": [r.timings for r in reports[1:]], "own": own,
            "trial_s": per_block("seconds"), "trial_cpu": per_block("cpu"),
            "frames": per_block("frames"), "trials": per_block("trials"), "profile": profile,
            "gaze": trials.get("gaze"), "frames_all": trials["frames"], "seconds_all": trials["seconds"]}


def _time_gaze(gaze: GazeSource) -> dict[str, float]:
    """Add up the seconds ``gaze`` spends in read() and, within it, making samples (_read); the rest is checking."""
    spent = {"read": 0.0, "make": 0.0}
    read, make = gaze.read, gaze._read

    def timed(method: Callable[[float], GazeSamples], key: str) -> Callable[[float], GazeSamples]:
        def call(until: float) -> GazeSamples:
            started = time.perf_counter()
            try:
                return method(until)
            finally:
                spent[key] += time.perf_counter() - started
        return call

    gaze.read, gaze._read = timed(read, "read"), timed(make, "make")  # read() calls self._read: the timed one
    return spent


def overhead_bench(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    protocol = Path(args.protocol).resolve()
    folder = Path(tempfile.mkdtemp(prefix="bench-behavior-"))
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    try:
        for round_ in range(args.rounds):
            for behavior in ((False, True) if round_ % 2 == 0 else (True, False)):  # interleaved, order alternating
                runs[behavior].append(dry_run(protocol, behavior, args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    plain = [s for r in runs[False] for s in r["s_per_gen"]]
    gated = [s for r in runs[True] for s in r["s_per_gen"]]
    trial_s = [s for r in runs[True] for s in r["trial_s"]]
    trial_cpu = [s for r in runs[True] for s in r["trial_cpu"]]
    frames = [f for r in runs[True] for f in r["frames"]]
    trials = [t for r in runs[True] for t in r["trials"]]
    p, g, own = statistics.median(plain), statistics.median(gated), statistics.median(trial_s)
    same = statistics.median(x for r in runs[True] for x in r["own"])
    per_frame_us = sum(trial_s) / max(sum(frames), 1) * 1e6
    cpu_us = sum(trial_cpu) / max(sum(frames), 1) * 1e6
    print(f"in-silico overhead: {protocol.name} ({args.units or 'its own [neuron]'}), {args.generations} generations "
          f"timed (+1 warm-up) per session, {args.rounds} round(s) of a plain and a [behavior] session, interleaved; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"  {'median s/gen':<22} {'plain':>8} {'[behavior]':>10} {'difference':>10}")
    for step in STEPS:
        a = statistics.median(t.get(step, 0.0) for r in runs[False] for t in r["steps"])
        b = statistics.median(t.get(step, 0.0) for r in runs[True] for t in r["steps"])
        print(f"  {step:<22} {a:8.3f} {b:10.3f} {b - a:+10.3f}")
    print(f"  {'whole generation':<22} {p:8.3f} {g:10.3f} {g - p:+10.3f}   ratio {g / p:.3f} (min s/gen: "
          f"{min(plain):.3f} / {min(gated):.3f}, ratio {min(gated) / min(plain):.3f})")
    print(f"  the trials themselves (TrialRunner.run, timed directly): {own:.3f} s/gen median, {same:.1%} of the rest "
          f"of the same generation (median), {own / p:.1%} of a plain one; {statistics.median(frames):.0f} frames and "
          f"{statistics.median(trials):.0f} trials per block (median), {per_frame_us:.0f} µs per frame "
          f"({cpu_us:.0f} µs of CPU)")
    all_frames = sum(sum(f for _, f in r["frames_all"]) for r in runs[True])
    total = sum(sum(s for _, s in r["seconds_all"]) for r in runs[True])
    read = sum(r["gaze"]["read"] for r in runs[True])
    make = sum(r["gaze"]["make"] for r in runs[True])
    us = 1e6 / max(all_frames, 1)
    print(f"  per frame (all blocks): {total * us:.0f} µs = gaze read {read * us:.0f} (the monkey making samples "
          f"{make * us:.0f}, GazeSource.read checking them {(read - make) * us:.0f}) + machine, log and runner "
          f"{(total - read) * us:.0f}")
    for run in runs[True]:
        if run["profile"] is not None:
            text = io.StringIO()
            pstats.Stats(run["profile"], stream=text).sort_stats("tottime").print_stats(12)
            print("  where the trials' time goes (cProfile, tottime; all blocks of the first [behavior] session):")
            print("\n".join("    " + line for line in text.getvalue().splitlines()[4:] if line.strip()))
            break
    # The target is judged on the trials against the rest of their own generation: on a shared machine the model's
    # time moves with other load from one session to the next, and the s/gen ratio with it.
    return [("in-silico s/gen, plain / [behavior]", f"{p:.3f} / {g:.3f} (ratio {g / p:.3f})", ""),
            ("in-silico trials' own time", f"+{same:.1%} on their generation ({own:.3f} s/gen; "
             f"{per_frame_us:.0f} µs/frame ({cpu_us:.0f} CPU) x {statistics.median(frames):.0f} frames/block)",
             f"<= 10%: {'met' if same <= 0.10 else 'NOT met'}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("latency", "overhead"), help="run one of the two measurements")
    parser.add_argument("--breaks", type=int, default=50, help="breaks to time per gaze source (default 50)")
    parser.add_argument("--latency-limit-s", type=float, default=180.0, help="give up on a source after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", default="protocols/dry-run.toml")
    parser.add_argument("--generations", type=int, default=5, help="timed generations per dry run (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of plain and [behavior] dry runs (default 1)")
    parser.add_argument("--units", help="--neuron for the dry runs, e.g. test_cnn:features.7:unit=5 (a small model)")
    parser.add_argument("--weights", help="with --units: their weights (e.g. random)")
    parser.add_argument("--device", default="auto", help="torch device of the dry runs (default auto)")
    parser.add_argument("--profile", action="store_true", help="profile the trials of the [behavior] dry runs")
    args = parser.parse_args()
    if args.only != "overhead" and not os.environ.get("DISPLAY"):
        if shutil.which("xvfb-run") is None:
            print('bench/behavior.py: no screen and no xvfb-run; run under xvfb-run -a -s "-screen 0 1280x1024x24"',
                  file=sys.stderr)
            return 2
        os.environ.setdefault("PSYCHOPYNOPACKAGES", "1")
        os.execvp(XVFB[0], [*XVFB, sys.executable, *sys.argv])
    rows: list[tuple[str, str, str]] = []
    if args.only != "overhead":
        rows += latency_bench(args)
    if args.only != "latency":
        rows += overhead_bench(args)
    print("\nsummary")
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"  {name:<{width}}  {value}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
