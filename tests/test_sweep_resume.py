"""A killed multi-unit sweep session resumes and ends exactly like an uninterrupted one (issue 13, section 3).

A sweep runs a model's units as threads of one evolution, changing the protocol's
``threads``; the session's run record says so, and ``rig run --resume`` rebuilds
from it (before the record, this failed: "1 threads need 1 or 1 neuron channels, got 2").
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from rig.cli import main
from rig.loop.run_record import RunRecord
from rig.loop.sweep import plan_sweep, run_job
from rig.session import read_session
from helpers.sessions import kill_after_blocks
from helpers.protocols import tiny_protocol

PROTOCOL = tiny_protocol(generations=12, seed=3, references=2, units=("test_cnn:features.7:unit=0",),
                         extra='[neuron.response]\ngain = 20.0\noffset = 10.0\nnoise = "poisson"\n'
                         ).replace('kind = "fourier"\n', 'kind = "fourier"\npixels = "sigmoid"\n')
# Sessions from before the run record ran in the Fourier space before its bound; a record-less file rebuilds
# its generator that way, so the sessions here are made in that space to stand for them.
UNITS = ["test_cnn:features.7:unit=1..3"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep_resume")
    (folder / "sweep.toml").write_text(PROTOCOL)
    [reference] = plan_sweep(folder / "sweep.toml", UNITS, [3], folder / "reference", weights="random")
    run_job(reference)
    return folder, reference


def test_the_sweep_session_records_its_threads_and_units(sweep):
    _, reference = sweep
    session = read_session(reference.session)
    record = RunRecord.from_json(session.attrs["run_record"], reference.session)
    assert record.threads == 3 and record.units == reference.units and record.seed == 3
    assert record.weights == "random" and record.response == {"gain": 20.0, "offset": 10.0, "noise": "poisson"}
    assert record.sweep == {"model": "test_cnn", "torch_threads": None}
    assert "threads = 1" in session.attrs["protocol_toml"]  # the protocol text is as written; the record says 3
    assert "resume_with" not in json.loads(session.attrs["provenance"])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("killed_after, restored", [(4, "the start"), (11, "the checkpoint after block 9")])
def test_a_killed_multi_unit_sweep_session_resumes_exactly(sweep, monkeypatch, capsys, killed_after, restored):
    folder, reference = sweep
    [job] = plan_sweep(folder / "sweep.toml", UNITS, [3], folder / f"killed{killed_after}", weights="random")
    kill_after_blocks(killed_after, monkeypatch, lambda: run_job(job))
    assert len(read_session(job.session).blocks) == killed_after
    capsys.readouterr()
    assert main(["run", "--resume", job.session, "--quiet"]) == 0
    assert f"optimizer restored from {restored}" in capsys.readouterr().out
    a, b = read_session(job.session), read_session(reference.session)
    assert a.attrs["status"] == b.attrs["status"] == "complete"
    assert [blk.index for blk in a.blocks] == [blk.index for blk in b.blocks] == list(range(12))
    for ba, bb in zip(a.blocks, b.blocks):
        assert ba.codes.shape[0] == 3  # three units, three threads
        np.testing.assert_array_equal(ba.codes, bb.codes)  # bit for bit
        np.testing.assert_array_equal(ba.scores, bb.scores)
        assert ba.channel_names == bb.channel_names
    assert a.attrs["run_record"] == b.attrs["run_record"]


def _as_before_the_record(source, out, **provenance_changes) -> None:
    """A copy of ``source`` laid out as sessions were before the run record: overrides in provenance."""
    import shutil

    import h5py

    shutil.copy(source, out)
    with h5py.File(out, "r+") as f:
        record = json.loads(f.attrs["run_record"])
        del f.attrs["run_record"]
        provenance = json.loads(f.attrs["provenance"])
        provenance["resume_with"] = {"units": record["units"], "weights": record["weights"], "display": "headless"}
        provenance.update(provenance_changes)
        f.attrs["provenance"] = json.dumps(provenance)
        f.attrs["status"] = "failed"
        for name in ("000011", "000010"):
            del f["blocks"][name]
        del f["checkpoints/000011"]


def test_an_older_sweep_session_without_a_record_resumes_from_its_provenance(sweep, capsys):
    folder, reference = sweep
    old = folder / "old.h5"
    _as_before_the_record(reference.session, old)
    assert main(["run", "--resume", str(old), "--quiet"]) == 0
    a, b = read_session(old), read_session(reference.session)
    assert "run_record" not in a.attrs and a.attrs["status"] == "complete"
    for ba, bb in zip(a.blocks, b.blocks, strict=True):
        np.testing.assert_array_equal(ba.codes, bb.codes)


def test_an_older_session_cannot_point_a_resume_at_a_remote_stream_silently(sweep, capsys):
    from rig.cli import EXIT_USAGE

    folder, reference = sweep
    old = folder / "old_remote.h5"
    _as_before_the_record(reference.session, old)
    import h5py

    with h5py.File(old, "r+") as f:
        provenance = json.loads(f.attrs["provenance"])
        provenance["resume_with"]["units"] = ["zmq://203.0.113.7:5556"]
        f.attrs["provenance"] = json.dumps(provenance)
    capsys.readouterr()
    assert main(["run", "--resume", str(old), "--quiet"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "203.0.113.7" in err and "--allow-remote-stream" in err
