"""`rig sweep`: models × units × seeds, run here and on a local Dask cluster of worker processes."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from rig.analysis import convergence, session_trajectory
from rig.cli import EXIT_USAGE, main
from rig.session import read_session
from rig.loop.sweep import expand_units, plan_sweep, run_dask, run_local
from helpers.protocols import tiny_protocol

PROTOCOL = tiny_protocol(generations=3, seed=10, references=4, units=("test_cnn:features.7:unit=0",))
UNITS = ["test_cnn:features.7:unit=1..2", "test_vit:blocks.1:unit=3"]


@pytest.fixture
def protocol(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(PROTOCOL)
    return path


def test_expand_units_and_plan(protocol, tmp_path):
    assert expand_units(["m:l:unit=2..4:pos=1,1", "m:l:unit=3:pos=1,1"]) == [
        "m:l:unit=2:pos=1,1", "m:l:unit=3:pos=1,1", "m:l:unit=4:pos=1,1"]
    with pytest.raises(ValueError, match="range 3..1 is empty"):
        expand_units(["m:l:unit=3..1"])
    jobs = plan_sweep(protocol, UNITS, [10, 11], tmp_path / "out", weights="random")
    # One job per model and seed; a model's units are threads of one evolution.
    assert [(j.model, j.seed, j.units) for j in jobs] == [
        ("test_cnn", 10, ("test_cnn:features.7:unit=1", "test_cnn:features.7:unit=2")),
        ("test_cnn", 11, ("test_cnn:features.7:unit=1", "test_cnn:features.7:unit=2")),
        ("test_vit", 10, ("test_vit:blocks.1:unit=3",)),
        ("test_vit", 11, ("test_vit:blocks.1:unit=3",)),
    ]
    with pytest.raises(ValueError, match="bad unit spec"):
        plan_sweep(protocol, ["test_cnn"], [1], tmp_path / "out")


@pytest.mark.timeout(240)
def test_local_and_dask_sweeps_agree(protocol, tmp_path):
    local_jobs = plan_sweep(protocol, UNITS, [11], tmp_path / "local", weights="random")
    local = run_local(local_jobs)
    dask_jobs = plan_sweep(protocol, UNITS, [11], tmp_path / "dask", weights="random")
    distributed = run_dask(dask_jobs, workers=2)
    # The jobs ran in other processes (Dask workers), not in this one.
    assert {r["pid"] for r in local} == {os.getpid()}
    assert os.getpid() not in {r["pid"] for r in distributed}
    for a, b in zip(local, distributed):
        assert [(u["model"], u["unit"], u["seed"]) for u in a["units"]] == [
            (u["model"], u["unit"], u["seed"]) for u in b["units"]]
        for ua, ub in zip(a["units"], b["units"]):
            assert ua["best_score"] == pytest.approx(ub["best_score"], rel=1e-5)
            assert ua["gen_50"] == ub["gen_50"]
    # Each row is what its session file says.
    session = read_session(dask_jobs[0].session)
    row = distributed[0]["units"][1]
    assert row["unit"] == "test_cnn:features.7:unit=2" and row["seed"] == 11
    assert len(session.blocks) == 3 and session.blocks[0].codes.shape[0] == 2   # 2 units = 2 threads
    assert row["best_score"] == max(b.thread_scores(1, 1).max() for b in session.blocks)
    assert row["gen_50"] == convergence(session_trajectory(session, 1).mean).reached[0.5]


@pytest.mark.timeout(180)
def test_rig_sweep_writes_tidy_tables_and_figures(protocol, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(protocol), "--unit", UNITS[0], "--unit", UNITS[1], "--seeds", "2",
                 "--weights", "random", "--out", str(out)]) == 0
    assert "4 sessions (6 evolutions" in capsys.readouterr().out
    with (out / "units.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2
    assert {(r["model"], r["family"]) for r in rows} == {("test_cnn", "cnn"), ("test_vit", "vit")}
    assert sorted({r["seed"] for r in rows}) == ["10", "11"]
    with (out / "generations.csv").open() as f:
        gens = list(csv.DictReader(f))
    assert len(gens) == 3 * 2 * 3
    for row in rows:
        mine = [float(g["max"]) for g in gens if g["unit"] == row["unit"] and g["seed"] == row["seed"]]
        assert float(row["best_score"]) == pytest.approx(max(mine))
        assert np.isfinite(float(row["natural_percentile"]))
    assert (out / "convergence.png").stat().st_size > 1000 and (out / "comparison.png").stat().st_size > 1000
    # A non-empty --out is refused rather than overwritten.
    assert main(["sweep", str(protocol), "--unit", UNITS[0], "--out", str(out)]) == EXIT_USAGE
    assert "is not empty" in capsys.readouterr().err
