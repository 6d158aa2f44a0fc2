"""``rig report SESSION.h5 ... --out DIR``: a self-contained HTML report with PNG figures.

Natural-image distributions come from screening sessions given with --natural
(matched on the unit's channel name), else from the reference images shown
during each evolution.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rig.commands._options import add_trust_generator
from rig.analysis.convergence import DEFAULT_MIN_GAIN, check_min_gain

HELP = "HTML report of evolution sessions: trajectories, prototypes, natural images, convergence"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig report``."""
    parser.add_argument("sessions", nargs="+", type=Path, help="evolution session files (HDF5)")
    parser.add_argument("--out", type=Path, required=True, help="folder for index.html and the figures")
    parser.add_argument("--natural", nargs="*", type=Path, default=[], help="screening session files")
    parser.add_argument("--network", default="auto", help="feature network for nearest natural images: auto "
                                                          "(ResNet-101 if its weights are present, else "
                                                          "efficientnet_lite0), resnet101, efficientnet_lite0")
    parser.add_argument("--k", type=int, default=5, help="nearest natural images to show")
    parser.add_argument("--no-nearest", action="store_true", help="skip the nearest-natural-images analysis")
    parser.add_argument("--compare", type=Path, metavar="DIR", help="add the predictivity section of a "
                                                                       "`rig compare --out DIR` folder")
    # As rig sweep's --min-gain, against the natural images the report uses (a screening, else the references).
    parser.add_argument("--min-gain", type=float, default=DEFAULT_MIN_GAIN, metavar="K",
                        help="an evolution evolved when its last generation's mean beats the first by more than K SDs "
                             "of the natural images' responses; only those get a convergence "
                             f"(default {DEFAULT_MIN_GAIN:g})")
    add_trust_generator(parser)


def run(args: argparse.Namespace) -> int:
    """Build the report and print where it is."""
    # Here, not at the top: every command line is built from this module, and the report imports
    # matplotlib and scipy (seconds of start-up).
    from rig.analysis.report import build_report

    min_gain = check_min_gain(args.min_gain, "--min-gain")  # refused before anything is read or written
    page = build_report(args.sessions, args.out, args.natural, args.network, args.k, not args.no_nearest,
                        trust_generator=args.trust_generator, compare=args.compare, min_gain=min_gain)
    print(f"rig report: wrote {page} ({len(list(page.parent.glob('*.png')))} figures)")
    return 0
