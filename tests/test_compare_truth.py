"""Ground truth for rig compare: neurons that are units of known models, recorded by rig run with Poisson noise.

At test size (tiny random-weight models, a few hundred stimuli) the claims are:

- CNN truth (a test_cnn unit in its middle block): test_cnn beats test_vit with 95% intervals that do not
  overlap, its best layer is within one read layer of the true one, and the noise ceiling agrees with the
  Poisson noise actually simulated;
- ViT truth (a test_vit class-logit unit): test_vit wins the paired test;
- the twin fitted to the CNN session evolves a prototype that the true unit answers more strongly than most
  natural reference images and at least half as strongly as its own evolved prototype (both rates printed).
  Above the *best* natural reference is not reached at this size (172 against 174 spikes/s when last run):
  bench/compare.py checks that claim at full size.

bench/compare.py makes these claims with EfficientNet-Lite0 and ViT-S/14 at full size.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers.protocols import tiny_protocol
from rig.cli import main
from rig.predictivity.stimuli import session_stimuli
from simulators.neuron import SimulatedNeuron

GAIN, OFFSET, WINDOW = 500.0, 60.0, 0.2
CNN_UNIT = "test_cnn:features.4:unit=5"
VIT_UNIT = "test_vit:head:unit=3"  # a class logit, as the study evolved


def truth_protocol(unit: str, gain: float, offset: float, generations: int = 14, popsize: int = 20) -> str:
    """A Fourier-space evolution of ``unit`` with Poisson spiking and half of each generation shown twice."""
    text = tiny_protocol(name="truth", units=(unit,), generations=generations, popsize=popsize, references=20,
                         max_frequency=4, image_size=32,
                         extra=f"\n[neuron.response]\ngain = {gain}\noffset = {offset}\nwindow_s = {WINDOW}\n"
                               f"noise = \"poisson\"\n")
    return text.replace("threads = 1\n", "threads = 1\nrepeat_fraction = 0.5\n")


def record_and_compare(folder, unit: str, gain: float, offset: float, *extra: str) -> tuple:
    (folder / "p.toml").write_text(truth_protocol(unit, gain, offset))
    session = folder / "s.h5"
    assert main(["run", str(folder / "p.toml"), "--out", str(session), "--quiet"]) == 0
    assert main(["compare", str(session), "--model", "test_cnn", "--model", "test_vit", "--out",
                 str(folder / "c"), "--pool", "grid=4", "--components", "100", "--bootstraps", "400", *extra]) == 0
    return session, json.loads((folder / "c" / "compare.json").read_text())


@pytest.fixture(scope="module")
def cnn_truth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn_truth")
    session, summary = record_and_compare(folder, CNN_UNIT, GAIN, OFFSET, "--save-twin", str(folder / "twin.npz"))
    return folder, session, summary


def true_rates(unit: str, gain: float, offset: float, images: torch.Tensor) -> np.ndarray:
    """The simulated neuron's expected rate (spikes/s) to ``images``: no noise."""
    activation = SimulatedNeuron([unit], weights="random")(images)[:, 0]
    return np.maximum(0.0, gain * activation + offset)


def test_repeats_are_shown_in_their_block_and_the_session_replays(cnn_truth):
    from rig.session import read_session

    _, session, _ = cnn_truth
    block = read_session(session).blocks[3]
    repeats = [i for i, sid in enumerate(block.stimulus_ids) if sid.startswith("rep/")]
    assert len(repeats) == 10 and all(block.threads[i] == -1 for i in repeats)  # half of 20, told to no one
    assert all(sid[4:] in block.stimulus_ids for sid in np.array(block.stimulus_ids)[repeats])
    assert main(["replay", str(session)]) == 0


def test_sessions_of_another_neuron_are_refused_unless_mixing_is_allowed(cnn_truth, tmp_path):
    from rig.predictivity.stimuli import load_stimuli

    _, session, _ = cnn_truth
    (tmp_path / "p.toml").write_text(tiny_protocol(units=("test_cnn:features.4:unit=6",), generations=2,
                                                   popsize=4, references=2, max_frequency=4, image_size=32))
    other = tmp_path / "other.h5"
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(other), "--quiet"]) == 0
    with pytest.raises(ValueError, match=r"the sessions recorded different neurons \(s.h5: test_cnn:features.4:"
                                         r"unit=5, other.h5: test_cnn:features.4:unit=6\).*--allow-mixed"):
        load_stimuli([session, other])
    pooled = load_stimuli([session, other], allow_mixed=True)
    assert len(pooled) == len(session_stimuli(session).keys) + 2 * 4 + 2
    # Each session's photos are its own rows, but the same photo is one fold group across sessions.
    assert len(set(pooled.groups)) == len(set(session_stimuli(session).groups)) + 2


