"""The session file (HDF5): everything needed to understand, resume and replay a session.

The layout (schema version 2) is documented in ``docs/session-schema.md``.
In short::

    FILE.h5            the master file: header attributes, /references, and the
                       merged /blocks/NNNNNN and /checkpoints/NNNNNN groups
    FILE.h5.journal/   while a session runs (or after it was killed): one small
                       HDF5 file per completed block, NNNNNN.h5, laid out like
                       the master (/blocks/NNNNNN, /checkpoints/NNNNNN)

Why a journal: an HDF5 file that is open for writing when its process is
killed can be left unopenable (with ``libver="latest"`` the superblock's
"open for write" flag stays set, and 59 of 60 files killed mid-append did not
open) or with damaged metadata (2 of 60 with the default format). So no
HDF5 file is ever modified in place:

- each block is written to ``.NNNNNN.h5.partial``, fsync'ed, then renamed to
  ``NNNNNN.h5`` (an atomic rename: it is either there complete or not at all);
- the master is only ever replaced whole: built as ``.FILE.h5.merging`` (a
  copy plus the journal's blocks), fsync'ed and renamed over ``FILE.h5`` when
  the session ends (or is resumed); the journal is removed after that.

:func:`read_session` reads the master plus any journal, so a session killed at
any instant reads back with every completed block. Nothing here ever opens a
file for writing that someone may be reading, and :func:`read_session` opens
everything read-only. It never unpickles anything: optimizer checkpoints are
returned as bytes by :meth:`RecordedSession.checkpoint`, and each optimizer
reads its own (data-only) format.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from protocols.base import Block, Responses
from rig.display import Presentations

SCHEMA = "rig.session"
SCHEMA_VERSION = 2
#: Versions :func:`read_session` understands (1: blocks written in place, no journal or digests).
READABLE_VERSIONS = (1, 2)
JOURNAL_SUFFIX = ".journal"
_PARTIAL_PREFIX = ".partial-"  # schema 1 wrote blocks under this name before moving them into place
_JOURNAL_BLOCK = re.compile(r"^(\d{6})\.h5$")
_STR = h5py.string_dtype(encoding="utf-8")
# What a damaged or hand-made file can make h5py, numpy or json raise while we read it.
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError,
                UnicodeError, OverflowError, json.JSONDecodeError)


class SessionFileError(ValueError):
    """A session file cannot be created, read or resumed as a session."""


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour a session depends on."""
    versions = {"python": platform.python_version()}
    for name in ("rig-controller", "torch", "torchvision", "timm", "numpy", "cma", "h5py", "pyzmq", "psychopy-lib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _block_name(index: int) -> str:
    return f"{index:06d}"


def journal_dir(path: str | Path) -> Path:
    """The folder holding the blocks of ``path`` not yet merged into it."""
    path = Path(path)
    return path.with_name(path.name + JOURNAL_SUFFIX)


def _fsync(path: Path) -> None:
    """Make ``path`` (a file or a folder, for the renames in it) durable across power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _strings_array(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=object)


def block_digest(fields: dict[str, Any]) -> str:
    """SHA-256 of a block's recorded content, in a canonical form independent of HDF5 storage.

    ``fields``: index, channel_names, stimulus_ids, kinds (strings) and codes,
    threads, code_index, onset_times, offset_times, dropped_frames,
    presentation_valid, scores, valid (arrays). Stored as the block's
    ``sha256`` attribute so a corrupted or edited block is recognised.
    """
    h = hashlib.sha256()
    h.update(f"index={int(fields['index'])}\n".encode())
    for name in ("channel_names", "stimulus_ids", "kinds"):
        h.update(f"{name}=".encode() + "\x00".join(fields[name]).encode() + b"\n")
    canonical = {"codes": np.float64, "threads": np.int64, "code_index": np.int64, "onset_times": np.float64,
                 "offset_times": np.float64, "dropped_frames": np.int64, "presentation_valid": np.uint8,
                 "scores": np.float64, "valid": np.uint8}
    for name, dtype in canonical.items():
        array = np.ascontiguousarray(np.asarray(fields[name]).astype(dtype))
        h.update(f"{name}{array.shape}=".encode() + array.tobytes() + b"\n")
    return h.hexdigest()


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
        resumes.append({"utc": _utc_now(), "blocks_found": len(session.blocks),
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


def _journal_files(folder: Path) -> list[tuple[int, Path]]:
    """Complete journal block files, in block order; ``.partial`` files (killed mid-write) are left out."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _JOURNAL_BLOCK.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


@dataclass
class RecordedBlock:
    """One block as read back from a session file."""

    index: int
    codes: np.ndarray
    stimulus_ids: list[str]
    kinds: list[str]
    threads: np.ndarray
    code_index: np.ndarray
    onset_times: np.ndarray
    dropped_frames: np.ndarray
    scores: np.ndarray
    valid: np.ndarray
    channel_names: list[str]
    timings: dict[str, float]
    offset_times: np.ndarray | None = None
    presentation_valid: np.ndarray | None = None
    clock: str = ""
    #: Every pass of the display over the block: dicts of positions, onset_times, scores, valid, ...
    showings: list[dict[str, np.ndarray]] = field(default_factory=list)
    #: True/False when the block carries a content digest (schema 2), None when it has none.
    digest_ok: bool | None = None
    #: The file the block was read from (the master, or a journal file).
    source: Path | None = None

    def thread_scores(self, thread: int, channel: int) -> np.ndarray:
        """Scores of thread ``thread``'s codes on ``channel``, in code order."""
        positions = np.flatnonzero(self.threads == thread)
        positions = positions[np.argsort(self.code_index[positions], kind="stable")]
        return self.scores[positions, channel]

    def reference_scores(self, channel: int) -> np.ndarray:
        """Scores of the reference images on ``channel``."""
        return self.scores[np.asarray(self.kinds) == "reference", channel]


@dataclass
class RecordedSession:
    """A session file read back: its attributes and every complete block (master and journal)."""

    path: Path
    attrs: dict[str, Any]
    provenance: dict[str, Any]
    reference_ids: list[str]
    blocks: list[RecordedBlock]
    #: Block index -> file holding the optimizer checkpoint taken after that block.
    checkpoints: dict[int, Path] = field(default_factory=dict)

    @property
    def journal_blocks(self) -> int:
        """How many blocks are still only in the journal (the session was killed, or is running)."""
        return sum(b.source != self.path for b in self.blocks)

    def checkpoint(self, index: int) -> dict[str, bytes]:
        """Optimizer state blobs stored after block ``index``, checked against their SHA-256.

        Each blob is an optimizer's own data-only format (``Optimizer.set_state``
        reads it); no optimizer state is a pickle.
        """
        if index not in self.checkpoints:
            raise SessionFileError(f"{self.path}: no checkpoint after block {index}; "
                                   f"checkpoints exist after blocks {sorted(self.checkpoints)}")
        source = self.checkpoints[index]
        try:
            with h5py.File(source, "r") as f:
                group = f["checkpoints"][_block_name(index)]
                states = {}
                for key in group:
                    state = group[key][()].tobytes()
                    expected = group[key].attrs.get("sha256")
                    if expected is not None and hashlib.sha256(state).hexdigest() != expected:
                        raise SessionFileError(f"{source}: checkpoint {index}/{key} does not match its sha256 "
                                               f"(the file was altered or corrupted)")
                    states[key] = state
                return states
        except _READ_ERRORS as exc:
            if isinstance(exc, SessionFileError):
                raise
            raise SessionFileError(f"{source}: damaged checkpoint after block {index}: {exc}") from None


def _strings(dataset: h5py.Dataset) -> list[str]:
    values = dataset[()]
    if np.ndim(values) != 1:
        raise ValueError(f"{dataset.name} must be a 1-D list of strings, got shape {np.shape(values)}")
    return [s.decode() if isinstance(s, bytes) else str(s) for s in values]


def _attr(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _read_block(g: h5py.Group, name: str, source: Path) -> RecordedBlock:
    index = int(g.attrs["index"])
    if _block_name(index) != name:
        raise ValueError(f"group {g.name} says it is block {index}")
    block = RecordedBlock(
        index=index,
        codes=np.asarray(g["codes"][()], dtype=np.float64),
        stimulus_ids=_strings(g["stimulus_ids"]),
        kinds=_strings(g["kinds"]),
        threads=np.asarray(g["threads"][()], dtype=np.int64),
        code_index=np.asarray(g["code_index"][()], dtype=np.int64),
        onset_times=np.asarray(g["onset_times"][()], dtype=np.float64),
        dropped_frames=np.asarray(g["dropped_frames"][()], dtype=np.int64),
        scores=np.asarray(g["scores"][()], dtype=np.float64),
        valid=np.asarray(g["valid"][()], dtype=bool),
        channel_names=[str(c) for c in json.loads(g.attrs["channel_names"])],
        timings=json.loads(g.attrs["timings"]),
        offset_times=np.asarray(g["offset_times"][()], dtype=np.float64) if "offset_times" in g else None,
        presentation_valid=np.asarray(g["presentation_valid"][()], dtype=bool) if "presentation_valid" in g else None,
        clock=str(_attr(g["onset_times"].attrs.get("clock", ""))),
        source=source,
    )
    _check_shapes(block, g.name)
    if "showings" in g:
        block.showings = [{key: s[key][()] for key in s} for _, s in sorted(g["showings"].items())]
    digest = g.attrs.get("sha256")
    if digest is not None:
        block.digest_ok = _attr(digest) == block_digest({
            "index": block.index, "channel_names": block.channel_names, "stimulus_ids": block.stimulus_ids,
            "kinds": block.kinds, "codes": block.codes, "threads": block.threads, "code_index": block.code_index,
            "onset_times": block.onset_times, "offset_times": block.offset_times,
            "dropped_frames": block.dropped_frames, "presentation_valid": block.presentation_valid,
            "scores": block.scores, "valid": block.valid,
        })
    return block


def _check_shapes(b: RecordedBlock, where: str) -> None:
    """Every per-stimulus field has one entry per stimulus, so later code can index without surprises."""
    n = len(b.stimulus_ids)
    per_stimulus = {"kinds": len(b.kinds), "threads": b.threads.shape, "code_index": b.code_index.shape,
                    "onset_times": b.onset_times.shape, "dropped_frames": b.dropped_frames.shape,
                    "valid": b.valid.shape}
    wrong = {k: v for k, v in per_stimulus.items() if v not in (n, (n,))}
    if b.scores.shape != (n, len(b.channel_names)):
        wrong["scores"] = b.scores.shape
    if b.codes.ndim != 3:
        wrong["codes"] = b.codes.shape
    elif b.threads.shape == (n,) and b.code_index.shape == (n,):
        generated = b.threads >= 0
        if (np.any(b.threads[generated] >= b.codes.shape[0])
                or np.any(b.code_index[generated] >= b.codes.shape[1]) or np.any(b.code_index[generated] < 0)):
            wrong["threads/code_index"] = "out of range of codes"
    if wrong:
        raise ValueError(f"{where}: {n} stimulus ids but {wrong}")


def _session_file(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise SessionFileError(f"{path}: not a readable HDF5 file ({exc})") from None


def read_session(path: str | Path, verify: bool = True) -> RecordedSession:
    """Read a session file and its journal, read-only; never unpickles anything.

    Blocks still in the journal (a killed or running session) are included;
    partially written ones are not. With ``verify`` a block whose content does
    not match its SHA-256 raises; ``rig replay`` reads with ``verify=False``
    to report such blocks itself.

    Raises:
        SessionFileError: missing, truncated, corrupted or foreign file, or a
            schema version newer than this rig understands; the message names
            the file and the group.
    """
    path = Path(path)
    if not path.exists():
        hint = f" (its journal {journal_dir(path)} exists: the session was killed while being created)" \
            if journal_dir(path).exists() else ""
        raise SessionFileError(f"{path}: no such session file{hint}")
    if not path.is_file():
        raise SessionFileError(f"{path}: not a file")
    where = "/"
    with _session_file(path) as f:
        try:
            schema = _attr(f.attrs.get("schema"))
            if schema != SCHEMA:
                raise SessionFileError(f"{path}: not a rig session file (schema attribute is {schema!r})")
            version = _attr(f.attrs.get("schema_version", -1))
            if not isinstance(version, int) or version < 1:
                raise SessionFileError(f"{path}: schema_version {version!r} is not a schema version")
            if version > SCHEMA_VERSION:
                raise SessionFileError(
                    f"{path}: session schema version {version} is newer than this rig understands "
                    f"({SCHEMA_VERSION}); upgrade rig to read it"
                )
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            provenance = json.loads(attrs.get("provenance", "{}"))
            if not isinstance(provenance, dict):
                raise ValueError("the provenance attribute is not a JSON object")
            where = "/references/ids"
            reference_ids = _strings(f["references"]["ids"])
            blocks: dict[int, RecordedBlock] = {}
            checkpoints: dict[int, Path] = {}
            for name in sorted(f["blocks"]):
                if name.startswith(_PARTIAL_PREFIX):
                    continue
                where = f"/blocks/{name}"
                block = _read_block(f["blocks"][name], name, path)
                blocks[block.index] = block
            where = "/checkpoints"
            for name in f["checkpoints"]:
                if not name.startswith(_PARTIAL_PREFIX):
                    checkpoints[int(name)] = path
        except SessionFileError:
            raise
        except _READ_ERRORS as exc:
            raise SessionFileError(f"{path}: damaged session file at {where}: {type(exc).__name__}: {exc}") from None

    session_id = attrs.get("session_id")
    for index, source in _journal_files(journal_dir(path)):
        where = "/"
        try:
            with h5py.File(source, "r") as j:
                if session_id is None or _attr(j.attrs.get("session_id")) != session_id:
                    raise SessionFileError(f"{source}: journal file of another session "
                                           f"(session_id {_attr(j.attrs.get('session_id'))!r}, expected {session_id!r})")
                name = _block_name(index)
                where = f"/blocks/{name}"
                if index not in blocks:  # after a merge the master's copy is the same block
                    blocks[index] = _read_block(j["blocks"][name], name, source)
                if name in j.get("checkpoints", {}) and index not in checkpoints:
                    checkpoints[index] = source
        except SessionFileError:
            raise
        except _READ_ERRORS as exc:
            raise SessionFileError(f"{source}: damaged journal file at {where}: {type(exc).__name__}: {exc}") from None

    ordered = [blocks[i] for i in sorted(blocks)]
    if verify:
        altered = [b.index for b in ordered if b.digest_ok is False]
        if altered:
            raise SessionFileError(f"{path}: block(s) {altered} do not match their sha256: the file was altered "
                                   f"or corrupted after it was written")
    return RecordedSession(path=path, attrs=attrs, provenance=provenance, reference_ids=reference_ids,
                           blocks=ordered, checkpoints=checkpoints)
