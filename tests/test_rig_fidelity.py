"""Sessions against ``rig sim-rig`` behaving as a real rig does, checked against sim-rig's own ground truth.

sim-rig (a separate process) writes every onset's real TTL edge and every
spike it published to a truth file. Each valid stimulus's recorded score must
equal the spike count in its window after the *true* edge, and its recorded
TTL must be that edge: a stimulus paired with another's TTL can never be valid.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers.protocols import tiny_protocol
from helpers.fidelity import RECORDING, check_against_truth, fidelity_session, showings


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


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_toggling_photodiode_with_a_sync_line_and_late_spikes_scores_exactly(tmp_path):
    status, out, truth, log = fidelity_session(tmp_path, ("--sync-line", "1", "--sync-hz", "7"))
    assert status == 0, log
    assert {r["edge"] for r in truth if r["type"] == "onset"} == {"rising", "falling"}
    assert any(r["type"] == "ttl" and r["line"] == 1 for r in truth)  # the sync line was really there
    assert check_against_truth(out, truth) >= 16
    assert _late_spikes(out) > 0  # spikes sent one callback late were seen, and still counted


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_100_ms_of_display_latency_pairs_with_the_window_set_accordingly(tmp_path):
    status, out, truth, log = fidelity_session(tmp_path, ("--display-latency-ms", "100"), "pairing_window_ms = 250")
    assert status == 0, log
    assert check_against_truth(out, truth) >= 16
    latencies = [d["pairing"]["latency_ms"] for *_, d in showings(out)]
    assert all(100 < lat < 200 for lat in latencies), latencies  # 100 ms display + acquisition


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_pulsing_ttl_with_rising_edges(tmp_path):
    status, out, truth, log = fidelity_session(tmp_path, ("--photodiode", "pulse", "--ttl-pulse-ms", "100"),
                                       'ttl_edges = "rising"')
    assert status == 0, log
    assert check_against_truth(out, truth) >= 16


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_128_channels_at_30_khz(tmp_path):
    status, out, truth, log = fidelity_session(tmp_path, ("--channels", "128"))
    assert status == 0, log
    assert check_against_truth(out, truth) >= 16
    with h5py.File(out, "r") as f:
        runs = f["blocks/000001/showings/00/data_runs"][()]
        # One run per callback, all 128 channels in it (a run is cut short only where messages were lost:
        # on 2 busy cores sim-rig's PUB queue of 1000 can overflow, which the counters report as a gap).
        assert np.median(runs[:, 2]) == 128 and (runs[:, 2] <= 128).all()
        stream = json.loads(f["blocks/000001/showings/00"].attrs["recording"])["stream"]
        assert stream["gaps"] == 0 or stream["lost_messages"] > 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ttls_shifted_by_a_whole_stimulus_are_never_accepted(tmp_path, capsys):
    """The photodiode lags 260 ms: one stimulus interval (250 ms) plus 10. Within a 200 ms pairing window the
    onsets fit the train shifted by one stimulus (10 ms): every showing must be refused (the block is never
    scored, so nothing reaches the file), and the error must say what to set."""
    status, out, truth, log = fidelity_session(tmp_path, ("--display-latency-ms", "260"), generations=1)
    assert status == 1
    error = capsys.readouterr().err
    assert "TTL pairing refused" in error and "beyond pairing_window_ms = 200" in error
    assert "set [recording] pairing_window_ms = 400" in error
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed" and len(f["blocks"]) == 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_window_wide_enough_for_both_trains_picks_the_true_one(tmp_path):
    """With a 400 ms window both the true train (260 ms) and the shifted one (10 ms) are inside it; the true one
    pairs every onset, the shifted one all but the first, so the true one wins and every TTL is the true edge."""
    status, out, truth, log = fidelity_session(tmp_path, ("--display-latency-ms", "260"), "pairing_window_ms = 400")
    assert status == 0, log
    assert check_against_truth(out, truth) >= 16


def test_ttl_edges_and_pairing_window_are_validated(tmp_path):
    from protocols.spec import ProtocolError, load_protocol

    path = tmp_path / "edges.toml"
    for extra, field in (('ttl_edges = "up"', "ttl_edges"), ("pairing_window_ms = 5000", "pairing_window_ms")):
        path.write_text(tiny_protocol() + RECORDING.format(extra=extra))
        with pytest.raises(ProtocolError, match=rf"\[recording\] {field}"):
            load_protocol(path)
    path.write_text(tiny_protocol() + "\n[recording]\n")
    assert load_protocol(path).recording.ttl_edges == "both"  # what the PsychoPy display's patch produces
