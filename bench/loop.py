"""Time per generation of the demo configuration, split by step.

    .venv/bin/python bench/loop.py [--protocol protocols/dry-run.toml] [--generations 10] [--device cuda]
                                   [--precision fp32|bf16|fp16] [--runtime eager|compiled|onnxruntime]

Prints the median seconds per generation for the generator, the model
(response source), the optimizer (ask + tell) and session writing, and each
step's share of the whole; then the loop's overhead: its time outside the
generator and the model (optimizer, session writing, the controller itself),
median over generations, as a share of a generation. Where the model is fast
(a GPU) that overhead is what remains; the target there is <= 5%. All figures
come from the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.spec import load_protocol  # noqa: E402
from rig.loop.assemble import assemble, pick_device, resolve_neuron  # noqa: E402
from rig.loop.controller import BlockReport, Controller  # noqa: E402
from rig.session import SessionWriter  # noqa: E402

STEPS = {
    "generator": ("protocol_generate",),
    "model": ("present_and_record",),  # headless display: all of it is the simulated neuron
    "optimizer": ("protocol_ask", "protocol_tell"),
    "session write": ("write",),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", type=Path, default=Path("protocols/dry-run.toml"))
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default=None, help="[neuron] precision (default: the protocol's)")
    parser.add_argument("--runtime", default=None, help="[neuron] runtime (default: the protocol's)")
    args = parser.parse_args()

    spec = load_protocol(args.protocol)
    choices = {k: v for k, v in (("precision", args.precision), ("runtime", args.runtime)) if v is not None}
    if choices:
        spec = dataclasses.replace(spec, neuron=dataclasses.replace(spec.neuron, **choices))
    device = pick_device(args.device)
    parts = assemble(spec, resolve_neuron(spec, None, None), device=device, generations=args.generations + 1)
    reports: list[BlockReport] = []
    with tempfile.TemporaryDirectory() as tmp:
        session = SessionWriter(Path(tmp) / "bench.h5", protocol_text=spec.text, protocol_sha256=spec.sha256,
                                protocol_path=str(spec.path), seed=parts.seed, provenance=parts.provenance,
                                reference_ids=parts.protocol.reference_ids)
        started = time.perf_counter()
        Controller(parts.protocol, parts.display, parts.source, session, reports.append).run()
        total = time.perf_counter() - started
    reports = reports[1:]  # the first generation pays one-off warm-up costs

    print(f"bench/loop.py: {spec.path}, {len(reports)} generations timed (+1 warm-up), device {device}"
          f"{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}, "
          f"torch threads {torch.get_num_threads()}, neuron {parts.record.precision} {parts.record.runtime}")
    print(f"  {len(parts.protocol.reference_ids) + parts.protocol.optimizers[0].popsize * parts.protocol.threads} "
          f"images per generation, code length {parts.generator.code_dim}")
    per_generation = statistics.median(r.seconds for r in reports)
    print(f"  {'step':<14} {'median s/gen':>12} {'share':>7}")
    for step, keys in STEPS.items():
        seconds = statistics.median(sum(r.timings[k] for k in keys) for r in reports)
        print(f"  {step:<14} {seconds:12.4f} {seconds / per_generation:7.1%}")
    print(f"  {'whole loop':<14} {per_generation:12.4f} {1:7.1%}")
    # Per generation, then the median: the shares of one generation, not of medians taken apart.
    outside = [(r.seconds - sum(r.timings[k] for k in STEPS["generator"] + STEPS["model"])) / r.seconds
               for r in reports]
    print(f"  loop overhead (outside generator and model): {statistics.median(outside):.1%} of a generation "
          f"(median; {min(outside):.1%}..{max(outside):.1%}; target on a GPU <= 5%)")
    print(f"  wall time {total:.1f} s for {len(reports) + 1} generations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
