"""A simulated neuron's precision and runtime choices: speed, fidelity against fp32 eager, and the evolution.

    .venv/bin/python bench/precision.py [--quick] [--device auto] [--images 1000] [--generations 30]

For the demo's ViT-S/14 unit and an EfficientNet-Lite0 unit, every ``[neuron] precision`` x ``runtime``
choice this device runs (fp16 only on a GPU; ONNX Runtime fp32 only), measured in this run:

- images per second scoring the image set (after a warm-up pass of each batch size; the first pass's cost,
  compiling or exporting included, is printed apart as "build s");
- the share of the matching peak: images/s x the model's FLOPs per image (torch's FlopCounterMode) over the
  rate of a large matrix product in fp32 or bf16 (fp16 for fp16), measured here;
- fidelity against fp32 eager on the image set (the 20 bundled photos plus random codes, sigma0 = 3, of the
  demo's generator): Spearman rank correlation and the largest score difference relative to the largest
  fp32 score's magnitude;

then the demo's dry run (protocols/dry-run.toml, ``--generations``) under each choice with the demo's seed:
its best score and the first generation whose normalised mean reached 50%; fp32 eager also with two more
seeds, for the seed-to-seed spread. The rule (issue 18): the default stays fp32 eager unless a faster choice
keeps Spearman >= 0.999 and its dry run's outcome within that spread; ONNX Runtime met it on a CPU and is the
default there (simulators.runtime.default_runtime). ``--quick``: 200 images, 10 generations.
``--choices`` and ``--dry-runs`` (``PRECISION:RUNTIME`` ..., or ``none``) restrict what is measured.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dry_runs import dry_run, spec_with  # noqa: E402
from threads import matmul_flops_per_second, model_flops_per_image  # noqa: E402
from protocols.generators import build_generator  # noqa: E402
from protocols.spec import load_protocol  # noqa: E402
from rig.loop.assemble import pick_device  # noqa: E402
from simulators.natural_images import load_foolbox_imagenet  # noqa: E402
from simulators.neuron import SimulatedNeuron  # noqa: E402

PROTOCOL = Path("protocols/dry-run.toml")
UNITS = {"ViT-S/14 (demo)": "vit_s14_focus:blocks.4.mlp.act:unit=743:token=cls",
         "EfficientNet-Lite0": "efficientnet_lite0:blocks.5.0:unit=3"}
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SPREAD_SEEDS = 3


def choices(device: torch.device) -> list[tuple[str, str]]:
    """Every (precision, runtime) this device runs; fp32 eager first (the reference)."""
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    found = [(p, r) for p in precisions for r in ("eager", "compiled")]
    return found + [("fp32", "onnxruntime")]


def image_set(count: int, device: torch.device) -> torch.Tensor:
    """The 20 bundled photos plus random codes (sigma0 = 3) of the demo's generator, at its image size."""
    spec = load_protocol(PROTOCOL)
    generator = build_generator(**spec.generator).to(device).eval()
    photos, _, _ = load_foolbox_imagenet(generator.image_size)
    codes = 3.0 * torch.randn(count - len(photos), generator.code_dim, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        rendered = torch.cat([generator(chunk.to(device)).cpu() for chunk in codes.split(100)])
    return torch.cat([photos, rendered])[:count]


def score(unit: str, precision: str, runtime: str, images: torch.Tensor,
          device: torch.device) -> tuple[np.ndarray, float, float]:
    """(scores, images per second, build + warm-up seconds) of one choice."""
    started = time.perf_counter()
    neuron = SimulatedNeuron([unit], device=device, precision=precision, runtime=runtime)
    tail = len(images) % neuron.max_batch
    neuron(images[:neuron.max_batch])  # warm-up: compiles, exports, allocates; each batch size once
    if tail:
        neuron(images[:tail])
    built = time.perf_counter() - started
    started = time.perf_counter()
    scores = neuron(images)[:, 0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return scores, len(images) / (time.perf_counter() - started), built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="200 images, 10 generations")
    parser.add_argument("--choices", nargs="+", default=None, metavar="PRECISION:RUNTIME",
                        help="choices to score (default: all this device runs; fp32:eager is always the reference)")
    parser.add_argument("--dry-runs", nargs="+", default=None, metavar="PRECISION:RUNTIME",
                        help="choices to run the dry run under (default: those scored; none: no dry runs)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.generations = 200, 10
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    runs = [("fp32", "eager")] + [c for c in choices(device) if c != ("fp32", "eager") and (
        args.choices is None or ":".join(c) in args.choices)]
    dry_runs = runs if args.dry_runs is None else [] if args.dry_runs == ["none"] else \
        [("fp32", "eager")] + [tuple(c.split(":")) for c in args.dry_runs if c != "fp32:eager"]
    print(f"bench/precision.py: device {device} ({name}), torch threads {torch.get_num_threads()}, "
          f"{args.images} images, dry runs of {args.generations} generations")
    peaks = {p: matmul_flops_per_second(device, size=1024, seconds=2.0, dtype=PEAK_DTYPES[p])
             for p in sorted({p for p, _ in runs})}
    print("  matrix-product peak here: " + ", ".join(f"{p} {rate / 1e9:.0f} GFLOP/s" for p, rate in peaks.items()))
    images = image_set(args.images, device)
    faster_and_faithful: dict[tuple[str, str], bool] = {}
    for label, unit in UNITS.items():
        flops = model_flops_per_image(unit, device)
        print(f"\n{label}: {unit}, {flops / 1e9:.2f} GFLOP per image")
        print(f"  {'precision':<9} {'runtime':<11} {'images/s':>8} {'vs fp32 eager':>13} {'of peak':>7} "
              f"{'Spearman':>9} {'max rel err':>11} {'build s':>7}")
        reference, reference_rate = None, None
        for precision, runtime in runs:
            try:
                scores, rate, built = score(unit, precision, runtime, images, device)
            except Exception as exc:  # a choice that cannot run here is a figure too: say why
                print(f"  {precision:<9} {runtime:<11} failed: {type(exc).__name__}: {str(exc)[:120]}")
                continue
            if reference is None:
                reference, reference_rate = scores, rate
            rho = float(spearmanr(reference, scores).statistic)
            error = float(np.abs(scores - reference).max() / np.abs(reference).max())
            share = rate * flops / peaks[precision]
            print(f"  {precision:<9} {runtime:<11} {rate:8.1f} {rate / reference_rate:12.2f}x {share:7.0%} "
                  f"{rho:9.5f} {error:11.2e} {built:7.1f}", flush=True)
            if label.startswith("ViT"):
                faster_and_faithful[(precision, runtime)] = rate > reference_rate and rho >= 0.999
    if not dry_runs:
        return 0

    print(f"\nthe demo's dry run ({PROTOCOL}, {args.generations} generations) under each choice")
    print(f"  {'precision':<9} {'runtime':<11} {'seed':>4} {'best score':>10} {'gen at 50%':>10} {'s/gen':>6}")
    demo_seed = load_protocol(PROTOCOL).seed
    outcomes = {}
    for precision, runtime in dry_runs:
        seeds = [demo_seed + k for k in range(SPREAD_SEEDS)] if (precision, runtime) == ("fp32", "eager") \
            else [demo_seed]
        for seed in seeds:
            try:
                outcome = dry_run(spec_with(PROTOCOL, precision=precision, runtime=runtime),
                                  generations=args.generations, seed=seed, device=device)
            except Exception as exc:
                print(f"  {precision:<9} {runtime:<11} {seed:>4} failed: {type(exc).__name__}: {str(exc)[:100]}")
                break
            outcomes[(precision, runtime, seed)] = outcome
            print(f"  {precision:<9} {runtime:<11} {seed:>4} {outcome.best_score:10.4f} "
                  f"{str(outcome.first_at_half):>10} {outcome.seconds_per_generation:6.2f}", flush=True)
    spread = [outcomes[("fp32", "eager", demo_seed + k)] for k in range(SPREAD_SEEDS)
              if ("fp32", "eager", demo_seed + k) in outcomes]
    if len(spread) < 2:
        return 1
    bests = [o.best_score for o in spread]
    halves = [o.first_at_half for o in spread if o.first_at_half is not None]
    print(f"  fp32 eager over {len(spread)} seeds: best score {min(bests):.4f}..{max(bests):.4f}, "
          f"gen at 50% {min(halves, default=None)}..{max(halves, default=None)}")
    print("\nthe rule (issue 18): a choice may replace fp32 eager as the default only if it is faster, keeps "
          "Spearman >= 0.999 (ViT) and leaves its dry run within the seed-to-seed spread")
    for (precision, runtime), good in faster_and_faithful.items():
        if (precision, runtime) == ("fp32", "eager"):
            continue
        outcome = outcomes.get((precision, runtime, demo_seed))
        within = outcome is not None and min(bests) <= outcome.best_score <= max(bests) and (
            outcome.first_at_half is not None and halves and min(halves) <= outcome.first_at_half <= max(halves))
        if outcome is None:  # not asked for in --dry-runs: the rule cannot be judged, which is not a "no"
            print(f"  {precision} {runtime}: faster with Spearman >= 0.999: {'yes' if good else 'no'}; "
                  f"dry run not run (add {precision}:{runtime} to --dry-runs) -> "
                  f"{'not judged' if good else 'does not qualify'}")
            continue
        verdict = "qualifies" if good and within else "does not qualify"
        print(f"  {precision} {runtime}: faster with Spearman >= 0.999: {'yes' if good else 'no'}; "
              f"dry run within spread: {'yes' if within else 'no'} -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
