"""protocols/twin-check.toml: taken images shown back interleaved and repeated, and `rig report` comparing groups."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from helpers.protocols import run_tiny_session
from rig.analysis.convergence import session_gain
from rig.analysis.groups import compare_groups
from rig.analysis.sources import natural_scores
from rig.cli import EXIT_USAGE, main
from rig.session import read_session

SHIPPED = Path(__file__).resolve().parents[1] / "protocols" / "twin-check.toml"
NEURON, STAND_IN = "test_cnn:features.7:unit=5", "test_cnn:features.7:unit=6"


def edited(folder: Path) -> Path:
    """The shipped protocol as a user edits it: session paths, the twin's thread, a tiny model and size."""
    text = SHIPPED.read_text()
    # One two-thread session serves as both: thread 0 followed the neuron, thread 1 stands in for the twin.
    text = text.replace('session = "twin.h5"', 'session = "evo.h5"').replace(
        'session = "neuron.h5"', 'session = "evo.h5"')
    text = text.replace("thread = 0\ntop = 5", "thread = 1\ntop = 5", 1)
    text = text.replace("image_size = 224", "image_size = 32").replace("repeats = 5", "repeats = 3")
    text = re.sub(r'units = \["[^"]*"\]', f'units = ["{NEURON}"]\nweights = "random"', text)
    path = folder / "twin-check.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("twin")
    run_tiny_session(folder, generations=3, seed=5, threads=2, popsize=8, references=2,
                     units=(NEURON, STAND_IN))
    (folder / "s.h5").rename(folder / "evo.h5")
    out = folder / "check.h5"
    assert main(["run", str(edited(folder)), "--out", str(out), "--quiet"]) == 0
    return folder, read_session(out)


def test_groups_shown_interleaved_and_repeated(checked):
    _, session = checked
    groups = [i.split("/")[0] for i in session.reference_ids]
    assert groups == ["twin"] * 5 + ["evolved"] * 5 + ["natural"] * 5
    assert [t["thread"] for t in session.provenance["screening"]["taken"][:10]] == [1] * 5 + [0] * 5
    # Three repeats, each showing all 15 images once, in different orders that mix the groups.
    orders = [[s.split("/")[1] for s in b.stimulus_ids] for b in session.blocks]
    assert len(orders) == 3 and all(sorted(o) == sorted(orders[0]) for o in orders)
    assert orders[0] != orders[1]
    assert any(orders[0][i].split("-")[0] != orders[0][i + 1].split("-")[0] for i in range(14))
    assert {o.split("/")[0] for o in session.blocks[0].stimulus_ids} == {"nat"}


def test_report_compares_the_three_groups(checked):
    folder, session = checked
    comparison = compare_groups(session, 0)
    ids, means = natural_scores(session, 0)
    by_group = {g: means[[i.startswith(g + "/") for i in ids]] for g in ("twin", "evolved", "natural")}
    assert [g.group for g in comparison.groups] == ["twin", "evolved", "natural"]
    for g in comparison.groups:
        assert g.count == 5 and g.mean == pytest.approx(by_group[g.group].mean())
        low, high = g.ci
        assert low < g.mean < high
    # The neuron's own evolved images drive it harder than natural photos (a tiny model, 3 generations).
    assert comparison.groups[1].mean > comparison.groups[2].mean
    test = next(t for t in comparison.tests if (t.a, t.b) == ("evolved", "natural"))
    assert test.p == pytest.approx(stats.ttest_ind(by_group["evolved"], by_group["natural"], equal_var=False).pvalue)

    # The evolution beside it is judged too: convergence only for threads whose mean gained.
    evo = read_session(folder / "evo.h5")
    out = folder / "report"
    assert main(["report", str(session.path), str(evo.path), "--out", str(out), "--no-nearest"]) == 0
    page = (out / "index.html").read_text()
    assert "Groups compared" in page and 'alt="responses by group, test_cnn:features.7:unit=5"' in page
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)]
    rows = [r for r in rows if r and r[0].startswith("evo.h5")]
    assert len(rows) == 2
    for thread, row in enumerate(rows):
        gain = session_gain(evo, thread)
        assert row[-1] == f"{gain.in_scale:+.2f}"
        assert (row[4] == "did not evolve") == (not gain.evolved)
    with (out / "s0_c0_groups.csv").open() as f:
        rows = [r for r in csv.reader(f) if r]
    assert [r[1] for r in rows[1:4]] == ["twin", "evolved", "natural"]
    assert float(rows[2][3]) == pytest.approx(comparison.groups[1].mean)
    assert np.isclose(float(rows[-1][5]), comparison.tests[-1].p)


def test_unedited_paths_stop_the_run_naming_the_file(tmp_path, capsys):
    (tmp_path / "twin-check.toml").write_text(SHIPPED.read_text())
    assert main(["run", str(tmp_path / "twin-check.toml"), "--out", str(tmp_path / "c.h5"), "--quiet"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "[[screening.take]] #1 (group 'twin'): session file" in err and "twin.h5 not found" in err
    assert not (tmp_path / "c.h5").exists()
