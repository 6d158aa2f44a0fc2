"""The response model: rectification, Poisson and multiplicative-noise statistics, seeding, latency, errors."""
from __future__ import annotations

import numpy as np
import pytest

from rig.cli import EXIT_USAGE, main
from rig.session import read_session
from simulators.response_model import (
    ResponseModel,
    ResponseModelConfig,
    build_response_model,
    count_spikes,
)

N = 40_000  # draws per statistic: standard errors well under the tolerances used


def test_relu_and_softplus_rectification():
    a = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    relu = ResponseModel(gain=2.0, offset=-1.0, rectify="relu", seed=0)
    np.testing.assert_allclose(relu.rate(a), np.maximum(2.0 * a - 1.0, 0.0))
    assert relu.rate(a)[0] == 0.0 and relu.rate(a)[-1] == 5.0

    soft = ResponseModel(gain=2.0, offset=-1.0, rectify="softplus", seed=0)
    np.testing.assert_allclose(soft.rate(a), np.log1p(np.exp(2.0 * a - 1.0)))
    assert np.all(soft.rate(a) > 0)  # softplus never silences a unit completely
    # Huge drives neither overflow nor lose the linear regime.
    big = soft.rate(np.array([-1e4, 1e4]))
    assert np.isfinite(big).all() and big[0] == pytest.approx(0.0, abs=1e-300) and big[1] == pytest.approx(2e4 - 1)


def test_poisson_counts_have_mean_and_variance_rate_times_window():
    model = ResponseModel(gain=10.0, offset=0.0, window_s=0.15, noise="poisson", seed=3)
    rate = 40.0  # activation 4 → 40 spikes/s → 6 expected spikes in 0.15 s
    counts = model.counts(np.full(N, 4.0))
    expected = rate * 0.15
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    se = np.sqrt(expected / N)
    assert abs(counts.mean() - expected) < 4 * se
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.04)  # Fano factor of a Poisson process
    # The scored response is count / window: a rate in spikes/s whose mean is the model rate.
    scores = model.respond(np.full(N, 4.0))
    assert scores.mean() == pytest.approx(rate, rel=0.02)
    np.testing.assert_allclose(scores * 0.15, np.round(scores * 0.15), atol=1e-9)


@pytest.mark.parametrize("sd", [0.2, 0.5])
def test_multiplicative_noise_has_mean_one_and_the_stated_cv(sd):
    rate = 20.0
    clean = ResponseModel(gain=1.0, window_s=0.15, noise="none", multiplicative_sd=sd, seed=1)
    scores = clean.respond(np.full(N, rate))
    assert scores.min() >= 0  # gamma gains never make a rate negative
    assert scores.mean() == pytest.approx(rate, rel=0.02)
    assert scores.std() / scores.mean() == pytest.approx(sd, rel=0.05)

    # On top of Poisson spiking the counts are negative binomial: var = mu + sd^2 mu^2.
    noisy = ResponseModel(gain=1.0, window_s=0.15, noise="poisson", multiplicative_sd=sd, seed=2)
    counts = noisy.counts(np.full(N, rate))
    mu = rate * 0.15
    assert counts.mean() == pytest.approx(mu, rel=0.03)
    assert counts.var() == pytest.approx(mu + sd**2 * mu**2, rel=0.06)


def test_without_noise_the_score_is_the_rate():
    model = ResponseModel(gain=3.0, offset=1.0, noise="none", seed=0)
    a = np.array([[0.0, 1.0], [-2.0, 2.5]])
    np.testing.assert_allclose(model.respond(a), np.maximum(3.0 * a + 1.0, 0.0))
    assert model.respond(a).shape == a.shape


def test_same_seed_same_draws_and_seed_none_is_recorded():
    a = np.linspace(0, 5, 200)
    first = ResponseModel(gain=10.0, multiplicative_sd=0.2, seed=11).respond(a)
    again = ResponseModel(gain=10.0, multiplicative_sd=0.2, seed=11).respond(a)
    other = ResponseModel(gain=10.0, multiplicative_sd=0.2, seed=12).respond(a)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)

    unseeded = ResponseModel(gain=10.0, multiplicative_sd=0.2)
    described = unseeded.describe()
    assert described["class"] == "simulators.response_model.ResponseModel"
    assert described["version"]
    seed = described["kwargs"]["seed"]
    assert isinstance(seed, int) and seed == unseeded.seed
    # The description alone rebuilds the model exactly.
    rebuilt = ResponseModel(ResponseModelConfig(**described["kwargs"]))
    np.testing.assert_array_equal(unseeded.respond(a), rebuilt.respond(a))


