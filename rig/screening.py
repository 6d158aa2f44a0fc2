"""Running a screening protocol file (``[protocol] kind = "screening"``) into a session file."""
from __future__ import annotations

import argparse
import time

import numpy as np

from protocols.spec import ProtocolSpec
from rig.assemble import Assembly
from rig.controller import BlockReport, Controller
from rig.session import SessionWriter


def run_screening(args: argparse.Namespace, spec: ProtocolSpec, parts: Assembly) -> int:
    """Show the natural image set, write every block, print each channel's score distribution."""
    protocol = parts.protocol
    print(f"rig run: {spec.path} ({spec.name}), screening {len(protocol.image_ids)} natural images "
          f"x {protocol.repeats} repeat(s) in {protocol.generations} block(s), seed {parts.seed}, device {parts.device}")
    print(f"  images:  {parts.provenance['screening']['folder']}")
    print(f"  neuron:  {', '.join(parts.source.channel_names)}")
    print(f"  session: {args.out}")
    session = SessionWriter(args.out, protocol_text=spec.text, protocol_sha256=spec.sha256,
                            protocol_path=str(spec.path), seed=parts.seed, provenance=parts.provenance,
                            reference_ids=list(protocol.image_ids))

    def progress(report: BlockReport) -> None:
        if not args.quiet:
            print(f"block {report.index + 1:4d}/{report.total}  {report.seconds:6.2f} s", flush=True)

    started = time.perf_counter()
    Controller(protocol, parts.display, parts.source, session, progress).run()
    _, means = protocol.mean_responses()
    for channel, name in enumerate(parts.source.channel_names):
        scores = means[:, channel]
        print(f"{name}: natural-image responses mean {np.nanmean(scores):.4g}, "
              f"median {np.nanmedian(scores):.4g}, max {np.nanmax(scores):.4g} over {len(scores)} images")
    print(f"done: {protocol.generations} blocks in {time.perf_counter() - started:.1f} s; wrote {args.out}")
    return 0
