"""Sound comparisons: convergence only for evolutions that gained, and a prototype measure for any sign."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from helpers.protocols import run_tiny_session
from rig.analysis.convergence import (convergence, evolution_gain, judged_convergence, natural_spread,
                                      response_noise, session_gain)
from rig.analysis.prototype import prototype_vs_natural
from rig.analysis.sources import natural_scores, session_trajectory
from rig.loop.sweep import SweepJob, compare_models, format_comparison, summarise_session, write_figures
from rig.session import read_session

# The case: a ViT unit whose population mean went from -0.024 to -0.019 over 15 generations,
# against natural images whose responses spread over about 0.01.
FLAT = np.linspace(-0.024, -0.019, 15) + 0.0004 * np.sin(np.arange(15))
RISING = np.concatenate([np.linspace(-2.2, 12.2, 8), np.full(7, 12.2)])


def test_a_flat_trajectory_does_not_evolve_though_min_max_says_it_converged():
    # Min-max normalisation stretches the flat trajectory: it "reaches 50%" early, the artifact in question.
    assert convergence(FLAT).reached[0.5] is not None and convergence(FLAT).reached[0.5] < 8
    flat = evolution_gain(FLAT, scale=0.01)
    assert not flat.evolved and flat.in_scale == pytest.approx((FLAT[-1] - FLAT[0]) / 0.01)
    assert judged_convergence(FLAT, flat) is None
    rising = evolution_gain(RISING, scale=1.5)
    assert rising.evolved and rising.gain == pytest.approx(14.4)
    assert judged_convergence(RISING, rising).reached == convergence(RISING).reached
    # The multiple is the stated parameter: the same gain passes a lower bar, fails a higher one.
    assert evolution_gain(FLAT, 0.01, min_gain=0.4).evolved
    assert not evolution_gain(RISING, 1.5, min_gain=10).evolved
    assert "did not evolve" in flat.describe() and "evolved" in rising.describe()


def test_scales_and_bad_input():
    assert natural_spread([1.0, 2.0, 3.0, np.nan]) == pytest.approx(1.0)
    # Pooled SD of repeated showings: variances 0.5 and 2.0 (one image shown once is left out).
    assert response_noise([[1.0, 2.0], [0.0, 2.0], [5.0]]) == pytest.approx(math.sqrt(1.25))
    # A noiseless neuron has zero noise: any gain above zero counts, and none does not.
    assert evolution_gain([1.0, 1.0001], 0.0, "noise_sd").evolved
    assert not evolution_gain([1.0, 1.0], 0.0, "noise_sd").evolved
    with pytest.raises(ValueError, match="at least 2 images, got 1"):
        natural_spread([3.0])
    with pytest.raises(ValueError, match="shown \\(validly\\) at least twice"):
        response_noise([[1.0], [2.0, np.nan]])
    with pytest.raises(ValueError, match="gain basis must be one of"):
        evolution_gain(RISING, 1.0, "range")
    with pytest.raises(ValueError, match="scale \\(natural_sd\\) must be a finite number >= 0, got -1"):
        evolution_gain(RISING, -1.0)
    with pytest.raises(ValueError, match="min_gain must be"):
        evolution_gain(RISING, 1.0, min_gain=float("nan"))


def test_prototype_measure_for_negative_responses():
    # The best natural response is below zero: the ratio to it means nothing, the standardised distance does.
    natural = np.array([-3.0, -2.0, -1.0])
    c = prototype_vs_natural(-0.5, natural)
    assert math.isnan(c.ratio_to_best) and math.isnan(c.percent_over_mean)
    assert c.natural_sd == pytest.approx(1.0) and c.z_over_natural == pytest.approx(1.5)
    assert c.percentile == 100.0
    # Shifting and scaling the responses (another unit of measure) leaves it unchanged.
    assert prototype_vs_natural(10 * -0.5 + 7, 10 * natural + 7).z_over_natural == pytest.approx(1.5)
    assert math.isnan(prototype_vs_natural(1.0, [2.0]).z_over_natural)     # one natural image: no SD
    assert math.isnan(prototype_vs_natural(1.0, [2.0, 2.0]).z_over_natural)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rules")
    path = run_tiny_session(folder, generations=4, seed=3, threads=2, popsize=6, references=4,
                            units=("test_cnn:features.7:unit=5", "test_cnn:features.7:unit=6"))
    return read_session(path)


def test_session_gain_and_sweep_flags(session, tmp_path):
    natural = natural_scores(session, 1)[1]
    mean = session_trajectory(session, 1).mean
    gain = session_gain(session, 1)
    assert gain.scale == pytest.approx(np.std(natural, ddof=1))
    assert (gain.first, gain.final) == (pytest.approx(mean[0]), pytest.approx(mean[-1]))
    noise = session_gain(session, 1, basis="noise_sd")
    assert noise.scale == pytest.approx(0.0, abs=1e-6)   # a noiseless simulated unit: repeats score the same

    job = SweepJob("test_cnn", ("a", "b"), 3, "", "", str(session.path))
    bar = {row["unit"]: row for row in summarise_session(session, job, 1.0)["units"]}
    # An unreachable bar: no unit evolved, so none gets a convergence, and the comparison counts them.
    high = summarise_session(session, SweepJob("test_cnn", ("a", "b"), 3, "", "", str(session.path),
                                               min_gain=1e9), 1.0)
    assert [r["evolved"] for r in high["units"]] == [False, False]
    assert all(r["gen_50"] is None and r["gen_80"] is None for r in high["units"])
    rows = compare_models([high])
    assert (rows[0]["evolutions"], rows[0]["evolved"], rows[0]["did_not_evolve"]) == (2, 0, 2)
    assert math.isnan(rows[0]["median_gen_50_evolved"])
    assert "0 of 2" in format_comparison(rows)
    # At the default bar each row's verdict is the gain's, and an evolved row carries its convergence.
    for thread, row in enumerate(bar.values()):
        verdict = session_gain(session, thread)
        assert row["evolved"] == verdict.evolved
        assert row["gain_in_natural_sd"] == pytest.approx(verdict.in_scale)
        if verdict.evolved:
            assert row["gen_50"] == convergence(session_trajectory(session, thread).mean).reached[0.5]
    paths = write_figures([high], tmp_path)
    assert all(Path(p).stat().st_size > 1000 for p in paths)


def test_report_min_gain_sets_the_bar(session, tmp_path, capsys):
    """`rig report --min-gain K` judges each thread against K SDs of the natural images, and says so."""
    from rig.cli import EXIT_USAGE, main

    verdicts = [session_gain(session, t) for t in (0, 1)]   # the default bar, as the report judges it
    kept = [t for t, g in enumerate(verdicts) if g.evolved]
    assert kept, [g.describe() for g in verdicts]   # the default keeps a thread, so a higher bar can flag it
    high = 2 * max(verdicts[t].in_scale for t in kept)
    assert main(["report", str(session.path), "--out", str(tmp_path / "r"), "--no-nearest",
                 "--min-gain", str(high)]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    for t in kept:
        assert f"did not evolve: mean {verdicts[t].first:.3g}" in page
    assert "evolved: mean" not in page.replace("did not evolve: mean", "")
    assert f"by more than {high:g} SD of the natural images" in page and f"needs &gt; {high:g})" in page
    capsys.readouterr()
    for bad in ("-1", "nan"):
        assert main(["report", str(session.path), "--out", str(tmp_path / "bad"), "--min-gain", bad]) == EXIT_USAGE
        assert f"rig report: error: --min-gain must be a number >= 0 (SDs of the natural images' responses), " \
               f"got {float(bad)}" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
