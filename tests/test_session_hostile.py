"""Crafted and damaged session files: every reading command fails with one clean line naming what is wrong.

Issue 12, defects 3, 7, 8 and 9: huge declared shapes, unparsable attributes, a journal path that is a
file, NaN scores on valid stimuli, a missing or damaged journal block (and `rig salvage`), a damaged
checkpoint (resume falls back), and two writers racing for one path.
"""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

import rig.session.reader as reader
import rig.session.writer as writer_module
from rig.cli import EXIT_USAGE
from rig.session import SessionFileError, block_digest, journal_dir, read_session
from rig.session.sandbox import failure_in_child
from helpers.session_commands import reading_commands, run_command
from helpers.sessions import master_with, new_writer, write_blocks
from helpers.protocols import run_tiny_session

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A real 3-block session (the CLI's own run), killed-looking copies are made from it."""
    return run_tiny_session(tmp_path_factory.mktemp("tiny"), generations=3)


def _copy(tiny: Path, folder: Path, name: str = "s.h5") -> Path:
    out = folder / name
    shutil.copy(tiny, out)
    return out


def _every_command_refuses(path: Path, scratch: Path, capsys, *needles: str, block_damage: bool = True) -> None:
    """Each reading command exits 2 with one line naming the file and each of ``needles``.

    With ``block_damage`` `rig salvage` instead succeeds and names them among what was lost.
    """
    for name, argv in reading_commands(path, scratch).items():
        code, err = run_command(argv, capsys)
        if name == "salvage" and block_damage:
            assert code == 0 and "lost: " in err and all(n in err for n in needles), err
            continue
        assert code == EXIT_USAGE, (name, code, err)
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert str(path) in err and all(n in err for n in needles), (name, err)
        assert "Traceback" not in err


def _rewrite_digest(g: h5py.Group) -> None:
    """Recompute a block's sha256 after editing it, as an attacker would."""
    g.attrs["sha256"] = block_digest({
        "index": int(g.attrs["index"]), "channel_names": json.loads(g.attrs["channel_names"]),
        "stimulus_ids": [s.decode() for s in g["stimulus_ids"][()]], "kinds": [s.decode() for s in g["kinds"][()]],
        **{k: g[k][()] for k in ("codes", "threads", "code_index", "onset_times", "offset_times", "dropped_frames",
                                 "presentation_valid", "scores", "valid")}})


# ------------------------------------------------------------------ defect 3: crafted sizes and attributes

def test_a_huge_declared_shape_is_refused_by_name_in_every_command(tiny, tmp_path, capsys):
    path = _copy(tiny, tmp_path)
    with h5py.File(path, "r+") as f:
        del f["blocks/000001/scores"]
        f["blocks/000001"].create_dataset("scores", shape=(2**40, 2), dtype="f8", chunks=(1024, 2),
                                          maxshape=(None, 2))  # 16 TiB declared, nothing stored
    assert path.stat().st_size < 2**20
    with pytest.raises(SessionFileError, match=r"/blocks/000001/scores: declares shape \(1099511627776, 2\)"):
        read_session(path)
    _every_command_refuses(path, tmp_path, capsys, "/blocks/000001/scores", "declares shape")


def _exhaust(*_: object) -> None:  # module-level: the probe child loads it by name
    raise MemoryError


def test_the_probe_child_reports_running_out_of_memory(tiny, monkeypatch):
    assert failure_in_child(_exhaust, timeout_s=10) == "ran out of memory reading it (MemoryError)"
    monkeypatch.setattr(reader, "_read_all", _exhaust)
    with pytest.raises(SessionFileError, match="ran out of memory reading it"):
        read_session(tiny)


@pytest.mark.parametrize("name, value, message", [
    ("provenance", "{not json", "root attribute provenance is not JSON"),
    ("provenance", "[" * 200 + "]" * 200, "root attribute provenance is JSON nested more than 64 levels"),
    ("provenance", "[" * 100000 + "]" * 100000, "root attribute provenance is not JSON (RecursionError)"),
    ("resumes", '{"a": 1}', "root attribute resumes is not a JSON list"),
    ("seed", "abc", "root attribute seed is str 'abc', expected int"),
    ("status", np.array(b"\xff\xferunning", dtype=h5py.string_dtype("utf-8")), "root attribute status cannot be read"),
    ("clock_anchor", "nope", "root attribute clock_anchor is not JSON"),
])
def test_unparsable_root_attributes_are_named(tiny, tmp_path, capsys, name, value, message):
    path = _copy(tiny, tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value
    with pytest.raises(SessionFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_session(path)
    _every_command_refuses(path, tmp_path, capsys, message, block_damage=False)


def test_unparsable_block_attributes_are_named(tiny, tmp_path):
    path = _copy(tiny, tmp_path)
    with h5py.File(path, "r+") as f:
        f["blocks/000002"].attrs["timings"] = b"\xff not json"
    with pytest.raises(SessionFileError, match="/blocks/000002 attribute timings"):
        read_session(path)


def test_a_journal_path_that_is_a_file_is_a_clean_error(tmp_path, write_protocol, capsys):
    path = tmp_path / "s.h5"
    journal_dir(path).write_text("in the way")
    with pytest.raises(SessionFileError, match=r"s\.h5\.journal: is in the way .* not a folder"):
        new_writer(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5.journal"]  # nothing left behind
    code, err = run_command(["run", str(write_protocol()), "--out", str(path), "--quiet"], capsys)
    assert code == EXIT_USAGE and "s.h5.journal: is in the way" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ defect 9: one rule for scores, no silent gaps

def test_a_valid_stimulus_with_a_nan_score_is_damage_for_every_command(tiny, tmp_path, capsys):
    path = _copy(tiny, tmp_path)
    with h5py.File(path, "r+") as f:
        g = f["blocks/000001"]
        scores = g["scores"][()]
        scores[2, 0] = np.inf
        g["scores"][...] = scores
        _rewrite_digest(g)  # the checksum no longer catches it
    with pytest.raises(SessionFileError, match=r"/blocks/000001/scores: valid stimulus .* non-finite score inf"):
        read_session(path)
    with pytest.raises(SessionFileError, match="non-finite score"):
        read_session(path, verify=False)  # the rule is not the checksum's: replay reads unverified
    _every_command_refuses(path, tmp_path, capsys, "/blocks/000001/scores", "non-finite score")


def test_an_invalid_stimulus_may_have_a_nan_score(tmp_path):
    def invalidate(f: h5py.File) -> None:
        g = f["blocks/000001"]
        valid, scores = g["valid"][()], g["scores"][()]
        valid[3], scores[3] = False, np.nan
        g["valid"][...], g["scores"][...] = valid, scores
        _rewrite_digest(g)

    block = read_session(master_with(tmp_path, invalidate)).blocks[1]
    assert not block.valid[3] and np.isnan(block.scores[3]).all()


def _killed_session(tmp_path: Path, blocks: int) -> Path:
    path = tmp_path / "killed.h5"
    write_blocks(new_writer(path), blocks)  # never finished: every block is in the journal
    return path


def test_a_missing_journal_block_is_reported_not_skipped(tiny, tmp_path, capsys):
    path = _killed_session(tmp_path, 4)
    (journal_dir(path) / "000001.h5").unlink()
    with pytest.raises(SessionFileError, match="block 1 is missing"):
        read_session(path)
    for argv in (["analyze", "trajectory", str(path)], ["report", str(path), "--out", str(tmp_path / "r"), "--no-nearest"]):
        code, err = run_command(argv, capsys)
        assert code == EXIT_USAGE and "block 1 is missing" in err and "rig salvage" in err


# ------------------------------------------------------------------ defect 7: salvage

def test_salvage_keeps_the_intact_blocks_before_the_damage(tmp_path, capsys):
    path = _killed_session(tmp_path, 6)
    damaged = journal_dir(path) / "000003.h5"
    damaged.write_bytes(damaged.read_bytes()[:2000])
    before = {p: p.read_bytes() for p in [path, *journal_dir(path).iterdir()]}
    with pytest.raises(SessionFileError, match="000003.h5: damaged journal file"):
        read_session(path)
    out = tmp_path / "salvaged.h5"
    code, err = run_command(["salvage", str(path), str(out)], capsys)
    assert code == 0, err
    session = read_session(out)
    assert [b.index for b in session.blocks] == [0, 1, 2]
    assert session.attrs["status"] == "salvaged"
    note = json.loads(session.attrs["salvaged"])
    assert note["blocks_kept"] == 3 and note["after_damage"] == [4, 5] and "000003.h5" in note["damage"][0]
    assert {p: p.read_bytes() for p in before} == before  # the damaged session is only read
    assert not journal_dir(out).exists()
    # Never over an existing file, never over the session itself.
    for target in (out, path):
        code, err = run_command(["salvage", str(path), str(target)], capsys)
        assert code == EXIT_USAGE and str(target) in err


def test_salvage_prints_what_was_lost(tmp_path, capsys):
    path = _killed_session(tmp_path, 4)
    (journal_dir(path) / "000001.h5").unlink()
    capsys.readouterr()
    from rig.cli import main
    assert main(["salvage", str(path), str(tmp_path / "out.h5")]) == 0
    out = capsys.readouterr().out
    assert "blocks 0..0 (1 intact)" in out and "lost: " in out and "block 1 is missing" in out
    assert "2-3 follow the damage" in out


# ------------------------------------------------------------------ defect 8: never overwritten, atomically

def test_two_writers_racing_for_one_path_never_overwrite(tmp_path, monkeypatch):
    """A pauses after checking the path is free; B creates, writes 14 blocks and finishes; A must not replace it."""
    path = tmp_path / "s.h5"
    a_checked, b_done = threading.Event(), threading.Event()
    lock_init = writer_module._WriterLock.__init__

    def pausing_lock(self, folder, session):
        if threading.current_thread().name == "A":
            a_checked.set()
            assert b_done.wait(60)
        lock_init(self, folder, session)

    monkeypatch.setattr(writer_module._WriterLock, "__init__", pausing_lock)
    errors: list[BaseException] = []

    def writer_a() -> None:
        try:
            new_writer(path)
        except BaseException as exc:  # noqa: BLE001 (checked below)
            errors.append(exc)

    thread = threading.Thread(target=writer_a, name="A")
    thread.start()
    assert a_checked.wait(60)
    b = new_writer(path)
    write_blocks(b, 14)
    b.finish()
    b_done.set()
    thread.join(60)
    assert len(errors) == 1 and isinstance(errors[0], SessionFileError), errors
    assert "nothing was overwritten" in str(errors[0])
    assert [blk.index for blk in read_session(path).blocks] == list(range(14))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]  # A left no debris


def test_a_merge_never_replaces_a_file_the_writer_did_not_create(tmp_path):
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    write_blocks(writer, 2)
    other = tmp_path / "other.h5"
    new_writer(other).finish()
    other.replace(path)  # someone put another file at the path while the session ran
    stranger = path.read_bytes()
    with pytest.raises(SessionFileError, match="no longer the file this session wrote"):
        writer.finish()
    assert path.read_bytes() == stranger
    assert sorted(p.name for p in journal_dir(path).iterdir()) == ["000000.h5", "000001.h5"]
    assert not list(tmp_path.glob(".*"))
