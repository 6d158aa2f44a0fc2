"""Whether CUDA graphs pay for a simulated neuron's pass on a GPU: eager against graph replay, in one run.

    python bench/cuda_graphs.py [--device cuda] [--batches 50 256] [--repeats 50]

For the demo's ViT-S/14 unit and an EfficientNet-Lite0 unit, in fp32 and bf16, at each batch size (50 is
one demo generation: 40 codes + 10 reference photos): one pass of the model up to the unit's layer over
preprocessed images, run eagerly, and the same pass captured once in a ``torch.cuda.CUDAGraph`` and
replayed. Preprocessing stays outside the graph: its checks read the images' range back to the host.
Prints milliseconds per pass for each (median of ``--repeats``, the GPU synchronised around each), the
ratio, and the largest difference between the two's unit values (a replay must compute the same thing).
A graph removes the CPU's kernel launches; it pays where a pass is many small kernels, as a small batch is.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rig.loop.assemble import pick_device  # noqa: E402
from simulators.neuron import SimulatedNeuron  # noqa: E402

UNITS = {"ViT-S/14 (demo)": "vit_s14_focus:blocks.4.mlp.act:unit=743:token=cls",
         "EfficientNet-Lite0": "efficientnet_lite0:blocks.5.0:unit=3"}


def median_ms(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall milliseconds of ``run()``, the GPU synchronised before and after each."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def captured(neuron: SimulatedNeuron, images: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor,
                                                                      torch.Tensor]:
    """(graph, its input tensor, its output tensor) of one pass over ``images``' shape."""
    static_in = images.clone()
    side = torch.cuda.Stream(images.device)
    side.wait_stream(torch.cuda.current_stream(images.device))
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graphs asks
        for _ in range(3):
            neuron.unit_values(static_in)
    torch.cuda.current_stream(images.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = neuron.unit_values(static_in)
    return graph, static_in, static_out


def eager_and_replay(neuron: SimulatedNeuron, images: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """(eager ms, graph-replay ms, largest |difference| of their unit values) of one pass over ``images``.

    ``images`` are model input (:meth:`SimulatedNeuron.preprocess`).
    """
    device = images.device
    with torch.inference_mode():
        eager_out = neuron.unit_values(images)
        eager = median_ms(lambda: neuron.unit_values(images), repeats, device)
    with torch.no_grad():  # captured outside inference mode: its tensors may be reused later
        graph, static_in, static_out = captured(neuron, images)
        static_in.copy_(images)
        graph.replay()
        diff = float((static_out.float() - eager_out.float()).abs().max())
        replay = median_ms(graph.replay, repeats, device)
    return eager, replay, diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[50, 256])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cuda":
        print("bench/cuda_graphs.py: CUDA graphs need a CUDA GPU; this machine has none", file=sys.stderr)
        return 2
    print(f"bench/cuda_graphs.py: device {device} ({torch.cuda.get_device_name(device)}), "
          f"median of {args.repeats} passes")
    print(f"  {'unit':<20} {'precision':<9} {'batch':>5} {'eager ms':>9} {'graph ms':>9} {'speed-up':>8} "
          f"{'max |diff|':>10}")
    generator = torch.Generator().manual_seed(0)
    for label, unit in UNITS.items():
        for precision in ("fp32", "bf16"):
            neuron = SimulatedNeuron([unit], device=device, precision=precision)
            for batch in args.batches:
                images = neuron.preprocess(torch.rand(batch, 3, 128, 128, generator=generator).to(device))
                try:
                    eager, replay, diff = eager_and_replay(neuron, images, args.repeats)
                except Exception as exc:  # a pass that cannot be captured is a finding too: say why
                    print(f"  {label:<20} {precision:<9} {batch:5d} failed: {type(exc).__name__}: {str(exc)[:100]}")
                    continue
                print(f"  {label:<20} {precision:<9} {batch:5d} {eager:9.3f} {replay:9.3f} "
                      f"{eager / replay:7.2f}x {diff:10.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
