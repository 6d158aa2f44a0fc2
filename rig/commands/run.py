"""``rig run``: run a protocol file into a new session file, with progress and figures."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from protocols.spec import load_protocol
from rig.assemble import assemble, pick_device, resolve_neuron
from rig.controller import BlockReport, Controller
from rig.outputs import write_session_outputs
from rig.session import SessionWriter, read_session


HELP = "run a protocol file into a new session file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig run``."""
    parser.add_argument("protocol", type=Path, help="protocol file (TOML), e.g. protocols/dry-run.toml")
    parser.add_argument("--out", type=Path, required=True, help="session file to create (HDF5)")
    parser.add_argument("--neuron", action="append", metavar="UNIT",
                        help="unit spec MODEL:LAYER:unit=N[:pos=Y,X][:token=cls|mean|N]; repeat for several "
                             "channels (default: the protocol file's [neuron])")
    parser.add_argument("--weights", help="model weights: a file, 'random' (explicit only), or 'default'")
    parser.add_argument("--generations", type=int, help="override the protocol's number of generations")
    parser.add_argument("--seed", type=int, help="override the protocol's seed")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--quiet", action="store_true", help="no per-generation progress lines")


def run(args: argparse.Namespace) -> int:
    """Validate everything, run the loop, then write the best image(s) and trajectory plot."""
    spec = load_protocol(args.protocol)
    neuron = resolve_neuron(spec, args.neuron, args.weights)
    device = pick_device(args.device)
    parts = assemble(spec, neuron, device=device, seed=args.seed, generations=args.generations)
    protocol = parts.protocol

    print(f"rig run: {spec.path} ({spec.name}), {protocol.generations} generations, "
          f"{protocol.threads} thread(s) x {protocol.optimizers[0].popsize} images "
          f"+ {len(protocol.reference_ids)} reference images, seed {parts.seed}, device {device}")
    print(f"  neuron:    {', '.join(neuron.units)} (weights: {neuron.weights or 'model default'})")
    print(f"  generator: {type(parts.generator).__name__} {spec.generator}")
    if spec.generator["kind"] == "fourier":
        print("             (a weightless Fourier image space, used where no DeePSiM GAN weights are installed)")
    print(f"  optimizer: {spec.optimizer}")
    print(f"  session:   {args.out}")

    session = SessionWriter(
        args.out,
        protocol_text=spec.text,
        protocol_sha256=spec.sha256,
        protocol_path=str(spec.path),
        seed=parts.seed,
        provenance=parts.provenance,
        reference_ids=protocol.reference_ids,
    )

    def progress(report: BlockReport) -> None:
        if args.quiet:
            return
        stats = protocol.history[-1]
        best = max(s.max for s in stats)
        mean = float(np.mean([s.mean for s in stats]))
        print(f"gen {report.index + 1:4d}/{report.total}  best {best:10.4g}  mean {mean:10.4g}  "
              f"{report.seconds:6.2f} s/gen", flush=True)

    started = time.perf_counter()
    Controller(protocol, parts.display, parts.source, session, progress).run()
    elapsed = time.perf_counter() - started

    recorded = read_session(args.out)
    stem = args.out.with_suffix("")
    written = write_session_outputs(recorded, parts.generator, stem)
    first = protocol.history[0]
    last = protocol.history[-1]
    for thread in range(protocol.threads):
        print(f"thread {thread}: mean score {first[thread].mean:.4g} -> {last[thread].mean:.4g}, "
              f"best {max(h[thread].max for h in protocol.history):.4g}")
    print(f"done: {len(recorded.blocks)} blocks in {elapsed:.1f} s; wrote {args.out}")
    for path in written:
        print(f"      {path}")
    sys.stdout.flush()
    return 0
