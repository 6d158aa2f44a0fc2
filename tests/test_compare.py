"""rig compare's parts on known numbers: the noise ceiling, group-wise folds, bootstrap scores, bad input.

The ground truth (simulated neurons of known models through rig run and rig compare) is in
tests/test_compare_truth.py; the twin as a neuron in tests/test_twin.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from protocols.spec import ProtocolError, parse_protocol
from rig.commands.compare import parse_layers
from rig.predictivity.ceiling import noise_ceiling, spearman_brown
from rig.predictivity.compare import paired_tests, pearson_rows, score_predictions
from rig.predictivity.features import LayerFeatures, Readout, default_layers
from rig.predictivity.readout import check_folds, cross_validated_predictions, fit_readout
from helpers.protocols import tiny_protocol


def poisson_showings(rates: np.ndarray, counts: list[int], window: float, seed: int) -> list[list[float]]:
    """Spike counts / window for each stimulus's showings, as the response model scores them."""
    rng = np.random.default_rng(seed)
    return [list(rng.poisson(rate * window, size=n) / window) for rate, n in zip(rates, counts)]


def test_ceiling_matches_the_noise_it_was_given():
    rng = np.random.default_rng(0)
    rates = rng.gamma(4.0, 15.0, size=400)  # spikes/s
    window = 0.2
    truth = rates.var() / (rates.var() + rates.mean() / window)  # one showing: signal / (signal + Poisson)
    ceiling = noise_ceiling(poisson_showings(rates, [4] * 400, window, 1))
    assert ceiling.repeated_stimuli == 400 and ceiling.half_showings == 1  # one showing per half
    assert ceiling.single_showing == pytest.approx(truth, abs=0.05)
    assert ceiling.reliability == pytest.approx(spearman_brown(truth, 4), abs=0.03)  # the mean of 4 showings
    assert ceiling.warning is None
    # Scored on stimuli shown once: the ceiling is that of one showing.
    mixed = poisson_showings(rates, [4] * 40 + [1] * 360, window, 2)
    assert noise_ceiling(mixed).showings == pytest.approx(1.3)


def test_ceiling_says_plainly_when_it_rests_on_few_images():
    few = noise_ceiling([[1.0, 2.0], [5.0, 6.0], [9.0, 9.5], [3.0, 4.0], [7.0]])
    assert few.repeated_stimuli == 4 and "only 4 repeated stimuli" in few.warning
    none = noise_ceiling([[1.0], [2.0, 3.0], [4.0]])
    assert np.isnan(none.reliability) and "no noise ceiling" in none.warning


def test_folds_split_by_generation_so_near_duplicates_do_not_leak():
    # 30 generations of 10 near-identical images; each generation's response is unrelated to any image
    # feature, so only a leak (a generation on both sides of a split) could predict it.
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 10)
    centres = rng.normal(size=(30, 20))
    x = centres[groups] + 0.01 * rng.normal(size=(300, 20))
    y = rng.normal(size=30)[groups] + 0.01 * rng.normal(size=300)
    grouped = cross_validated_predictions(x, y, groups, folds=5, components=20)
    assert np.corrcoef(grouped, y)[0, 1] < 0.3  # held out, a generation's response is not predictable
    leaky = cross_validated_predictions(x, y, np.arange(300), folds=5, components=20)  # one image per group
    assert np.corrcoef(leaky, y)[0, 1] > 0.6  # what splitting by image would have claimed


def test_readout_recovers_a_linear_neuron_and_the_fitted_one_predicts_new_images():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 50)) @ rng.normal(size=(50, 80))  # 50-dimensional features in 80 columns
    w = rng.normal(size=80)
    y = x @ w + 0.1 * (x @ w).std() * rng.normal(size=200)
    groups = np.repeat(np.arange(20), 10)
    predictions = cross_validated_predictions(x, y, groups, folds=5, components=50)
    assert np.corrcoef(predictions, y)[0, 1] > 0.95
    fitted = fit_readout(x, y, groups, components=50)
    fresh = rng.normal(size=(50, 50)) @ rng.normal(size=(50, 80))
    assert fitted.components.shape == (50, 80)
    assert np.corrcoef(fitted.predict(fresh), fresh @ w)[0, 1] < 1.0  # different directions: not a copy of w
    assert np.corrcoef(fitted.predict(x), x @ w)[0, 1] > 0.98


def test_too_few_images_for_the_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="too few images for 5 folds: the stimuli fall into 3 groups"):
        check_folds(np.array([0, 0, 1, 1, 2, 2]), 5)


