"""Session files read without h5py or rig: HDF5's own command-line reader, from an older library.

MATLAB's ``h5read`` sits on the HDF5 C library, a release older than the one
h5py bundles (2.0 here). Debian's ``h5dump`` (package hdf5-tools, HDF5 1.10,
installed by ``make setup``) stands in for it: if a session used a file-format
feature newer than 1.10, or a type a C reader cannot map, it fails here.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from rig.recording.sidechannel import FaultRequest
from helpers.simrig import record_with_drop
from helpers.protocols import run_tiny_session

pytestmark = pytest.mark.timeout(120)

_NUMBER = re.compile(r"-?(?:nan|inf|\d+(?:\.\d*)?(?:e[+-]?\d+)?)", re.IGNORECASE)


def h5dump(*args: str) -> str:
    """Run h5dump; a missing tool fails the test (make setup installs it), never skips it."""
    tool = shutil.which("h5dump")
    if tool is None:
        pytest.fail("h5dump not found: install Debian's hdf5-tools (`make setup` does)")
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "h5dump error" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done.stdout


def dumped_values(path: Path, dataset: str) -> str:
    """The DATA section of one dataset, printed at full double precision, without indices."""
    text = h5dump("--onlyattr=0", "-y", "-w", "0", "-m", "%.17g", "-d", dataset, str(path))
    start = text.index("DATA {") + len("DATA {")
    return text[start:text.index("}", start)]  # values hold no braces: vlen data prints as (...)


def dumped_numbers(path: Path, dataset: str) -> np.ndarray:
    # Booleans are h5py's HDF5 enum {FALSE = 0, TRUE = 1} over int8, printed by name.
    text = dumped_values(path, dataset).replace("FALSE", "0").replace("TRUE", "1")
    return np.array([float(x) for x in _NUMBER.findall(text)])


@pytest.fixture(scope="module")
def in_silico(tmp_path_factory) -> Path:
    return run_tiny_session(tmp_path_factory.mktemp("h5dump-silico"), name="dumped", generations=3, seed=2,
                            threads=2, references=2,
                            units=("test_cnn:features.7:unit=5", "test_cnn:features.7:unit=9"))


@pytest.fixture(scope="module")
def streamed(tmp_path_factory) -> Path:
    """Recorded from the simulated rig over loopback: raw frames, re-shows, recording attributes."""
    return record_with_drop(tmp_path_factory.mktemp("h5dump-stream"), FaultRequest("drop", 3))


@pytest.mark.parametrize("session", ["in_silico", "streamed"])
def test_the_whole_file_dumps_with_an_older_hdf5(session, request):
    path = request.getfixturevalue(session)
    text = h5dump(str(path))  # every group, dataset and attribute, values included
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visit(names.append)
    for name in names:  # nothing h5py sees is missing from what the C library sees
        assert f'"{name.rsplit("/", 1)[-1]}"' in text, name


@pytest.mark.parametrize("session", ["in_silico", "streamed"])
def test_numbers_and_strings_read_back_exactly(session, request):
    path = request.getfixturevalue(session)
    with h5py.File(path, "r") as f:
        for name in ("scores", "codes", "onset_times", "valid", "threads"):
            expected = np.asarray(f[f"blocks/000001/{name}"][()], dtype=np.float64).ravel()
            got = dumped_numbers(path, f"/blocks/000001/{name}")
            np.testing.assert_array_equal(got, expected, err_msg=name)  # %.17g: every bit of a double
        ids = [s.decode() for s in f["blocks/000001/stimulus_ids"][()]]
        toml = f.attrs["protocol_toml"]
    assert re.findall(r'"([^"]*)"', dumped_values(path, "/blocks/000001/stimulus_ids")) == ids
    # The protocol text, which h5dump prints one indented line at a time.
    dumped_lines = {line.strip() for line in h5dump("-a", "/protocol_toml", str(path)).splitlines()}
    expected_lines = [line.strip() for line in toml.splitlines() if line.strip()]
    assert expected_lines and all(line in dumped_lines for line in expected_lines)


def test_raw_stream_frames_read_back_exactly(streamed):
    with h5py.File(streamed, "r") as f:
        frames = f["blocks/000000/showings/00/raw_frames"][()]
        counts = f["blocks/000000/showings/00/raw_frame_counts"][()]
    assert len(frames) > 10 and counts.sum() == len(frames)
    text = dumped_values(streamed, "/blocks/000000/showings/00/raw_frames")
    # Variable-length byte strings print as "(b0, b1, ...)", one per frame.
    dumped = [np.array([int(b) for b in group.split(",") if b.strip()], dtype=np.uint8)
              for group in re.findall(r"\(([^()]*)\)", text)]
    assert len(dumped) == len(frames)
    for i, (got, expected) in enumerate(zip(dumped, frames)):
        np.testing.assert_array_equal(got, expected, err_msg=f"frame {i}")