def test_cnn_truth_ranks_the_cnn_first_with_separate_intervals(cnn_truth):
    _, _, summary = cnn_truth
    cnn, vit = summary["best"]["test_cnn"], summary["best"]["test_vit"]
    assert cnn["r"]["low"] > vit["r"]["high"], (cnn["r"], vit["r"])
    (test,) = summary["tests"]
    assert test["verdict"] == "test_cnn predicts better than test_vit" and test["p_value"] < 0.05


def test_cnn_truth_best_layer_is_within_one_of_the_true_one(cnn_truth):
    folder, _, summary = cnn_truth
    layers = [line.split(",")[1] for line in (folder / "c" / "compare.csv").read_text().splitlines()[1:]
              if line.startswith("test_cnn,")]
    assert layers == ["features.0", "features.2", "features.4", "features.6", "features.8"]
    assert abs(layers.index(summary["best"]["test_cnn"]["layer"]) - layers.index("features.4")) <= 1


def test_cnn_truth_ceiling_agrees_with_the_simulated_noise(cnn_truth):
    _, session, summary = cnn_truth
    stimuli = session_stimuli(session)
    images = torch.cat(list(stimuli.chunks(64)))
    repeated = np.array([len(s) >= 2 for s in stimuli.showings])
    rates = true_rates(CNN_UNIT, GAIN, OFFSET, images[torch.from_numpy(repeated)])
    # One showing's reliability over the repeated stimuli: signal variance over signal + Poisson variance.
    expected = rates.var() / (rates.var() + rates.mean() / WINDOW)
    ceiling = summary["ceiling"]
    assert ceiling["repeated_stimuli"] == repeated.sum() > 100
    assert ceiling["single_showing"] == pytest.approx(expected, abs=0.08)


def test_report_shows_the_comparison(cnn_truth):
    folder, session, summary = cnn_truth
    assert main(["report", str(session), "--out", str(folder / "report"), "--compare", str(folder / "c"),
                 "--no-nearest"]) == 0
    page = (folder / "report" / "index.html").read_text()
    section = page[page.index("<h2>Which model sees like this neuron</h2>"):]
    assert f"<td>test_cnn</td><td>{summary['best']['test_cnn']['layer']}</td>" in section
    assert "test_cnn predicts better than test_vit" in section and "data:image/png;base64," in section


def test_vit_truth_ranks_the_vit_first(tmp_path):
    _, summary = record_and_compare(tmp_path, VIT_UNIT, 1000.0, 40.0)
    (test,) = summary["tests"]
    assert test["verdict"] == "test_vit predicts better than test_cnn" and test["p_value"] < 0.05
    assert summary["best"]["test_vit"]["r"]["value"] > summary["best"]["test_cnn"]["r"]["value"]


def test_the_twin_beats_nature(cnn_truth, capsys):
    folder, session, _ = cnn_truth
    twin = folder / "twin.npz"
    (folder / "twin.toml").write_text(tiny_protocol(name="twin", units=(f"twin:{twin}",), generations=10,
                                                    popsize=16, references=0, max_frequency=4, image_size=32))
    evolved = folder / "twin.h5"
    assert main(["run", str(folder / "twin.toml"), "--out", str(evolved), "--quiet"]) == 0
    from rig.analysis.images import best_codes_per_generation, render, session_generator
    from rig.session import read_session

    recorded = read_session(evolved)
    assert recorded.provenance["neuron"]["neuron"]["twin_file"] == str(twin.resolve())
    codes, scores = best_codes_per_generation(recorded)
    twin_prototype = render(session_generator(recorded), codes[[int(np.argmax(scores))]])
    truth = read_session(session)
    own_codes, own_scores = best_codes_per_generation(truth)
    own_prototype = render(session_generator(truth), own_codes[[int(np.argmax(own_scores))]])
    stimuli = session_stimuli(session)
    natural = torch.cat([part.images for part in stimuli.images[1:]])  # the 20 reference photos
    assert len(natural) == 20
    twin_rate = true_rates(CNN_UNIT, GAIN, OFFSET, twin_prototype)[0]
    own_rate = true_rates(CNN_UNIT, GAIN, OFFSET, own_prototype)[0]
    natural_rates = true_rates(CNN_UNIT, GAIN, OFFSET, natural)
    with capsys.disabled():
        print(f"\n  twin's prototype on the true unit: {twin_rate:.1f} spikes/s; natural median "
              f"{np.median(natural_rates):.1f}, best {natural_rates.max():.1f}; the unit's own prototype "
              f"{own_rate:.1f} (twin / own = {twin_rate / own_rate:.2f})")
    assert twin_rate > np.percentile(natural_rates, 75) and twin_rate > 0.5 * own_rate
