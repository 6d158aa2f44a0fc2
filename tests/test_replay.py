"""`rig replay`: a recorded session re-runs from its file alone, bit for bit, and altered files are rejected."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from rig.cli import EXIT_USAGE, main
from rig.commands.replay import EXIT_DIVERGED, prepare_argv
from rig.session import block_digest
from helpers.protocols import tiny_protocol

PROTOCOL = tiny_protocol(name="replayed", generations=5, seed=11, threads=2, references=2,
                         units=("test_cnn:features.7:unit=5", "test_cnn:features.7:unit=9"))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("replay")
    protocol = folder / "p.toml"
    protocol.write_text(PROTOCOL)
    out = folder / "s.h5"
    assert main(["run", str(protocol), "--out", str(out), "--quiet"]) == 0
    return out


def altered_copy(recorded: Path, tmp_path: Path, edit, fix_digest: bool = True) -> Path:
    """A copy of the session edited with plain h5py; ``fix_digest`` re-signs the edited blocks like a forger would."""
    copy = tmp_path / "altered.h5"
    shutil.copy(recorded, copy)
    with h5py.File(copy, "r+") as f:
        edit(f)
        if fix_digest:
            for name, g in f["blocks"].items():
                g.attrs["sha256"] = block_digest({
                    "index": g.attrs["index"], "channel_names": json.loads(g.attrs["channel_names"]),
                    "stimulus_ids": [s.decode() for s in g["stimulus_ids"][()]],
                    "kinds": [s.decode() for s in g["kinds"][()]],
                    **{k: g[k][()] for k in ("codes", "threads", "code_index", "onset_times", "offset_times",
                                             "dropped_frames", "presentation_valid", "scores", "valid")}})
    return copy


def replay(path: Path, capsys) -> tuple[int, str]:
    code = main(["replay", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_recorded_session_replays_bit_for_bit_without_being_touched(recorded, capsys):
    before = recorded.read_bytes()
    code, out = replay(recorded, capsys)
    assert code == 0, out
    assert "all 5 blocks reproduce bit for bit" in out
    assert recorded.read_bytes() == before


def _bump_generated_score(block: str, by: float = 0.5):
    def edit(f):
        g = f[f"blocks/{block}"]
        position = int(np.flatnonzero(g["threads"][()] == 1)[0])
        scores = g["scores"][()]
        scores[position, 1] += by  # thread 1 follows channel 1
        g["scores"][...] = scores
    return edit


def test_a_forged_score_is_caught_where_the_codes_diverge(recorded, tmp_path, capsys):
    """Even re-signed, an edited score changes what CMA-ES proposes next: replay names that block."""
    code, out = replay(altered_copy(recorded, tmp_path, _bump_generated_score("000002")), capsys)
    assert code == EXIT_DIVERGED
    assert "DIVERGED after 3 of 5 blocks: block 3: codes diverge" in out
    assert "first thread 1" in out  # thread 0's scores were untouched, so its codes still agree
    assert "sha256" not in out


def test_an_edited_file_fails_its_checksums_and_its_replay(recorded, tmp_path, capsys):
    code, out = replay(altered_copy(recorded, tmp_path, _bump_generated_score("000001"), fix_digest=False), capsys)
    assert code == EXIT_DIVERGED
    assert "block(s) [1] do not match the sha256" in out
    assert "block 2: codes diverge" in out


def test_edited_codes_of_the_last_block_diverge(recorded, tmp_path, capsys):
    def edit(f):
        codes = f["blocks/000004/codes"][()]
        codes[0, 3, 5] = np.nextafter(codes[0, 3, 5], np.inf)  # one ulp
        f["blocks/000004/codes"][...] = codes
    code, out = replay(altered_copy(recorded, tmp_path, edit), capsys)
    assert code == EXIT_DIVERGED
    assert "block 4: codes diverge from the recorded ones: 1 of 12 codes differ, first thread 0 code 3" in out


def test_altered_seeds_diverge_at_the_first_block(recorded, tmp_path, capsys):
    def edit(f):
        provenance = json.loads(f.attrs["provenance"])
        provenance["thread_seeds"][0] += 1
        f.attrs["provenance"] = json.dumps(provenance)
    code, out = replay(altered_copy(recorded, tmp_path, edit), capsys)
    assert code == EXIT_DIVERGED and "block 0: codes diverge" in out


@pytest.mark.parametrize("old, new, field", [("sigma0 = 3.0", "sigma0 = -3.0", "sigma0"),
                                             ("threads = 2", "threads = 0", "threads")])
def test_a_protocol_that_no_longer_validates_is_a_clear_error(recorded, tmp_path, capsys, old, new, field):
    """As if today's rig had stricter rules than the one that ran the session (text and hash stay consistent)."""
    def edit(f):
        import hashlib
        text = f.attrs["protocol_toml"].replace(old, new)
        f.attrs["protocol_toml"] = text
        f.attrs["protocol_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    code, out = replay(altered_copy(recorded, tmp_path, edit), capsys)
    assert code == EXIT_USAGE
    assert "no longer validates" in out and field in out


def test_an_edited_protocol_text_is_refused(recorded, tmp_path, capsys):
    edit = lambda f: f.attrs.__setitem__("protocol_toml", f.attrs["protocol_toml"].replace("popsize = 6", "popsize = 7"))
    code, out = replay(altered_copy(recorded, tmp_path, edit), capsys)
    assert code == EXIT_USAGE and "does not match its protocol_sha256" in out


def test_foreign_and_missing_files_exit_2(tmp_path, capsys):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    code, out = replay(foreign, capsys)
    assert code == EXIT_USAGE and "not a rig session file" in out
    code, out = replay(tmp_path / "missing.h5", capsys)
    assert code == EXIT_USAGE and "no such session file" in out


@pytest.mark.parametrize("window", [["--baseline-window-ms", "-50,0"], ["--baseline-window-ms=-50,0"],
                                    ["--window-ms", "-.5,20"], ["--window-ms", "-30,-10"]])
def test_a_window_before_the_onset_is_read_as_a_value(tmp_path, capsys, window):
    # argparse alone reads "-50,0" as an unknown option; the session is read only once the options parsed.
    assert main(["replay", str(tmp_path / "missing.h5"), "--rescore", *window]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no such session file" in err and "expected one argument" not in err


def test_only_window_values_are_joined_and_nothing_after_a_double_dash():
    assert prepare_argv(["replay", "s.h5", "--window-ms", "-5,5", "--baseline-window-ms", "0,40", "--out",
                         "-x.csv", "--", "--window-ms", "-5,5"]) == [
        "replay", "s.h5", "--window-ms=-5,5", "--baseline-window-ms", "0,40", "--out", "-x.csv", "--",
        "--window-ms", "-5,5"]
    assert prepare_argv(["replay", "s.h5", "--window-ms"]) == ["replay", "s.h5", "--window-ms"]
