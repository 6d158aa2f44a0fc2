"""`rig run --resume`: a stopped session carries on and ends exactly where an uninterrupted one does."""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from rig.cli import EXIT_USAGE, main
from rig.session import journal_dir, read_session
from helpers.sessions import RESUME_PROTOCOL, assert_same_session, run_until_killed


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume")
    (folder / "p.toml").write_text(RESUME_PROTOCOL)
    assert main(["run", str(folder / "p.toml"), "--out", str(folder / "reference.h5"), "--quiet"]) == 0
    return folder


@pytest.mark.parametrize("killed_after, restored, replayed",
                         [(0, "the start", 0), (3, "the start", 3), (11, "the checkpoint after block 9", 1)])
def test_resume_ends_exactly_like_an_uninterrupted_run(folder, monkeypatch, capsys, killed_after, restored, replayed):
    out = run_until_killed(folder, f"killed{killed_after}.h5", killed_after, monkeypatch)
    assert read_session(out).attrs["status"] == "running"
    assert len(list(journal_dir(out).glob("*.h5"))) == killed_after
    capsys.readouterr()

    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{killed_after} of 12 blocks recorded; optimizer restored from {restored} and {replayed} recorded" in printed
    assert "done: 12 blocks" in printed
    assert not journal_dir(out).exists()
    session = read_session(out)
    assert session.attrs["status"] == "complete"
    assert '"blocks_found": %d' % killed_after in session.attrs["resumes"]
    assert_same_session(out, folder / "reference.h5")
    assert main(["replay", str(out)]) == 0


def test_a_session_that_failed_cleanly_resumes_too(folder, capsys):
    """A crash the controller saw (status failed, journal merged) resumes like a kill."""
    out = folder / "failed.h5"
    shutil.copy(folder / "reference.h5", out)
    with h5py.File(out, "r+") as f:
        f.attrs["status"] = "failed"
        for name in ("000010", "000011"):
            del f["blocks"][name]
        del f["checkpoints/000011"]
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert_same_session(out, folder / "reference.h5")


def test_resume_refuses_what_it_cannot_continue(folder, capsys):
    assert main(["run", "--resume", str(folder / "reference.h5")]) == EXIT_USAGE
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["run", "--resume", str(folder / "reference.h5"), "--out", "x.h5"]) == EXIT_USAGE
    assert "--resume takes everything from the session file" in capsys.readouterr().err
    assert main(["run", "--quiet"]) == EXIT_USAGE
    assert "needs a protocol file and --out" in capsys.readouterr().err


def test_resume_refuses_a_protocol_that_no_longer_validates_and_leaves_the_file_alone(folder, monkeypatch, capsys):
    out = run_until_killed(folder, "invalid.h5", 2, monkeypatch)
    with h5py.File(out, "r+") as f:
        text = f.attrs["protocol_toml"].replace('rectify = "relu"', "").replace("gain = 20.0", "gain = 'loud'")
        f.attrs["protocol_toml"] = text
        f.attrs["protocol_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    before = {p: p.read_bytes() for p in [out, *journal_dir(out).iterdir()]}
    capsys.readouterr()
    assert main(["run", "--resume", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "gain" in err
    assert {p: p.read_bytes() for p in before} == before


def test_resume_refuses_recorded_blocks_that_do_not_replay(folder, monkeypatch, capsys):
    out = run_until_killed(folder, "forged.h5", 4, monkeypatch)
    with h5py.File(journal_dir(out) / "000001.h5", "r+") as f:
        codes = f["blocks/000001/codes"][()]
        codes[1, 0, 0] += 1.0
        f["blocks/000001/codes"][...] = codes
    capsys.readouterr()
    assert main(["run", "--resume", str(out)]) == EXIT_USAGE
    assert "does not match its sha256" in capsys.readouterr().err


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_pickled_checkpoint_runs_nothing_and_resume_replays_past_it(folder, monkeypatch, capsys):
    """A checkpoint swapped for a pickle (with its sha256 recomputed, as an attacker would) runs nothing."""
    out = run_until_killed(folder, "pickled.h5", 11, monkeypatch)
    evil = (10).to_bytes(8, "little") + pickle.dumps(_Boom())
    with h5py.File(journal_dir(out) / "000009.h5", "r+") as f:
        del f["checkpoints/000009/thread0"]
        f["checkpoints/000009/thread0"] = np.frombuffer(evil, dtype=np.uint8)
        f["checkpoints/000009/thread0"].attrs["sha256"] = hashlib.sha256(evil).hexdigest()
    monkeypatch.chdir(folder)
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "the optimizer checkpoint after block 9 cannot be restored" in captured.err and "is a pickle" in captured.err
    assert "replaying from block 0" in captured.err and "11 recorded block(s) replayed" in captured.out
    assert not (folder / "PWNED").exists()
    assert_same_session(out, folder / "reference.h5")


def test_a_damaged_checkpoint_falls_back_and_resumes_identically(folder, monkeypatch, capsys):
    """Issue 12, defect 7: one damaged checkpoint used to make a killed session unresumable."""
    out = run_until_killed(folder, "damaged_checkpoint.h5", 11, monkeypatch)
    with h5py.File(journal_dir(out) / "000009.h5", "r+") as f:
        f["checkpoints/000009/thread1"][100] ^= 0xFF  # a flipped byte: fails its sha256
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning:") == 1, captured.err
    assert "checkpoint after block 9 cannot be restored" in captured.err and "does not match its sha256" in captured.err
    assert "optimizer restored from the start and 11 recorded block(s) replayed" in captured.out
    assert_same_session(out, folder / "reference.h5")


def test_a_damaged_journal_block_is_salvaged_and_the_salvage_resumes_identically(folder, monkeypatch, capsys):
    out = run_until_killed(folder, "damaged_block.h5", 7, monkeypatch)
    block = journal_dir(out) / "000004.h5"
    block.write_bytes(block.read_bytes()[:3000])
    capsys.readouterr()
    for argv in (["run", "--resume", str(out)], ["replay", str(out)]):
        assert main(argv) == EXIT_USAGE
        assert "000004.h5: damaged journal file" in capsys.readouterr().err
    salvaged = folder / "salvaged.h5"
    assert main(["salvage", str(out), str(salvaged)]) == 0
    printed = capsys.readouterr().out
    assert "blocks 0..3 (4 intact)" in printed and "5-6 follow the damage" in printed
    assert main(["run", "--resume", str(salvaged), "--quiet"]) == 0
    assert_same_session(salvaged, folder / "reference.h5")
