"""The session file: round trip, journal and merge, integrity, and hostile input, on real HDF5 files."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest

from rig.session import SCHEMA_VERSION, SessionFileError, SessionWriter, block_digest, journal_dir, read_session
from helpers.sessions import make_block, master_with, new_writer, write_blocks


def assert_block_equal(recorded, block, presentations, responses):
    assert recorded.index == block.index
    np.testing.assert_array_equal(recorded.codes, block.codes)
    assert recorded.stimulus_ids == block.stimulus_ids
    assert recorded.kinds == block.kinds
    np.testing.assert_array_equal(recorded.threads, block.threads)
    np.testing.assert_array_equal(recorded.code_index, block.code_index)
    np.testing.assert_array_equal(recorded.onset_times, presentations.onset_times)
    np.testing.assert_array_equal(recorded.offset_times, presentations.offset_times)
    np.testing.assert_array_equal(recorded.dropped_frames, presentations.dropped_frames)
    np.testing.assert_array_equal(recorded.scores, responses.scores)
    np.testing.assert_array_equal(recorded.valid, responses.valid)
    assert recorded.channel_names == responses.channel_names
    assert recorded.clock == "test.clock"
    assert recorded.digest_ok is True


def test_round_trip_through_journal_and_merge(tmp_path):
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    written = write_blocks(writer, 4, checkpoint_at=(1, 3))

    # Running (or killed): the blocks sit in the journal, one durable file each, and read back from there.
    assert sorted(p.name for p in journal_dir(path).iterdir()) == ["000000.h5", "000001.h5", "000002.h5", "000003.h5"]
    running = read_session(path)
    assert running.attrs["status"] == "running"
    assert running.journal_blocks == 4
    for recorded, parts in zip(running.blocks, written):
        assert_block_equal(recorded, *parts)
    assert running.checkpoint(3) == {"thread0": bytes([3]) * 100}

    writer.finish()
    assert not journal_dir(path).exists()
    done = read_session(path)
    assert done.attrs["status"] == "complete" and done.journal_blocks == 0
    assert sorted(done.checkpoints) == [1, 3]
    assert done.checkpoint(1) == {"thread0": bytes([1]) * 100}
    for recorded, parts in zip(done.blocks, written):
        assert_block_equal(recorded, *parts)
    assert len(done.blocks[2].showings) == 1
    np.testing.assert_array_equal(done.blocks[2].showings[0]["scores"], written[2][2].scores)


def test_plain_h5py_reads_a_merged_session_with_plain_types(tmp_path):
    """What MATLAB's h5read or another lab's h5py sees: numbers, strings, JSON text; no object references."""
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    written = write_blocks(writer, 2)
    writer.finish()
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert json.loads(f.attrs["provenance"])["thread_seeds"] == [1, 2]
        g = f["blocks/000001"]
        np.testing.assert_array_equal(g["codes"][()], written[1][0].codes)
        assert [s.decode() for s in g["stimulus_ids"][()]] == written[1][0].stimulus_ids
        assert g.attrs["sha256"] == block_digest({
            "index": 1, "channel_names": ["ch0", "ch1"], "stimulus_ids": written[1][0].stimulus_ids,
            "kinds": written[1][0].kinds, "codes": g["codes"][()], "threads": g["threads"][()],
            "code_index": g["code_index"][()], "onset_times": g["onset_times"][()],
            "offset_times": g["offset_times"][()], "dropped_frames": g["dropped_frames"][()],
            "presentation_valid": g["presentation_valid"][()], "scores": g["scores"][()], "valid": g["valid"][()]})

        def plain(name, obj):
            if isinstance(obj, h5py.Dataset):
                assert obj.dtype.kind in "fiub" or h5py.check_string_dtype(obj.dtype), (name, obj.dtype)
        f.visititems(plain)


def test_a_killed_write_leaves_a_partial_file_that_is_ignored_then_replaced(tmp_path):
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    write_blocks(writer, 2)
    # What a SIGKILL during block 2's write leaves: a half-written journal file under a temporary name.
    partial = journal_dir(path) / ".000002.h5.partial"
    partial.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(300))
    assert [b.index for b in read_session(path).blocks] == [0, 1]
    # A stale merge (killed mid-finish) is ignored too; the master is only ever replaced whole.
    (tmp_path / ".s.h5.merging").write_bytes(b"half a copy")
    assert [b.index for b in read_session(path).blocks] == [0, 1]
    writer.finish("interrupted")
    assert not partial.exists()
    assert [b.index for b in read_session(path).blocks] == [0, 1]


def test_reopen_merges_the_journal_records_the_resume_and_goes_on(tmp_path):
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    write_blocks(writer, 3, checkpoint_at=(1,))
    writer.abandon()  # as when the process is killed: the kernel drops its lock

    again = SessionWriter.reopen(path, note={"host": "here"})
    merged = read_session(path)
    assert merged.journal_blocks == 0 and [b.index for b in merged.blocks] == [0, 1, 2]
    resumes = json.loads(merged.attrs["resumes"])
    assert resumes[0]["blocks_found"] == 3 and resumes[0]["host"] == "here"
    rng = np.random.default_rng(9)
    again.append_block(*make_block(3, rng), {}, {})
    again.finish()
    assert [b.index for b in read_session(path).blocks] == [0, 1, 2, 3]
    with pytest.raises(SessionFileError, match="session is complete; there is nothing to resume"):
        SessionWriter.reopen(path)


def test_two_writers_never_share_a_session(tmp_path):
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    write_blocks(writer, 1)
    with pytest.raises(SessionFileError, match="another process is writing this session"):
        SessionWriter.reopen(path)
    with pytest.raises(SessionFileError, match="already exists"):
        new_writer(path)
    with pytest.raises(SessionFileError, match="block 0 is already recorded"):
        write_blocks(writer, 1)


def test_reading_never_writes(tmp_path):
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    write_blocks(writer, 2)
    before = {p: p.read_bytes() for p in [path, *journal_dir(path).iterdir()]}
    os.chmod(path, 0o444)  # a read-only file (e.g. on an archive share) still reads
    read_session(path)
    assert {p: p.read_bytes() for p in before} == before


def test_an_edited_block_fails_its_checksum(tmp_path):
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    write_blocks(writer, 3)
    writer.finish()
    with h5py.File(path, "r+") as f:
        f["blocks/000001/scores"][0, 0] += 1.0
    with pytest.raises(SessionFileError, match=r"block 1 does not match its sha256"):
        read_session(path)
    assert read_session(path, verify=False).blocks[1].digest_ok is False


def test_a_corrupted_checkpoint_is_refused_before_anyone_unpickles_it(tmp_path):
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    write_blocks(writer, 2, checkpoint_at=(1,))
    writer.finish()
    with h5py.File(path, "r+") as f:
        data = f["checkpoints/000001/thread0"]
        data[0] ^= 0xFF
    with pytest.raises(SessionFileError, match="checkpoint 1/thread0 does not match its sha256"):
        read_session(path).checkpoint(1)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_reading_and_replay_reader_never_unpickle(tmp_path, monkeypatch):
    """A hostile checkpoint blob stays inert: read_session returns bytes and never calls pickle."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    rng = np.random.default_rng(0)
    evil = pickle.dumps(_Boom())
    writer.append_block(*make_block(0, rng), {"thread0": evil}, {})
    writer.finish()
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("read_session unpickled"))
    session = read_session(path)
    assert session.checkpoint(0)["thread0"] == evil
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.attrs.__setitem__("schema_version", SCHEMA_VERSION + 1),
     f"schema version {SCHEMA_VERSION + 1} is newer than this rig understands"),
    (lambda f: f.attrs.__setitem__("schema", "someone.else"), "not a rig session file"),
    (lambda f: f.attrs.__setitem__("schema_version", "two"), "is not a schema version"),
    (lambda f: f.__delitem__("blocks/000001/scores"), r"damaged session file at /blocks/000001"),
    (lambda f: f.__delitem__("references"), r"damaged session file at /references/ids"),
    (lambda f: f["blocks/000001"].attrs.__setitem__("channel_names", "not json"), r"/blocks/000001 attribute channel_names is not JSON \(JSONDecodeError\)"),
    (lambda f: f["blocks/000001"].attrs.__setitem__("index", 7), r"says it is block 7"),
    (lambda f: (f["blocks/000001"].__delitem__("valid"), f["blocks/000001"].create_dataset("valid", data=[True])),
     r"12 stimulus ids but \{'valid': \(1,\)\}"),
])
def test_hostile_master_files_get_clear_errors(tmp_path, edit, message):
    path = master_with(tmp_path, edit)
    with pytest.raises(SessionFileError, match=message) as info:
        read_session(path)
    assert str(path) in str(info.value)


