"""`rig report`: real sessions in, a self-contained HTML report out, rendered by a real headless browser."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from rig.analysis import convergence, natural_scores, prototype_vs_natural, session_trajectory
from rig.cli import EXIT_USAGE, main
from rig.session import read_session
from helpers.protocols import tiny_protocol

UNITS = ("test_cnn:features.7:unit=5", "test_cnn:features.7:unit=6")
SCREEN = """
[protocol]
kind = "screening"
seed = 1
[screening]
image_size = 64
[neuron]
units = ["test_cnn:features.7:unit=6"]
weights = "random"
"""
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    protocol = tmp / "evo.toml"
    protocol.write_text(tiny_protocol(generations=6, seed=3, threads=2, popsize=10, references=5, units=UNITS,
                                      max_frequency=4, image_size=64))
    evo = tmp / "evo.h5"
    assert main(["run", str(protocol), "--out", str(evo), "--quiet"]) == 0
    (tmp / "screen.toml").write_text(SCREEN)
    screen = tmp / "screen.h5"
    assert main(["run", str(tmp / "screen.toml"), "--out", str(screen), "--quiet"]) == 0
    out = tmp / "report"
    # test_cnn's penultimate features keep the test fast; the default network is tested in test_analysis.
    assert main(["report", str(evo), "--out", str(out), "--natural", str(screen), "--network", "test_cnn",
                 "--k", "3"]) == 0
    return evo, screen, out


def _cells(page: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
    return [re.findall(r"<td>(.*?)</td>", row) for row in rows[1:]]


@pytest.mark.timeout(180)
def test_report_figures_and_numbers(report):
    evo, screen, out = report
    page = (out / "index.html").read_text()
    for name in ("convergence.png", "s0_trajectory.png", "s0_t0_montage.png", "s0_t1_prototype.png",
                 "s0_t0_natural.png", "s0_t1_nearest.png"):
        assert (out / name).stat().st_size > 1000, name
        assert f'href="{name}"' in page
    # Self-contained: every figure is embedded and decodes as a PNG; nothing is fetched from elsewhere.
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 1 + 2 * 5
    assert all(Image.open(BytesIO(base64.b64decode(data))).format == "PNG" for data in embedded)
    assert not re.search(r'src="(?!data:)', page)

    # The summary table says what the analyses say.
    session, screening = read_session(evo), read_session(screen)
    rows = _cells(page)
    assert [r[1] for r in rows] == ["test_cnn:features.7:unit=5", "test_cnn:features.7:unit=6"]
    for thread, row in enumerate(rows):
        c = convergence(session_trajectory(session, thread).mean)
        assert row[4:6] == [str(c.reached[0.5]), str(c.reached[0.8])]
    # Thread 1's unit was screened: its natural images are the 20 screened photos, not the 5 references.
    best = max(b.thread_scores(1, 1).max() for b in session.blocks)
    p = prototype_vs_natural(best, natural_scores(screening, "test_cnn:features.7:unit=6")[1])
    assert rows[1][8:10] == [format(p.percentile, ".0f"), "20"]
    assert rows[0][9] == "5"


@pytest.mark.timeout(120)
def test_report_renders_in_a_headless_browser(report, tmp_path):
    if BROWSER is None:
        pytest.skip("chromium is not installed (apt-get install chromium); the report was not rendered")
    _, _, out = report
    # A probe page: the report plus a script that reports whether every image decoded.
    probe = out / "probe.html"
    probe.write_text((out / "index.html").read_text().replace(
        "</body>", "<script>document.title = 'images ' + [...document.images].filter("
                   "i => i.complete && i.naturalWidth > 0).length + '/' + document.images.length;</script></body>"))
    dom = subprocess.run([BROWSER, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=90)
    assert "<title>images 11/11</title>" in dom.stdout, dom.stderr[-2000:]
    shot = out / "screenshot.png"
    subprocess.run([BROWSER, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,2400",
                    f"--screenshot={shot}", (out / "index.html").as_uri()], capture_output=True, timeout=90)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1200)
    # Not a blank page: text, tables and plots put plenty of non-white pixels on it.
    assert (pixels < 200).mean() > 0.02


def test_report_bad_input(tmp_path, report, capsys):
    evo, screen, _ = report
    assert main(["report", str(screen), "--out", str(tmp_path / "r")]) == EXIT_USAGE
    assert "not an evolution session" in capsys.readouterr().err
    assert main(["report", str(evo), "--out", str(tmp_path / "r"), "--natural", str(evo)]) == EXIT_USAGE
    assert "--natural needs screening sessions" in capsys.readouterr().err
