"""Latency of gaze on the recording's ADC channels: from the monkey's gaze leaving the window to the flip that
takes the stimulus (or the fixation point) off, for several sizes of the GUI's processing callback.

    PSYCHOPYNOPACKAGES=1 xvfb-run -a -s "-screen 0 1280x1024x24" \\
        .venv/bin/python bench/gaze_adc_latency.py [--buffer-sizes 256,512,1024] [--seconds 20] [--lag-ms 2]

For each buffer size (samples of the GUI's 44.1 kHz audio clock: 256 = 5.8 ms, 512 = 11.6 ms, 1024 = 23.2 ms,
the GUI's default), sim-rig runs in its own process (``rig sim-rig --buffer-size N --gaze-adc ADC1,ADC2
--gaze-map 0.2,0,0,0,0.2,0 --gaze-noise 0.005 --lag-ms L --truth-file T --truth-gaze``, built here with a
neuron that is never shown a stimulus) with a monkey that breaks fixation about three times a second of
fixating. This process shows trials in a PsychoPy window paced to 60 Hz (``[display] pace = true``, Xvfb),
reads gaze with ``[gaze] source = "recording"`` from the ZMQ reader that also scores the recording, and tells
sim-rig every scene change through the side channel (``SimRigLink.on_trial_event``), so the monkey sees what
the window shows.

For every break the trial machine saw, matched to the monkey's own break (sim-rig's truth file):

- **exit**: the first of the monkey's samples (1 kHz, sim-rig's truth) outside the fixation window after the
  break began (time.monotonic);
- **flip**: the first flip after the trial machine's break that shows neither stimulus nor fixation point
  (PsychoPy's clock + the display's monotonic_offset);
- **latency = flip - exit**, in ms and in frames, per break; median and max per buffer size, for breaks with a
  stimulus on screen and for all.

Why the callback size sets it: a sample becomes usable only when its callback's DATA message arrives, which
is after the callback's last sample was acquired (plus the lag): a sample waits U(0, callback) + lag. The
trial machine reads gaze once per frame (4 ms before the flip) and a break changes the next flip: U(0, frame)
more, plus the draw margin. So latency ~ lag + U(0, callback) + U(0, 16.7 ms) + margin: halving the callback
takes about a quarter of a callback off the median and half a callback off the maximum.

Measured on the 2-core development machine (shared, loaded), ``--seconds 25``, lag 2 ms, 30 kHz:

    buffer   callback   exit -> flip median      max                 now - newest sample (median)
    256      5.8 ms     25.2 ms (1.51 frames)    44.8 ms (2.69)      8.7 ms
    512      11.6 ms    27.3 ms (1.64 frames)    40.1 ms (2.41)      11.5 ms
    1024     23.2 ms    33.1 ms (1.99 frames)    46.8 ms (2.81)      14.0 ms

(all breaks, 26-32 each; breaks are stamped +0.9..1.3 ms after the truth's exit: sim-rig's own work on a callback
before it sends it). The maximum is set by the scheduler on a loaded machine as much as by the callback.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from protocols.base import Block  # noqa: E402
from protocols.spec import BehaviorSpec, DisplaySpec, RecordingSpec  # noqa: E402
from rig.behavior.machine import StimulusTiming  # noqa: E402
from rig.behavior.outcomes import TrialOutcome  # noqa: E402
from rig.behavior.parts import part_registry  # noqa: E402
from rig.behavior.runner import TrialRunner  # noqa: E402
from rig.recording.sidechannel import SimRigLink  # noqa: E402
from rig.recording.simrig import SimRigConfig, gaze_calibration, read_truth, serve  # noqa: E402
from rig.recording.source import recording_from_url  # noqa: E402

AUDIO_HZ = 44100.0
GAZE_MAP = (0.2, 0.0, 0.0, 0.0, 0.2, 0.0)
WINDOW_DEG = 1.5
MONKEY = {"break_hazard_hz": 3.0, "blink_rate_hz": 0.0, "acquire_latency_ms": 100.0, "acquire_latency_sd_ms": 20.0,
          "acquire_latency_min_ms": 60.0, "rest_hazard_hz": 0.0, "rest_hazard_per_reward_hz": 0.0}


def block(n: int, index: int) -> Block:
    return Block(index, [f"b{index}s{i}" for i in range(n)], ["generated"] * n, np.zeros(n), np.arange(n),
                 torch.rand(n, 3, 32, 32), np.zeros((n, 2)))


def measure(display, buffer_size: int, seconds: float, lag_ms: float, sample_rate: float, tmp: Path, *,
            timing: StimulusTiming | None = None, stop: Callable[[list], bool] | None = None) -> dict:
    """Trials on ``display`` for ``seconds`` with sim-rig's monkey as the eye, ``buffer_size`` samples a callback.

    ``timing``: the stimuli's (default 3 frames on, 3 off); ``stop(logs)``, asked after each block: end sooner.
    The result keeps the blocks' logs (``logs``), for other measures of the same breaks (bench/behavior.py).
    """
    from rig.display.psychopy import CLOCK, dropped_frames

    block_ms = 1000.0 * buffer_size / AUDIO_HZ
    truth = tmp / f"truth-{buffer_size}.jsonl"
    config = {"data_port": 0, "side_port": 0, "lag_ms": lag_ms, "block_ms": block_ms, "sample_rate": sample_rate,
              "gaze_adc": ("ADC1", "ADC2"), "gaze_map": GAZE_MAP, "gaze_noise_v": 0.005, "gaze_seed": buffer_size,
              "gaze_monkey": MONKEY, "gaze_window_deg": WINDOW_DEG, "truth_file": str(truth), "truth_gaze": True}
    context = multiprocessing.get_context("spawn")
    pipe, child = context.Pipe()
    process = context.Process(target=serve, args=(SimRigConfig(**config), child), daemon=True)
    process.start()
    if not pipe.poll(60):
        process.kill()
        raise RuntimeError("sim-rig did not start")
    ports = pipe.recv()
    offset = display.monotonic_offset
    recording = recording_from_url(RecordingSpec(units=["Electrode 1:1"], connect_timeout_s=20),
                                   f"zmq://127.0.0.1:{ports['data_port']}")
    calibration = tmp / "cal.toml"
    calibration.write_text(gaze_calibration(GAZE_MAP).to_toml())
    gaze = part_registry("gaze").build("recording", {"calibration": str(calibration), "delay_ms": lag_ms})
    gaze.attach_recording(recording, monotonic_offset=offset)
    link = SimRigLink(f"tcp://127.0.0.1:{ports['side_port']}", clock=CLOCK, monotonic_offset=offset)
    spec = BehaviorSpec(stimuli_per_trial=4, hold_ms=100, iti_ms=100, timeout_ms=100, acquire_ms=1000,
                        window_deg=WINDOW_DEG, not_working_s=600)
    runner = TrialRunner(spec, timing or StimulusTiming(3, 3, 0.1), display.frames(60.0), gaze,
                         part_registry("reward").build("log", {}), dropped_frames=dropped_frames,
                         say=lambda message: None)
    runner.add_listener(link.on_trial_event)
    reads: list[tuple[float, float]] = []  # each read's until and its newest sample (display clock)
    read = gaze.read

    def reading(until: float):
        samples = read(until)
        reads.append((until, samples.times[-1] if len(samples) else np.nan))
        return samples

    gaze.read = reading
    recording.start()
    logs = []
    started = time.monotonic()
    end = started + seconds
    try:
        index = 0
        while time.monotonic() < end and not (stop is not None and stop(logs)):
            logs.append(runner.run(block(8, index), lambda position, t: None).log)
            recording.reader.read_next()  # the scorer's share, as between showings
            index += 1
        health = gaze.health()
        elapsed = time.monotonic() - started
    finally:
        runner.close()
        recording.close()
        link.close()
        os.kill(process.pid, signal.SIGTERM)
        summary = pipe.recv().get("eyes", {}) if pipe.poll(10) else {}
        process.join(5)
    eye, records = read_truth(truth)
    times, xs, ys = eye.times, eye.x, eye.y
    truth_breaks = np.array([r["time"] for r in records if r["type"] == "gaze_event" and r["kind"] == "break"])
    latencies, with_stimulus, stamp_errors, waits, unmatched = [], [], [], [], 0
    untils, newest = np.array([r[0] for r in reads]), np.array([r[1] for r in reads])
    for log in logs:
        frames = np.asarray(log.frame_times)
        position = np.asarray(log.frame_position)
        fixation = np.asarray(log.frame_fixation)
        for break_time, outcome in zip(log.trials["break_time"], log.trials["outcome"]):
            if not np.isfinite(break_time) or outcome != int(TrialOutcome.BROKE_FIXATION):
                continue
            seen = break_time + offset  # the first sample outside the window, as stamped, on time.monotonic
            began = truth_breaks[truth_breaks <= seen + 0.002]
            if not len(began):
                continue
            after = (times >= began[-1]) & (np.hypot(xs, ys) > WINDOW_DEG)
            if not after.any():
                continue
            exit_ = times[np.flatnonzero(after)[0]]
            if not -0.005 < seen - exit_ < 0.02:  # not this monkey break (the eye drifted out, or a look)
                unmatched += 1
                continue
            removed = np.flatnonzero((frames > break_time) & (position < 0) & ~fixation)
            if not len(removed):
                continue
            flip = frames[removed[0]] + offset
            before = np.flatnonzero(frames <= break_time)
            latencies.append(flip - exit_)
            with_stimulus.append(bool(len(before) and position[before[-1]] >= 0))
            stamp_errors.append(seen - exit_)
            first = np.flatnonzero(newest >= break_time)  # the read that delivered the first sample outside
            waits.append((untils[first[0]] + offset - exit_, flip - untils[first[0]] - offset) if len(first)
                         else (np.nan, np.nan))
    latencies, with_stimulus = np.array(latencies), np.array(with_stimulus, dtype=bool)
    return {"buffer_size": buffer_size, "callback_ms": block_ms, "latencies": latencies, "with_stimulus": with_stimulus,
            "stamp_errors": np.array(stamp_errors), "waits": np.array(waits).reshape(-1, 2), "health": health,
            "sim_rig": summary,
            "trials": sum(len(log.trials["outcome"]) for log in logs), "unmatched": unmatched,
            "stale": (untils - newest)[np.isfinite(newest)], "logs": logs, "seconds": elapsed}


def line(values: np.ndarray, period: float) -> str:
    if not len(values):
        return "no breaks"
    ms = 1000 * values
    return (f"n={len(values):3d}  median {np.median(ms):5.1f} ms ({np.median(values) / period:4.2f} frames)  "
            f"max {ms.max():5.1f} ms ({values.max() / period:4.2f} frames)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buffer-sizes", default="256,512,1024", help="GUI buffer sizes (samples at 44.1 kHz)")
    parser.add_argument("--seconds", type=float, default=20.0, help="trials per buffer size, in seconds")
    parser.add_argument("--lag-ms", type=float, default=2.0,
                        help="callback end to DATA sent (sim-rig --lag-ms; the source's delay_ms)")
    parser.add_argument("--sample-rate", type=float, default=30000.0)
    args = parser.parse_args(argv)
    from rig.display.psychopy import PsychoPyDisplay

    display = PsychoPyDisplay(DisplaySpec(pace=True, fullscreen=False, resolution=(320, 240), width_cm=20.0,
                                          distance_cm=57.0, size_deg=4.0, on_frames=3, off_frames=3))
    period = display.period
    print(f"PsychoPy window paced at {1 / period:g} Hz (frame {1000 * period:.1f} ms); sim-rig at "
          f"{args.sample_rate:g} Hz, lag {args.lag_ms:g} ms; gaze means of {args.sample_rate / 1000:g} samples "
          f"(1 kHz)", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for size in (int(s) for s in args.buffer_sizes.split(",")):
                result = measure(display, size, args.seconds, args.lag_ms, args.sample_rate, Path(tmp))
                results.append(result)
                h = result["health"]
                print(f"\nbuffer {size} samples = {result['callback_ms']:.1f} ms callbacks "
                      f"({result['callback_ms'] * args.sample_rate / 1000:.0f} samples at {args.sample_rate:g} Hz); "
                      f"{result['trials']} trials; gaze: {h['samples']} samples, unpaired {h['unpaired']}, gaps "
                      f"{h['gaps']}, out of order {h['out_of_order']}, late scenes "
                      f"{result['sim_rig'].get('late_scenes')}; breaks not the monkey's {result['unmatched']}",
                      flush=True)
                print(f"  exit -> flip, stimulus on: {line(result['latencies'][result['with_stimulus']], period)}")
                print(f"  exit -> flip, all breaks:  {line(result['latencies'], period)}")
                if len(result["stamp_errors"]):
                    print(f"  break stamped at the first sample outside, minus the truth's exit: median "
                          f"{1000 * np.median(result['stamp_errors']):+.1f} ms (timestamps, not latency)")
                stale = 1000 * result["stale"]
                print(f"  at each read, now - the newest sample: median {np.median(stale):.1f} ms, 95% "
                      f"{np.percentile(stale, 95):.1f} ms (model: lag + callback/2 + 0.5 = "
                      f"{args.lag_ms + result['callback_ms'] / 2 + 0.5:.1f} ms median)")
                if len(result["waits"]):
                    wait = 1000 * np.nanmedian(result["waits"], axis=0)
                    print(f"  of which: exit -> the read that got it {wait[0]:.1f} ms, that read -> the flip "
                          f"{wait[1]:.1f} ms (medians)")
                expected = args.lag_ms + result["callback_ms"] / 2 + 1000 * period / 2 + 5
                print(f"  model: lag + callback/2 + frame/2 + 5 ms (read 4 ms before the flip, the flip's return) = "
                      f"{expected:.1f} ms median", flush=True)
        finally:
            display.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
