"""A live session against ``rig sim-rig`` at Neuropixels-scale channel counts: can the reader keep up?

For each channel count, ``rig sim-rig`` (a separate process, the Open Ephys GUI + ZMQ Interface double:
one DATA message per selected channel per ~23 ms callback, JUCE-pretty headers) streams at 30 kHz while
this process runs a real evolution session against it (paced headless display, 100 ms on / 150 ms off,
40 images + 10 references per block, the real reader, scorer and session writer). Printed per channel count:

- messages per second the reader sustained (and what sim-rig sent), gaps and lost messages;
- reader lag at the end of each block: how far the scorer's watermark trails the recording clock "now";
- resident memory after each block (flat = no growth after the first block);
- session bytes per block (raw DATA payloads are not kept: ``keep_data_payloads = false``);
- invalid stimuli and re-shows per block.

The issue's target: 384 channels sustained for 20 generations, lag <= 0.5 s at every block's end, memory
flat, <= 2 MB of session file per block.

    .venv/bin/python bench/stream.py [--channels 32,128,384] [--generations 20]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from protocols.spec import load_protocol  # noqa: E402
from rig.loop.assemble import assemble, resolve_neuron  # noqa: E402
from rig.loop.controller import Controller  # noqa: E402
from rig.session import SessionWriter  # noqa: E402

UNIT = "test_cnn:features.7:unit=5"
PROTOCOL = f"""
[protocol]
kind = "evolution"
name = "stream-bench"
generations = {{generations}}
seed = 0

[generator]
kind = "fourier"
max_frequency = 4
image_size = 64

[optimizer]
kind = "cmaes"
popsize = 40

[references]
count = 10

[neuron]
units = ["{UNIT}"]
weights = "random"

[recording]
units = ["Electrode 1:1"]
"""


def rss_mb() -> float:
    """This process's resident memory now, MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def start_sim_rig(folder: Path, channels: int, send_queue: int) -> tuple[subprocess.Popen, dict]:
    ready = folder / "sim-rig.json"
    log = open(folder / "sim-rig.log", "w")
    process = subprocess.Popen(
        # sim-rig's default response model: tens of spikes/s, as a cortical neuron fires.
        [sys.executable, "-m", "rig.cli", "sim-rig", "--neuron", UNIT, "--weights", "random",
         "--channels", str(channels), "--send-queue", str(send_queue), "--data-port", "0", "--side-port", "0",
         "--ready-file", str(ready)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((folder / "sim-rig.log").read_text())
        time.sleep(0.05)
    time.sleep(0.1)
    return process, json.loads(ready.read_text())


def run(channels: int, generations: int, folder: Path, send_queue: int) -> dict:
    process, ports = start_sim_rig(folder, channels, send_queue)
    path = folder / "bench.toml"
    path.write_text(PROTOCOL.format(generations=generations))
    spec = load_protocol(path)
    parts = assemble(spec, resolve_neuron(spec, [f"zmq://127.0.0.1:{ports['data_port']}"], None),
                     device=torch.device("cpu"), sim_link=ports["side"], pace=(0.1, 0.15))
    out = folder / "bench.h5"
    session = SessionWriter(out, protocol_text=spec.text, protocol_sha256=spec.sha256, protocol_path=str(path),
                            seed=spec.seed, provenance=parts.provenance, reference_ids=parts.protocol.reference_ids)
    source = parts.source
    rows: list[dict] = []
    journal = Path(str(out) + ".journal")
    started = time.monotonic()
    messages_at_start = source.reader.stats.messages

    def progress(report) -> None:
        files = sorted(journal.glob("*.h5")) if journal.exists() else []
        stats = source.reader.stats
        rows.append({"block": report.index, "seconds": report.seconds, "lag_s": source.lag_s[-1],
                     "scoring_s": source.last_scoring_s,
                     "rss_mb": rss_mb(), "bytes": files[-1].stat().st_size if files else 0,
                     "reshows": report.repeats, "gaps": stats.gaps, "lost": stats.lost_messages})

    failure = ""
    try:
        Controller(parts.protocol, parts.display, source, session, progress=progress, max_repeats=5).run()
    except Exception as exc:  # noqa: BLE001 - a bench reports how far it got
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        elapsed = time.monotonic() - started
        stats = source.reader.stats.as_dict()
        health = source.reader.health.as_dict()
        source.close()
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    sent = [line for line in (folder / "sim-rig.log").read_text().splitlines() if "messages sent" in line]
    return {"channels": channels, "rows": rows, "elapsed_s": elapsed, "stats": stats, "health": health,
            "messages_per_s": (stats["messages"] - messages_at_start) / elapsed, "sim_rig": sent[-1] if sent else "",
            "file_mb": out.stat().st_size / 1e6, "failure": failure}


def report(result: dict) -> None:
    rows = result["rows"] or [{"lag_s": np.nan, "rss_mb": np.nan, "bytes": 0, "reshows": 0, "gaps": 0, "lost": 0}]
    lag = np.array([r["lag_s"] for r in rows])
    rss = np.array([r["rss_mb"] for r in rows])
    size = np.array([r["bytes"] for r in rows]) / 1e6
    stats = result["stats"]
    print(f"\n{result['channels']} channels at 30 kHz: {len(rows)} blocks in {result['elapsed_s']:.0f} s")
    print(f"  messages/s read      {result['messages_per_s']:9.0f}   ({result['sim_rig']})")
    print(f"  gaps / lost messages {stats['gaps']:9d} / {stats['lost_messages']}   malformed {stats['malformed']}")
    print(f"  reader               max pending {result['health']['max_pending_seen']}, "
          f"back-pressure waits {result['health']['backpressure_waits']}")
    print(f"  lag at block end (s) max {lag.max():.3f}  median {np.median(lag):.3f}  "
          f"[{', '.join(f'{v:.2f}' for v in lag)}]")
    scoring = np.array([r.get("scoring_s", np.nan) for r in rows])
    print(f"  scoring a showing (s) max {np.nanmax(scoring):.3f}  median {np.nanmedian(scoring):.3f}")
    print(f"  RSS (MB)             first block {rss[0]:.0f}  last {rss[-1]:.0f}  max {rss.max():.0f}  "
          f"growth after block 1: {rss[-1] - rss[0]:+.0f}")
    print(f"  session MB/block     max {size.max():.2f}  median {np.median(size):.2f}  (file {result['file_mb']:.1f} MB)")
    print(f"  re-shows per block   {[r['reshows'] for r in rows]}")
    print(f"  gaps so far by block {[r['gaps'] for r in rows]}  (messages lost {[r['lost'] for r in rows]})")
    if result["failure"]:
        print(f"  STOPPED: {result['failure']}")
    ok = not result["failure"] and lag.max() <= 0.5 and size.max() <= 2.0 and len(rows) > 0
    print(f"  target (lag <= 0.5 s, <= 2 MB/block): {'met' if ok else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", default="32,128,384", help="comma-separated channel counts")
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--send-queue", type=int, default=1000,
                        help="sim-rig's PUB queue (the plugin's is 1000); larger tells sim-rig's losses from the reader's")
    args = parser.parse_args()
    for channels in [int(c) for c in args.channels.split(",")]:
        with tempfile.TemporaryDirectory(prefix="rig-stream-bench-") as tmp:
            print(f"\nsim-rig PUB queue: {args.send_queue} messages")
            report(run(channels, args.generations, Path(tmp), args.send_queue))


if __name__ == "__main__":
    main()
