"""The dashboard's stream-health and behaviour panels in a real browser, held against the session file.

One small session has both a recording and trials: a tiny evolution shown as fixation trials to a simulated
monkey (breaking now and then) and rewarded once by the operator, recorded from a thread sim-rig over loopback ZeroMQ that drops messages in block 0 and
restarts acquisition later (so the per-block counters are not all zero). ``rig watch`` serves it from its own
process, started as the run begins, and headless Chromium shows it; every figure on the page is checked against
the file (read_session, the showings' ``recording`` attribute, behavior_tables), never against the viewer's JSON.
"""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from helpers.browser import headless_chromium, needs_chromium, start_watch, wait_until, watch_address
from helpers.protocols import tiny_protocol
from helpers.simrig import ThreadRig, thread_rig_session
from rig.behavior.outcomes import TrialOutcome
from rig.behavior.tables import behavior_tables
from rig.loop.controller import Controller
from rig.recording.sidechannel import FaultRequest
from rig.session import read_session

pytestmark = [pytest.mark.timeout(120), needs_chromium]

#: Trials of 3 stimuli with short holds and intervals; a monkey that fixates fast, never blinks or rests, and breaks
#: now and then (about one trial in two or three: its breaks are drawn in real time, so not every run has one; the
#: counts are checked exactly either way, and a hazard that made a break certain would take seconds more).
BEHAVIOR = """
[behavior]
stimuli_per_trial = 3
window_deg = 2.0
hold_ms = 50
iti_ms = 30
timeout_ms = 30
reward_pulses = 2
reward_ms = 10
reward_pause_ms = 10

[gaze]
source = "simulated"
break_hazard_hz = 1.5
blink_rate_hz = 0.0
acquire_latency_ms = 40
acquire_latency_sd_ms = 5
acquire_latency_min_ms = 30
rest_hazard_hz = 0
rest_hazard_per_reward_hz = 0
"""
WINDOW_DEG = 2.0


class Pages:
    """The session, its viewer and the browser."""

    def __init__(self) -> None:
        self.viewer: subprocess.Popen | None = None
        self.driver = None

    def record(self, folder: Path) -> None:
        """Run the session against a thread sim-rig with the viewer and the page following it as it runs."""
        # One torch thread while it runs: sim-rig's model, scored at every onset, would otherwise spin both cores
        # and starve the viewer starting beside it (whose start is this module's longest wait).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        rig = ThreadRig([FaultRequest("drop", 2), FaultRequest("restart", 5)])
        try:
            def write_protocol(generations: int, popsize: int, references: int) -> Path:
                path = folder / "p.toml"
                path.write_text(tiny_protocol(generations=generations, seed=1, popsize=popsize, references=1,
                                              extra=BEHAVIOR))
                return path

            parts, writer, self.path = thread_rig_session(write_protocol, folder, rig.rig, generations=2, popsize=2)
            # The viewer and the browser start with the run (their start takes seconds) and follow it.
            self.viewer = start_watch(self.path)
            status: list[int] = []
            run = threading.Thread(target=lambda: status.append(
                Controller(parts.protocol, parts.display, parts.source, writer, max_repeats=10).run()), daemon=True)
            # The operator's reward (the "r" key, or the dashboard's button), given before the first trial.
            parts.display.runner.operator.request("reward")
            run.start()
            self.driver = headless_chromium()
            run.join(60)
            parts.source.close()
        finally:
            rig.close()
            torch.set_num_threads(threads)
        assert status == [2], "the recorded session did not run its 2 blocks"
        # Read while the viewer still starts: the first read starts the reader's forkserver (seconds of imports).
        self.session = read_session(self.path)
        self.driver.get(watch_address(self.viewer))
        self.tables = behavior_tables(self.session)

    def show(self) -> None:
        """Wait for the session's final state (the file is complete) on the page."""
        wait_until(lambda: self.text("status") == "complete", "the page to show the session complete")

    def text(self, element_id: str) -> str:
        return self.driver.find_element("id", element_id).text

    def close(self) -> None:
        if self.viewer is not None:
            self.viewer.terminate()  # it ends while the browser quits
        if self.driver is not None:
            self.driver.quit()
        if self.viewer is not None:
            self.viewer.wait(5)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    pages = Pages()
    try:
        pages.record(tmp_path_factory.mktemp("dashboard-panels"))
        yield pages
    finally:
        pages.close()


def _stored_stream(path: Path) -> list[dict]:
    """Per block, the ``recording`` attribute of its last showing (its counters are the live reader's so far)."""
    with h5py.File(path, "r") as f:
        blocks = f["blocks"]
        return [json.loads(blocks[name]["showings"][sorted(blocks[name]["showings"])[-1]].attrs["recording"])
                for name in sorted(blocks)]


def _health_rows(pages: Pages) -> list[dict[str, str]]:
    table = pages.driver.find_element("id", "health")
    head = [th.text for th in table.find_elements("css selector", "th")]
    return [dict(zip(head, (td.text for td in tr.find_elements("css selector", "td"))))
            for tr in table.find_elements("css selector", "tr")[1:]]


