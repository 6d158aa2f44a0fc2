"""`rig run --resume` on a screening: a killed screening keeps its recorded blocks and ends as an uninterrupted one."""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from helpers.protocols import tiny_protocol
from helpers.sessions import run_until_killed
from rig.cli import EXIT_USAGE, main
from rig.dashboard.channel import ControlChannel, ControlRequest, post_request
from rig.session import journal_dir, read_session
from test_replay import altered_copy
from test_screening import SCREENING

# Poisson spikes: a repeat's responses differ from the first's, so the means show whether every block counts.
PROTOCOL = SCREENING.format(source="count = 6", block_size=2, repeats=2) + \
    '[neuron.response]\ngain = 20.0\noffset = 10.0\nnoise = "poisson"\n'
#: Killed mid-way through the second repeat: its order must carry on, not start again.
KILLED_AFTER = 4


def summary(printed: str) -> list[str]:
    """The per-channel lines of the screening summary (means, medians, maxima over the image set)."""
    return re.findall(r"^.*natural-image responses mean .*$", printed, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("screening_resume")
    (folder / "p.toml").write_text(PROTOCOL)
    return folder


@pytest.fixture(scope="module")
def reference(folder) -> tuple[Path, list[str]]:
    """An uninterrupted run of the same protocol, and its printed summary."""
    out = folder / "reference.h5"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["run", str(folder / "p.toml"), "--out", str(out), "--quiet"]) == 0
    return out, summary(printed.getvalue())


@pytest.mark.timeout(120)
def test_a_killed_screening_resumes_and_ends_as_an_uninterrupted_one(folder, reference, monkeypatch, capsys):
    reference_path, reference_summary = reference
    out = run_until_killed(folder, "killed.h5", KILLED_AFTER, monkeypatch)
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{KILLED_AFTER} of 6 blocks recorded; {KILLED_AFTER} recorded block(s) replayed" in printed
    assert "done: 6 blocks" in printed
    resumed, uninterrupted = read_session(out), read_session(reference_path)
    assert resumed.attrs["status"] == "complete" and not journal_dir(out).exists()
    assert '"blocks_found": %d' % KILLED_AFTER in resumed.attrs["resumes"]
    assert [b.index for b in resumed.blocks] == list(range(6))
    for got, want in zip(resumed.blocks, uninterrupted.blocks, strict=True):
        assert got.stimulus_ids == want.stimulus_ids, got.index  # the seeded order, block by block
        np.testing.assert_array_equal(got.scores, want.scores)
    # The summary covers the recorded blocks too: without them, each mean would be over one repeat's spikes.
    assert len(reference_summary) == 2 and summary(printed) == reference_summary


def test_an_operator_stop_is_said_with_how_to_carry_on_and_the_screening_resumes(folder, reference, monkeypatch,
                                                                                 capsys):
    """A stop from the viewer, through the real control channel, after block 2: the screening says so and how
    to carry on (as an evolution does), and `--resume` ends it as the uninterrupted run."""
    real = ControlChannel.between_blocks

    def stop_after_two(self, protocol, session, next_block):
        if next_block == 2:
            post_request(session.path, ControlRequest.make("stop", None, session.session_id))
        return real(self, protocol, session, next_block)

    monkeypatch.setattr(ControlChannel, "between_blocks", stop_after_two)
    out = folder / "stopped.h5"
    capsys.readouterr()
    assert main(["run", str(folder / "p.toml"), "--out", str(out), "--quiet"]) == 0
    assert (f"rig run: stopped by the operator after 2 whole block(s). Continue with: rig run --resume {out}"
            in capsys.readouterr().out)
    assert read_session(out).attrs["status"] == "stopped"
    monkeypatch.setattr(ControlChannel, "between_blocks", real)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    resumed = read_session(out)
    assert resumed.attrs["status"] == "complete"
    assert [b.stimulus_ids for b in resumed.blocks] == [b.stimulus_ids for b in read_session(reference[0]).blocks]


def test_a_recorded_block_that_does_not_replay_is_refused_and_the_file_left_alone(reference, tmp_path, capsys):
    """A block re-signed after an image id was changed (as a forger would) is not what the protocol proposes."""
    def interrupt_and_alter(f):
        f.attrs["status"] = "failed"  # as a crash the controller saw leaves it: journal merged, no finish
        for name in ("000004", "000005"):
            del f["blocks"][name]
        ids = f["blocks/000001/stimulus_ids"]
        ids[0] = f["blocks/000000/stimulus_ids"][0]

    out = altered_copy(reference[0], tmp_path, interrupt_and_alter)
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--quiet"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(out) in err and "do not replay: block 1: stimuli proposed in another order or with other ids" in err
    assert out.read_bytes() == before and not journal_dir(out).exists()


def test_rig_replay_checks_a_screening_block_by_block(reference, tmp_path, capsys):
    """`rig replay` on a screening (it said "no optimizer to replay"): the seeded order of the recorded image ids,
    block by block; an unfinished screening replays its recorded blocks; a swapped pair is found in its block."""
    path = reference[0]
    before = path.read_bytes()
    capsys.readouterr()
    assert main(["replay", str(path)]) == 0
    assert "all 6 blocks reproduce bit for bit (a screening: its images in the seeded order)" in \
        capsys.readouterr().out
    assert path.read_bytes() == before

    def unfinished_with_block_3_swapped(f):
        f.attrs["status"] = "failed"
        del f["blocks"]["000005"]
        ids = f["blocks/000003/stimulus_ids"]
        ids[0], ids[1] = ids[1], ids[0]

    altered = altered_copy(path, tmp_path, unfinished_with_block_3_swapped)
    assert main(["replay", str(altered)]) == 1
    out = capsys.readouterr().out
    assert "DIVERGED after 3 of 5 blocks: block 3: stimuli proposed in another order or with other ids" in out


def test_an_evolution_killed_past_its_planned_generations_resumes_with_its_extension(tmp_path, capsys):
    """The shared resume path adds the operator's recorded extensions before it replays the recorded blocks
    (it used to add them after, so blocks past the planned count made the replay fail)."""
    (tmp_path / "p.toml").write_text(tiny_protocol(name="extended", generations=5, seed=4, threads=1,
                                                   references=2, units=("test_cnn:features.7:unit=5",)))
    reference = tmp_path / "reference.h5"
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(reference), "--quiet"]) == 0

    def planned_3_extended_by_2_killed_after_4(f):
        record = json.loads(f.attrs["run_record"])
        f.attrs["run_record"] = json.dumps({**record, "generations": 3})  # the record keeps what was planned
        f.attrs["controls"] = json.dumps([{"number": 0, "kind": "extend", "value": 2, "outcome": "applied",
                                           "after_block": 1}])
        f.attrs["status"] = "failed"
        del f["blocks/000004"], f["checkpoints/000004"]

    out = altered_copy(reference, tmp_path, planned_3_extended_by_2_killed_after_4)
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert "4 of 5 blocks recorded" in capsys.readouterr().out
    resumed, uninterrupted = read_session(out), read_session(reference)
    assert resumed.attrs["status"] == "complete" and len(resumed.blocks) == 5
    np.testing.assert_array_equal(resumed.blocks[4].codes, uninterrupted.blocks[4].codes)
