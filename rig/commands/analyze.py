"""``rig analyze``: the study's analyses on session files (HDF5) or CSV score tables.

  rig analyze trajectory  FILE [--thread N]
  rig analyze convergence FILE... [--thread N] [--thresholds 0.5 0.8]
  rig analyze prototype   --prototype FILE... --natural FILE... [--prototype-column C] [--natural-column C]
  rig analyze nearest     SESSION.h5 --natural foolbox-imagenet|FOLDER|SCREENING.h5 [--k 5] [--network auto]

Each FILE may be a session file or a CSV table (e.g. the study's tables under shared/data/study-scores).
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np

from rig.analysis.convergence import DEFAULT_THRESHOLDS, convergence
from rig.analysis.prototype import prototype_vs_natural
from rig.analysis.sources import (is_session_file, load_prototype_scores, load_scores, load_trajectory,
                                  session_thread, session_threads)
from rig.commands._options import add_trust_generator
from rig.session import read_session

HELP = "analyses: trajectory, convergence, prototype vs natural images, nearest natural images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands of ``rig analyze``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="analysis", required=True)

    p = sub.add_parser("trajectory", help="mean and max score per generation, with the reference images")
    p.add_argument("file", help="session file or CSV table with mean (avg_scores) and max (max_scores) columns")
    p.add_argument("--thread", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("convergence", help="first generation whose min-max-normalised mean reaches each threshold")
    p.add_argument("files", nargs="+", help="session files (every thread) or CSV tables")
    p.add_argument("--thread", type=int, help="only this thread of each session (default: all)")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("prototype", help="prototype vs natural images: %% over mean, ratio to best, percentile")
    p.add_argument("--prototype", nargs="+", required=True,
                   help="session files (each thread's best score) or CSV tables of prototype scores")
    p.add_argument("--natural", nargs="+", required=True,
                   help="one per --prototype: a screening/evolution session (its natural images) or a CSV table")
    p.add_argument("--prototype-column", help="CSV column of prototype scores (default: the only one)")
    p.add_argument("--natural-column", help="CSV column of natural scores (default: the only one)")
    p.add_argument("--channel", default="0", help="natural session channel, index or name (default 0)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("nearest", help="natural images nearest to a prototype in another network's features")
    p.add_argument("session", help="evolution session file")
    p.add_argument("--natural", default="foolbox-imagenet",
                   help="foolbox-imagenet (bundled), an image folder, or a screening session file")
    p.add_argument("--thread", type=int, default=0)
    p.add_argument("--k", type=int, default=5)
    add_trust_generator(p)
    p.add_argument("--network", default="auto", help="auto (ResNet-101 if its weights are present, else "
                                                      "efficientnet_lite0), resnet101, efficientnet_lite0")
    p.add_argument("--json", action="store_true")


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "never"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _pct(value: float) -> str:
    return "undefined (natural mean <= 0: the scale has no true zero)" if math.isnan(value) else f"{value:.4g}%"


def _trajectory(args: argparse.Namespace) -> int:
    t = load_trajectory(args.file, args.thread)
    if args.json:
        print(json.dumps(t.rows()))
        return 0
    print(f"{'generation':>10}  {'mean':>10}  {'max':>10}  {'reference mean':>14}")
    for row in t.rows():
        print(f"{row['generation']:>10}  {_fmt(row['mean']):>10}  {_fmt(row['max']):>10}  "
              f"{_fmt(row['reference_mean']):>14}")
    return 0


def _convergence(args: argparse.Namespace) -> int:
    results = []
    for path in args.files:
        if is_session_file(path):
            threads = [args.thread] if args.thread is not None else [t.thread for t in session_threads(read_session(path))]
        else:
            threads = [0]
        for thread in threads:
            t = load_trajectory(path, thread)
            c = convergence(t.mean, args.thresholds, t.generations)
            results.append({"file": str(path), "thread": thread, "generations": len(t.mean),
                            **{f"reach_{k:g}": v for k, v in c.reached.items()}})
    if args.json:
        print(json.dumps(results))
        return 0
    keys = [f"reach_{k:g}" for k in args.thresholds]
    print("  ".join(["file", "thread", "generations", *[f"first gen >= {k:g}" for k in args.thresholds]]))
    for r in results:
        print("  ".join([r["file"], str(r["thread"]), str(r["generations"]), *[_fmt(r[k]) for k in keys]]))
    return 0


def _prototype(args: argparse.Namespace) -> int:
    if len(args.prototype) != len(args.natural):
        raise ValueError(f"{len(args.prototype)} --prototype files but {len(args.natural)} --natural files; "
                         "give one natural set per prototype file")
    channel = int(args.channel) if args.channel.isdigit() else args.channel
    results = []
    for proto_path, natural_path in zip(args.prototype, args.natural):
        prototypes = load_prototype_scores(proto_path, args.prototype_column)
        natural = load_scores(natural_path, args.natural_column, channel)
        c = prototype_vs_natural(prototypes, natural)
        results.append({"prototype_file": proto_path, "natural_file": natural_path, "prototypes": int(np.size(prototypes)),
                        **c.as_dict()})
    if args.json:
        print(json.dumps(results))
        return 0
    for r in results:
        print(f"{r['prototype_file']} vs {r['natural_file']}")
        print(f"  best of {r['prototypes']} prototype(s): {_fmt(r['prototype'])}; natural images: "
              f"{int(r['natural_count'])}, mean {_fmt(r['natural_mean'])}, best {_fmt(r['natural_best'])}")
        print(f"  percent over natural mean: {_pct(r['percent_over_mean'])}   ratio to best natural: "
              f"{_fmt(r['ratio_to_best'])}   percentile: {_fmt(r['percentile'])}")
    return 0


def _nearest(args: argparse.Namespace) -> int:
    from rig.analysis.images import load_natural_images, render, session_generator
    from rig.analysis.nearest import FeatureExtractor, nearest_natural_images
    from rig.analysis.outputs import best_code

    session = read_session(args.session)
    t = session_thread(session, args.thread)
    code, score, generation = best_code(session, t.thread, t.channel)
    prototype = render(session_generator(session, trust_generator=args.trust_generator), code[None])
    extractor = FeatureExtractor(args.network)
    natural, ids = load_natural_images(args.natural, extractor.cfg.input_size)
    found = nearest_natural_images(prototype, natural, args.k, extractor)
    rows = [{"rank": r + 1, "image": ids[i], "cosine": float(s)}
            for r, (i, s) in enumerate(zip(found.indices[0], found.similarities[0]))]
    if args.json:
        print(json.dumps({"network": extractor.name, "prototype_score": score, "generation": generation,
                          "neighbours": rows}))
        return 0
    print(f"prototype of thread {t.thread} ({t.name}), score {score:.4g} at generation {generation}; "
          f"{extractor.name} penultimate features, cosine similarity, {len(ids)} natural images")
    for row in rows:
        print(f"  {row['rank']:2d}. {row['image']:<40} {row['cosine']:.4f}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the chosen analysis and print its result."""
    return {"trajectory": _trajectory, "convergence": _convergence, "prototype": _prototype,
            "nearest": _nearest}[args.analysis](args)
