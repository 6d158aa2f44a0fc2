"""Evaluations per second with several evolution threads: batched in one block versus one after another.

    .venv/bin/python bench/threads.py [--threads 1 4 16] [--generations 2] [--layer LAYER] [--device cpu]

For each thread count N, the same N threads (one CMA-ES and one unit each,
the demo's Fourier generator, 40 images per thread, 10 reference photos per
block) run through the real controller in two ways, in this run:

- batched: one session with N threads interleaved in each block, so all
  N x 40 + 10 images go through the model in one forward pass that reads all
  N units;
- sequential: N one-thread sessions run one after another, each block with its
  own 40 + 10 images and one forward pass.

An evaluation is one generated image scored for its thread. Each run's first
generation is a warm-up and is not timed, nor is its last, which also stores
every optimizer's state (a checkpoint: a session stores one every 10 blocks
and at its end; at 16 threads it can take longer than the generation); the
figure is the median over the generations between. Prints a table with
evaluations per second and the batched/sequential ratio.

Then the ceiling, measured in the same run: the model's floating-point work
per image (torch's FlopCounterMode: matrix products, convolutions, attention),
the device's rate on a large matrix product, and from them the fraction of that
rate the batched runs reached. Batching cannot lower the work per image; it can
only skip repeated work (the reference images, scored once per block instead
of once per thread) and raise the achieved rate towards the matrix-product
rate. The printed bound is the product of those two gains.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.spec import load_protocol  # noqa: E402
from rig.loop.assemble import NeuronChoice, assemble, pick_device  # noqa: E402
from rig.loop.controller import BlockReport, Controller  # noqa: E402
from rig.session import SessionWriter  # noqa: E402
from simulators.neuron import SimulatedNeuron  # noqa: E402

POPSIZE = 40
REFERENCES = 10

# The demo's image space and optimizer (protocols/dry-run.toml), with N threads.
PROTOCOL = """
[protocol]
kind = "evolution"
name = "bench-threads"
generations = {generations}
seed = 1

[evolution]
threads = {threads}

[generator]
kind = "fourier"
max_frequency = 8
image_size = 128

[optimizer]
kind = "cmaes"
popsize = {popsize}
sigma0 = 3.0

[references]
source = "foolbox-imagenet"
count = {references}
"""


def thread_units(layer: str, threads: int, token: str | None) -> list[str]:
    """One distinct unit of ``layer`` per thread (units 0, 7, 14, ...)."""
    suffix = f":token={token}" if token else ""
    return [f"{layer}:unit={7 * t}{suffix}" for t in range(threads)]


def run_session(units: list[str], generations: int, device: torch.device, tmp: Path) -> list[float]:
    """Run one session with ``len(units)`` threads through the controller; seconds per timed generation.

    ``generations`` + 2 are run: a warm-up and a last one (with the session's one checkpoint) are not timed.
    """
    path = tmp / f"threads{len(units)}.toml"
    path.write_text(PROTOCOL.format(generations=generations + 2, threads=len(units), popsize=POPSIZE,
                                    references=REFERENCES))
    spec = load_protocol(path)
    parts = assemble(spec, NeuronChoice(tuple(units), None), device=device)
    reports: list[BlockReport] = []
    out = tmp / f"session-{time.monotonic_ns()}.h5"
    session = SessionWriter(out, protocol_text=spec.text, protocol_sha256=spec.sha256, protocol_path=str(path),
                            seed=parts.seed, provenance=parts.provenance,
                            reference_ids=parts.protocol.reference_ids)
    # No checkpoint but the session's last: the generations timed are the steady state, every one alike.
    Controller(parts.protocol, parts.display, parts.source, session, reports.append,
               checkpoint_every=generations + 2).run()
    out.unlink()
    return [r.seconds for r in reports[1:-1]]  # the first pays one-off warm-up costs, the last a checkpoint


def model_flops_per_image(unit: str, device: torch.device) -> float:
    """Floating-point operations of one image's forward pass up to ``unit``'s layer (as the runs do)."""
    neuron = SimulatedNeuron([unit], device=device)
    images = torch.rand(2, 3, 128, 128)  # the protocol's Fourier images, resized by the neuron as in a run
    with FlopCounterMode(display=False) as counter:
        neuron(images)
    return counter.get_total_flops() / len(images)


def matmul_flops_per_second(device: torch.device, size: int = 2048, seconds: float = 3.0,
                            dtype: torch.dtype = torch.float32) -> float:
    """The device's rate in ``dtype`` on one large matrix product: what a compute-bound model can approach."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    torch.mm(a, b)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        done += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return done * 2 * size**3 / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--generations", type=int, default=2, help="timed generations per session (+1 warm-up, +1 checkpointed last)")
    parser.add_argument("--layer", default="vit_s14_focus:blocks.4.mlp.act",
                        help="MODEL:LAYER whose units the threads follow (default: the demo's layer)")
    parser.add_argument("--token", default="cls", help="token for ViT layers; '' for CNN layers")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.generations < 1 or min(args.threads) < 1:
        parser.error("--generations and --threads must be >= 1")
    device = pick_device(args.device)

    print(f"bench/threads.py: {args.layer} (token {args.token or '-'}), {POPSIZE} images per thread + "
          f"{REFERENCES} references per block, {args.generations} timed generations (+1 warm-up, +1 last), "
          f"device {device}, torch threads {torch.get_num_threads()}")
    print(f"  {'threads':>7} {'batched ev/s':>13} {'sequential ev/s':>16} {'ratio':>6}   "
          f"{'batched s/gen':>13} {'sequential s/gen':>16}")
    batched_rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for n in args.threads:
            units = thread_units(args.layer, n, args.token or None)
            batched = statistics.median(run_session(units, args.generations, device, tmp))
            # Same threads, one session each, one after another: a generation of all N threads
            # costs the sum of the N sessions' generation times.
            per_thread = [statistics.median(run_session([u], args.generations, device, tmp)) for u in units]
            sequential = sum(per_thread)
            evaluations = n * POPSIZE
            batched_rates[n] = (evaluations + REFERENCES) / batched  # images through the model per second
            print(f"  {n:>7} {evaluations / batched:13.1f} {evaluations / sequential:16.1f} "
                  f"{sequential / batched:5.2f}x   {batched:13.3f} {sequential:16.3f}", flush=True)

    flops = model_flops_per_image(thread_units(args.layer, 1, args.token or None)[0], device)
    peak = matmul_flops_per_second(device)
    print(f"ceiling: {flops / 1e9:.2f} GFLOP per image; this device's float32 matrix product runs at "
          f"{peak / 1e9:.0f} GFLOP/s")
    print(f"  {'threads':>7} {'achieved GFLOP/s':>17} {'of peak':>8} {'skipped work':>13} {'bound on ratio':>15}")
    for n, images_per_second in batched_rates.items():
        achieved = images_per_second * flops
        skipped = n * (POPSIZE + REFERENCES) / (n * POPSIZE + REFERENCES)
        print(f"  {n:>7} {achieved / 1e9:17.0f} {achieved / peak:8.0%} {skipped:12.2f}x "
              f"{skipped * peak / achieved:14.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