def test_scores_intervals_and_the_paired_test():
    rng = np.random.default_rng(2)
    y = rng.normal(size=300)
    good, poor = y + 0.3 * rng.normal(size=300), y + 3.0 * rng.normal(size=300)
    resamples = rng.integers(0, 300, size=(500, 300))
    ceiling = noise_ceiling([[v, v + 0.1 * rng.normal()] for v in y[:50]] + [[v] for v in y[50:]])
    a = score_predictions("a", "l", 0.5, 3, good, y, resamples, ceiling)
    b = score_predictions("b", "l", 0.5, 3, poor, y, resamples, ceiling)
    assert a.r.low < a.r.value < a.r.high and a.r.value == pytest.approx(np.corrcoef(good, y)[0, 1])
    assert a.r2.value == pytest.approx(1 - np.sum((y - good) ** 2) / np.sum((y - y.mean()) ** 2))
    assert a.r_normalised.value == pytest.approx(a.r.value / ceiling.max_r)
    assert b.r.high < a.r.low
    (test,) = paired_tests({"a": a, "b": b}, y, resamples)
    assert test.difference.low > 0 and test.p_value < 0.01 and test.verdict == "a predicts better than b"
    assert pearson_rows(np.stack([y, -y]), np.stack([y, y])).tolist() == pytest.approx([1.0, -1.0])


def test_layers_and_models_are_checked_with_what_is_valid():
    with pytest.raises(ValueError, match=r"layer 'features.99' is not a layer of test_cnn; its layers include "
                                         r"\['features.0', 'features.1'"):
        LayerFeatures("test_cnn", ["features.99"], weights="random")
    with pytest.raises(ValueError, match="unknown model 'no_such_net'|no_such_net"):
        LayerFeatures("no_such_net", weights="random")
    with pytest.raises(ValueError, match="--pool must be 'mean' or 'grid=K'"):
        Readout(pool="max")
    reader = LayerFeatures("test_vit", weights="random")
    assert reader.layers == ["blocks.0", "blocks.1"]
    assert default_layers(LayerFeatures("test_cnn", ["features.0"], weights="random").info) == [
        "features.0", "features.2", "features.4", "features.6", "features.8"]
    assert parse_layers(["a,b", "c"], ["m"]) == {"m": ["a", "b", "c"]}
    with pytest.raises(ValueError, match="say whose layers they are"):
        parse_layers(["a"], ["m", "n"])


def test_features_pool_cnn_maps_and_read_the_class_token():
    import torch

    images = torch.rand(3, 3, 32, 32)
    cnn = LayerFeatures("test_cnn", ["features.4", "features.8"], Readout(pool="grid=2"), weights="random")
    values = cnn(images)
    assert values["features.4"].shape == (3, 16 * 4) and values["features.8"].shape == (3, 32 * 4)
    mean = LayerFeatures("test_cnn", ["features.4"], weights="random")(images)["features.4"]
    assert np.allclose(mean, values["features.4"].reshape(3, 16, 4).mean(axis=2), atol=1e-5)
    vit = LayerFeatures("test_vit", ["blocks.1"], Readout(token="cls"), weights="random")
    tokens = {}
    handle = dict(vit.model.named_modules())["blocks.1"].register_forward_hook(
        lambda _m, _i, out: tokens.setdefault("out", out.clone()))
    cls = vit(images)["blocks.1"]
    handle.remove()
    assert np.allclose(cls, tokens["out"][:, 0].numpy(), atol=1e-6)


def test_compare_cli_names_an_unknown_model_before_reading_anything(tmp_path, capsys):
    from rig.cli import EXIT_USAGE, main

    assert main(["compare", str(tmp_path / "none.h5"), "--model", "efficientnet_lite9", "--out",
                 str(tmp_path / "c")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown model 'efficientnet_lite9'" in err and "vit_s14_focus" in err


def test_report_section_needs_a_compare_folder(tmp_path):
    from rig.predictivity.outputs import report_section

    with pytest.raises(FileNotFoundError, match="no compare.json there; run `rig compare"):
        report_section(tmp_path, lambda path, alt: "")
    (tmp_path / "compare.json").write_text("{}")
    with pytest.raises(ValueError, match="compare.json is not a rig compare summary"):
        report_section(tmp_path, lambda path, alt: "")


def test_repeat_fraction_is_validated(tmp_path):
    text = tiny_protocol().replace("threads = 1\n", "threads = 1\nrepeat_fraction = 0.25\n")
    assert parse_protocol(text, tmp_path / "p.toml").repeat_fraction == 0.25
    with pytest.raises(ProtocolError, match=r"\[evolution\] repeat_fraction: expected a number in \[0, 1\], got 2"):
        parse_protocol(text.replace("0.25", "2"), tmp_path / "p.toml")
