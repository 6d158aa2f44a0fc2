"""`rig report` of a session with behaviour: the Behaviour section's numbers, CSV files and figures, checked
against :func:`rig.behavior.tables.behavior_tables`; a session without behaviour gets the report it always had.

One in-silico session with a monkey that breaks fixation and rests, so the session pauses for it.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.colors import LogNorm
from matplotlib.patches import Circle

from helpers.protocols import run_tiny_session, tiny_protocol
from rig.analysis.behavior import BLOCK_COLUMNS, gaze_density_figure, outcome_figure, summarise_behavior
from rig.behavior.outcomes import TrialOutcome
from rig.behavior.tables import BehaviorTables, behavior_tables
from rig.cli import main
from rig.session import read_session

#: A 2-pulse reward and a window off the screen's centre; the monkey breaks about one trial in two and rests
#: often enough that the session pauses for it.
RESTING = """
[behavior]
fixation_point_deg = [1.0, -0.5]
window_deg = 2.0
reward_pulses = 2
reward_ms = 80
not_working_s = 8
not_working_pause_s = 3

[gaze]
source = "simulated"
rest_hazard_hz = 0.1
rest_mean_s = 25
break_hazard_hz = 1.5
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[BehaviorTables, Path, str]:
    """(the session's behaviour tables, the report folder, its page)."""
    folder = tmp_path_factory.mktemp("report-behavior")
    (folder / "p.toml").write_text(tiny_protocol(generations=3, seed=3, popsize=6, references=2, extra=RESTING))
    session = folder / "s.h5"
    assert main(["run", str(folder / "p.toml"), "--out", str(session), "--quiet"]) == 0
    out = folder / "report"
    assert main(["report", str(session), "--out", str(out), "--no-nearest"]) == 0
    tables = behavior_tables(read_session(session))
    assert tables is not None
    return tables, out, (out / "index.html").read_text()