def test_stream_health_shows_each_blocks_own_counters_from_the_file(pages):
    pages.show()
    session = pages.session
    stored = _stored_stream(pages.path)
    rows = _health_rows(pages)
    assert [r["block"] for r in rows] == [str(b.index + 1) for b in session.blocks] == ["1", "2"]
    # The reader's counters run through the session: a block's own are what its last showing adds to the block's
    # before (the first block's, to nothing since the first message).
    before = {"messages": 0, "gaps": 0, "restarts": 0, "last_receive_time": stored[0]["stream"]["first_receive_time"]}
    for row, block, diagnostics in zip(rows, session.blocks, stored):
        stream = diagnostics["stream"]
        assert row["re-shows"] == str(len(block.showings) - 1)
        assert row["dropped frames"] == str(sum(int(np.sum(s["dropped_frames"])) for s in block.showings))
        for name in ("messages", "gaps", "restarts"):
            assert row[name] == str(stream[name] - before[name]), (name, row)
        rate = (stream["messages"] - before["messages"]) / (stream["last_receive_time"] - before["last_receive_time"])
        assert float(row["msgs/s"]) == pytest.approx(rate, rel=5e-3)
        assert float(row["TTL residual ms"]) == pytest.approx(diagnostics["pairing"]["residual_ms"], rel=5e-3, abs=1e-4)
        before = stream
    # The injected faults, each counted once: the gap in block 1 (its onset 2), the restart in whichever block
    # showed onset 5 (re-shows move it), and never again in the blocks after (the counters are not cumulative).
    assert [r["gaps"] for r in rows] == ["1", "0"] and sum(int(r["restarts"]) for r in rows) == 1
    assert sum(int(r["re-shows"]) for r in rows) > 0


def test_behaviour_panel_counts_trials_and_reward_from_the_file(pages):
    pages.show()
    assert pages.driver.find_element("id", "behavior-panel").is_displayed()
    assert pages.driver.find_element("id", "reward").is_displayed()
    tables = pages.tables
    trials = tables.trials
    titles = [t.get_attribute("textContent")
              for t in pages.driver.find_elements("css selector", "#trials-plot rect title")]
    expected = []
    for block in (0, 1):
        outcomes = trials["outcome"][trials["block"] == block]
        expected += [f"block {block + 1}: {int(np.sum(outcomes == TrialOutcome.COMPLETED))} completed",
                     f"block {block + 1}: {int(np.sum(outcomes == TrialOutcome.BROKE_FIXATION))} broken"]
    assert titles == expected
    assert (trials["outcome"] == TrialOutcome.COMPLETED).any()
    # Reward: the trials' pulses and the operator's, which no trial counts.
    kinds = np.asarray(tables.events["kinds"]).astype(str)
    manual = np.asarray(tables.events["values"])[kinds == "manual_reward"]
    assert list(manual) == [2]
    assert int(pages.text("reward-total")) == int(trials["reward_pulses"].sum()) + 2


def _points(polyline) -> np.ndarray:
    return np.array([[float(v) for v in p.split(",")] for p in polyline.get_attribute("points").split()])


def test_gaze_plot_draws_the_latest_trials_valid_samples_inside_the_fixation_window(pages):
    pages.show()
    tables = pages.tables
    last = int(np.argmax(tables.trials["number"]))
    start, stop = tables.trials["start"][last], tables.trials["stop"][last]
    gaze = tables.gaze
    keep = (gaze["times"] >= start) & (gaze["times"] <= stop) & gaze["valid"].astype(bool)
    degrees = np.column_stack([gaze["x"][keep], gaze["y"][keep]])
    assert len(degrees) > 10
    plot = pages.driver.find_element("id", "gaze-plot")
    assert plot.find_element("css selector", "text").text == f"gaze, trial {int(tables.trials['number'][last])}"
    drawn = _points(plot.find_element("css selector", "polyline"))
    assert drawn.shape == degrees.shape  # one point per valid sample of the latest trial
    # The page maps degrees to pixels with one scale for both axes, y up: fit it from the samples, then the circle
    # must be the protocol's window around its fixation point under the same map.
    design = np.column_stack([np.ones(len(degrees)), degrees[:, 0]])
    (x0, scale), *_ = np.linalg.lstsq(design, drawn[:, 0], rcond=None)
    np.testing.assert_allclose(drawn[:, 0], x0 + scale * degrees[:, 0], atol=1e-6)
    y0 = float(np.mean(drawn[:, 1] + scale * degrees[:, 1]))
    np.testing.assert_allclose(drawn[:, 1], y0 - scale * degrees[:, 1], atol=1e-6)
    assert scale > 0
    circle = plot.find_element("css selector", "circle")
    (cx, cy), window = tables.spec["fixation_point_deg"], tables.spec["window_deg"]
    assert window == WINDOW_DEG
    assert float(circle.get_attribute("r")) == pytest.approx(window * scale)
    assert float(circle.get_attribute("cx")) == pytest.approx(x0 + scale * cx)
    assert float(circle.get_attribute("cy")) == pytest.approx(y0 - scale * cy)
