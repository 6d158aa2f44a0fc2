"""Serve the raw stream stored in a session file through the live parser (Reader contract, STYLE practice 1).

``with SessionReplayReader("session.h5") as reader:`` reads the file
(read-only, never unpickling anything); :meth:`SessionReplayReader.read_next`
returns the normalised records of the next stored messages, exactly as
:class:`~rig.recording.openephys.reader.ZmqReader` would have returned them live:
each message goes through the same :meth:`ZmqReader.handle` (the pure
``parse_*`` functions, message counters, gaps and restarts). Continuous-data
messages stored header-only get NaN samples back first (:func:`restore_payload`). Like every file
reader it raises ``StopIteration`` when the file runs out; it never waits.

Messages come showing by showing, in the order they were received (blocks in
index order, each block's showings in order). One call never crosses a
showing: :attr:`SessionReplayReader.showing` says which (block index, showing
number) the last records came from and :attr:`SessionReplayReader.at_showing_end`
whether they were its last, so a scorer can close each showing as live did.
A resumed session began a fresh live reader at its first new block (the
``resumes`` attribute's ``blocks_found``); the replay starts a fresh parser
there too (:attr:`SessionReplayReader.new_reader` says so), so its counters
stay those the live reader had.

The parser is the transport's (:attr:`Transport.replay_parser
<rig.recording.transports.Transport>`), chosen by the transport the session
recorded (``provenance.neuron.transport.scheme``; ``zmq`` for files written
before transports were recorded), so a new transport needs no change here.
"""
from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from rig.recording.openephys.wire import DATA_ENVELOPE, WireError, parse_header
from rig.recording.records import Record
from rig.recording.stream_log import DataRun, runs_from_arrays
from rig.recording.openephys.reader import StreamParser, StreamStats
from rig.recording.transports import Transport, transport_by_scheme
from rig.session import RecordedSession, SessionFileError, read_session


class NoRawStreamError(SessionFileError):
    """The session holds no raw stream frames (it was not recorded from a stream)."""


def showing_messages(showing: dict[str, np.ndarray], where: str) -> tuple[list[list[bytes]], np.ndarray]:
    """The raw messages (lists of frames) and receive times of one stored showing; checks the counts add up."""
    flat = showing["raw_frames"]
    counts = np.asarray(showing["raw_frame_counts"], dtype=np.int64)
    times = np.asarray(showing.get("raw_receive_times", np.zeros(len(counts))), dtype=np.float64)
    if counts.ndim != 1 or np.any(counts < 0) or int(counts.sum()) != len(flat) or times.shape != counts.shape:
        raise SessionFileError(f"{where}: raw_frame_counts (sum {int(counts.sum())}, {counts.shape}) do not match "
                               f"raw_frames ({len(flat)}) and raw_receive_times ({times.shape})")
    ends = np.cumsum(counts)
    messages = [[bytes(np.asarray(flat[i], dtype=np.uint8)) for i in range(end - n, end)]
                for n, end in zip(counts.tolist(), ends.tolist())]
    return messages, times


def showing_items(showing: dict[str, np.ndarray], where: str) -> list[tuple[list[bytes] | DataRun, float]]:
    """A stored showing's raw messages and data runs in arrival order, each with its receive time."""
    messages, times = showing_messages(showing, where)
    try:
        runs = runs_from_arrays(showing, where)
    except ValueError as exc:
        raise SessionFileError(str(exc)) from None
    if "raw_seq" not in showing:
        return list(zip(messages, times.tolist())) + [(run, run.first_receive_time) for run in runs]
    seqs = np.asarray(showing["raw_seq"], dtype=np.int64)
    if seqs.shape != times.shape:
        raise SessionFileError(f"{where}: raw_seq {seqs.shape} does not match raw_frame_counts {times.shape}")
    keyed = [(int(q), 0, m, t) for q, m, t in zip(seqs.tolist(), messages, times.tolist())]
    keyed += [(run.seq, 1, run, run.first_receive_time) for run in runs]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [(item, t) for _, _, item, t in keyed]