def test_truncated_garbage_missing_and_foreign_files(tmp_path):
    path = master_with(tmp_path, lambda f: None)
    truncated = tmp_path / "t.h5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SessionFileError, match="t.h5"):
        read_session(truncated)
    with pytest.raises(SessionFileError, match="no such session file"):
        read_session(tmp_path / "nope.h5")
    with pytest.raises(SessionFileError, match="not a file"):
        read_session(tmp_path)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(SessionFileError, match="not a rig session file"):
        read_session(foreign)


def test_a_journal_file_from_another_session_is_refused(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    wa, wb = new_writer(a), new_writer(b)
    write_blocks(wa, 1)
    write_blocks(wb, 2)
    shutil.copy(journal_dir(b) / "000001.h5", journal_dir(a) / "000001.h5")
    with pytest.raises(SessionFileError, match="journal file of another session"):
        read_session(a)


def test_schema_1_files_still_read(tmp_path):
    """Sessions written before the journal (blocks in place, no digests) read back as before."""
    path = master_with(tmp_path, lambda f: f.attrs.__setitem__("schema_version", 1))
    with h5py.File(path, "r+") as f:
        del f["blocks/000000"].attrs["sha256"]
        f["blocks"].create_group(".partial-000002")  # schema 1's half-written block
    session = read_session(path)
    assert [b.index for b in session.blocks] == [0, 1]
    assert session.blocks[0].digest_ok is None
    with h5py.File(path, "r+") as f:
        f.attrs["status"] = "running"
    with pytest.raises(SessionFileError, match="schema version 1 sessions cannot be resumed"):
        SessionWriter.reopen(path)  # no session_id, no journal: refused rather than guessed
