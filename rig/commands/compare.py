"""``rig compare SESSION.h5 [SCREENING.h5 ...] --model M [--model M2] --out DIR``: which model sees like this neuron.

Every session's images (evolved ones regenerated from their codes, reference and
screened photos) and the neuron's mean response to each are fitted, layer by
layer, with cross-validated ridge readouts of each model's features (folds split
by generation), and scored by held-out Pearson r and R², raw and divided by the
noise ceiling, with bootstrap 95% intervals. Writes DIR/compare.csv,
compare.json and compare.png; features are cached in DIR/features/.

  --layers MODEL=L1,L2   layers of MODEL (repeatable; plain L1,L2 with one model); default: 5 over its depth
  --save-twin TWIN.npz   store the best layer's readout: --neuron twin:TWIN.npz makes it a neuron
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rig.commands._options import add_trust_generator, bounded_int
from rig.predictivity.defaults import BOOTSTRAPS, DEFAULT_COMPONENTS, DEFAULT_FOLDS

HELP = "model-neuron predictivity from sessions: cross-validated readouts per model and layer, noise ceiling, twin"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig compare``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("sessions", nargs="+", type=Path, help="evolution and screening session files (HDF5)")
    parser.add_argument("--model", action="append", required=True, help="a registered model (`rig models`); repeat")
    parser.add_argument("--layers", action="append", default=[], metavar="[MODEL=]L1,L2",
                        help="layers to read (module paths, `rig units MODEL`); default: 5 spread over depth")
    parser.add_argument("--out", type=Path, required=True, help="folder for compare.csv, compare.json, compare.png")
    parser.add_argument("--pool", default="mean", help="CNN maps: mean (over space) or grid=K (K x K cells)")
    parser.add_argument("--token", default="cls", choices=["cls", "mean"], help="ViT tokens: class token or mean")
    parser.add_argument("--folds", type=bounded_int(2, 100), default=DEFAULT_FOLDS)
    parser.add_argument("--components", type=bounded_int(1, 10_000), default=DEFAULT_COMPONENTS,
                        help="PCA components before the ridge readout")
    parser.add_argument("--bootstraps", type=bounded_int(10, 100_000), default=BOOTSTRAPS)
    parser.add_argument("--channel", help="the channel compared, by name (sessions with several channels)")
    parser.add_argument("--allow-mixed", action="store_true", help="pool sessions of different neurons")
    parser.add_argument("--save-twin", type=Path, metavar="TWIN.npz", help="store the best layer's readout")
    parser.add_argument("--no-cache", action="store_true", help="compute features again (and store none)")
    parser.add_argument("--device", default="cpu", help="torch device for the models")
    parser.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=0, help="bootstrap and split seed")
    add_trust_generator(parser)


def parse_layers(items: list[str], models: list[str]) -> dict[str, list[str]]:
    """``MODEL=L1,L2`` per model, or plain ``L1,L2`` when one model is compared."""
    layers: dict[str, list[str]] = {}
    for item in items:
        model, sep, names = item.partition("=")
        if not sep:
            if len(models) != 1:
                raise ValueError(f"--layers {item!r}: with several models say whose layers they are, "
                                 f"e.g. --layers {models[0]}={item}")
            model, names = models[0], item
        if model not in models:
            raise ValueError(f"--layers {item!r}: {model!r} is not one of the --model choices {models}")
        listed = [n.strip() for n in names.split(",") if n.strip()]
        if not listed:
            raise ValueError(f"--layers {item!r}: no layer names")
        layers.setdefault(model, []).extend(listed)
    return layers


def run(args: argparse.Namespace) -> int:
    """Compare, write the outputs (and the twin), print the best layer per model and the tests."""
    # Here, not at the top: every command line is built from this module, and these import scikit-learn.
    from rig.predictivity.compare import compare
    from rig.predictivity.features import Readout
    from rig.predictivity.outputs import write_outputs
    from rig.predictivity.stimuli import load_stimuli
    from simulators.models import get_cfg

    models = list(dict.fromkeys(args.model))
    for model in models:
        get_cfg(model)  # an unknown name fails here, listing the registered ones, before any session is read
    layers = parse_layers(args.layers, models)
    readout = Readout(args.pool, args.token)
    stimuli = load_stimuli(args.sessions, args.channel, args.allow_mixed, args.trust_generator)
    comparison = compare(stimuli, models, layers, readout, args.folds, args.components,
                         None if args.no_cache else args.out / "features", args.device, args.seed, args.bootstraps)
    paths = write_outputs(comparison, args.out)
    ceiling = comparison.ceiling
    print(f"rig compare: {comparison.stimuli} stimuli from {len(args.sessions)} session(s); noise ceiling "
          f"{ceiling.reliability:.3f} (max r {ceiling.max_r:.3f}) from {ceiling.repeated_stimuli} repeated stimuli")
    if ceiling.warning:
        print(f"  warning: {ceiling.warning}")
    for model, s in comparison.best().items():
        normalised = f", r/ceiling {s.r_normalised.value:.3f}" if s.r_normalised else ""
        print(f"  {model}: best layer {s.layer} (depth {s.depth:.2f}): r {s.r.value:.3f} "
              f"[{s.r.low:.3f}, {s.r.high:.3f}], R2 {s.r2.value:.3f}{normalised}")
    for test in comparison.tests:
        print(f"  {test.verdict} (difference in r {test.difference.value:.3f} "
              f"[{test.difference.low:.3f}, {test.difference.high:.3f}], p = {test.p_value:.3g})")
    print(f"  features {comparison.seconds['features']:.1f} s, readouts {comparison.seconds['fit']:.1f} s")
    if args.save_twin is not None:
        from rig.predictivity.twin import save_best_twin

        twin = save_best_twin(comparison, stimuli, readout, args.save_twin, args.folds, args.components)
        paths.append(twin)
        print(f"  twin: {twin} (use --neuron twin:{twin})")
    print("  wrote " + ", ".join(str(p) for p in paths))
    return 0