def malformed_count(showing: dict[str, np.ndarray]) -> int:
    """Malformed messages a showing only counted (0 in files that stored them raw)."""
    count = np.asarray(showing.get("malformed_count", [0]), dtype=np.int64).ravel()
    return int(count[0]) if count.size else 0


def restore_payload(frames: list[bytes]) -> list[bytes]:
    """A continuous-data message stored header-only gets back a payload of its declared length (NaN samples).

    The live reader logs data messages without their samples unless
    ``keep_data_payloads`` (they can be tens of MB/s); only the header matters
    for scoring (its watermark and counters). Giving back a payload of NaNs
    lets the message go through the live ``parse_data`` unchanged, and NaN
    never passes for a recorded voltage. Anything else is returned as stored.
    """
    if len(frames) != 2 or frames[0] != DATA_ENVELOPE:
        return frames
    try:
        header = parse_header(frames)
        num_samples = header["content"]["num_samples"]
    except (WireError, KeyError, TypeError):
        return frames  # malformed as stored: the parser counts it as live did
    if header.get("type") != "data" or not isinstance(num_samples, int) or not 0 <= num_samples <= 1 << 24:
        return frames
    return [frames[0], frames[1], np.full(num_samples, np.nan, dtype="<f4").tobytes()]


def recorded_transport(session: RecordedSession) -> Transport:
    """The transport a session recorded through (``zmq`` for files from before transports were recorded)."""
    neuron = session.provenance.get("neuron", {})
    transport = neuron.get("transport", {}) if isinstance(neuron, dict) else {}
    scheme = transport.get("scheme", "zmq") if isinstance(transport, dict) else "zmq"
    try:
        return transport_by_scheme(str(scheme))
    except ValueError as exc:
        raise SessionFileError(f"{session.path}: provenance neuron.transport: {exc}") from None


#: Stream counters the live reader stored with each showing, which a replay must reproduce.
COUNTERS = ("messages", "malformed", "gaps", "lost_messages", "restarts")


def resume_boundaries(session: RecordedSession) -> set[int]:
    """Block indices where a resumed run, hence a fresh live reader, began."""
    try:
        resumes = json.loads(session.attrs.get("resumes", "[]") or "[]")
    except (json.JSONDecodeError, TypeError):
        return set()
    return {int(r["blocks_found"]) for r in resumes
            if isinstance(r, dict) and isinstance(r.get("blocks_found"), int) and r["blocks_found"] > 0}


def recorded_counters(session: RecordedSession) -> dict[tuple[int, int], dict[str, Any]]:
    """The live reader's counters at the end of each showing (attribute ``recording``, key ``stream``)."""
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for block in session.blocks:
        source = block.source or session.path
        with h5py.File(source, "r") as f:
            showings = f[f"blocks/{block.index:06d}"].get("showings", {})
            for name in sorted(showings):
                try:
                    stream = json.loads(showings[name].attrs.get("recording", "{}")).get("stream", {})
                except (json.JSONDecodeError, AttributeError, TypeError):
                    stream = {}
                if isinstance(stream, dict) and stream:
                    found[(block.index, int(name))] = {k: stream.get(k) for k in COUNTERS}
    return found


