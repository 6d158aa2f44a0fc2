"""The live dashboard's cost to the experiment and its delay, measured in one run on this machine.

- Time per generation of ``rig run`` with a viewer attached (``--dashboard``: ``rig watch`` beside the run,
  and headless Chromium on its page, receiving every update and loading every image) against the same run
  with none. Runs alternate (none, viewer, none, viewer, ...) so drift in the machine's load falls on both;
  the first ``--skip`` generations of each run are left out, and the run is held until the page is up. Also the
  CPU seconds per generation of the run's process, the viewer's and the browser's. Target: <= 2% slower.
- The delay from a block being written (its journal file's mtime) to the page showing its generation (a
  MutationObserver's Date.now() on the generation counter; the same wall clock). Target: <= 1 s.

    .venv/bin/python bench/dashboard.py [--protocol protocols/dry-run.toml] [--generations 20] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402

from rig.dashboard.channel import ControlRequest, post_request  # noqa: E402
from rig.session import journal_dir  # noqa: E402

GEN_LINE = re.compile(r"^gen\s+(\d+)/\d+ .* (\d+\.\d+) s/gen")
OBSERVER = """
window.shown = [];
new MutationObserver(() => window.shown.push([Number(document.getElementById('generation').textContent), Date.now()]))
  .observe(document.getElementById('generation'), {childList: true, characterData: true, subtree: true});
