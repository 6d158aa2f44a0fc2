"""The Fourier image space bounded and as it was: does the demo's prototype saturate, and does it score less?

    .venv/bin/python bench/fourier.py [--generations 100] [--seeds 1] [--device auto]

Runs the demo (protocols/dry-run.toml) for ``--generations`` under ``pixels = "sigmoid"`` (the space before
the bound) and ``pixels = "bounded"`` (the default), with the same seeds, in the same run. For each it prints
the best score, the first generation whose normalised mean reached 50%, and the share of the prototype's
(best image's) values within 0.02 of 0 or 1. The measure (issue 18): the bounded prototype has at most 5% of
values there, and its best score is at least the sigmoid space's.

    .venv/bin/python bench/fourier.py --picture DEMO_OUT [--to docs/demo.png]

Instead composes the README's demo picture from what ``make demo`` wrote to DEMO_OUT: the best image, the
score trajectory and the top of the report (a headless Chromium screenshot).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dry_runs import dry_run, saturated_share, spec_with  # noqa: E402
from rig.loop.assemble import pick_device  # noqa: E402

SPACES = ("sigmoid", "bounded")


def picture(demo_out: Path, to: Path) -> None:
    """docs/demo.png: the demo's best image, its trajectory and the top of its report, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from dashboard import _browser  # the dashboard bench's headless Chromium

    browser = _browser()
    try:
        browser.get((demo_out / "report" / "index.html").resolve().as_uri())
        shot = demo_out / "report-top.png"
        browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    panels = [("dry-run_best_t0.png", "demo-output/dry-run_best_t0.png"),
              ("dry-run_trajectory.png", "demo-output/dry-run_trajectory.png"),
              ("report-top.png", "demo-output/report/index.html (top)")]
    images = [Image.open(demo_out / name).convert("RGB") for name, _ in panels]
    figure, axes = plt.subplots(1, 3, figsize=(15, 3.9), gridspec_kw={"width_ratios": [1, 2, 1.6]})
    for ax, image, (_, title) in zip(axes, images, panels):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(to, dpi=100)
    print(f"wrote {to}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", type=Path, default=Path("protocols/dry-run.toml"))
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="session seeds (the demo's is 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--spaces", nargs="+", choices=SPACES, default=list(SPACES),
                        help="run only these (the measure needs both: run them in parallel on a shared machine)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="write each session to DIR/SPACE-SEED/ and print progress every 10 generations")
    parser.add_argument("--picture", type=Path, default=None, metavar="DEMO_OUT",
                        help="compose the README's demo picture from make demo's output folder instead")
    parser.add_argument("--to", type=Path, default=Path("docs/demo.png"))
    args = parser.parse_args()
    if args.picture is not None:
        picture(args.picture, args.to)
        return 0
    device = pick_device(args.device)
    print(f"bench/fourier.py: {args.protocol}, {args.generations} generations, seeds {args.seeds}, "
          f"device {device}, torch threads {torch.get_num_threads()}")
    print(f"  {'pixels':<8} {'seed':>5} {'best score':>10} {'gen at 50%':>10} {'saturated':>9} {'s/gen':>6}")
    results: dict[str, list[tuple[float, float]]] = {space: [] for space in args.spaces}
    for seed in args.seeds:
        for space in args.spaces:
            keep = None
            if args.keep is not None:
                keep = args.keep / f"{space}-{seed}"
                keep.mkdir(parents=True, exist_ok=True)
            outcome = dry_run(spec_with(args.protocol, {"pixels": space}), generations=args.generations,
                              seed=seed, device=device, keep=keep, every=10 if keep else 0)
            saturated = saturated_share(outcome.best_image)
            results[space].append((outcome.best_score, saturated))
            print(f"  {space:<8} {seed:>5} {outcome.best_score:10.4f} {str(outcome.first_at_half):>10} "
                  f"{saturated:9.1%} {outcome.seconds_per_generation:6.2f}", flush=True)
    if len(results) < len(SPACES):
        return 0
    met = all(b[1] <= 0.05 and b[0] >= s[0] for b, s in zip(results["bounded"], results["sigmoid"]))
    print(f"  measure (bounded: <= 5% saturated and best score >= sigmoid's, every seed): "
          f"{'met' if met else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
