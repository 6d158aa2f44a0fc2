"""Sessions with behaviour: trials gated by a simulated monkey, end to end through `rig run`, the file, replay,
resume and the operator's stop; and what behaviour must never change: the codes the optimizer sees."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers.protocols import tiny_protocol
from helpers.sessions import kill_after_blocks
from rig.behavior.log import read_behavior
from rig.behavior.outcomes import TrialOutcome
from rig.cli import main
from rig.session import read_session

#: A monkey that breaks often (about one trial in two) but otherwise works; the neuron has no response noise.
BREAKING = """
[behavior]
stimuli_per_trial = 3
not_working_s = 30
not_working_pause_s = 5

[gaze]
source = "simulated"
break_hazard_hz = 1.5
"""


def _protocol(folder: Path, extra: str, generations: int = 5, name: str = "p.toml") -> Path:
    path = folder / name
    path.write_text(tiny_protocol(generations=generations, seed=3, popsize=6, references=2, extra=extra))
    return path


def _run(protocol: Path, out: Path, *more: str) -> None:
    assert main(["run", str(protocol), "--out", str(out), "--quiet", *more]) == 0


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> tuple[Path, Path]:
    """The same protocol run with the break-happy monkey and without behaviour."""
    folder = tmp_path_factory.mktemp("behavior")
    with_behavior, without = folder / "behavior.h5", folder / "plain.h5"
    _run(_protocol(folder, BREAKING), with_behavior)
    _run(_protocol(folder, "", name="plain.toml"), without)
    return with_behavior, without


def _showings(session_path: Path):
    session = read_session(session_path)
    return session, [(block, showing, read_behavior(showing)) for block in session.blocks
                     for showing in block.showings]


def test_behaviour_changes_which_showings_count_never_what_the_optimizer_sees(sessions):
    with_behavior, without = sessions
    gated, plain = read_session(with_behavior), read_session(without)
    assert len(gated.blocks) == len(plain.blocks) == 5
    for a, b in zip(gated.blocks, plain.blocks):
        np.testing.assert_array_equal(a.codes, b.codes)  # bit for bit
        np.testing.assert_array_equal(a.scores, b.scores)
        assert len(b.showings) == 1
        # Every re-shown stimulus is one the monkey lost: the showings after the first hold exactly the
        # stimuli lost to behaviour in the showings before them, and the trial table counts the same.
        lost = sum(int(read_behavior(s)["position_lost_to_behavior"].sum()) for s in a.showings)
        reshown = sum(len(s["positions"]) for s in a.showings[1:])
        assert lost == reshown
        trials = [read_behavior(s) for s in a.showings]
        # A broken trial loses the stimuli from the first one not held to its window's end through its last
        # (shown or not); trials without fixation lose nothing (they are tried again), completed ones neither.
        broke = [t["trial_outcome"] == TrialOutcome.BROKE_FIXATION for t in trials]
        assert lost == sum(int((t["trial_stimuli"][b] - t["trial_held"][b]).sum()) for t, b in zip(trials, broke))
    assert sum(len(a.showings) for a in gated.blocks) > len(gated.blocks)  # the monkey did break


def test_the_file_keeps_every_trial_and_gaze_sample_and_how_to_rebuild_the_monkey(sessions):
    session, showings = _showings(sessions[0])
    numbers = np.concatenate([b["trial_number"] for _, _, b in showings])
    assert list(numbers) == list(range(len(numbers)))  # numbered through the session, none missing
    outcomes = np.concatenate([b["trial_outcome"] for _, _, b in showings])
    assert set(outcomes) <= {int(o) for o in TrialOutcome}
    assert (outcomes == TrialOutcome.BROKE_FIXATION).any() and (outcomes == TrialOutcome.COMPLETED).any()
    times = np.concatenate([b["gaze_times"] for _, _, b in showings])
    assert np.all(np.diff(times) > 0)  # one stream of samples, none read twice
    # Samples at the monkey's rate on a grid: their spacing is 2 ms; blinks are invalid with NaN positions.
    assert np.median(np.diff(times)) == pytest.approx(1 / 500)
    valid = np.concatenate([b["gaze_valid"] for _, _, b in showings])
    x = np.concatenate([b["gaze_x"] for _, _, b in showings])
    assert np.all(np.isnan(x[~valid])) and np.all(np.isfinite(x[valid]))
    for block, showing, b in showings:
        assert b["decision_gaze_read"][-1] == len(b["gaze_times"])
        shown = np.isfinite(showing["onset_times"])
        assert np.all(b["position_trial"][shown] >= 0)
    behavior = session.provenance["display"]["behavior"]
    assert behavior["gaze"]["kind"] == "simulated"
    assert isinstance(behavior["gaze"]["options"]["seed"], int)  # concrete: the monkey can be rebuilt
    assert behavior["spec"]["stimuli_per_trial"] == 3
    assert session.attrs["status"] == "complete"


def test_replay_re_runs_every_trial_and_finds_a_changed_gaze_sample(sessions, tmp_path, capsys):
    assert main(["replay", str(sessions[0])]) == 0
    assert "reproduce bit for bit" in capsys.readouterr().out
    altered = tmp_path / "altered.h5"
    altered.write_bytes(sessions[0].read_bytes())
    with h5py.File(altered, "r+") as f:
        for name in sorted(f["blocks"]):
            showing = f[f"blocks/{name}/showings/00"]
            onsets = showing["trial_first_onset"][()]
            done = np.flatnonzero(showing["trial_outcome"][()] == TrialOutcome.COMPLETED)
            if len(done):
                times = showing["gaze_times"][()]
                i = int(np.searchsorted(times, onsets[done[0]] + 0.05))
                x = showing["gaze_x"][()]
                x[i] = 9.0  # a saccade out of the window, during a trial that was recorded as held
                showing["gaze_x"][...] = x
                break
    assert main(["replay", str(altered)]) != 0
    said = capsys.readouterr().out
    assert "trials do not re-run as recorded" in said and "trial_break_time" in said


def test_resume_mid_session_carries_on_the_trials_and_ends_like_an_uninterrupted_run(sessions, tmp_path, monkeypatch):
    protocol = _protocol(tmp_path, BREAKING)
    out = tmp_path / "killed.h5"
    kill_after_blocks(2, monkeypatch, lambda: main(["run", str(protocol), "--out", str(out), "--quiet"]))
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    resumed, reference = read_session(out), read_session(sessions[0])
    for a, b in zip(resumed.blocks, reference.blocks):
        np.testing.assert_array_equal(a.codes, b.codes)
    numbers = [int(n) for blk in resumed.blocks for s in blk.showings for n in read_behavior(s)["trial_number"]]
    assert numbers == list(range(len(numbers)))
    assert main(["replay", str(out)]) == 0


def _read_until(fd: int, text: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"waited {seconds} s for {text!r}; got {seen[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


@pytest.mark.timeout(400)
def test_the_operator_stops_from_the_keyboard_and_the_session_resumes_to_the_same_end(sessions, tmp_path):
    """A real terminal (a pty) as the rig PC's keyboard: 's' stops after the current trial."""
    protocol = _protocol(tmp_path, BREAKING, generations=5)
    out = tmp_path / "stopped.h5"
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "rig.cli", "run", str(protocol), "--out", str(out)],
                               stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(slave)
    try:
        _read_until(master, b"keys: r reward", 120)
        _read_until(master, b"gen    1/5", 120)
        os.write(master, b"s")
        said = _read_until(master, b"stopped by the operator", 120)
        assert process.wait(timeout=60) == 0, said
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    session = read_session(out)
    assert session.attrs["status"] == "stopped"
    assert 1 <= len(session.blocks) < 5
    with h5py.File(out, "r") as f:
        assert "unfinished" in f and len(f["unfinished"]) == 1
        kept = f["unfinished"][next(iter(f["unfinished"]))]
        events = [e.decode() if isinstance(e, bytes) else e for showing in kept["showings"].values()
                  for e in showing["event_kinds"][()]]
        assert "operator_stop" in events  # in whichever showing of the block the key came
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    for a, b in zip(read_session(out).blocks, read_session(sessions[0]).blocks):
        np.testing.assert_array_equal(a.codes, b.codes)


