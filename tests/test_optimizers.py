"""Optimizers: pycma CMA-ES, Cholesky CMA-ES, XDream's GA, the reference ES; lab defaults,
determinism, bit-identical state round trips, protocol misuse, the registry."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from protocols.optimizers import (
    CMAES,
    OPTIMIZER_KINDS,
    OPTIMIZERS,
    CholeskyCMAES,
    Genetic,
    Optimizer,
    SimpleES,
    build_optimizer,
    optimizer_options,
)

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
    assert OPTIMIZER_KINDS == ("cmaes", "cholesky-cmaes", "genetic", "simple-es")
    opt = build_optimizer("cmaes", dim=DIM, seed=4, popsize=10, sigma0=1.5, diagonal=True)
    assert isinstance(opt, CMAES)
    assert (opt.dim, opt.popsize, opt.sigma0, opt.diagonal, opt.seed) == (DIM, 10, 1.5, True, 4)
    default = build_optimizer("cmaes", dim=DIM, seed=4)
    assert (default.popsize, default.sigma0, default.diagonal) == (40, 3.0, False)
    assert np.array_equal(default.ask(), CMAES(DIM, seed=4).ask())


def test_build_optimizer_unknown_kind():
    with pytest.raises(ValueError, match=r"'ga'.*valid kinds: cmaes, cholesky-cmaes, genetic, simple-es"):
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


# ------------------------------------------- every optimizer, one contract

#: Every registered kind (so registering an optimizer puts it under this suite), plus pycma's diagonal variant.
ALL_KINDS = [*OPTIMIZERS.kinds(), "cmaes-diagonal"]


def make(kind: str, dim: int = DIM, seed: int = 0, **options) -> Optimizer:
    if kind == "cmaes-diagonal":
        return build_optimizer("cmaes", dim=dim, seed=seed, diagonal=True, **options)
    if kind == "genetic" and "popsize" in options:
        options.setdefault("n_conserve", options["popsize"] // 4)  # 10 of 40, scaled down
    return build_optimizer(kind, dim=dim, seed=seed, **options)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_optimizer_improves_a_simple_objective_with_lab_defaults(kind):
    opt = make(kind)
    history = run(opt, 60)
    first = objective(history[0]).mean()
    last = objective(history[-1]).mean()
    # The generation mean rises at least fivefold toward 0 (the optimum); an
    # optimizer that ignored or inverted the scores would stay put or get worse.
    assert last > 0.2 * first, (kind, first, last)
    assert np.sum((opt.mean - TARGET) ** 2) < 0.25 * np.sum(TARGET**2), kind


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_optimizer_resumes_bit_identically_in_a_fresh_instance(kind):
    k, more = 13, 6  # past the Cholesky factor's first update (generation 11)
    uninterrupted = make(kind, popsize=12, seed=5)
    run(uninterrupted, k)
    state = uninterrupted.get_state()
    expected = run(uninterrupted, more)
    resumed = make(kind, popsize=12, seed=999)  # another seed: the state carries its own generator
    resumed.set_state(state)
    assert resumed.generation == k
    got = run(resumed, more)
    for g, (x, y) in enumerate(zip(expected, got)):
        assert np.array_equal(x, y), f"{kind}: generation {k + g} differs after restore"
    assert np.array_equal(resumed.mean, uninterrupted.mean)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_optimizer_states_are_pickle_free(kind, monkeypatch):
    import pickle

    state = run_and_state(make(kind, popsize=8), 3)
    # Restoring never unpickles: make any attempt fail loudly.
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    make(kind, popsize=8).set_state(state)
    assert state[8:10] == b"PK"  # after the base class's 8-byte generation count: an npz (zip) archive


def run_and_state(opt: Optimizer, generations: int) -> bytes:
    run(opt, generations)
    return opt.get_state()




@pytest.mark.parametrize("kind", ALL_KINDS)
def test_optimizer_states_reject_garbage_and_other_configurations(kind):
    state = run_and_state(make(kind, popsize=8), 2)
    name = kind.removesuffix("-diagonal")
    with pytest.raises(ValueError, match=f"not a saved {name} state"):
        make(kind, popsize=8).set_state(b"\0" * 8 + b"garbage")
    with pytest.raises(ValueError, match=r"popsize.*\(8, 10\)"):
        make(kind, popsize=10).set_state(state)
    with pytest.raises(ValueError, match="dim"):
        make(kind, dim=DIM + 1, popsize=8).set_state(state)
    other = "simple-es" if kind != "simple-es" else "cholesky-cmaes"
    with pytest.raises(ValueError, match=rf"\('{name}', \d+\), expected \('{other}', 1\)"):
        make(other, popsize=8).set_state(state)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_optimizer_leaves_numpy_global_rng_alone(kind):
    np.random.seed(1)
    before = np.random.get_state()
    a = run(make(kind, popsize=8, seed=3), 4)
    after = np.random.get_state()
    assert np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    np.random.seed(2)
    b = run(make(kind, popsize=8, seed=3), 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = run(make(kind, popsize=8, seed=4), 1)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("kind", OPTIMIZERS.kinds())
def test_every_optimizer_describes_itself_from_its_options(kind):
    opt = make(kind, popsize=8, seed=3)
    described = opt.describe()
    assert described == {"class": f"{type(opt).__module__}.{type(opt).__qualname__}", "kind": kind,
                         "version": OPTIMIZERS.entry(kind).version, "options": {**optimizer_options(kind),
                                                                                 **opt.options.as_kwargs()}}
    assert described["options"]["popsize"] == 8 and isinstance(opt, OPTIMIZERS.entry(kind).factory)
    # The constructor and the registry take the same options, checked by the same dataclass.
    assert type(opt)(DIM, seed=3, **opt.options.as_kwargs()).options == opt.options
    with pytest.raises(ValueError, match=rf"unknown option\(s\) 'popsise' for optimizer '{kind}' "
                                         rf"\(did you mean 'popsize'\?\)"):
        build_optimizer(kind, dim=DIM, seed=0, popsise=8)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_optimizer_rejects_misuse(kind):
    opt = make(kind, popsize=6)
    with pytest.raises(RuntimeError, match="without a pending ask"):
        opt.tell(np.zeros((6, DIM)), np.zeros(6))
    codes = opt.ask()
    with pytest.raises(RuntimeError, match="twice"):
        opt.ask()
    with pytest.raises(ValueError, match=r"#scores = 5 must equal #codes = 6"):
        opt.tell(codes, np.zeros(5))
    with pytest.raises(RuntimeError, match="between ask"):
        opt.get_state()
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


# ------------------------------------------------------- Cholesky CMA-ES


class DenseCholeskyReference:
    """The Ponce lab's CholeskyCMAES update, written densely (A and A⁻¹ as N×N), for comparison."""

    def __init__(self, opt: CholeskyCMAES) -> None:
        self.o = opt
        n = opt.dim
        self.A, self.Ainv = np.eye(n), np.eye(n)
        self.mean, self.ps, self.pc = opt.mean, np.zeros(n), np.zeros(n)
        self.sigma, self.count, self.last = opt.sigma0, 0, 0
        self.rng = np.random.Generator(np.random.PCG64(opt.seed))

    def ask(self):
        self.z = self.rng.standard_normal((self.o.popsize, self.o.dim))
        return self.mean + self.sigma * self.z @ self.A

    def tell(self, codes, scores):
        o = self.o
        sel = np.argsort(-scores, kind="stable")[: o.mu]
        self.mean = o.weights @ codes[sel]
        zw = o.weights @ self.z[sel]
        self.ps = (1 - o.cs) * self.ps + np.sqrt(o.cs * (2 - o.cs) * o.mueff) * zw
        self.pc = (1 - o.cc) * self.pc + np.sqrt(o.cc * (2 - o.cc) * o.mueff) * zw @ self.A
        self.sigma *= np.exp(o.cs / o.damps * (np.linalg.norm(self.ps) / o.chi_n - 1))
        self.count += o.popsize
        if self.count - self.last > o.update_every * o.popsize:
            self.last = self.count
            c1 = o.c1
            v = (self.pc @ self.Ainv)[None, :]
            normv = float((v @ v.T)[0, 0])
            pc = self.pc[None, :]
            self.A = np.sqrt(1 - c1) * self.A + np.sqrt(1 - c1) / normv * (
                np.sqrt(1 + normv * c1 / (1 - c1)) - 1) * v.T @ pc
            self.Ainv = 1 / np.sqrt(1 - c1) * self.Ainv - 1 / np.sqrt(1 - c1) / normv * (
                1 - 1 / np.sqrt(1 + normv * c1 / (1 - c1))) * self.Ainv @ v.T @ v


