"""What a showing keeps of the raw stream: every event and spike as received, continuous data as watermark runs.

A Neuropixels probe streamed through the ZMQ Interface is one DATA message per
channel per ~23 ms callback: 384 channels make ~16.6k messages/s. Their
samples are not needed to score spikes (only their headers' counters and
sample numbers are), and keeping every header costs ~5 MB/s. So the log keeps:

- **raw messages**: events (TTLs) and spikes as received, frame by frame, and
  continuous-data messages too when ``keep_data_payloads`` is set;
- **data runs**: consecutive continuous-data messages of one callback (same
  stream, ``sample_num`` and ``num_samples``, consecutive ``message_num``) as
  one row: sequence number of its first message, first ``message_num``,
  message count, ``sample_num``, ``num_samples``, sample rate, stream and the
  first and last receive times. A run is exactly what the counters and the
  watermark need, so a replay reproduces the live reader's counts;
- **malformed messages**: counted, the first :data:`KEEP_MALFORMED` of each
  showing described (error, receive time, the first bytes of each frame);
  the rest only counted, so garbage cannot grow the file or the memory.

``seq`` numbers every received message of a reader in arrival order, so raw
messages and runs interleave on replay exactly as they arrived.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Malformed messages described per showing (the count keeps going).
KEEP_MALFORMED = 20
#: Bytes of each frame of a malformed message kept in its description.
MALFORMED_BYTES = 96
#: Columns of the ``data_runs`` dataset.
RUN_COLUMNS = ("seq", "first_message_num", "messages", "sample_num", "num_samples")


@dataclass
class DataRun:
    """Consecutive continuous-data messages of one callback (one per selected channel)."""

    seq: int
    first_message_num: int
    messages: int
    sample_num: int
    num_samples: int
    sample_rate: float
    stream: str
    first_receive_time: float
    last_receive_time: float

    @property
    def end_sample(self) -> int:
        """The stream's watermark once this run has arrived."""
        return self.sample_num + self.num_samples

    def continues(self, message_num: int, stream: str, sample_num: int, num_samples: int, rate: float) -> bool:
        """Whether a data message with these fields extends this run."""
        return (message_num == self.first_message_num + self.messages and sample_num == self.sample_num
                and num_samples == self.num_samples and stream == self.stream and rate == self.sample_rate)


@dataclass
class StreamLog:
    """One showing's share of the stream (see the module docstring); filled by the reader thread."""

    frames: list[list[bytes]] = field(default_factory=list)
    receive_times: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    runs: list[DataRun] = field(default_factory=list)
    malformed: int = 0
    malformed_kept: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames) + sum(r.messages for r in self.runs) + self.malformed

    def add_raw(self, seq: int, frames: list[bytes], receive_time: float) -> None:
        """Keep a message as received."""
        self.frames.append([bytes(f) for f in frames])
        self.receive_times.append(receive_time)
        self.seqs.append(seq)

    def add_malformed(self, seq: int, frames: list[bytes], receive_time: float, error: str) -> None:
        """Count a malformed message; describe the first few compactly."""
        self.malformed += 1
        if len(self.malformed_kept) < KEEP_MALFORMED:
            head = [bytes(f[:MALFORMED_BYTES]).hex() for f in list(frames)[:4]]
            self.malformed_kept.append(json.dumps({"seq": seq, "receive_time": receive_time, "error": error[:300],
                                                   "frames": len(frames), "frame_heads_hex": head}))

    def to_arrays(self) -> dict[str, Any]:
        """Datasets for the session file (``rig.session.writer`` stores each under the showing's group)."""
        runs = self.runs
        return {
            "raw_frames": [f for message in self.frames for f in message],
            "raw_frame_counts": np.array([len(m) for m in self.frames], dtype=np.int64),
            "raw_receive_times": np.asarray(self.receive_times, dtype=np.float64),
            "raw_seq": np.asarray(self.seqs, dtype=np.int64),
            "data_runs": np.array([[getattr(r, c) for c in RUN_COLUMNS] for r in runs], dtype=np.int64).reshape(
                len(runs), len(RUN_COLUMNS)),
            "data_run_rates": np.array([r.sample_rate for r in runs], dtype=np.float64),
            "data_run_streams": [r.stream for r in runs],
            "data_run_receive_times": np.array([[r.first_receive_time, r.last_receive_time] for r in runs],
                                               dtype=np.float64).reshape(len(runs), 2),
            "malformed_messages": list(self.malformed_kept),
            "malformed_count": self.malformed,
        }


def runs_from_arrays(stored: dict[str, Any], where: str) -> list[DataRun]:
    """The data runs of a stored showing (none in files written before runs existed); checks their shapes."""
    if "data_runs" not in stored:
        return []
    table = np.asarray(stored["data_runs"], dtype=np.int64)
    rates = np.asarray(stored.get("data_run_rates", []), dtype=np.float64)
    streams = [s.decode() if isinstance(s, bytes) else str(s) for s in stored.get("data_run_streams", [])]
    times = np.asarray(stored.get("data_run_receive_times", np.zeros((0, 2))), dtype=np.float64)
    n = table.shape[0] if table.ndim == 2 else -1
    if table.ndim != 2 or table.shape[1] != len(RUN_COLUMNS) or rates.shape != (n,) or len(streams) != n \
            or times.shape != (n, 2) or (n and (table[:, 2].min() < 1 or table[:, 4].min() < 0)):
        raise ValueError(f"{where}: data_runs {table.shape}, data_run_rates {rates.shape}, "
                         f"{len(streams)} data_run_streams and data_run_receive_times {times.shape} do not fit "
                         f"together (expected (n, {len(RUN_COLUMNS)}), (n,), n and (n, 2) with messages >= 1)")
    return [DataRun(*(int(v) for v in row), float(rate), stream, float(t[0]), float(t[1]))
            for row, rate, stream, t in zip(table, rates, streams, times)]
