"""A full disk, a read-only folder and a file in the way: clean errors, no debris, and a resume that ends identical.

Issue 12, defect 4. The disk-full test mounts a 256 KiB tmpfs (root only: CI runs as root; elsewhere it
is skipped, saying why) and runs a real session into it until ENOSPC; a second test injects ENOSPC into
the writer's own calls, so the same promise is checked without root too.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import rig.session.writer as writer_module
from rig.cli import EXIT_USAGE, main
from rig.session import SessionFileError, SessionWriteError, read_session
from helpers.session_commands import run_command
from helpers.sessions import RESUME_PROTOCOL, assert_same_session
from helpers.sessions import new_writer

pytestmark = pytest.mark.timeout(300)

#: Names a failed write must never leave behind.
_DEBRIS = (".partial", ".merging", ".creating")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The protocol run without trouble: what every resumed session must equal."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "p.toml").write_text(RESUME_PROTOCOL)
    assert main(["run", str(folder / "p.toml"), "--out", str(folder / "reference.h5"), "--quiet"]) == 0
    return folder / "reference.h5"


def _mount(folder: Path, options: str) -> None:
    """Mount a tmpfs at ``folder``, or skip the test saying why it cannot be done here."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root); the injected-ENOSPC test covers the rest")
    folder.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: room for the master and a few journal blocks, not for a checkpoint or a merge."""
    folder = tmp_path / "small"
    _mount(folder, "size=256k")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _debris(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith(_DEBRIS)]


def _assert_failed_cleanly(code: int, err: str, out: Path) -> int:
    """The run failed (exit 1) with one line naming the file; the file reads; the journal holds its blocks."""
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(out) in err and "No space left on device" in err and f"rig run --resume {out}" in err, err
    assert _debris(out.parent) == []
    blocks = len(read_session(out).blocks)
    assert 1 <= blocks < 12
    return blocks


def test_a_full_disk_leaves_no_debris_and_resumes_identically(small_disk, reference, tmp_path, capsys):
    (tmp_path / "p.toml").write_text(RESUME_PROTOCOL)
    out = small_disk / "s.h5"
    code, err = run_command(["run", str(tmp_path / "p.toml"), "--out", str(out), "--quiet"], capsys)
    blocks = _assert_failed_cleanly(code, err, out)
    assert f"block {blocks} could not be written (No space left on device)" in err
    # Copied to a bigger disk, it resumes there ...
    bigger = tmp_path / "bigger"
    bigger.mkdir()
    shutil.copy(out, bigger / "s.h5")
    shutil.copytree(small_disk / "s.h5.journal", bigger / "s.h5.journal")
    assert main(["run", "--resume", str(bigger / "s.h5"), "--quiet"]) == 0
    assert_same_session(bigger / "s.h5", reference)
    # ... and, with space made where it is, in place.
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert_same_session(out, reference)
    assert _debris(small_disk) == [] and not (small_disk / "s.h5.journal").exists()


def test_injected_enospc_in_a_block_and_the_merge_fails_cleanly_and_resumes(reference, tmp_path, monkeypatch, capsys):
    """The same promise without root: the 6th block and then the merge hit ENOSPC, half-written."""
    (tmp_path / "p.toml").write_text(RESUME_PROTOCOL)
    out = tmp_path / "s.h5"
    write_block = writer_module._write_block

    def full_at_block_5(g, block, *args):
        write_block(g, block, *args)
        if block.index == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def copy_half(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:1000])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    with monkeypatch.context() as patch:
        patch.setattr(writer_module, "_write_block", full_at_block_5)
        patch.setattr(writer_module.shutil, "copyfile", copy_half)
        code, err = run_command(["run", str(tmp_path / "p.toml"), "--out", str(out), "--quiet"], capsys)
    assert _assert_failed_cleanly(code, err, out) == 5
    assert "block 5 could not be written" in err and "record status 'failed'" in err
    assert read_session(out).attrs["status"] == "running"  # not recorded; the message says so
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert_same_session(out, reference)
    assert _debris(tmp_path) == []


def test_a_read_only_folder_is_a_clean_error(tmp_path, write_protocol, capsys):
    folder = tmp_path / "ro"
    if os.geteuid() == 0:
        _mount(folder, "ro,size=64k")  # root writes through permission bits; a read-only mount stops it
    else:
        folder.mkdir()
        folder.chmod(0o555)
    try:
        out = folder / "s.h5"
        with pytest.raises(SessionWriteError) as info:  # the writer's own error, whoever calls it
            new_writer(out)
        assert str(folder) in str(info.value) and info.value.errno in (errno.EROFS, errno.EACCES)
        code, err = run_command(["run", str(write_protocol()), "--out", str(out), "--quiet"], capsys)
        assert code in (1, EXIT_USAGE) and len(err.strip().splitlines()) == 1, err  # rig run may check first
        assert str(folder) in err and "Traceback" not in err, err
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def test_out_under_a_regular_file_is_a_clean_error(tmp_path, write_protocol, capsys):
    (tmp_path / "file").write_text("not a folder")
    for out in (tmp_path / "file" / "s.h5", tmp_path / "file" / "deeper" / "s.h5"):
        with pytest.raises(SessionFileError, match="a file is in the way") as info:  # the writer's own error
            new_writer(out)
        assert str(out.parent) in str(info.value)
        code, err = run_command(["run", str(write_protocol()), "--out", str(out), "--quiet"], capsys)
        assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1, err  # rig run may check first
        assert str(tmp_path / "file") in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "small.toml"]