def test_cholesky_low_rank_factor_equals_the_dense_reference_update():
    n = 12
    opt = CholeskyCMAES(n, popsize=10, sigma0=1.0, seed=3, update_every=1)
    dense = DenseCholeskyReference(opt)
    target = np.linspace(-2, 2, n)
    for generation in range(40):
        codes, expected = opt.ask(), dense.ask()
        np.testing.assert_allclose(codes, expected, rtol=1e-9, atol=1e-9, err_msg=f"generation {generation}")
        scores = -np.sum((codes - target) ** 2, axis=1)
        opt.tell(codes, scores)
        dense.tell(codes, scores)
    # update_every=1: "more than 1·λ evaluations since the last update" fires every second generation.
    assert opt.factor_updates == 20
    np.testing.assert_allclose(opt.factor(), dense.A, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(opt.factor_inverse(), dense.Ainv, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(opt.factor() @ opt.factor_inverse(), np.eye(n), atol=1e-9)
    assert not np.allclose(opt.factor(), np.eye(n))  # the factor did learn something


def test_cholesky_lab_parameters_and_update_schedule():
    opt = CholeskyCMAES(4096, seed=0)
    assert (opt.popsize, opt.mu, opt.sigma0, opt.update_every) == (40, 20, 3.0, 10)
    assert opt.weights.sum() == pytest.approx(1.0) and np.all(np.diff(opt.weights) < 0)
    assert opt.cc == pytest.approx(4 / 4100)
    assert opt.c1 == pytest.approx(2 / (4096 + 2**0.5) ** 2)
    assert np.array_equal(opt.mean, np.zeros(4096))
    small = CholeskyCMAES(DIM, seed=0)
    updates = []
    for _ in range(34):
        codes = small.ask()
        small.tell(codes, objective(codes))
        updates.append(small.factor_updates)
    # First update once more than 10 generations' evaluations have passed (gen 11), then every 11.
    assert updates.index(1) == 10 and updates.index(2) == 21 and updates.index(3) == 32


def test_cholesky_state_is_small_at_4096():
    opt = CholeskyCMAES(4096, seed=0)
    for _ in range(23):  # two factor updates
        codes = opt.ask()
        opt.tell(codes, -np.sum(codes**2, axis=1))
    assert opt.factor_updates == 2
    # mean, two paths and 4 vectors per update: ~11 vectors of 32 KiB, not 2 × 134 MB.
    assert len(opt.get_state()) < 12 * 4096 * 8 + 4096


# --------------------------------------------------------------- genetic


def test_genetic_lab_defaults_and_first_population():
    opt = build_optimizer("genetic", dim=4096, seed=0)
    assert isinstance(opt, Genetic)
    assert (opt.popsize, opt.mutation_rate, opt.mutation_size, opt.kT_multiplier, opt.n_conserve,
            opt.parental_skew) == (40, 0.25, 0.75, 2.0, 10, 0.75)
    codes = opt.ask()
    assert codes.shape == (40, 4096) and abs(codes.std() - 1.0) < 0.02  # XDream: standard normal


def test_genetic_conserves_the_best_and_breeds_the_rest():
    opt = Genetic(DIM, seed=1)
    codes = opt.ask()
    scores = objective(codes)
    opt.tell(codes, scores)
    new = opt.ask()
    ranked = codes[np.argsort(-scores)]
    assert np.array_equal(new[:10], ranked[:10])  # the 10 best, unchanged, best first
    children = new[10:]
    # Each child gene comes from some parent, unless mutated (rate 0.25).
    from_parent = (children[:, None, :] == codes[None, :, :]).any(axis=1)
    assert 0.65 < from_parent.mean() < 0.85
    assert opt.kT == pytest.approx(2 * scores.std())


def test_genetic_selection_follows_the_softmax_temperature():
    # Without mutation every child gene comes from a parent. With a tiny kT only
    # the best code (score 39, index 39) is ever a parent; with a huge one, most are.
    parents = {}
    for kT in (1e-6, 1e4):  # 1e4: the largest kT_multiplier allowed (MAX_STEP)
        opt = Genetic(DIM, seed=2, kT_multiplier=kT, mutation_rate=0.0, n_conserve=0)
        codes = opt.ask()
        opt.tell(codes, np.arange(40.0))
        children = opt.ask()
        matches = children[:, None, :] == codes[None, :, :]  # (child, code, gene)
        assert matches.any(axis=1).all()
        parents[kT] = set(np.unique(matches.argmax(axis=1)).tolist())
    assert parents[1e-6] == {39}
    assert len(parents[1e4]) > 15


@pytest.mark.parametrize(
    "option, value",
    [("mutation_rate", 1.5), ("mutation_rate", -0.1), ("mutation_size", 0), ("kT_multiplier", -1),
     ("n_conserve", -1), ("n_conserve", 2.0), ("parental_skew", 0.3), ("init_sigma", float("inf"))],
)  # fmt: skip
def test_build_genetic_bad_values_name_the_option(option, value):
    with pytest.raises(ValueError, match=rf"optimizer 'genetic': {option} = .* is invalid; {option} must be"):
        build_optimizer("genetic", dim=DIM, seed=0, **{option: value})


def test_build_genetic_n_conserve_must_leave_room_for_children():
    with pytest.raises(ValueError, match=r"n_conserve = 10 is invalid; n_conserve must be < popsize = 10"):
        build_optimizer("genetic", dim=DIM, seed=0, popsize=10)


@pytest.mark.parametrize(
    "kind, option, value",
    [("cholesky-cmaes", "update_every", 0), ("cholesky-cmaes", "sigma0", "3"), ("simple-es", "decay", 1.5),
     ("simple-es", "popsize", 1)],
)  # fmt: skip
def test_build_other_kinds_bad_values_name_the_option(kind, option, value):
    with pytest.raises(ValueError, match=rf"optimizer '{kind}': {option} = .* is invalid; {option} must be"):
        build_optimizer(kind, dim=DIM, seed=0, **{option: value})


def test_optimizer_options_lists_lab_defaults_and_overrides_apply():
    assert optimizer_options("cholesky-cmaes") == {"popsize": 40, "sigma0": 3.0, "update_every": 10}
    opt = build_optimizer("cholesky-cmaes", dim=DIM, seed=0, sigma0=1.0, update_every=3)
    assert (opt.sigma, opt.update_every) == (1.0, 3)
    es = build_optimizer("simple-es", dim=DIM, seed=0, popsize=6)
    assert isinstance(es, SimpleES) and es.ask().shape == (6, DIM)
    with pytest.raises(ValueError, match=r"'mu'.*valid options: popsize"):
        build_optimizer("genetic", dim=DIM, seed=0, mu=3)
