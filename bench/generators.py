"""Generator speed and the optimizer's share of a generation at the labs' code length (n = 4096).

    .venv/bin/python bench/generators.py [--repeats 2] [--optimizer-generations 6] [--device cpu]

1. DeePSiM fc6 images per second (random weights: timing needs no real ones)
   over torch threads × memory format (contiguous, channels_last) × batch size,
   under ``torch.inference_mode`` (and ``no_grad`` once, for comparison).
2. One generation of the labs' loop at n = 4096, λ = 40: fc6 renders 40 images
   (best setting from 1), EfficientNet-Lite0 scores them at 224 px, and each
   optimizer runs ask + tell; the table gives each optimizer's seconds per
   generation and its share of the whole generation, and the size of its
   saved state with the seconds to save it and to restore it into a fresh
   optimizer (what a checkpoint and ``rig run --resume`` cost).
All figures come from the same run. ``--device cuda``: the generator and the model run on the GPU (timed
to completion: the GPU is synchronised before each clock read); torch threads then matter only to the
optimizers, so one setting is tried.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.generators import DeePSiMFc6  # noqa: E402
from protocols.optimizers import build_optimizer  # noqa: E402
from rig.loop.assemble import pick_device  # noqa: E402
from simulators.neuron import SimulatedNeuron  # noqa: E402

OPTIMIZERS = {
    "cholesky-cmaes": ("cholesky-cmaes", {}),
    "genetic": ("genetic", {}),
    "cmaes (pycma diagonal)": ("cmaes", {"diagonal": True}),
    "cmaes (pycma full)": ("cmaes", {}),
}


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it counts that work (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(model: torch.nn.Module, batch: int, n_images: int, repeats: int, mode: str,
                      device: torch.device = torch.device("cpu")) -> float:
    codes = torch.randn(n_images, 4096, generator=torch.Generator().manual_seed(0)).to(device)
    context = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    times = []
    with context():
        model(codes[:2])  # warm-up
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            for i in range(0, n_images, batch):
                model(codes[i : i + batch])
            synchronize(device)
            times.append(time.perf_counter() - start)
    return n_images / min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--threads", default=f"1,{torch.get_num_threads()}")
    parser.add_argument("--batches", default="10,40")
    parser.add_argument("--optimizer-generations", type=int, default=6)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where fc6 and the model run")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device.type != "cpu":
        args.threads = str(torch.get_num_threads())

    torch.manual_seed(0)
    model = DeePSiMFc6().eval().to(device)
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"bench/generators.py: DeePSiM fc6 (random weights), {args.images} images, best of {args.repeats}, "
          f"device {device}{name}")
    print(f"  {'threads':>7} {'format':>14} {'batch':>5} {'mode':>15} {'images/s':>9}")
    rows = []
    default_threads = torch.get_num_threads()
    for threads, fmt, batch in itertools.product([int(t) for t in args.threads.split(",")],
                                                 ("contiguous", "channels_last"),
                                                 [int(b) for b in args.batches.split(",")]):
        torch.set_num_threads(threads)
        model = model.to(memory_format=torch.channels_last if fmt == "channels_last" else torch.contiguous_format)
        rate = images_per_second(model, batch, args.images, args.repeats, "inference_mode", device)
        rows.append((rate, threads, fmt, batch))
        print(f"  {threads:7d} {fmt:>14} {batch:5d} {'inference_mode':>15} {rate:9.2f}")
    best_rate, threads, fmt, batch = max(rows)
    torch.set_num_threads(threads)
    model = model.to(memory_format=torch.channels_last if fmt == "channels_last" else torch.contiguous_format)
    no_grad = images_per_second(model, batch, args.images, args.repeats, "no_grad", device)
    print(f"  {threads:7d} {fmt:>14} {batch:5d} {'no_grad':>15} {no_grad:9.2f}")
    print(f"  best: {best_rate:.2f} images/s with {threads} threads, {fmt}, batch {batch}, inference_mode")

    # One generation of the loop at n = 4096.
    neuron = SimulatedNeuron(["efficientnet_lite0:blocks.5.0:unit=12"], device=device)
    codes = torch.randn(40, 4096, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        synchronize(device)
        start = time.perf_counter()
        images = torch.cat([model(codes[i : i + batch]) for i in range(0, 40, batch)])
        synchronize(device)
        generate_s = time.perf_counter() - start
        neuron(images)  # warm-up at this batch's shape: a GPU picks its kernels per shape on first use
        start = time.perf_counter()
        neuron(images)  # returns scores on the host: done when it returns
        score_s = time.perf_counter() - start
    print(f"\n  one generation at n = 4096, popsize 40: fc6 renders 40 images in {1e3 * generate_s:.1f} ms, "
          f"efficientnet_lite0 scores them in {1e3 * score_s:.1f} ms")
    print(f"  {'optimizer':<24} {'ask+tell s/gen':>14} {'share of generation':>20} {'state size':>12} "
          f"{'save s':>7} {'restore s':>9}")
    rng = np.random.default_rng(0)
    for name, (kind, options) in OPTIMIZERS.items():
        opt = build_optimizer(kind, dim=4096, seed=0, **options)
        times = []
        for _ in range(args.optimizer_generations):
            start = time.perf_counter()
            x = opt.ask()
            scores = -np.sum((x - 1.0) ** 2, axis=1) + rng.standard_normal(40)
            opt.tell(x, scores)
            times.append(time.perf_counter() - start)
        per_gen = statistics.mean(times[1:])  # the first pays one-off set-up
        share = per_gen / (per_gen + generate_s + score_s)
        start = time.perf_counter()
        state = opt.get_state()
        save_s = time.perf_counter() - start
        fresh = build_optimizer(kind, dim=4096, seed=1, **options)
        start = time.perf_counter()
        fresh.set_state(state)
        restore_s = time.perf_counter() - start
        if not np.array_equal(fresh.ask(), opt.ask()):
            raise SystemExit(f"{name}: the restored optimizer proposes other codes")
        print(f"  {name:<24} {per_gen:14.3f} {share:20.1%} {len(state) / 1e6:10.2f} MB {save_s:7.2f} {restore_s:9.2f}")
    torch.set_num_threads(default_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