@pytest.mark.parametrize("extra, field", [
    ("[behavior]\nwindow_deg = 40\n", "window_deg = 40"),          # wider than a 53 cm screen at 57 cm
    ("[behavior]\nacquire_ms = -5\n", "acquire_ms"),
    ("[behavior]\nreward_per = \"block\"\n", "reward_per"),
    ("[behavior]\n[gaze]\nsource = \"simulated\"\nbreak_hazard_hz = -1\n", "break_hazard_hz"),
    ("[behavior]\n[gaze]\nsource = \"eyelink-by-hand\"\n", "source"),
    ("[gaze]\nsource = \"simulated\"\n", "only used with a [behavior] table"),
    ("[behavior]\n[reward]\nkind = \"serial\"\nport = \"/dev/no-such-reward-line\"\nmode = \"dtr\"\n",
     "/dev/no-such-reward-line"),
])
def test_bad_behaviour_settings_are_refused_before_anything_runs(tmp_path, capsys, extra, field):
    protocol = _protocol(tmp_path, extra)
    out = tmp_path / "never.h5"
    assert main(["run", str(protocol), "--out", str(out), "--quiet"]) != 0
    assert field in capsys.readouterr().err
    assert not out.exists()


class FailingReward:
    """A lab's reward module whose line is unplugged after its second reward."""

    calls = 0

    def deliver(self, pulses: int, pulse_ms: float, pause_ms: float) -> None:
        FailingReward.calls += 1
        if FailingReward.calls > 2:
            raise OSError(5, "Input/output error (the USB reward line was unplugged)")


def make_failing_reward() -> FailingReward:
    return FailingReward()


def test_a_reward_line_unplugged_mid_session_fails_clearly_and_keeps_every_block(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    FailingReward.calls = 0
    extra = BREAKING + '\n[reward]\nkind = "module"\nfactory = "test_behavior_session:make_failing_reward"\n'
    protocol = _protocol(tmp_path, extra, generations=30)
    out = tmp_path / "unplugged.h5"
    assert main(["run", str(protocol), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "unplugged" in err and "rig run --resume" in err
    session = read_session(out)
    assert session.attrs["status"] == "failed" and len(session.blocks) < 30
