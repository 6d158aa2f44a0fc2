"""Start-up time of the command line: what a user waits before a command begins its work.

    .venv/bin/python bench/startup.py [--repeats 5]

Median wall seconds, over ``--repeats`` fresh processes, of:
- ``python -c "import torch"``: the floor, since every command but ``rig watch``'s page needs torch;
- ``rig --help``: building the command line, which imports every command's module;
- ``rig watch SESSION --port 0`` until it prints its address (a 2-generation session made here);
and each one's ratio to the floor, all measured in this run. Then which of the slow-to-import packages
(scipy, scikit-learn, pandas, matplotlib, pycma, torchvision) ``rig --help`` pulls in: none is needed to
build the command line.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers.protocols import tiny_protocol  # noqa: E402

HEAVY = ("scipy", "sklearn", "pandas", "matplotlib", "cma", "torchvision")


def seconds(argv: list[str], until: str | None = None) -> float:
    """Wall seconds from starting ``argv`` to its exit, or to the first output line containing ``until``."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    if until is None:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {out[-500:]}")
        return time.perf_counter() - started
    for line in process.stdout:
        if until in line:
            took = time.perf_counter() - started
            process.terminate()
            process.wait(10)
            return took
    raise SystemExit(f"{' '.join(argv)} ended without printing {until!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        protocol, session = Path(tmp) / "p.toml", Path(tmp) / "s.h5"
        protocol.write_text(tiny_protocol(generations=2, popsize=4, references=1))
        seconds([python, "-m", "rig.cli", "run", str(protocol), "--out", str(session), "--quiet"])
        runs = {
            'python -c "import torch"': ([python, "-c", "import torch"], None),
            "rig --help": ([python, "-m", "rig.cli", "--help"], None),
            "rig watch (to its address)": ([python, "-m", "rig.cli", "watch", str(session), "--port", "0"],
                                           "rig watch:"),
        }
        # Alternated, so that a slow spell of a noisy machine falls on every command alike.
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, (argv, until) in runs.items():
                times[name].append(seconds(argv, until))
    floor = statistics.median(next(iter(times.values())))
    print(f"bench/startup.py: median of {args.repeats} fresh processes each, alternated")
    print(f"  {'command':<30} {'median s':>9} {'range s':>13} {'vs import torch':>16}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<30} {median:9.2f} {min(values):6.2f}-{max(values):<6.2f} {median / floor:15.2f}x")
    probe = ("import sys, rig.cli\ntry:\n    rig.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
             f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=ROOT).stdout
    loaded = [line.removeprefix("loaded:") for line in out.splitlines() if line.startswith("loaded:")]
    print(f"  slow-to-import packages that `rig --help` loads: {loaded[0] if loaded and loaded[0] else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