def test_keyed_generators_are_reproducible_and_independent():
    model = ResponseModel(gain=10.0, seed=5)
    a = np.full(500, 3.0)
    block3 = model.respond(a, model.rng_for(3, 0))
    model.respond(a)  # drawing from the model's own stream changes nothing for keyed draws
    np.testing.assert_array_equal(block3, model.respond(a, model.rng_for(3, 0)))
    assert not np.array_equal(block3, model.respond(a, model.rng_for(4, 0)))
    assert not np.array_equal(block3, model.respond(a, model.rng_for(3, 1)))
    with pytest.raises(ValueError, match="rng keys"):
        model.rng_for(-1)


def test_spike_times_start_after_the_latency_and_count_like_counts():
    model = ResponseModel(gain=100.0, window_s=0.15, latency_s=0.05, noise="poisson", seed=7)
    onsets = np.arange(2000) * 0.25  # 100 ms on, 150 ms off
    activations = np.stack([np.full(2000, 1.0), np.full(2000, 0.4)], axis=1)  # 100 and 40 spikes/s
    times = model.spike_times(activations, onsets)
    assert len(times) == 2
    for channel, rate in enumerate([100.0, 40.0]):
        t = times[channel]
        assert np.all(np.diff(t) >= 0)
        # Every spike lies in [onset + latency, onset + latency + window) of some stimulus.
        idx = np.searchsorted(onsets, t, "right") - 1
        after = t - onsets[idx]
        assert after.min() >= 0.05 and after.max() < 0.05 + 0.15
        # Nothing in the first 50 ms after onset: the latency is real.
        assert count_spikes(t, onsets, 0.0, 0.05).sum() == 0
        # Counted in the response window, the mean matches rate x window.
        counts = count_spikes(t, onsets, 0.05, 0.20)
        assert counts.mean() == pytest.approx(rate * 0.15, rel=0.05)
        assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.1)

    # A longer stimulus drives the unit for longer.
    long = model.spike_times(np.full(2000, 1.0), onsets, duration_s=0.2, rng=model.rng_for(0))[0]
    assert count_spikes(long, onsets, 0.05, 0.25).mean() == pytest.approx(20.0, rel=0.05)

    exact = ResponseModel(gain=100.0, noise="none", latency_s=0.08, window_s=0.1, seed=0)
    t = exact.spike_times(np.array([0.5, 0.0]), np.array([1.0, 2.0]))[0]
    assert len(t) == 5 and t.min() >= 1.08 and t.max() < 1.18


@pytest.mark.parametrize(
    "table, field",
    [
        ({"gain": "big"}, "gain"),
        ({"offset": float("nan")}, "offset"),
        ({"rectify": "tanh"}, "rectify"),
        ({"noise": "gaussian"}, "noise"),
        ({"window_s": 0}, "window_s"),
        ({"latency_s": -0.01}, "latency_s"),
        ({"multiplicative_sd": -0.2}, "multiplicative_sd"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"gian": 1.0}, "gian"),
    ],
)
def test_bad_fields_are_named(table, field):
    with pytest.raises(ValueError, match=field):
        build_response_model(table)


def test_unknown_field_lists_valid_fields_and_absent_table_means_no_model():
    with pytest.raises(ValueError, match=r"valid fields: \['gain', 'offset'"):
        build_response_model({"gian": 1.0})
    assert build_response_model(None) is None
    assert build_response_model({}, default_seed=9).seed == 9
    assert build_response_model({"seed": 4}, default_seed=9).seed == 4
    with pytest.raises(ValueError, match="stop_s > start_s"):
        count_spikes(np.array([0.1]), np.array([0.0]), 0.2, 0.1)
    with pytest.raises(ValueError, match="one onset per stimulus"):
        ResponseModel(seed=0).spike_times(np.ones(3), np.zeros(2))


RESPONSE_TABLE = """
[neuron.response]
gain = {gain}
offset = 20.0
rectify = "relu"
window_s = 0.15
noise = "poisson"
multiplicative_sd = 0.2
latency_s = 0.05
"""


