"""CMA-ES through pycma: lab defaults, determinism, state round trip, protocol misuse, registry."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from protocols.optimizers import CMAES, OPTIMIZER_KINDS, Optimizer, build_optimizer

DIM = 50
TARGET = np.random.default_rng(7).normal(0.0, 3.0, size=DIM)


def objective(codes: np.ndarray) -> np.ndarray:
    """Higher is better; a deterministic function of the codes."""
    return -np.sum((codes - TARGET) ** 2, axis=1)


def run(opt: Optimizer, generations: int) -> list[np.ndarray]:
    history = []
    for _ in range(generations):
        codes = opt.ask()
        history.append(codes)
        opt.tell(codes, objective(codes))
    return history


@pytest.mark.parametrize("diagonal", [False, True])
def test_cmaes_improves_a_simple_objective(diagonal):
    opt = CMAES(DIM, seed=0, diagonal=diagonal)
    history = run(opt, 60)
    first_best = objective(history[0]).max()
    last_best = objective(history[-1]).max()
    # From ~-590 to ~-7 (full) or ~-2 (diagonal): a minimiser told the raw
    # scores would move away from the target instead.
    assert last_best > 0.05 * first_best, (first_best, last_best)
    assert np.sum((opt.mean - TARGET) ** 2) < 0.05 * np.sum(TARGET**2)
    assert opt.generation == 60


def test_cmaes_lab_defaults_and_zero_start():
    opt = CMAES(DIM, seed=0)
    assert (opt.popsize, opt.sigma0, opt.diagonal) == (40, 3.0, False)
    assert opt._es.sp.weights.mu == 20  # μ = λ/2
    assert np.array_equal(opt.mean, np.zeros(DIM))  # exactly zero before the first tell
    codes = opt.ask()
    assert codes.shape == (40, DIM) and codes.dtype == np.float64
    assert np.array_equal(opt.mean, np.zeros(DIM))
    # Centred on zero with σ0 = 3: the mean of 40 codes has SD 3/√40 per coordinate.
    assert np.abs(codes.mean(axis=0)).max() < 5 * 3 / np.sqrt(40)
    assert 2.5 < codes.std() < 3.5


def test_cmaes_custom_start():
    x0 = np.full(DIM, 2.0)
    opt = CMAES(DIM, popsize=10, sigma0=0.5, seed=0, x0=x0)
    assert np.array_equal(opt.mean, x0)
    assert abs(opt.ask().mean() - 2.0) < 0.2


@pytest.mark.parametrize("diagonal", [False, True])
def test_cmaes_same_seed_same_codes_different_seed_different_codes(diagonal):
    a = run(CMAES(DIM, seed=11, diagonal=diagonal), 5)
    b = run(CMAES(DIM, seed=11, diagonal=diagonal), 5)
    c = run(CMAES(DIM, seed=12, diagonal=diagonal), 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("diagonal", [False, True])
def test_cmaes_state_round_trip_is_bit_identical(diagonal):
    k, more = 6, 5
    uninterrupted = CMAES(DIM, popsize=12, seed=5, diagonal=diagonal)
    run(uninterrupted, k)
    state = uninterrupted.get_state()
    assert isinstance(state, bytes)
    expected = run(uninterrupted, more)

    # A fresh instance, even one built with another seed, continues the saved run.
    resumed = CMAES(DIM, popsize=12, seed=999, diagonal=diagonal)
    resumed.set_state(state)
    assert resumed.generation == k and resumed.seed == 5
    got = run(resumed, more)
    for g, (x, y) in enumerate(zip(expected, got)):
        assert np.array_equal(x, y), f"generation {k + g} differs after restore"
    assert np.array_equal(resumed.mean, uninterrupted.mean)
    assert resumed.sigma == uninterrupted.sigma


def test_cmaes_state_does_not_fit_other_configuration():
    state = CMAES(DIM, popsize=12, seed=5).get_state()
    with pytest.raises(ValueError, match="popsize"):
        CMAES(DIM, popsize=14, seed=5).set_state(state)
    with pytest.raises(ValueError, match="dim"):
        CMAES(DIM + 1, popsize=12, seed=5).set_state(state)
    with pytest.raises(ValueError, match="diagonal"):
        CMAES(DIM, popsize=12, seed=5, diagonal=True).set_state(state)


def test_cmaes_state_only_between_generations():
    opt = CMAES(DIM, popsize=8, seed=0)
    opt.ask()
    with pytest.raises(RuntimeError):
        opt.get_state()


@pytest.mark.parametrize("popsize", [40, 4])  # 4: pycma mirrors samples, another random path
def test_cmaes_ignores_and_keeps_numpy_global_rng(popsize):
    histories = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        before = np.random.get_state()
        histories.append(run(CMAES(DIM, popsize=popsize, seed=3), 8))
        after = np.random.get_state()
        # Not drawn from, not reseeded.
        assert np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    assert all(np.array_equal(x, y) for x, y in zip(*histories))


def test_cmaes_is_silent(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # pycma would write its outcmaes/ logs here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = CMAES(DIM, popsize=4, seed=0)
        run(opt, 5)
        for _ in range(3):  # flat fitness: pycma would warn or stop when asked
            codes = opt.ask()
            opt.tell(codes, np.zeros(4))
        opt.set_state(opt.get_state())
    assert [str(w.message) for w in caught] == []
    assert capsys.readouterr() == ("", "")
    assert list(tmp_path.iterdir()) == []
    assert opt._es.stop() == {}  # termination criteria are the controller's business


def test_cmaes_misuse_is_rejected():
    opt = CMAES(DIM, popsize=6, seed=0)
    with pytest.raises(RuntimeError, match="without a pending ask"):
        opt.tell(np.zeros((6, DIM)), np.zeros(6))
    codes = opt.ask()
    with pytest.raises(RuntimeError, match="twice"):
        opt.ask()
    with pytest.raises(ValueError, match=r"#scores = 5 must equal #codes = 6"):
        opt.tell(codes, np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        opt.tell(codes, np.array([0, 1, np.nan, 3, 4, 5.0]))
    altered = codes.copy()
    altered[2, 7] += 1e-9
    with pytest.raises(ValueError, match="unchanged"):
        opt.tell(altered, np.zeros(6))
    with pytest.raises(ValueError, match="unchanged"):
        opt.tell(codes[::-1], np.zeros(6))
    opt.tell(codes, objective(codes))  # still usable after rejected tells
    with pytest.raises(RuntimeError):
        opt.tell(codes, objective(codes))  # a second tell


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 0, "sigma0": 0.0}, "sigma0"),
        ({"seed": 0, "x0": np.zeros(DIM + 1)}, "x0"),
        ({"seed": 0, "popsize": 1}, "popsize"),
    ],
)
def test_cmaes_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CMAES(DIM, **kwargs)


# ------------------------------------------------------------------ registry


def test_build_optimizer_cmaes():
    assert OPTIMIZER_KINDS == ("cmaes",)
    opt = build_optimizer("cmaes", dim=DIM, seed=4, popsize=10, sigma0=1.5, diagonal=True)
    assert isinstance(opt, CMAES)
    assert (opt.dim, opt.popsize, opt.sigma0, opt.diagonal, opt.seed) == (DIM, 10, 1.5, True, 4)
    default = build_optimizer("cmaes", dim=DIM, seed=4)
    assert (default.popsize, default.sigma0, default.diagonal) == (40, 3.0, False)
    assert np.array_equal(default.ask(), CMAES(DIM, seed=4).ask())


def test_build_optimizer_unknown_kind():
    with pytest.raises(ValueError, match=r"'ga'.*valid kinds: cmaes"):
        build_optimizer("ga", dim=DIM, seed=0)


def test_build_optimizer_unknown_option():
    with pytest.raises(ValueError, match=r"'lambda_'.*popsize.*sigma0.*diagonal"):
        build_optimizer("cmaes", dim=DIM, seed=0, lambda_=40)


@pytest.mark.parametrize(
    "option, value",
    [("popsize", 1), ("popsize", 40.0), ("popsize", True), ("sigma0", 0), ("sigma0", -3.0),
     ("sigma0", float("nan")), ("diagonal", "yes")],
)  # fmt: skip
def test_build_optimizer_bad_values_name_the_option(option, value):
    with pytest.raises(ValueError, match=rf"{option} = .* is invalid; {option} must be"):
        build_optimizer("cmaes", dim=DIM, seed=0, **{option: value})
