"""Sessions against ``rig sim-rig`` (a process) checked against its ground-truth file."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers.protocols import tiny_protocol
from helpers.simrig import start_sim_rig, stop_sim_rig
from rig.cli import main


RATE = 30000.0


WINDOW = (1500, 6000)  # 50-200 ms at 30 kHz, as the scorer rounds it


RECORDING = """
[recording]
units = ["Electrode 1:1"]
baseline = "none"
ttl_tolerance_ms = 8
timeout_s = 1.0
{extra}
"""


def fidelity_session(tmp_path: Path, sim_rig_args: tuple[str, ...], recording: str = "", generations: int = 2,
             pace: str = "100,150") -> tuple[int, Path, list[dict], str]:
    """Run ``rig run`` against a sim-rig process; the exit status, the session, sim-rig's truth and its log."""
    protocol = tmp_path / "fidelity.toml"
    protocol.write_text(tiny_protocol(generations=generations, popsize=6, references=2, max_frequency=4,
                                      image_size=64) + RECORDING.format(extra=recording))
    truth = tmp_path / "truth.jsonl"
    process, ports = start_sim_rig(tmp_path, "--protocol", str(protocol), "--gain", "1000", "--offset", "80",
                                   "--truth-file", str(truth), *sim_rig_args)
    out = tmp_path / "fidelity.h5"
    try:
        status = main(["run", str(protocol), "--out", str(out), "--neuron", f"zmq://127.0.0.1:{ports['data_port']}",
                       "--sim-link", ports["side"], "--pace-ms", pace, "--quiet"])
    finally:
        assert stop_sim_rig(process) == 0
    records = [json.loads(line) for line in truth.read_text().splitlines()]
    return status, out, records, (tmp_path / "sim-rig.log").read_text()


def showings(out: Path):
    """(block, stimulus ids of the showing, scores, valid, reasons, recorded TTL samples, diagnostics) per showing."""
    with h5py.File(out, "r") as f:
        for name in sorted(f["blocks"]):
            block = f["blocks"][name]
            ids = [s.decode() for s in block["stimulus_ids"][()]]
            for number in sorted(block["showings"]):
                showing = block["showings"][number]
                diag = json.loads(showing.attrs["recording"])
                positions = showing["positions"][()]
                yield (int(name), [ids[p] for p in positions], showing["scores"][()][:, 0], showing["valid"][()],
                       [r.decode() for r in showing["invalid_reasons"][()]], np.array(diag["ttl_samples"]), diag)


def check_against_truth(out: Path, truth: list[dict]) -> int:
    """Every valid score equals the truth's spike count after the true edge; returns how many were checked."""
    onsets = defaultdict(list)  # (block, stimulus id) -> its truth onsets, in showing order
    for record in truth:
        if record["type"] == "onset":
            onsets[(record["block"], record["stimulus_id"])].append(record)
    spikes = defaultdict(list)  # epoch -> samples of Electrode 1's sorted unit
    unsent = defaultdict(list)
    for record in truth:
        if record["type"] == "spike" and record["electrode"] == "Electrode 1" and record["unit"] == 1:
            (spikes if record["sent"] else unsent)[record["epoch"]].append(record["sample"])
    spikes = {e: np.sort(s) for e, s in spikes.items()}
    seen = defaultdict(int)
    checked = 0
    for block, ids, scores, valid, reasons, ttl_samples, _ in showings(out):
        for i, sid in enumerate(ids):
            onset = onsets[(block, sid)][seen[(block, sid)]]
            seen[(block, sid)] += 1
            if not valid[i]:
                assert np.isnan(scores[i]) and reasons[i], (block, sid, reasons[i])
                continue
            edge = onset["ttl_sample"]
            assert edge is not None and ttl_samples[i] == edge, (block, sid, ttl_samples[i], onset)
            start, stop = edge + WINDOW[0], edge + WINDOW[1]
            epoch_spikes = spikes.get(onset["epoch"], np.zeros(0))
            count = np.searchsorted(epoch_spikes, stop) - np.searchsorted(epoch_spikes, start)
            assert scores[i] == pytest.approx(count / ((WINDOW[1] - WINDOW[0]) / RATE), abs=1e-9), (block, sid)
            lost = [s for s in unsent.get(onset["epoch"], []) if start <= s < stop]
            assert not lost, f"{sid}: spikes in its window were never sent, yet it was scored"
            checked += 1
    return checked
