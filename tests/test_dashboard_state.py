"""What the dashboard's page is given (rig.dashboard.state.snapshot), read from a real session file.

One in-silico session with trials, stopped by the operator (the "s" key's request) in the middle of its
second block, then resumed: the stopped block's trials ran and were rewarded, so the page counts them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.protocols import tiny_protocol
from protocols.spec import load_protocol
from rig.behavior.outcomes import TrialOutcome
from rig.behavior.tables import behavior_tables
from rig.cli import main
from rig.dashboard.live import LiveSession
from rig.dashboard.state import snapshot
from rig.loop.assemble import assemble, resolve_neuron
from rig.loop.controller import Controller
from rig.session import SessionWriter, read_session

TRIALS = """
[behavior]
stimuli_per_trial = 2
reward_pulses = 3
not_working_s = 30

[gaze]
source = "simulated"
break_hazard_hz = 1.0
"""


def _stopped_in_block_1(folder: Path) -> Path:
    """Run 3 generations; the operator asks to stop after the second trial of block 1 ends."""
    path = folder / "p.toml"
    path.write_text(tiny_protocol(generations=3, seed=2, popsize=6, references=2, extra=TRIALS))
    spec = load_protocol(path)
    parts = assemble(spec, resolve_neuron(spec, None, None), device="cpu")
    out = folder / "s.h5"
    writer = SessionWriter(out, protocol_text=spec.text, protocol_sha256=spec.sha256, protocol_path=str(path),
                           seed=parts.seed, provenance=parts.provenance, reference_ids=parts.protocol.reference_ids,
                           run_record=parts.record.to_json())
    runner = parts.display.runner
    blocks_done, ends = [], []

    def stop_in_block_1(kind: str, time_: float, **info: object) -> None:
        if kind == "trial_end" and blocks_done == [0]:
            ends.append(time_)
            if len(ends) == 2:
                runner.operator.request("stop")  # as the "s" key does: the block ends after this trial

    runner.add_listener(lambda kind, time_, info: stop_in_block_1(kind, time_, **info))
    Controller(parts.protocol, parts.display, parts.source, writer,
               progress=lambda report: blocks_done.append(report.index)).run()
    return out


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    return _stopped_in_block_1(tmp_path_factory.mktemp("dashboard-state"))


def _expected_rows(tables) -> list[dict]:
    trials = tables.trials
    rows = []
    for block, unfinished in sorted({(int(b), bool(u)) for b, u in zip(trials["block"], trials["unfinished"])},
                                    key=lambda key: (key[0], not key[1])):
        mine = (trials["block"] == block) & (trials["unfinished"] == unfinished)
        row = {"block": block, "completed": int(np.sum(trials["outcome"][mine] == TrialOutcome.COMPLETED)),
               "broken": int(np.sum(trials["outcome"][mine] == TrialOutcome.BROKE_FIXATION))}
        rows.append({**row, "unfinished": True} if unfinished else row)
    return rows


def test_a_stopped_blocks_trials_and_rewards_count_on_the_page(stopped):
    session = read_session(stopped)
    assert session.attrs["status"] == "stopped" and len(session.blocks) == 1
    tables = behavior_tables(session)
    assert tables.trials["unfinished"].sum() >= 2  # the two trials before the stop, in block 1
    state = snapshot(LiveSession.open(stopped), [])
    behavior = state["behavior"]
    assert behavior["trials"] == _expected_rows(tables)
    assert behavior["trials"][-1]["block"] == 1 and behavior["trials"][-1]["unfinished"]
    kinds = np.asarray(tables.events["kinds"]).astype(str)
    given = np.asarray(tables.events["values"])[np.isin(kinds, ["reward", "manual_reward"])]
    assert given.sum() > 0 and behavior["reward_pulses"] == int(given.sum())  # every pulse the valve gave
    # The gaze shown is the last trial's: the stopped block's.
    assert behavior["gaze"]["trial"] == int(tables.trials["number"].max())


def test_after_resume_the_stopped_block_stays_beside_the_block_shown_again(stopped, tmp_path):
    resumed = tmp_path / "s.h5"
    resumed.write_bytes(stopped.read_bytes())
    assert main(["run", "--resume", str(resumed), "--quiet"]) == 0
    session = read_session(resumed)
    assert session.attrs["status"] == "complete" and len(session.blocks) == 3
    tables = behavior_tables(session)
    rows = snapshot(LiveSession.open(resumed), [])["behavior"]["trials"]
    assert rows == _expected_rows(tables)
    assert [(r["block"], r.get("unfinished", False)) for r in rows] == [(0, False), (1, True), (1, False), (2, False)]