def _csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_outcomes_per_block_in_the_csv_page_and_figure_are_the_trial_tables(report):
    tables, out, page = report
    trials = tables.trials
    blocks = np.unique(trials["block"])
    expected = [[int(b), int((trials["block"] == b).sum()),
                 *(int(((trials["block"] == b) & (trials["outcome"] == o)).sum()) for o in TrialOutcome),
                 int(((trials["block"] == b) & trials["unfinished"]).sum())] for b in blocks]
    assert {TrialOutcome.COMPLETED, TrialOutcome.BROKE_FIXATION, TrialOutcome.NO_FIXATION} <= set(trials["outcome"])
    rows = _csv(out / "s0_behavior_blocks.csv")
    assert tuple(rows[0]) == BLOCK_COLUMNS
    assert [[int(v) for v in row[:-1]] for row in rows[1:]] == expected
    for row, counts in zip(rows[1:], expected):
        assert float(row[-1]) == pytest.approx(counts[3] / counts[1], abs=1e-4)  # broke fixation per trial

    # The page's table says the same, with a total row.
    section = page[page.index("<h2>Behaviour: s.h5</h2>"):]
    cells = [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", section)]
    assert [[int(v) for v in row[:-1]] for row in cells[1:-1]] == expected
    assert cells[-1][:-1] == ["all", str(len(trials["number"])),
                              *(str(int((trials["outcome"] == o).sum())) for o in TrialOutcome), "0"]

    # The stacked bars: one stack per block, each outcome's heights its counts, stacked in order.
    fig = outcome_figure(summarise_behavior(tables))
    bars = {c.get_label(): c for c in fig.axes[0].containers}
    bottom = np.zeros(len(blocks))
    for i, outcome in enumerate(TrialOutcome):
        heights = [bar.get_height() for bar in bars[outcome.label]]
        assert heights == [row[2 + i] for row in expected]
        assert [bar.get_y() for bar in bars[outcome.label]] == list(bottom)
        bottom += heights


def test_fixation_reward_and_time_not_working_are_the_tables(report):
    tables, out, page = report
    trials, events = tables.trials, tables.events
    summary = dict(_csv(out / "s0_behavior_summary.csv")[1:])
    acquired = np.isfinite(trials["acquired"])
    acquire_ms = (trials["acquired"] - trials["start"])[acquired] * 1000
    assert int(summary["acquire_trials"]) == acquired.sum() > 0
    for key, q in (("acquire_q25_ms", 25), ("acquire_median_ms", 50), ("acquire_q75_ms", 75)):
        assert float(summary[key]) == pytest.approx(np.percentile(acquire_ms, q), abs=0.05)
    broke = (trials["outcome"] == TrialOutcome.BROKE_FIXATION).sum()
    assert float(summary["breaks_per_trial"]) == pytest.approx(broke / len(trials["number"]), abs=1e-4)

    # Reward: every pulse a trial earned (2 per completed trial here), 80 ms each; nobody gave a manual one.
    earned = int(trials["reward_pulses"].sum())
    assert earned == 2 * (trials["outcome"] == TrialOutcome.COMPLETED).sum() > 0
    assert (int(summary["reward_pulses_earned"]), int(summary["reward_pulses_manual"])) == (earned, 0)
    assert float(summary["reward_ms_total"]) == earned * 80
    assert f"Reward: {earned} pulses, {earned * 80} ms of juice" in page

    # Not working: each pause's idle time before it, plus the pause itself up to the next offer of fixation.
    kinds = events["kinds"].astype(str)
    offers = events["times"][kinds == "offering_fixation"]
    expected, pauses = 0.0, 0
    for t, idle in zip(events["times"][kinds == "not_working"], events["values"][kinds == "not_working"]):
        expected += idle + (offers[offers >= t][0] - t)
        pauses += 1
    assert pauses >= 2
    assert float(summary["not_working_s"]) == pytest.approx(expected, abs=0.05)
    assert int(summary["not_working_pauses"]) == pauses
    assert f"Not working: {expected:.0f} s in {pauses} pauses" in page


def test_gaze_density_counts_every_valid_sample_on_a_log_scale_with_the_window_drawn(report):
    tables, out, page = report
    valid = tables.gaze["valid"].astype(bool)
    fig = gaze_density_figure(tables)
    ax = fig.axes[0]
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    assert isinstance(mesh.norm, LogNorm)
    assert np.nansum(mesh.get_array()) == valid.sum() > 0  # every valid sample, and no blink, in a bin
    (circle,) = [p for p in ax.patches if isinstance(p, Circle)]
    assert circle.get_radius() == tables.spec["window_deg"] == 2.0
    assert tuple(circle.center) == tuple(tables.spec["fixation_point_deg"]) == (1.0, -0.5)
    # The report embeds the same three figures it wrote.
    for name in ("s0_behavior_outcomes.png", "s0_behavior_acquire.png", "s0_behavior_gaze.png"):
        assert (out / name).stat().st_size > 1000 and f'href="{name}"' in page


def test_manual_rewards_are_counted_apart_from_earned_ones():
    trials = {"number": np.arange(3), "start": np.array([0.0, 5.0, 10.0]), "acquired": np.array([0.2, np.nan, 10.4]),
              "outcome": np.array([0, 4, 3]), "reward_pulses": np.array([2, 0, 0]), "block": np.array([0, 0, 1]),
              "unfinished": np.array([False, False, True])}
    events = {"times": np.array([2.0, 3.0, 3.0, 12.0, 20.0, 23.0]),
              "kinds": np.array(["reward", "operator_reward", "manual_reward", "manual_reward", "not_working",
                                 "offering_fixation"], dtype=object),
              "values": np.array([2.0, np.nan, 2.0, 2.0, 9.0, np.nan])}
    summary = summarise_behavior(BehaviorTables(trials, {}, events, {"reward_ms": 50.0}, "simulated"))
    assert (summary.earned_pulses, summary.manual_pulses, summary.manual_rewards) == (2, 4, 2)
    assert summary.total_reward_ms == 6 * 50.0
    assert list(summary.blocks) == [0, 1] and list(summary.trials) == [2, 1] and list(summary.unfinished) == [0, 1]
    assert summary.counts[TrialOutcome.NO_FIXATION].tolist() == [1, 0]
    np.testing.assert_allclose(summary.acquire_ms, [200.0, 400.0])
    assert (summary.not_working_s, summary.not_working_pauses) == (12.0, 1)


def test_a_session_without_behaviour_gets_the_report_it_always_had(tmp_path, monkeypatch):
    session = run_tiny_session(tmp_path, generations=2, seed=1)
    out = tmp_path / "report"
    assert main(["report", str(session), "--out", str(out), "--no-nearest"]) == 0
    page = (out / "index.html").read_text()
    assert "Behaviour" not in page and "behavior" not in page
    # One reference image gives no natural spread to judge a gain by, so no convergence figure (issue 16).
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "s0_t0_montage.png",
                                                      "s0_t0_natural.png", "s0_t0_prototype.png", "s0_trajectory.png"]
    assert "not judged" in page
    # ... the same page as the report with the behaviour step taken out (but for the time it was made).
    monkeypatch.setattr("rig.analysis.report.behavior_tables", lambda session: None)
    before = tmp_path / "before"
    assert main(["report", str(session), "--out", str(before), "--no-nearest"]) == 0
    made = re.compile(r"Made \d{4}-\d\d-\d\d \d\d:\d\d from [^<]*")
    assert made.sub("", page) == made.sub("", (before / "index.html").read_text())
