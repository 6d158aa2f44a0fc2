"""Writing a session: blocks into the journal as they complete, merged into the master at the end."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from protocols.base import Block, Responses
from rig.display import Presentations
from rig.session.layout import (_STR, SCHEMA, SCHEMA_VERSION, SessionFileError, _block_name, _fsync,
                                _journal_files, _strings_array, _utc_now, block_digest, clock_anchor, journal_dir,
                                package_versions)
from rig.session.reader import read_session


class _WriterLock:
    """An exclusive lock on a session's journal folder, so two processes never write one session.

    ``flock`` is dropped by the kernel when its process dies, so a killed
    session never leaves a stale lock behind.
    """

    def __init__(self, folder: Path, session: Path) -> None:
        folder.mkdir(exist_ok=True)
        self.fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SessionFileError(f"{session}: another process is writing this session right now") from None
            raise

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SessionWriter:
    """Appends blocks to a session file as they complete; a kill at any instant loses only the block in flight.

    Create a new session with the constructor, or continue a killed one with
    :meth:`reopen`. Blocks go to the journal (one small file each); :meth:`finish`
    merges them into the master file.
    """

    def __init__(self, path: str | Path, *, protocol_text: str, protocol_sha256: str, protocol_path: str,
                 seed: int, provenance: dict[str, Any], reference_ids: list[str]) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise SessionFileError(f"{self.path}: already exists; choose another --out (nothing was overwritten)")
        if journal_dir(self.path).exists() and any(journal_dir(self.path).iterdir()):
            raise SessionFileError(f"{journal_dir(self.path)}: a journal of another session is in the way; "
                                   f"move it or choose another --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.session_id = uuid.uuid4().hex
        self._lock = _WriterLock(journal_dir(self.path), self.path)
        tmp = self.path.with_name(f".{self.path.name}.creating")
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = SCHEMA
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["session_id"] = self.session_id
            f.attrs["created_utc"] = _utc_now()
            f.attrs["clock_anchor"] = json.dumps(clock_anchor())
            f.attrs["status"] = "running"
            f.attrs["protocol_toml"] = protocol_text
            f.attrs["protocol_sha256"] = protocol_sha256
            f.attrs["protocol_path"] = protocol_path
            f.attrs["seed"] = seed
            f.attrs["provenance"] = json.dumps(
                {**provenance, "versions": package_versions(), "host": socket.gethostname()}
            )
            f.attrs["resumes"] = "[]"
            refs = f.create_group("references")
            refs.create_dataset("ids", data=_strings_array(reference_ids), dtype=_STR)
            f.create_group("blocks")
            f.create_group("checkpoints")
        self._publish(tmp)

    @classmethod
    def reopen(cls, path: str | Path, note: dict[str, Any] | None = None) -> "SessionWriter":
        """Continue writing a killed or stopped session: merge its journal and record the resume.

        ``note`` (e.g. host, versions, device) is added to the master's
        ``resumes`` attribute (JSON list) with the time and the blocks found.
        """
        self = cls.__new__(cls)
        self.path = Path(path)
        session = read_session(self.path)  # validates everything first; raises SessionFileError
        if session.attrs.get("status") == "complete":
            raise SessionFileError(f"{self.path}: the session is complete; there is nothing to resume")
        if int(session.attrs.get("schema_version", 1)) != SCHEMA_VERSION:
            raise SessionFileError(f"{self.path}: schema version {session.attrs.get('schema_version')} sessions "
                                   f"cannot be resumed by this rig (it writes version {SCHEMA_VERSION})")
        self.session_id = str(session.attrs["session_id"])
        self._lock = _WriterLock(journal_dir(self.path), self.path)
        resumes = json.loads(session.attrs.get("resumes", "[]"))
        resumes.append({"utc": _utc_now(), "clock_anchor": clock_anchor(), "blocks_found": len(session.blocks),
                        "status_found": session.attrs.get("status"), **(note or {})})
        self._merge({"status": "running", "resumes": json.dumps(resumes)}, keep_journal_dir=True)
        return self

    def _publish(self, tmp: Path) -> None:
        """Make ``tmp`` the master file in one atomic, durable step."""
        _fsync(tmp)
        os.replace(tmp, self.path)
        _fsync(self.path.parent)

    def append_block(self, block: Block, presentations: Presentations, responses: Responses,
                     checkpoint: dict[str, bytes], timings: dict[str, float], showings: Sequence[Any] = ()) -> None:
        """Write one completed block, every showing of its stimuli and the optimizer state, as one journal file.

        ``presentations`` and ``responses`` hold each stimulus's final (valid)
        showing; ``showings`` (objects with ``positions``, ``presentations`` and
        ``responses``) hold every pass, including those whose responses were lost.
        The block is durable (fsync'ed) when this returns.
        """
        name = _block_name(block.index)
        folder = journal_dir(self.path)
        final = folder / f"{name}.h5"
        if final.exists():
            raise SessionFileError(f"{self.path}: block {block.index} is already recorded")
        tmp = folder / f".{name}.h5.partial"
        with h5py.File(tmp, "w") as f:  # "w": replaces a .partial left by a killed process
            f.attrs["schema"] = SCHEMA
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["session_id"] = self.session_id
            g = f.create_group("blocks").create_group(name)
            _write_block(g, block, presentations, responses, timings, showings)
            c = f.create_group("checkpoints")
            if checkpoint:
                cg = c.create_group(name)
                for key, state in checkpoint.items():
                    d = cg.create_dataset(key, data=np.frombuffer(state, dtype=np.uint8))
                    d.attrs["sha256"] = hashlib.sha256(state).hexdigest()
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(folder)

    def finish(self, status: str = "complete") -> None:
        """Mark the session as ended (``complete``, ``interrupted`` or ``failed``) and merge its journal."""
        self._merge({"status": status, "ended_utc": _utc_now()}, keep_journal_dir=False)

    def _merge(self, attrs: dict[str, Any], keep_journal_dir: bool) -> None:
        """Copy the master plus the journal's blocks into a new master, then swap it in atomically."""
        folder = journal_dir(self.path)
        entries = _journal_files(folder)
        tmp = self.path.with_name(f".{self.path.name}.merging")
        shutil.copyfile(self.path, tmp)
        with h5py.File(tmp, "a") as f:
            for _, source in entries:
                with h5py.File(source, "r") as j:
                    if j.attrs.get("session_id") != self.session_id:
                        raise SessionFileError(f"{source}: belongs to another session; not merged")
                    for group in ("blocks", "checkpoints"):
                        for name in j[group]:
                            if name not in f[group]:
                                j.copy(j[group][name], f[group], name=name)
            for key, value in attrs.items():
                f.attrs[key] = value
        self._publish(tmp)
        # Only now that the master holds them may the journal's copies go.
        for _, source in entries:
            source.unlink()
        for stale in folder.glob(".*.h5.partial"):
            stale.unlink()
        if not keep_journal_dir:
            self._lock.release()
            try:
                folder.rmdir()
            except OSError:
                pass  # something else was put there; leave it


def _write_block(g: h5py.Group, block: Block, presentations: Presentations, responses: Responses,
                 timings: dict[str, float], showings: Sequence[Any]) -> None:
    """The datasets and attributes of one block group (layout in docs/session-schema.md)."""
    g.attrs["index"] = block.index
    g.attrs["channel_names"] = json.dumps(responses.channel_names)
    g.attrs["timings"] = json.dumps(timings)
    g.attrs["written_utc"] = _utc_now()
    g.create_dataset("codes", data=block.codes)
    g.create_dataset("stimulus_ids", data=_strings_array(block.stimulus_ids), dtype=_STR)
    g.create_dataset("kinds", data=_strings_array(block.kinds), dtype=_STR)
    g.create_dataset("threads", data=block.threads)
    g.create_dataset("code_index", data=block.code_index)
    onsets = g.create_dataset("onset_times", data=presentations.onset_times)
    onsets.attrs["clock"] = presentations.clock
    g.create_dataset("offset_times", data=presentations.offset_times)
    g.create_dataset("dropped_frames", data=presentations.dropped_frames)
    g.create_dataset("presentation_valid", data=presentations.valid)
    g.create_dataset("scores", data=responses.scores)
    g.create_dataset("valid", data=responses.valid)
    for number, showing in enumerate(showings):
        sg = g.create_group(f"showings/{number:02d}")
        sg.create_dataset("positions", data=showing.positions)
        sg.create_dataset("onset_times", data=showing.presentations.onset_times)
        sg.create_dataset("offset_times", data=showing.presentations.offset_times)
        sg.create_dataset("dropped_frames", data=showing.presentations.dropped_frames)
        sg.create_dataset("presentation_valid", data=showing.presentations.valid)
        sg.create_dataset("scores", data=showing.responses.scores)
        sg.create_dataset("valid", data=showing.responses.valid)
        _write_recording(sg, showing.responses)
    g.attrs["sha256"] = block_digest({
        "index": block.index, "channel_names": responses.channel_names, "stimulus_ids": block.stimulus_ids,
        "kinds": block.kinds, "codes": block.codes, "threads": block.threads, "code_index": block.code_index,
        "onset_times": presentations.onset_times, "offset_times": presentations.offset_times,
        "dropped_frames": presentations.dropped_frames, "presentation_valid": presentations.valid,
        "scores": responses.scores, "valid": responses.valid,
    })


_BYTES = h5py.vlen_dtype(np.dtype("uint8"))


def _write_recording(sg: h5py.Group, responses: Responses) -> None:
    """What a recording source saw during one showing, when it says (rig.recording.zmq_source.RecordedResponses).

    - ``raw_frames``: every message received, frame by frame, as variable-length uint8 (frames hold NUL bytes,
      so not strings); ``raw_frame_counts`` says how many frames each message had (continuous-data payloads are
      left out unless ``[recording] keep_data_payloads``, so those messages keep 2);
    - ``raw_receive_times``: float64 ``time.monotonic()`` per message;
    - ``invalid_reasons``: per stimulus, "" or why it was invalid (display, missing-ttl, gap, restart, silent);
    - attribute ``recording`` (JSON): TTL/onset counts, the display-to-recording clock map, stream counters.
    """
    frames = getattr(responses, "raw_frames", None)
    if frames is None:
        return
    flat = [np.frombuffer(f, dtype=np.uint8) for message in frames for f in message]
    data = np.empty(len(flat), dtype=object)
    data[:] = flat
    sg.create_dataset("raw_frames", data=data, dtype=_BYTES)
    sg.create_dataset("raw_frame_counts", data=np.array([len(m) for m in frames], dtype=np.int64))
    sg.create_dataset("raw_receive_times", data=np.asarray(responses.raw_receive_times, dtype=np.float64))
    sg.create_dataset("invalid_reasons", data=_strings_array(list(responses.invalid_reasons)), dtype=_STR)
    sg.attrs["recording"] = json.dumps(responses.diagnostics, default=str)
