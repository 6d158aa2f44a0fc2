"""Images per second of a simulated neuron's forward passes, by the most images per pass (``max_batch``).

    .venv/bin/python bench/forward_batch.py [--unit UNIT] [--images 320] [--sizes 1 4 8 16 32 64 0] [--device cpu]

The same images (the demo's 128 px Fourier size, resized by the neuron) go
through ``SimulatedNeuron`` with each ``max_batch``; 0 means all images in one
pass, the baseline. Prints images/s, the ratio to the baseline, and the CPU
time the process spent in the kernel (page faults of freshly allocated
activations show up there). ``simulators.neuron.DEFAULT_MAX_BATCH`` is chosen
from these figures.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rig.loop.assemble import pick_device  # noqa: E402
from simulators.neuron import SimulatedNeuron, default_max_batch  # noqa: E402


def images_per_second(neuron: SimulatedNeuron, images: torch.Tensor) -> tuple[float, float]:
    """Images/s over all of ``images`` after one warm-up pass, and the kernel CPU seconds it took."""
    neuron(images[:neuron.max_batch])
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    neuron(images)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return len(images) / seconds, after.ru_stime - before.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unit", default="vit_s14_focus:blocks.4.mlp.act:unit=743:token=cls",
                        help="unit spec (default: the demo's unit)")
    parser.add_argument("--images", type=int, default=320, help="images per measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64, 0],
                        help="max_batch values to measure; 0: all images in one pass (the baseline)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.images < 1 or min(args.sizes) < 0:
        parser.error("--images must be >= 1 and --sizes >= 0")
    device = pick_device(args.device)
    images = torch.rand(args.images, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    print(f"bench/forward_batch.py: {args.unit}, {args.images} images, device {device}, "
          f"torch threads {torch.get_num_threads()}, default max_batch here "
          f"{default_max_batch(device)}")
    sizes = [s for s in args.sizes if s != 0] + [0]  # the baseline last, and always
    results = {}
    for size in sizes:
        neuron = SimulatedNeuron([args.unit], device=device, max_batch=size or args.images)
        results[size] = images_per_second(neuron, images)
    baseline = results[0][0]
    print(f"  {'max_batch':>9} {'images/s':>9} {'vs one pass':>12} {'kernel CPU s':>13}")
    for size, (rate, kernel) in results.items():
        label = f"{size}" if size else f"all {args.images}"
        print(f"  {label:>9} {rate:9.1f} {rate / baseline:11.2f}x {kernel:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
