"""Sessions against ``rig sim-rig`` behaving as a real rig does, checked against sim-rig's own ground truth.

sim-rig (a separate process) writes every onset's real TTL edge and every
spike it published to a truth file. Each valid stimulus's recorded score must
equal the spike count in its window after the *true* edge, and its recorded
TTL must be that edge: a stimulus paired with another's TTL can never be valid.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from rig.cli import main
from tests.test_simrig import start_sim_rig, stop_sim_rig
from tiny_protocol import tiny_protocol

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


def _session(tmp_path: Path, sim_rig_args: tuple[str, ...], recording: str = "", generations: int = 2,
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


def _showings(out: Path):
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


def _check_against_truth(out: Path, truth: list[dict]) -> int:
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
    for block, ids, scores, valid, reasons, ttl_samples, _ in _showings(out):
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


def _late_spikes(out: Path) -> int:
    """Spikes that arrived after a watermark past their own sample (sent one callback late)."""
    late = 0
    with h5py.File(out, "r") as f:
        for name in f["blocks"]:
            for number in f["blocks"][name]["showings"]:
                showing = f["blocks"][name]["showings"][number]
                seqs = showing["raw_seq"][()]
                counts = showing["raw_frame_counts"][()]
                frames = showing["raw_frames"]
                runs = showing["data_runs"][()]
                ends = np.cumsum(counts)
                for seq, end in zip(seqs, ends):
                    header = json.loads(bytes(frames[end - 2]))
                    if header["type"] != "spike":
                        continue
                    before = runs[runs[:, 0] < seq]
                    if len(before) and header["spike"]["sample_num"] < before[-1, 3] + before[-1, 4]:
                        late += 1
    return late


@pytest.mark.timeout(180)
def test_toggling_photodiode_with_a_sync_line_and_late_spikes_scores_exactly(tmp_path):
    status, out, truth, log = _session(tmp_path, ("--sync-line", "1", "--sync-hz", "7"))
    assert status == 0, log
    assert {r["edge"] for r in truth if r["type"] == "onset"} == {"rising", "falling"}
    assert any(r["type"] == "ttl" and r["line"] == 1 for r in truth)  # the sync line was really there
    assert _check_against_truth(out, truth) >= 16
    assert _late_spikes(out) > 0  # spikes sent one callback late were seen, and still counted


@pytest.mark.timeout(180)
def test_100_ms_of_display_latency_pairs_with_the_window_set_accordingly(tmp_path):
    status, out, truth, log = _session(tmp_path, ("--display-latency-ms", "100"), "pairing_window_ms = 250")
    assert status == 0, log
    assert _check_against_truth(out, truth) >= 16
    latencies = [d["pairing"]["latency_ms"] for *_, d in _showings(out)]
    assert all(100 < lat < 200 for lat in latencies), latencies  # 100 ms display + acquisition


@pytest.mark.timeout(180)
def test_a_pulsing_ttl_with_rising_edges(tmp_path):
    status, out, truth, log = _session(tmp_path, ("--photodiode", "pulse", "--ttl-pulse-ms", "100"),
                                       'ttl_edges = "rising"')
    assert status == 0, log
    assert _check_against_truth(out, truth) >= 16


@pytest.mark.timeout(240)
def test_128_channels_at_30_khz(tmp_path):
    status, out, truth, log = _session(tmp_path, ("--channels", "128"))
    assert status == 0, log
    assert _check_against_truth(out, truth) >= 16
    with h5py.File(out, "r") as f:
        runs = f["blocks/000001/showings/00/data_runs"][()]
        # One run per callback, all 128 channels in it (a run is cut short only where messages were lost:
        # on 2 busy cores sim-rig's PUB queue of 1000 can overflow, which the counters report as a gap).
        assert np.median(runs[:, 2]) == 128 and (runs[:, 2] <= 128).all()
        stream = json.loads(f["blocks/000001/showings/00"].attrs["recording"])["stream"]
        assert stream["gaps"] == 0 or stream["lost_messages"] > 0


@pytest.mark.timeout(180)
def test_ttls_shifted_by_a_whole_stimulus_are_never_accepted(tmp_path, capsys):
    """The photodiode lags 260 ms: one stimulus interval (250 ms) plus 10. Within a 200 ms pairing window the
    onsets fit the train shifted by one stimulus (10 ms): every showing must be refused (the block is never
    scored, so nothing reaches the file), and the error must say what to set."""
    status, out, truth, log = _session(tmp_path, ("--display-latency-ms", "260"), generations=1)
    assert status == 1
    error = capsys.readouterr().err
    assert "TTL pairing refused" in error and "beyond pairing_window_ms = 200" in error
    assert "set [recording] pairing_window_ms = 400" in error
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed" and len(f["blocks"]) == 0


@pytest.mark.timeout(180)
def test_a_window_wide_enough_for_both_trains_picks_the_true_one(tmp_path):
    """With a 400 ms window both the true train (260 ms) and the shifted one (10 ms) are inside it; the true one
    pairs every onset, the shifted one all but the first, so the true one wins and every TTL is the true edge."""
    status, out, truth, log = _session(tmp_path, ("--display-latency-ms", "260"), "pairing_window_ms = 400")
    assert status == 0, log
    assert _check_against_truth(out, truth) >= 16


def test_ttl_edges_and_pairing_window_are_validated(tmp_path):
    from protocols.spec import ProtocolError, load_protocol

    path = tmp_path / "edges.toml"
    for extra, field in (('ttl_edges = "up"', "ttl_edges"), ("pairing_window_ms = 5000", "pairing_window_ms")):
        path.write_text(tiny_protocol() + RECORDING.format(extra=extra))
        with pytest.raises(ProtocolError, match=rf"\[recording\] {field}"):
            load_protocol(path)
    path.write_text(tiny_protocol() + "\n[recording]\n")
    assert load_protocol(path).recording.ttl_edges == "both"  # what the PsychoPy display's patch produces