"""


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--window-size=1280,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for task in os.listdir(f"/proc/{pid}/task")
                for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int | None, tree: bool = False) -> float:
    """CPU time (user + system) used so far by ``pid`` and, with ``tree``, all its descendants; Linux /proc."""
    if pid is None:
        return 0.0
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
        if tree:
            todo += _children(current)
    return total


class JournalWatch:
    """Each journal block file's mtime (ns since the epoch), noted as it appears (looked at every 5 ms)."""

    def __init__(self, session: Path) -> None:
        self.folder = journal_dir(session)
        self.written: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            try:
                for entry in os.scandir(self.folder):
                    block = entry.name[:-3]
                    if entry.name.endswith(".h5") and block.isdigit() and int(block) not in self.written:
                        self.written[int(block)] = entry.stat().st_mtime_ns
            except FileNotFoundError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def one_run(protocol: Path, generations: int, out: Path, viewer: bool,
            skip: int) -> tuple[list[float], list[float], dict[str, float]]:
    """Seconds per generation (from rig run's progress lines), with a viewer each block's write-to-page delay,
    and the CPU seconds per generation of the run's process, the viewer's and the browser's.

    The run is held (paused) until the viewer's page is up; the first ``skip`` generations are left out.
    """
    argv = [sys.executable, "-m", "rig.cli", "run", str(protocol), "--out", str(out), "--generations", str(generations)]
    run = subprocess.Popen(argv + (["--dashboard", "0"] if viewer else []), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    seconds: dict[int, float] = {}
    driver, watch, viewer_pid = None, None, None
    cpu: dict[int, tuple[float, float, float]] = {}  # generation -> CPU so far of (run, viewer, browser)
    try:
        for line in run.stdout:
            if line.startswith("  session:"):
                # Hold the run (both kinds alike) until the page is up: the viewer's start is not what is measured.
                while not out.exists():
                    time.sleep(0.01)
                with h5py.File(out, "r") as f:
                    session_id = f.attrs["session_id"]
                post_request(out, ControlRequest.make("pause", None, session_id))
                if not viewer:
                    post_request(out, ControlRequest.make("resume", None, session_id))
            if "dashboard viewer in process" in line:
                viewer_pid = int(line.split("in process ")[1].split()[0])
            if viewer and driver is None and "rig watch:" in line and "#token=" in line:
                watch = JournalWatch(out)
                driver = _browser()
                driver.get(line.split(" at ", 1)[1].strip())
                driver.execute_script(OBSERVER)
                watching_since_ns = time.time_ns()  # blocks written before this were on the page at its load
                post_request(out, ControlRequest.make("resume", None, session_id))
            match = GEN_LINE.match(line)
            if match:
                seconds[int(match.group(1))] = float(match.group(2))
                browser = driver.service.process.pid if driver is not None else None
                cpu[int(match.group(1))] = (cpu_seconds(run.pid), cpu_seconds(viewer_pid),
                                            cpu_seconds(browser, tree=True))
        run.wait()
        if run.returncode != 0:
            raise SystemExit(f"rig run exited {run.returncode}")
        delays = []
        if driver is not None:
            time.sleep(1.0)  # the page's last update
            shown = {}
            for generation, at_ms in driver.execute_script("return window.shown;"):
                shown.setdefault(int(generation), at_ms)
            watch.stop()
            delays = [(shown[b + 1] - watch.written[b] / 1e6) / 1000 for b in sorted(watch.written)
                      if b + 1 in shown and watch.written[b] > watching_since_ns]
        last = max(cpu)
        per_gen = {name: (cpu[last][i] - cpu[skip][i]) / (last - skip)
                   for i, name in enumerate(("run", "viewer", "browser"))}
        return [seconds[g] for g in sorted(seconds) if g > skip], delays, per_gen
    finally:
        if driver is not None:
            driver.quit()
        if run.poll() is None:
            run.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", type=Path, default=Path("protocols/dry-run.toml"))
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip", type=int, default=2, help="first generations of each run left out")
    args = parser.parse_args()
    per_gen = {False: [], True: []}
    cpu = {False: [], True: []}
    delays: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for viewer in (False, True) if repeat % 2 == 0 else (True, False):  # neither always goes first
                out = Path(tmp) / f"{repeat}-{viewer}.h5"
                seconds, found, used = one_run(args.protocol, args.generations, out, viewer, args.skip)
                if not seconds:
                    raise SystemExit("no generation left to time: raise --generations (the viewer came up too late)")
                per_gen[viewer] += seconds
                cpu[viewer].append(used)
                delays += found
                print(f"run {repeat} {'viewer' if viewer else 'none  '}: median {statistics.median(seconds):.3f} "
                      f"s/gen over {len(seconds)} generations; CPU s/gen: run {used['run']:.3f}, "
                      f"viewer {used['viewer']:.3f}, browser {used['browser']:.3f}", flush=True)
    none, attached = statistics.median(per_gen[False]), statistics.median(per_gen[True])
    print(f"\n{args.protocol}, {args.generations} generations x {args.repeats} runs each, first {args.skip} left out")
    print(f"time per generation, no viewer:       median {none:.3f} s (mean {statistics.mean(per_gen[False]):.3f})")
    print(f"time per generation, viewer attached: median {attached:.3f} s (mean {statistics.mean(per_gen[True]):.3f})")
    ratio = attached / none
    print(f"ratio: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; target <= +2%: {'met' if ratio <= 1.02 else 'not met'})")
    run_none = statistics.mean(c["run"] for c in cpu[False])
    run_viewer = statistics.mean(c["run"] for c in cpu[True])
    beside = statistics.mean(c["viewer"] + c["browser"] for c in cpu[True])
    print(f"CPU per generation of the run's own process: {run_none:.3f} s without a viewer, {run_viewer:.3f} s with "
          f"({(run_viewer / run_none - 1) * 100:+.1f}%)")
    print(f"CPU per generation of the viewer and the browser beside it: {beside:.3f} s ({beside / run_none * 100:.1f}% "
          f"of the run's; what a machine with no spare core would lose at most)")
    if delays:
        print(f"block written -> page shows it: median {statistics.median(delays):.3f} s, max {max(delays):.3f} s "
              f"over {len(delays)} blocks (target <= 1 s: {'met' if max(delays) <= 1.0 else 'not met'})")


if __name__ == "__main__":
    main()
