"""Rank the optimizers as the labs do: fixed budget, many units, score noise, normalised scores.

    .venv/bin/python bench/optimizers.py                      # the full ranking (see below for its cost)
    .venv/bin/python bench/optimizers.py --units 5 --noise 0  # a quick run

Every optimizer gets the same budget (``--generations`` × ``--popsize``, default
75 × 40) on each of ``--units`` class-logit units of the bundled
EfficientNet-Lite0, at each noise level. Noise is multiplicative on the scores
the optimizer sees, ``s · (1 + noise · ε)``, ε ~ N(0, 1); the result is always
judged on clean scores. A run's result is the best clean score in its last
generation; results are normalised per unit by the best any optimizer reached
for that unit (over all noise levels). The table gives the mean normalised
score per optimizer and noise level, and each optimizer's own time (ask + tell).

Image space: the weightless Fourier space (867-d at max_frequency 8). A
random-weight DeePSiM fc6 is not an image prior, so it would rank optimizers on
a different problem than the labs'. The model sees ``--input-size`` pixels
(default 64, not 224) so that the ~450 000 forward passes of a full run stay
affordable on a CPU; every run of a generation is scored in one batch.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.generators import FourierImageSpace  # noqa: E402
from protocols.images import to_model_input  # noqa: E402
from protocols.optimizers import build_optimizer  # noqa: E402
from simulators.models import load_model  # noqa: E402
from simulators.neuron import read_units  # noqa: E402
from simulators.units import probe_layers, resolve_unit  # noqa: E402

#: name in the table -> (kind, options)
OPTIMIZERS = {
    "cmaes (pycma full)": ("cmaes", {}),
    "cmaes (pycma diagonal)": ("cmaes", {"diagonal": True}),
    "cholesky-cmaes": ("cholesky-cmaes", {}),
    "genetic": ("genetic", {}),
    "simple-es (reference)": ("simple-es", {}),
}


class Scorer:
    """Class-logit units of EfficientNet-Lite0 at a chosen input size, all read in one pass."""

    def __init__(self, units: list[int], input_size: int) -> None:
        self.model, cfg = load_model("efficientnet_lite0")
        self.cfg = replace(cfg, input_size=input_size)
        layers = probe_layers(self.model, self.cfg)
        self.units = [resolve_unit(self.model, self.cfg, f"efficientnet_lite0:classifier:unit={u}", layers=layers)
                      for u in units]

    def __call__(self, images: torch.Tensor, chunk: int = 1000) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), chunk):
                x = to_model_input(images[start : start + chunk], self.cfg.input_size, self.cfg.mean, self.cfg.std)
                out.append(read_units(self.model, self.units, x).double().numpy())
        return np.concatenate(out)


def run_noise_level(args, names, scorer, generator, noise: float) -> tuple[np.ndarray, dict[str, float]]:
    """All optimizers × units at one noise level; returns results (optimizer, unit) and own seconds."""
    n_units = len(scorer.units)
    opts = {(name, u): build_optimizer(OPTIMIZERS[name][0], dim=generator.code_dim, seed=args.seed + 1000 * u,
                                       popsize=args.popsize, **OPTIMIZERS[name][1])
            for name in names for u in range(n_units)}
    own = dict.fromkeys(names, 0.0)
    noise_rng = np.random.default_rng(args.seed + int(noise * 1000))
    results = np.zeros((len(names), n_units))
    for generation in range(args.generations):
        codes = {}
        for key, opt in opts.items():
            t = time.perf_counter()
            codes[key] = opt.ask()
            own[key[0]] += time.perf_counter() - t
        keys = list(opts)
        with torch.inference_mode():
            images = generator(torch.from_numpy(np.concatenate([codes[k] for k in keys])).float())
        clean = scorer(images).reshape(len(keys), args.popsize, n_units)
        for i, key in enumerate(keys):
            unit_scores = clean[i, :, key[1]]
            seen = unit_scores * (1 + noise * noise_rng.standard_normal(args.popsize)) if noise else unit_scores
            t = time.perf_counter()
            opts[key].tell(codes[key], seen)
            own[key[0]] += time.perf_counter() - t
            if generation == args.generations - 1:
                results[names.index(key[0]), key[1]] = unit_scores.max()
        if args.verbose:
            print(f"  noise {noise}: generation {generation + 1}/{args.generations}", file=sys.stderr)
    return results, own


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=10, help="class-logit units (spread over the 1000 classes)")
    parser.add_argument("--noise", default="0,0.2,0.5", help="comma-separated noise levels")
    parser.add_argument("--generations", type=int, default=75)
    parser.add_argument("--popsize", type=int, default=40)
    parser.add_argument("--input-size", type=int, default=64, help="pixels the model sees")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated table names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.optimizers.split(",")]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        parser.error(f"unknown optimizer(s) {unknown}; valid: {list(OPTIMIZERS)}")
    noises = [float(v) for v in args.noise.split(",")]
    units = [int(u) for u in np.linspace(0, 999, args.units).round()]

    started = time.perf_counter()
    scorer = Scorer(units, args.input_size)
    generator = FourierImageSpace(max_frequency=8, image_size=args.input_size)
    results, own = {}, {}
    for noise in noises:
        results[noise], own[noise] = run_noise_level(args, names, scorer, generator, noise)
    best = np.max(np.stack(list(results.values())), axis=(0, 1))  # per unit, over optimizers and noise
    wall = time.perf_counter() - started

    print(f"bench/optimizers.py: {args.generations} generations x {args.popsize}, {len(units)} class-logit units "
          f"{units} of efficientnet_lite0 at {args.input_size} px, Fourier space ({generator.code_dim}-d), "
          f"torch threads {torch.get_num_threads()}")
    print("  mean normalised score (best clean score of the last generation / best any optimizer reached "
          "for that unit), and the optimizer's own time (ask + tell, s, summed over units)")
    header = f"  {'optimizer':<24}" + "".join(f" {'noise ' + str(n):>10} {'own s':>7}" for n in noises)
    print(header)
    for i, name in enumerate(names):
        row = f"  {name:<24}"
        for noise in noises:
            row += f" {np.mean(results[noise][i] / best):10.3f} {own[noise][name]:7.1f}"
        print(row)
    print(f"  best raw logit per unit: {np.round(best, 2).tolist()}")
    print(f"  wall time {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
