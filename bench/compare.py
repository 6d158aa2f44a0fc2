"""rig compare at full size: its speed on this CPU, and its ground truth with the bundled models.

    .venv/bin/python bench/compare.py [--generations 30] [--popsize 40] [--vit-generations 10]
                                      [--vit-popsize 20] [--twin-generations 10] [--out DIR]

1. **CNN truth.** rig run records a ``--generations``-generation evolution (Fourier images, 128 px) of an
   EfficientNet-Lite0 unit in its middle block (``blocks.3``, 7 stages), with Poisson spiking, the 20
   bundled reference photos in every block and ``repeat_fraction = 0.25``. Its gain and offset are set
   from the unit's activations to random images, so rates span tens of spikes/s.
2. **Speed.** rig compare of that session against EfficientNet-Lite0 and ViT-S/14 (5 layers each), timed
   whole, with the seconds spent on features and on readouts (and their shares).
3. Does EfficientNet-Lite0 win with 95% intervals apart; is its best layer within one block of
   ``blocks.3``; does the noise ceiling agree with the Poisson noise simulated (single-showing
   reliability expected from the unit's true rates on the repeated stimuli)?
4. **The twin beats nature.** The saved twin evolves ``--twin-generations`` generations; its prototype's
   true rate is compared with the best natural reference photo's and with the unit's own prototype's.
5. **ViT truth.** The same with a ViT-S/14 unit (``blocks.8``, class token), smaller: does ViT-S/14 win?

Every figure comes from the same run, on this machine; the sizes are printed with them.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # helpers.protocols: the tests' protocol

from protocols.generators import build_generator  # noqa: E402
from rig.analysis.images import best_codes_per_generation, render, session_generator  # noqa: E402
from rig.cli import main  # noqa: E402
from rig.predictivity.stimuli import session_stimuli  # noqa: E402
from rig.session import read_session  # noqa: E402
from helpers.protocols import tiny_protocol  # noqa: E402
from simulators.neuron import SimulatedNeuron  # noqa: E402

CNN_UNIT = "efficientnet_lite0:blocks.3:unit=10"
CNN_STAGES = [f"blocks.{i}" for i in range(7)]
VIT_UNIT = "vit_s14_focus:blocks.8:unit=10:token=cls"
MODELS = ["efficientnet_lite0", "vit_s14_focus"]
WINDOW = 0.2
GENERATOR = {"kind": "fourier", "max_frequency": 8, "image_size": 128}


def calibrate(unit: str) -> tuple[float, float]:
    """Gain and offset so the unit's rate to random images is about 30 ± 30 spikes/s."""
    generator = build_generator(**GENERATOR).eval()
    codes = torch.randn(24, generator.code_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        activation = SimulatedNeuron([unit])(generator(3 * codes).float())[:, 0]
    gain = 30.0 / max(activation.std(), 1e-6)
    return float(gain), float(30.0 - gain * activation.mean())


def protocol(unit: str, gain: float, offset: float, generations: int, popsize: int, references: int = 20,
             repeat: float = 0.25, name: str = "truth") -> str:
    """The tests' small protocol at this bench's sizes, with Poisson spiking and repeats (gain 0: no response
    model, for the twin)."""
    response = (f"\n[neuron.response]\ngain = {gain}\noffset = {offset}\nwindow_s = {WINDOW}\nnoise = \"poisson\"\n"
                if gain else "")
    text = tiny_protocol(name=name, generations=generations, seed=3, units=(unit,), weights="default",
                         popsize=popsize, references=references, max_frequency=GENERATOR["max_frequency"],
                         image_size=GENERATOR["image_size"], extra=response)
    return text.replace("threads = 1\n", f"threads = 1\nrepeat_fraction = {repeat}\n")


def run(folder: Path, text: str, name: str) -> tuple[Path, float]:
    (folder / f"{name}.toml").write_text(text)
    out = folder / f"{name}.h5"
    started = time.perf_counter()
    if main(["run", str(folder / f"{name}.toml"), "--out", str(out), "--quiet"]) != 0:
        raise SystemExit(f"rig run {name} failed")
    return out, time.perf_counter() - started


def compare(session: Path, out: Path, *extra: str) -> tuple[dict, float]:
    started = time.perf_counter()
    argv = ["compare", str(session), *sum((["--model", m] for m in MODELS), []), "--out", str(out),
            "--pool", "grid=4", *extra]
    if main(argv) != 0:
        raise SystemExit("rig compare failed")
    return json.loads((out / "compare.json").read_text()), time.perf_counter() - started


def rates(unit: str, gain: float, offset: float, images: torch.Tensor) -> np.ndarray:
    return np.maximum(0.0, gain * SimulatedNeuron([unit])(images)[:, 0] + offset)


def best_image(session: Path) -> torch.Tensor:
    recorded = read_session(session)
    codes, scores = best_codes_per_generation(recorded)
    return render(session_generator(recorded), codes[[int(np.argmax(scores))]])


def verdicts(summary: dict, winner: str, loser: str) -> str:
    a, b = summary["best"][winner], summary["best"][loser]
    apart = a["r"]["low"] > b["r"]["high"]
    lines = [f"    {m}: best layer {s['layer']} r {s['r']['value']:.3f} [{s['r']['low']:.3f}, {s['r']['high']:.3f}]"
             f", r/ceiling {s['r_normalised']['value'] if s['r_normalised'] else float('nan'):.3f}"
             for m, s in summary["best"].items()]
    lines += [f"    paired test: {t['verdict']} (p = {t['p_value']:.3g})" for t in summary["tests"]]
    lines.append(f"    {winner} wins with intervals apart: {'YES' if apart else 'NO'}")
    return "\n".join(lines)


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--popsize", type=int, default=40)
    parser.add_argument("--vit-generations", type=int, default=10)
    parser.add_argument("--vit-popsize", type=int, default=20)
    parser.add_argument("--twin-generations", type=int, default=10)
    parser.add_argument("--skip-vit", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench-compare-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"bench/compare.py on {torch.get_num_threads()} torch threads; files in {folder}")

    gain, offset = calibrate(CNN_UNIT)
    session, recorded_s = run(folder, protocol(CNN_UNIT, gain, offset, args.generations, args.popsize), "cnn")
    stimuli = session_stimuli(session)
    print(f"\n1. CNN truth {CNN_UNIT}: gain {gain:.1f}, offset {offset:.1f} spikes/s, {args.generations} "
          f"generations x {args.popsize}; recorded in {recorded_s:.0f} s; {len(stimuli.keys)} stimuli")

    summary, total = compare(session, folder / "cnn_compare", "--save-twin", str(folder / "twin.npz"))
    seconds = summary["seconds"]
    print(f"\n2. rig compare of {summary['stimuli']} stimuli against {' and '.join(MODELS)} (5 layers each): "
          f"{total:.0f} s in all; features {seconds['features']:.0f} s ({seconds['features'] / total:.0%}), "
          f"readouts {seconds['fit']:.0f} s ({seconds['fit'] / total:.0%}), the rest (reading, images, "
          f"bootstrap, outputs) {total - seconds['features'] - seconds['fit']:.0f} s")
    started = time.perf_counter()
    compare(session, folder / "cnn_compare")  # features now come from the cache
    print(f"   again, features from the cache: {time.perf_counter() - started:.0f} s")

    print("\n3. CNN truth, compared:")
    print(verdicts(summary, "efficientnet_lite0", "vit_s14_focus"))
    best_layer = summary["best"]["efficientnet_lite0"]["layer"]
    off = abs(CNN_STAGES.index(best_layer) - CNN_STAGES.index("blocks.3")) if best_layer in CNN_STAGES else None
    print(f"    best layer {best_layer}: {off} block(s) from the true blocks.3: "
          f"{'YES' if off is not None and off <= 1 else 'NO'} (within one)")
    repeated = np.array([len(s) >= 2 for s in stimuli.showings])
    images = torch.cat(list(stimuli.chunks(64)))[torch.from_numpy(repeated)]
    true = rates(CNN_UNIT, gain, offset, images)
    expected = true.var() / (true.var() + true.mean() / WINDOW)
    ceiling = summary["ceiling"]
    print(f"    ceiling: single-showing reliability {ceiling['single_showing']:.3f} from "
          f"{ceiling['repeated_stimuli']} repeated stimuli; expected from the simulated Poisson noise "
          f"{expected:.3f} (difference {ceiling['single_showing'] - expected:+.3f})")

    twin, _ = run(folder, protocol(f"twin:{folder / 'twin.npz'}", 0.0, 0.0, args.twin_generations, args.popsize,
                                   references=0, repeat=0.0, name="twin"), "twin")
    natural = torch.cat([part.images for part in stimuli.images[1:]])
    twin_rate = rates(CNN_UNIT, gain, offset, best_image(twin))[0]
    own_rate = rates(CNN_UNIT, gain, offset, best_image(session))[0]
    best_natural = rates(CNN_UNIT, gain, offset, natural).max()
    print(f"\n4. the twin ({args.twin_generations} generations): its prototype drives the true unit at "
          f"{twin_rate:.1f} spikes/s; best of {len(natural)} natural references {best_natural:.1f} "
          f"({'YES' if twin_rate > best_natural else 'NO'}, above); the unit's own prototype {own_rate:.1f} "
          f"(twin / own = {twin_rate / own_rate:.2f})")

    if not args.skip_vit:
        gain, offset = calibrate(VIT_UNIT)
        vit, recorded_s = run(folder, protocol(VIT_UNIT, gain, offset, args.vit_generations, args.vit_popsize),
                              "vit")
        summary, total = compare(vit, folder / "vit_compare")
        print(f"\n5. ViT truth {VIT_UNIT}: {args.vit_generations} generations x {args.vit_popsize} "
              f"(recorded in {recorded_s:.0f} s, compared in {total:.0f} s), {summary['stimuli']} stimuli:")
        print(verdicts(summary, "vit_s14_focus", "efficientnet_lite0"))


if __name__ == "__main__":
    main_bench()
