"""The live dashboard in a real browser: a session runs in this process, ``rig watch`` serves it from its own
process, and headless Chromium (Debian's, through its chromedriver) shows and controls it.

One session and one browser for the module; the tests run in order, each taking the session a step further:
shown live, extended, screenshot, refused without the token, stopped, then resumed with ``--dashboard`` whose
viewer is killed mid-run.
"""
from __future__ import annotations

import io
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from helpers.browser import headless_chromium as _browser, needs_chromium, start_watch, watch_address
from helpers.browser import wait_until as _wait
from helpers.protocols import tiny_protocol
from rig.cli import main
from rig.dashboard.channel import ControlRequest, post_request, requests_path
from rig.session import journal_dir, read_session
from rig.session.layout import journal_files

pytestmark = [pytest.mark.timeout(120), needs_chromium]
#: Many more than the test runs: the run is held (paused) and stopped long before the end.
GENERATIONS = 30


def _blocks_written(session: Path) -> int:
    return len(read_session(session).blocks)


class Live:
    """The module's session: the run (a thread of this process), the viewer process and the browser."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.session = folder / "s.h5"
        (folder / "p.toml").write_text(tiny_protocol(generations=GENERATIONS, seed=0))
        self.status: list[int] = []
        self.run = threading.Thread(target=lambda: self.status.append(
            # Paced (20 ms a stimulus, 0.14 s a block): unpaced, the tiny model's 30 blocks could all be written
            # before the first pause below was read, and the tests would find the run complete.
            main(["run", str(folder / "p.toml"), "--out", str(self.session), "--quiet", "--pace-ms", "10,10"])),
            daemon=True)
        self.run.start()
        _wait(self.session.exists, "the session file", 60)
        with h5py.File(self.session, "r") as f:  # the master as created: quicker than read_session's probe
            self.session_id = f.attrs["session_id"]
        self.post("pause")  # as any viewer would: hold the run while the page comes up
        self.viewer = start_watch(self.session)
        self.driver = _browser()  # while the viewer starts
        self.url = watch_address(self.viewer)
        self.base = self.url.split("#")[0]
        self.token = self.url.split("#token=")[1]
        self.driver.get(self.url)

    def post(self, kind: str, value=None) -> None:
        post_request(self.session, ControlRequest.make(kind, value, self.session_id))

    def text(self, element_id: str) -> str:
        return self.driver.find_element("id", element_id).text

    def click(self, element_id: str) -> None:
        self.driver.find_element("id", element_id).click()

    def paused_at(self) -> int:
        """Wait until the page says paused; the blocks then written."""
        _wait(lambda: self.text("status") == "paused", "the page to show the run paused")
        return _blocks_written(self.session)

    def best_src(self) -> str:
        found = self.driver.find_elements("id", "best-0")
        return found[0].get_attribute("src") if found else ""

    def close(self) -> None:
        self.driver.quit()
        self.viewer.terminate()
        self.viewer.wait(5)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    live = Live(tmp_path_factory.mktemp("dashboard"))
    yield live
    live.close()


def _expected_best(session: Path) -> tuple[int, int]:
    """(block, code) of the best score of thread 0 so far, from the file."""
    recorded = read_session(session)
    scores = [(float(np.max(b.thread_scores(0, 0))), b.index, int(np.argmax(b.thread_scores(0, 0))))
              for b in recorded.blocks]
    _, block, code = max(scores)
    return block, code


def test_page_follows_the_running_session(live):
    before = live.paused_at()
    _wait(lambda: live.text("generation") == str(before), f"generation {before} on the page")
    # An in-silico session without trials: no behaviour panel (tests/test_dashboard_panels.py shows one with).
    assert not live.driver.find_element("id", "behavior-panel").is_displayed()
    seen = {live.best_src()}
    # Let it run one block at least, then hold it again: the page shows each block as it is written.
    live.click("resume")
    _wait(lambda: int(live.text("generation")) > before, "a new generation on the page")
    live.click("pause")
    after = live.paused_at()
    assert after > before
    _wait(lambda: live.text("generation") == str(after), f"generation {after} on the page", 5)
    # The best image is the file's best so far, and it is drawn (the viewer rendered it from its code).
    block, code = _expected_best(live.session)
    _wait(lambda: live.best_src().endswith(f"/api/image/{block}/0/{code}.png"), "the best image", 5)
    loaded = "const i = document.getElementById('best-0'); return i.complete && i.naturalWidth === 32;"
    _wait(lambda: live.driver.execute_script(loaded), "the best image to load", 10)
    seen.add(live.best_src())
    assert len(seen) >= 2  # it changed as blocks landed (none, or an earlier best, before)
    assert len(live.driver.find_elements("css selector", "#latest-0 img")) == 6  # the latest block's images
    live.paused_blocks = after


def test_extend_raises_the_generation_count_and_is_recorded(live):
    live.driver.find_element("id", "extend-n").clear()
    live.driver.find_element("id", "extend-n").send_keys("2")
    live.click("extend")
    _wait(lambda: live.text("generations") == str(GENERATIONS + 2), "the extended generation count")
    extends = [c for c in read_session(live.session).controls if c["kind"] == "extend"]
    assert [(c["value"], c["outcome"]) for c in extends] == [(2, "applied")]
    assert extends[0]["after_block"] == live.paused_blocks - 1


def test_screenshot_mid_session_is_not_blank(live, tmp_path):
    _wait(lambda: len(live.driver.find_elements("css selector", "#thread-0 polyline")) == 2, "the score plot")
    png = live.driver.get_screenshot_as_png()
    (tmp_path / "dashboard.png").write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 800
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, plot lines, images: many colours
    assert (pixels.mean(axis=2) < 128).mean() > 0.01  # dark header, text and images


def test_a_control_without_the_token_is_refused(live):
    before = requests_path(live.session).stat().st_size
    for headers in ({}, {"X-Rig-Token": live.token[:-1] + ("A" if live.token[-1] != "A" else "B")}):
        request = urllib.request.Request(live.base + "api/control", data=json.dumps({"kind": "stop"}).encode(),
                                         headers={"Content-Type": "application/json", **headers}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
    assert requests_path(live.session).stat().st_size == before  # nothing reached the run
    assert live.text("status") == "paused"


def test_stop_after_this_block_then_resume_with_a_viewer_that_dies(live, capsys):
    live.click("stop")
    live.run.join(30)
    assert live.status == [0]
    stopped = read_session(live.session)
    assert stopped.attrs["status"] == "stopped"
    assert len(stopped.blocks) == live.paused_blocks  # nothing lost, nothing half-done
    assert not journal_files(journal_dir(live.session))
    _wait(lambda: live.text("status") == "stopped", "the page to show the run stopped", 10)

    # Resume beside a viewer of its own (--dashboard), and kill that viewer as the run carries on.
    status: list[int] = []
    capsys.readouterr()
    resumed = threading.Thread(target=lambda: status.append(
        main(["run", "--resume", str(live.session), "--dashboard", "0"])), daemon=True)
    resumed.start()
    out = ""
    while "dashboard viewer in process" not in out:
        out += _wait(lambda: capsys.readouterr().out, "the resumed run's viewer", 60)
    # The extension survived the stop and the resume.
    assert f"{len(stopped.blocks)} of {GENERATIONS + 2} blocks recorded" in out
    os.kill(int(out.split("dashboard viewer in process ")[1].split()[0]), signal.SIGKILL)
    _wait(lambda: len(journal_files(journal_dir(live.session))) >= 2, "two blocks after the viewer died", 30)
    live.post("stop")
    resumed.join(60)
    assert status == [0]
    done = read_session(live.session)
    assert done.attrs["status"] == "stopped" and len(done.blocks) >= len(stopped.blocks) + 2
    assert [c["kind"] for c in done.controls][-2:] == ["stop", "stop"]
    assert all(c["outcome"] == "applied" for c in done.controls)