class SessionReplayReader:
    """A file reader of the raw Open Ephys messages a session recorded, with ZmqReader's contract."""

    def __init__(self, session: str | Path | RecordedSession, *, max_messages_per_read: int = 1000) -> None:
        if max_messages_per_read < 1:
            raise ValueError(f"max_messages_per_read: expected >= 1, got {max_messages_per_read}")
        self.session = session
        self.max_messages_per_read = max_messages_per_read
        self.path = session.path if isinstance(session, RecordedSession) else Path(session)
        self._parser: StreamParser | None = None
        self._queue: list[tuple[int, int, dict[str, np.ndarray]]] = []
        self._messages: list[tuple[list[bytes] | DataRun, float]] = []
        self._next = 0
        self._total = 0
        #: (block index, showing number) the last records came from; None before the first read.
        self.showing: tuple[int, int] | None = None
        #: Whether the last :meth:`read_next` delivered the final message of :attr:`showing`.
        self.at_showing_end = False
        #: Whether the last :meth:`read_next` began a fresh parser (a resumed run's first showing).
        self.new_reader = False
        #: Messages replayed in all (``stats`` starts again with each fresh parser).
        self.messages_replayed = 0
        self._boundaries: set[int] = set()
        self._transport: Transport | None = None

    def __enter__(self) -> "SessionReplayReader":
        session = self.session if isinstance(self.session, RecordedSession) else read_session(self.path, verify=False)
        self.session = session
        self._queue = [(b.index, number, s) for b in session.blocks for number, s in enumerate(b.showings)
                       if "raw_frames" in s]
        if not self._queue:
            raise NoRawStreamError(f"{self.path}: no raw stream frames (showings/NN/raw_frames) in any block: the "
                                   f"session was not recorded from a stream (--neuron zmq://...), so there is "
                                   f"nothing to replay or rescore")
        self._boundaries = resume_boundaries(session)
        self._transport = recorded_transport(session)
        self._parser = self._fresh_parser()
        self._total = len(self._queue)
        self._queue.reverse()  # pop() from the end in order
        return self

    def _fresh_parser(self) -> Any:
        # The live reader's parser: the same parsing, counters and run logic as live.
        neuron = self.session.provenance.get("neuron", {})
        return self._transport.replay_parser(neuron if isinstance(neuron, dict) else {})

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Forget the file's messages; safe to call twice."""
        self._parser = None
        self._queue, self._messages = [], []

    @property
    def stats(self) -> StreamStats:
        """The live reader's counters (messages, malformed, gaps, restarts) over what was replayed so far."""
        if self._parser is None:
            raise RuntimeError("SessionReplayReader is not open; use it as a context manager")
        return self._parser.stats

    def get_initial(self) -> dict[str, Any]:
        """What this reader serves (for provenance)."""
        return {"path": str(self.path), "kind": "session-replay", "showings_with_frames": self._total}

    def __iter__(self) -> Iterator[list[Record]]:
        """Every :meth:`read_next` until the file is served; ``showing``, ``new_reader`` etc. follow along."""
        while True:
            try:
                yield self.read_next()
            except StopIteration:
                return

    def read_next(self) -> list[Record]:
        """Records of the next stored messages of one showing (``[]`` for a showing with none).

        Raises ``StopIteration`` once every showing has been served; never blocks.
        """
        if self._parser is None:
            raise RuntimeError("SessionReplayReader is not open; use it as a context manager")
        self.new_reader = False
        if self._next >= len(self._messages) and (self.at_showing_end or self.showing is None):
            if not self._queue:
                raise StopIteration
            block, number, stored = self._queue.pop()
            self.new_reader = number == 0 and block in self._boundaries and self.showing is not None
            if self.new_reader:
                self._parser = self._fresh_parser()
            where = f"{self.path}: block {block} showing {number:02d}"
            self._messages = showing_items(stored, where)
            self._parser.count_malformed(malformed_count(stored))
            self._next = 0
            self.showing = (block, number)
        stop = min(self._next + self.max_messages_per_read, len(self._messages))
        records: list[Record] = []
        for item, receive_time in self._messages[self._next:stop]:
            if isinstance(item, DataRun):
                records.extend(self._parser.handle_run(item))
            else:
                records.extend(self._parser.handle(restore_payload(item), float(receive_time)))
        self.messages_replayed += sum(item.messages if isinstance(item, DataRun) else 1
                                      for item, _ in self._messages[self._next:stop])
        self._next = stop
        self.at_showing_end = stop >= len(self._messages)
        if self.at_showing_end:
            self._parser.take_log()  # the live reader handed its log over here: runs begin afresh
        return records
