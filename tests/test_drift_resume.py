"""A resumed session keeps its gaze drift correction: the offset the recorded trials ended with is recomputed from
the file's gaze and trial tables, the rebuilt source starts from it and says so, and a file whose gaze cannot
give it is refused.

The monkey's eye signal drifts 0.2°/s to the right (degrees already: no raw map, so no calibration is needed) and
the source removes half the measured offset after each baseline hold, so after two generations of short trials
the correction is well away from zero."""
from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers.protocols import tiny_protocol
from helpers.sessions import kill_after_blocks
from rig.behavior.gaze import GazeSamples, GazeTask
from rig.behavior.gaze.raw import carry_drift, drift_corrections
from rig.behavior.log import read_behavior
from rig.behavior.parts import part_registry
from rig.cli import main
from rig.session import read_session
from rig.session.layout import journal_dir

FRACTION = 0.5
DRIFTING = f"""
[behavior]
stimuli_per_trial = 2
window_deg = 4.0
iti_ms = 200.0

[gaze]
source = "simulated"
seed = 9
break_hazard_hz = 0.0
blink_rate_hz = 0.0
landing_error_deg = 0.1
raw_drift_per_s = [0.2, 0.0]
drift_correction = {FRACTION}
"""


def recorded(blocks) -> tuple[GazeSamples, list[tuple[float, float]], list[tuple[float, float]]]:
    """The blocks' gaze, each trial's baseline hold (acquired, first onset or break), and the corrections their
    showings logged as events, all in trial order (as tests/test_calibration.py reads them from memory)."""
    samples, spans, logged = [], [], []
    for block in blocks:
        for showing in block.showings:
            b = read_behavior(showing)
            samples.append(GazeSamples(b["gaze_times"], b["gaze_x"], b["gaze_y"], b["gaze_valid"]))
            for acquired, onset, broke in zip(b["trial_acquired"], b["trial_first_onset"], b["trial_break_time"]):
                end = onset if math.isfinite(onset) else broke
                if math.isfinite(acquired) and math.isfinite(end) and end > acquired:
                    spans.append((float(acquired), float(end)))
            kinds = [str(k) for k in b["event_kinds"]]
            xs = [v for k, v in zip(kinds, b["event_values"]) if k == "drift_correction_x"]
            ys = [v for k, v in zip(kinds, b["event_values"]) if k == "drift_correction_y"]
            logged += list(zip(xs, ys))
    return GazeSamples.concat(samples), spans, logged


def copied(session: Path, out: Path) -> Path:
    """A copy of a killed ``session`` (master and journal) at ``out``, so each test resumes its own."""
    out.write_bytes(session.read_bytes())
    journal_dir(out).mkdir()
    for part in journal_dir(session).iterdir():
        (journal_dir(out) / part.name).write_bytes(part.read_bytes())
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """The drifting protocol run for 3 generations and killed after 2 were written (no finish, no merge)."""
    folder = tmp_path_factory.mktemp("drift-resume")
    protocol = folder / "p.toml"
    protocol.write_text(tiny_protocol(generations=3, seed=3, popsize=4, references=1, extra=DRIFTING))
    out = folder / "killed.h5"
    with pytest.MonkeyPatch.context() as patch:
        kill_after_blocks(2, patch, lambda: main(["run", str(protocol), "--out", str(out), "--quiet"]))
    return out


def test_a_resumed_session_starts_from_the_offset_its_recorded_gaze_gives(killed, tmp_path):
    out = copied(killed, tmp_path / "resumed.h5")
    first = read_session(out)
    assert len(first.blocks) == 2
    samples, spans, logged = recorded(first.blocks)
    before = drift_corrections(samples, spans, (0.0, 0.0), FRACTION)
    assert len(before) == len(logged) == len(spans) >= 6  # one correction per baseline hold
    # The file's gaze is float32; recomputed from it, each correction is the logged one to that precision.
    np.testing.assert_allclose(before, logged, rtol=0, atol=1e-5)
    expected = np.sum(before, axis=0)
    assert expected[0] < -0.5  # the drift to the right was being taken out: far from a fresh start's zero

    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    session = read_session(out)
    assert session.attrs["status"] == "complete" and len(session.blocks) == 3
    gaze = json.loads(session.attrs["resumes"])[-1]["display"]["behavior"]["gaze"]
    np.testing.assert_allclose(gaze["drift_resumed_from"], expected, rtol=0, atol=1e-12)
    # The whole session's corrections, before the resume and after it, are what its recorded gaze gives.
    samples, spans, logged = recorded(session.blocks)
    again = drift_corrections(samples, spans, (0.0, 0.0), FRACTION)
    assert len(again) == len(logged) == len(spans) > len(before)
    np.testing.assert_allclose(again, logged, rtol=0, atol=1e-5)


def _drop(f: h5py.File, name: str) -> None:
    del f[name]


def _shorten(f: h5py.File, name: str) -> None:
    data = f[name][()]
    del f[name]
    f[name] = data[:-1]


@pytest.mark.parametrize("dataset, damage, said", [
    ("gaze_x", _drop, "block 0 showing 0 lacks gaze_x"),  # a showing that lost its gaze positions
    ("gaze_y", _shorten, "block 0 showing 0: its gaze or trial table is damaged"),  # one sample short
])
def test_a_session_whose_gaze_cannot_give_the_offset_is_not_resumed_from_zero(killed, tmp_path, capsys, dataset,
                                                                             damage, said):
    out = copied(killed, tmp_path / "damaged.h5")
    damaged = 0
    for part in sorted(journal_dir(out).iterdir()):
        with h5py.File(part, "r+") as f:
            names: list[str] = []
            f.visit(lambda name: names.append(name) if name.endswith(f"/{dataset}") else None)
            for name in names:
                damage(f, name)
            damaged += len(names)
    assert damaged
    assert main(["run", "--resume", str(out), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert f"{out}: {said}" in err and "drift" in err
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs.get("resumes", "[]")) == []  # refused before the file was touched: nothing ran


def test_only_a_source_that_corrects_drift_starts_from_a_resumed_offset():
    gaze = part_registry("gaze")
    task = GazeTask((0.0, 0.0), 2.0, "simulated", 0.0, 1)

    def started(kind: str, **options):
        source = gaze.build(kind, options)
        source.start(task)
        return source

    resumed, fresh = (started("simulated", seed=1, drift_correction=0.5) for _ in range(2))
    carry_drift(resumed, (0.25, -0.5))
    assert resumed.offset == (0.25, -0.5) and resumed.describe()["drift_resumed_from"] == [0.25, -0.5]
    assert "drift_resumed_from" not in fresh.describe()
    a, b = resumed.read(0.2), fresh.read(0.2)  # the same monkey: its very first samples carry the offset
    assert len(a) > 50 and a.valid.any()
    np.testing.assert_allclose(a.x[a.valid] - b.x[b.valid], 0.25, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.y[a.valid] - b.y[b.valid], -0.5, rtol=0, atol=1e-12)
    with pytest.raises(RuntimeError, match="before the first read"):
        carry_drift(resumed, (0.0, 0.0))
    for source in (started("simulated", seed=1), started("none")):  # no drift correction: zero only
        carry_drift(source, (0.0, 0.0))
        with pytest.raises(ValueError, match="cannot resume from a drift offset of"):
            carry_drift(source, (0.1, 0.0))