def _run(protocol, out, *extra):
    return main(["run", str(protocol), "--out", str(out), "--quiet", *extra])


@pytest.mark.timeout(120)
def test_rig_run_scores_spike_counts_reproducibly(write_protocol, tmp_path):
    protocol = write_protocol(generations=3, popsize=8, references=2)
    protocol.write_text(protocol.read_text() + RESPONSE_TABLE.format(gain=10.0))
    assert _run(protocol, tmp_path / "a.h5") == 0
    assert _run(protocol, tmp_path / "b.h5") == 0
    a, b = read_session(tmp_path / "a.h5"), read_session(tmp_path / "b.h5")

    model = a.provenance["neuron"]["response_model"]
    assert model["class"] == "simulators.response_model.ResponseModel"
    assert model["kwargs"]["gain"] == 10.0 and model["kwargs"]["multiplicative_sd"] == 0.2
    assert isinstance(model["kwargs"]["seed"], int)  # derived from the session seed and recorded
    for block_a, block_b in zip(a.blocks, b.blocks):
        scores = block_a.scores
        # Scores are spike counts / window: whole numbers of spikes.
        np.testing.assert_allclose(scores * 0.15, np.round(scores * 0.15), atol=1e-9)
        assert scores.min() >= 0
        np.testing.assert_array_equal(scores, block_b.scores)  # same seed, same noise
    assert len({float(s) for blk in a.blocks for s in blk.scores.ravel()}) > 3

    # Another session seed gives other noise.
    assert _run(protocol, tmp_path / "c.h5", "--seed", "5") == 0
    c = read_session(tmp_path / "c.h5")
    assert c.provenance["neuron"]["response_model"]["kwargs"]["seed"] != model["kwargs"]["seed"]


def test_rig_run_rejects_a_bad_response_table(write_protocol, tmp_path, capsys):
    protocol = write_protocol(generations=1, popsize=4, references=0)
    protocol.write_text(protocol.read_text() + RESPONSE_TABLE.format(gain='"high"'))
    assert _run(protocol, tmp_path / "s.h5") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "[neuron.response]" in err and "gain" in err and str(protocol) in err
    assert not (tmp_path / "s.h5").exists()


def test_response_table_must_be_a_table(write_protocol, tmp_path, capsys):
    protocol = write_protocol(generations=1, popsize=4, references=0)
    text = protocol.read_text().replace('[neuron]\n', '[neuron]\nresponse = "poisson"\n')
    protocol.write_text(text)
    assert _run(protocol, tmp_path / "s.h5") == EXIT_USAGE
    assert "[neuron] response" in capsys.readouterr().err


def test_simulated_responses_apply_the_model_per_block_and_showing():
    import torch

    from protocols.base import GENERATED, Block
    from rig.display import Presentations
    from rig.sources.simulated import SimulatedResponses

    activations = np.linspace(0.0, 4.0, 12)[:, None]
    model = ResponseModel(gain=25.0, multiplicative_sd=0.5, seed=8)
    source = SimulatedResponses(lambda images: activations[: len(images)], ["u0"], {"model": "fixed"}, model)
    block = Block(index=3, stimulus_ids=[f"s{i}" for i in range(12)], kinds=[GENERATED] * 12,
                  threads=np.zeros(12), code_index=np.arange(12), images=torch.zeros(12, 3, 4, 4),
                  codes=np.zeros((1, 12, 2)))
    valid = np.ones(12, bool)
    valid[5] = False
    shown = Presentations(np.arange(12) * 0.25, np.arange(12) * 0.25 + 0.1, np.zeros(12), valid, "test")
    first = source.record(block, shown)
    np.testing.assert_array_equal(first.scores[valid], model.respond(activations, model.rng_for(3, 0))[valid])
    assert np.isnan(first.scores[5, 0])  # a stimulus not seen gets no score, noise or not
    # Showing the same block again (lost stimuli) draws fresh noise, not a copy of the first showing.
    second = source.record(block, shown)
    np.testing.assert_array_equal(second.scores[valid], model.respond(activations, model.rng_for(3, 1))[valid])
    assert not np.array_equal(first.scores[valid], second.scores[valid])
    assert source.describe()["response_model"] == model.describe()
    assert SimulatedResponses(lambda x: activations, ["u0"], {}).describe()["response_model"] is None
