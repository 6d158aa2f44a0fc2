"""Onset timing of the PsychoPy display at a 60 Hz paced refresh.

    PSYCHOPYNOPACKAGES=1 xvfb-run -a -s "-screen 0 1280x1024x24" \\
        .venv/bin/python bench/display_timing.py [--blocks 2] [--stimuli 40] [--on 6] [--off 9] [--image-size 256]

Shows blocks of random images (a lab's generation: 40 stimuli, 6 frames on,
9 off) and prints onset-to-onset intervals against the nominal (on+off)/60 s:
mean, sd, max deviation, stimulus durations and dropped frames; then the cost
of uploading one texture (done in the blank) and of one flip.

Baseline, measured in the same run on the same window: a bare flip loop paced
by the same 60 Hz grid, drawing nothing, taking (on+off)-frame intervals. Its
jitter is the floor this machine's scheduler and Xvfb give; the ratio says
what stimulus drawing and texture uploads add on top of it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.base import REFERENCE, Block  # noqa: E402
from protocols.spec import DisplaySpec  # noqa: E402
from rig.display.psychopy import PsychoPyDisplay, images_to_textures  # noqa: E402


def random_block(index: int, n: int, size: int, generator: torch.Generator) -> Block:
    images = torch.rand(n, 3, size, size, generator=generator)
    return Block(index=index, stimulus_ids=[f"b{index}s{i}" for i in range(n)], kinds=[REFERENCE] * n,
                 threads=np.full(n, -1), code_index=np.full(n, -1), images=images, codes=np.zeros((0, 0, 0)))


def stats_ms(values: np.ndarray) -> str:
    values = np.asarray(values) * 1000
    return f"mean {values.mean():8.3f}  sd {values.std(ddof=1):6.3f}  min {values.min():8.3f}  max {values.max():8.3f}"


def baseline_intervals(display: PsychoPyDisplay, count: int, frames: int) -> np.ndarray:
    """Onset-like intervals from a paced loop that only flips: every ``frames``-th flip, ``count`` of them."""
    flips = []
    for _ in range(count * frames + 1):
        flips.append(display._flip())
    return np.diff(np.asarray(flips)[::frames])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--stimuli", type=int, default=40)
    parser.add_argument("--on", type=int, default=6)
    parser.add_argument("--off", type=int, default=9)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--window", type=int, nargs=2, default=(1024, 768), metavar=("W", "H"))
    args = parser.parse_args()
    if not os.environ.get("DISPLAY"):
        print('display_timing: no screen; run under xvfb-run -a -s "-screen 0 1280x1024x24"', file=sys.stderr)
        return 2

    spec = DisplaySpec(width_cm=40.0, distance_cm=57.0, resolution=tuple(args.window), fullscreen=False, pace=True,
                       size_deg=8.0, on_frames=args.on, off_frames=args.off)
    nominal = (args.on + args.off) / spec.refresh_hz
    load_before = os.getloadavg()[0]  # other work on the machine shows up directly as late frames
    generator = torch.Generator().manual_seed(0)
    with PsychoPyDisplay(spec) as display:
        gaps, durations, dropped, invalid = [], [], 0, 0
        for b in range(args.blocks):
            shown = display.present(random_block(b, args.stimuli, args.image_size, generator))
            gaps.append(np.diff(shown.onset_times))
            durations.append(shown.offset_times - shown.onset_times)
            dropped += int(shown.dropped_frames.sum())
            invalid += int((~shown.valid).sum())
        gaps, durations = np.concatenate(gaps), np.concatenate(durations)
        with display._rushed():  # the same scheduling priority as the blocks
            base = baseline_intervals(display, len(gaps), args.on + args.off)

        textures = images_to_textures(torch.rand(20, 3, args.image_size, args.image_size, generator=generator))
        started = time.perf_counter()
        for texture in textures:
            display._set_image(texture)
        upload = (time.perf_counter() - started) / len(textures)
        flip_costs = []
        for _ in range(60):
            display._draw_frame(stimulus_on=True)
            started = time.perf_counter()
            display.window.flip()
            flip_costs.append(time.perf_counter() - started)

    deviation, base_deviation = np.abs(gaps - nominal), np.abs(base - nominal)
    print(f"display timing: {args.blocks} blocks x {args.stimuli} stimuli, {args.image_size}px images, "
          f"{args.on} on + {args.off} off frames at 60 Hz (nominal onset-to-onset {nominal * 1000:.3f} ms), "
          f"window {args.window[0]}x{args.window[1]}, LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS')}, "
          f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"  onset-to-onset, display   (ms): {stats_ms(gaps)}  max |dev| {deviation.max() * 1000:7.3f}")
    print(f"  onset-to-onset, baseline  (ms): {stats_ms(base)}  max |dev| {base_deviation.max() * 1000:7.3f}")
    print(f"  stimulus duration         (ms): {stats_ms(durations)}  (nominal {args.on / 60 * 1000:.3f})")
    print(f"  dropped frames: {dropped}; invalid presentations: {invalid} of {len(durations)}")
    print(f"  ratio display / baseline: sd {gaps.std(ddof=1) / base.std(ddof=1):.2f}x, "
          f"max |dev| {deviation.max() / max(base_deviation.max(), 1e-9):.2f}x")
    print(f"  texture upload {upload * 1000:.3f} ms per {args.image_size}px image (in the blank); "
          f"flip {np.median(flip_costs) * 1000:.3f} ms median, {np.max(flip_costs) * 1000:.3f} ms max; "
          f"frame period {1000 / 60:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
