"""The analyses against values computed by hand on small tables, and on real session files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rig.analysis import (ScoreTableError, convergence, cosine_nearest, load_prototype_scores, load_scores,
                          load_trajectory, min_max_normalise, natural_scores, prototype_vs_natural, read_score_table,
                          score_trajectory, session_trajectory)
from rig.cli import EXIT_USAGE, main
from rig.session import read_session


def write(path, text):
    path.write_text(text)
    return path


# ---------------------------------------------------------------- trajectory

def test_trajectory_by_hand_and_nan_is_not_zero():
    t = score_trajectory([[1, 2, 3], [2, np.nan, 6]], [[0, 2], [1, 1]], generations=[5, 6])
    assert t.generations.tolist() == [5, 6]
    assert t.mean.tolist() == [2.0, 4.0]          # (2 + 6) / 2: the lost response is left out
    assert t.max.tolist() == [3.0, 6.0]
    assert t.reference_mean.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="generation 1 has no valid scores"):
        score_trajectory([[1.0], [np.nan]])


def test_trajectory_from_csv_table(tmp_path):
    path = write(tmp_path / "t.csv", ",avg_scores,max_scores\n0,1.5,2\n1,2.5,4\n")
    t = load_trajectory(path)
    assert t.generations.tolist() == [0, 1] and t.mean.tolist() == [1.5, 2.5] and t.max.tolist() == [2.0, 4.0]
    bad = write(tmp_path / "b.csv", "generation,score\n0,1\n")
    with pytest.raises(ScoreTableError, match=r"b\.csv: need one of \['avg_scores'"):
        load_trajectory(bad)


# ---------------------------------------------------------------- convergence

def test_convergence_by_hand():
    # min 2, max 10: normalised 0, .25, .5, .75, 1 -> 0.5 first at index 2, 0.8 first at index 4.
    c = convergence([2, 4, 6, 8, 10])
    assert c.normalised.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert c.reached == {0.5: 2, 0.8: 4}
    # Labels are reported as given; a dip after the peak doesn't matter, the first crossing does.
    c = convergence([0, 9, 3, 10], thresholds=(0.5, 0.95), generations=[10, 11, 12, 13])
    assert c.reached == {0.5: 11, 0.95: 13}
    assert min_max_normalise([-1, 1]).tolist() == [0, 1]


def test_convergence_rejects_flat_and_bad_thresholds():
    with pytest.raises(ValueError, match="constant"):
        convergence([3, 3, 3])
    with pytest.raises(ValueError, match="threshold must be in"):
        convergence([1, 2], thresholds=(1.5,))


# ---------------------------------------------------------------- prototype vs natural

def test_prototype_vs_natural_by_hand():
    c = prototype_vs_natural([6.0, 3.0], [1, 2, 3, 4, 5])  # best prototype 6; natural mean 3, best 5
    assert c.prototype == 6.0
    assert c.percent_over_mean == pytest.approx(100.0)    # (6 - 3) / 3
    assert c.ratio_to_best == pytest.approx(1.2)          # 6 / 5
    assert c.percentile == 100.0
    c = prototype_vs_natural(3.0, [1, 2, 3, 4, 5])
    assert c.percent_over_mean == 0.0 and c.ratio_to_best == pytest.approx(0.6)
    assert c.percentile == pytest.approx(60.0)            # 1, 2, 3 are at or below 3


def test_prototype_ratios_undefined_without_a_positive_scale():
    c = prototype_vs_natural(2.0, [-1, -3])
    assert math.isnan(c.percent_over_mean) and math.isnan(c.ratio_to_best)
    assert c.percentile == 100.0
    with pytest.raises(ValueError, match="finite natural"):
        prototype_vs_natural(1.0, [np.nan])


# ---------------------------------------------------------------- nearest

def test_cosine_nearest_by_hand():
    candidates = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=float)
    found = cosine_nearest([[2, 0.1]], candidates, k=3)
    assert found.indices.tolist() == [[0, 2, 1]]
    assert found.similarities[0, 0] == pytest.approx(2 / math.hypot(2, 0.1))
    assert found.similarities[0, 1] == pytest.approx(2.1 / (math.hypot(2, 0.1) * math.sqrt(2)))
    # Cosine, not distance: scaling a candidate changes nothing.
    assert cosine_nearest([[2, 0.1]], candidates * [[5], [1], [1], [1]], k=3).indices.tolist() == [[0, 2, 1]]
    with pytest.raises(ValueError, match="k must be in 1..4"):
        cosine_nearest([[1, 0]], candidates, k=5)


@pytest.mark.timeout(120)
def test_feature_extractor_uses_penultimate_features_and_own_preprocessing():
    import torch

    from rig.analysis.nearest import FeatureExtractor, nearest_natural_images
    from simulators.natural_images import load_foolbox_imagenet

    images, ids, _ = load_foolbox_imagenet(96)
    extractor = FeatureExtractor("efficientnet_lite0")
    feats = extractor(images[:6])
    assert feats.shape == (6, 1280)            # pooled features, not the 1000 logits
    # The same as timm's own pre-logits features on the image normalised with Lite0's mean = std = 0.5.
    x = torch.nn.functional.interpolate(images[:6], size=224, mode="bilinear", align_corners=False, antialias=True)
    with torch.inference_mode():
        own = extractor.model.forward_head(extractor.model.forward_features((x - 0.5) / 0.5), pre_logits=True)
    np.testing.assert_allclose(feats, own.double().numpy(), rtol=1e-4, atol=1e-5)
    torch.manual_seed(0)
    # An image's nearest natural image is itself, even slightly perturbed.
    query = (images[[4]] + 0.02 * torch.randn_like(images[[4]])).clamp(0, 1)
    found = nearest_natural_images(query, images[:8], k=2, extractor=extractor)
    assert found.indices[0, 0] == 4 and found.similarities[0, 0] > 0.7


# ---------------------------------------------------------------- tables

def test_score_table_errors_name_file_row_and_column(tmp_path):
    with pytest.raises(ScoreTableError, match="not found"):
        read_score_table(tmp_path / "missing.csv")
    bad = write(tmp_path / "x.csv", ",nature_scores\n0,1.0\n1,oops\n")
    with pytest.raises(ScoreTableError, match=r"x\.csv: row 3, column 'nature_scores': 'oops'"):
        read_score_table(bad)
    two = write(tmp_path / "two.csv", "a,b\n1,2\n")
    with pytest.raises(ScoreTableError, match=r"columns: \['a', 'b'\]"):
        load_scores(two)
    assert load_scores(two, column="b").tolist() == [2.0]


# ---------------------------------------------------------------- session files and the CLI

@pytest.fixture(scope="module")
def evolution_session(tmp_path_factory):
    from helpers.protocols import tiny_protocol

    tmp = tmp_path_factory.mktemp("evo")
    protocol = tmp / "p.toml"
    protocol.write_text(tiny_protocol(generations=5, seed=2, threads=2, popsize=10, references=4,
                                      units=("test_cnn:features.7:unit=5", "test_cnn:features.7:unit=6"),
                                      max_frequency=4, image_size=64))
    out = tmp / "s.h5"
    assert main(["run", str(protocol), "--out", str(out), "--quiet"]) == 0
    return out


def test_session_loaders_match_the_recorded_scores(evolution_session):
    session = read_session(evolution_session)
    t = session_trajectory(session, thread=1)
    for g, block in enumerate(session.blocks):
        scores = block.thread_scores(1, 1)
        assert t.mean[g] == pytest.approx(scores.mean()) and t.max[g] == pytest.approx(scores.max())
        assert t.reference_mean[g] == pytest.approx(block.reference_scores(1).mean())
    best = load_prototype_scores(evolution_session)
    assert best[1] == pytest.approx(max(b.thread_scores(1, 1).max() for b in session.blocks))
    ids, natural = natural_scores(session, "test_cnn:features.7:unit=6")
    assert len(ids) == 4
    per_image = {i: [] for i in ids}
    for b in session.blocks:
        for sid, kind, score in zip(b.stimulus_ids, b.kinds, b.scores[:, 1]):
            if kind == "reference":
                per_image[sid[4:]].append(score)
    assert natural.tolist() == pytest.approx([np.mean(per_image[i]) for i in ids])
    with pytest.raises(ValueError, match="no thread 2; valid threads: 0..1"):
        session_trajectory(session, 2)


def test_analyze_cli_on_a_session(evolution_session, capsys):
    assert main(["analyze", "convergence", str(evolution_session), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["thread"] for r in rows] == [0, 1]
    session = read_session(evolution_session)
    expected = convergence(session_trajectory(session, 0).mean).reached[0.5]
    assert rows[0]["reach_0.5"] == expected
    assert main(["analyze", "trajectory", str(evolution_session), "--thread", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
    assert main(["analyze", "prototype", "--prototype", str(evolution_session),
                 "--natural", str(evolution_session), "--channel", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["natural_count"] == 4 and result["percentile"] == 100.0


def test_analyze_cli_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["analyze", "convergence", str(tmp_path / "x.txt")]) == EXIT_USAGE
    assert "expected a session file" in capsys.readouterr().err
    assert main(["analyze", "prototype", "--prototype", "a.csv", "b.csv", "--natural", "c.csv"]) == EXIT_USAGE
    assert "2 --prototype files but 1 --natural" in capsys.readouterr().err
