"""Writing a session: blocks into the journal as they complete, merged into the master at the end."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sys
import socket
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from protocols.base import Block, ByteStrings, Responses, TextStrings
from rig.display import Presentations
from rig.session.layout import (SCHEMA, SCHEMA_VERSION, STRING_DTYPE, SessionFileError, SessionWriteError,
                                block_digest, block_name, claim_path, clock_anchor, control_files, fsync_path,
                                journal_dir, journal_files, package_versions, parse_json, strings_array,
                                unfinished_files, utc_now)
from rig.session.reader import read_session
from rig.session.sink import SessionSink


class _WriterLock:
    """An exclusive lock on a session's journal folder, so two processes never write one session.

    ``flock`` is dropped by the kernel when its process dies, so a killed
    session never leaves a stale lock behind.
    """

    def __init__(self, folder: Path, session: Path) -> None:
        if folder.exists() and not folder.is_dir():
            raise SessionFileError(f"{folder}: is in the way of {session}'s journal (it is not a folder); "
                                   f"move it or choose another --out")
        self.created = _mkdir(folder)
        self.folder = folder
        self.fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(self.fd).st_ino != os.stat(folder).st_ino:  # removed by a writer that just finished
                raise SessionFileError(f"{session}: another process wrote this session while this one started")
        except BaseException as exc:
            os.close(self.fd)
            self.fd = -1
            if isinstance(exc, OSError) and exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SessionFileError(f"{session}: another process is writing this session right now") from None
            raise

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _mkdir(folder: Path) -> bool:
    """Create ``folder`` (and its parents); whether it was created. Errors name the folder."""
    try:
        folder.mkdir(parents=True)
        return True
    except FileExistsError:
        if folder.is_dir():
            return False
        raise SessionFileError(f"{folder}: cannot create this folder: a file is in the way") from None
    except NotADirectoryError:
        raise SessionFileError(f"{folder}: cannot create this folder: a file is in the way of a folder above it") \
            from None
    except OSError as exc:
        raise SessionWriteError(exc.errno, f"cannot create this folder: {exc.strerror or exc}", str(folder)) from None


def _identity(path: Path) -> tuple[int, int]:
    """What tells one file from another at the same path (device, inode)."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _remove(path: Path) -> None:
    """Remove a file this writer made, if it is there."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def _in_memory(path: Path) -> Iterator[h5py.File]:
    """A new HDF5 file built in memory, then written to ``path`` with plain writes and fsync'ed.

    The HDF5 library never writes to the disk itself: a full disk makes it
    fail to flush and close, leaving ids it cannot free (and a process that
    may crash at exit). Plain writes fail cleanly with ENOSPC.
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        yield f
    _write_durably(path, buffer.getbuffer())


def _write_durably(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to a new ``path`` with plain writes, then fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


#: Space reserved for a merge, per byte of journal files, plus MERGE_RESERVE_BYTES: more than it writes.
MERGE_RESERVE_FACTOR = 2
MERGE_RESERVE_BYTES = 2**20


def _reserve(path: Path, journal_bytes: int) -> None:
    """Allocate room at the end of ``path`` for the journal's blocks before HDF5 writes them there.

    So a full disk fails here, cleanly, not inside the HDF5 library (see
    :func:`_in_memory`); HDF5 cuts the file back to what it used when it closes.
    """
    fd = os.open(path, os.O_WRONLY)
    try:
        os.posix_fallocate(fd, os.fstat(fd).st_size, MERGE_RESERVE_FACTOR * journal_bytes + MERGE_RESERVE_BYTES)
    finally:
        os.close(fd)


def _os_reason(exc: OSError) -> tuple[int | None, str]:
    """The errno and its words; h5py puts the OS error inside its own message ("... errno = 28, ...")."""
    code = exc.errno
    if code is None:
        found = re.search(r"errno = (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    return code, os.strerror(code) if code else (exc.strerror or str(exc).splitlines()[0])


def _os_error(exc: BaseException, path: Path, doing: str, kept: str) -> BaseException:
    """``exc`` as a SessionWriteError naming ``path``, what failed and what was kept (other errors unchanged)."""
    if not isinstance(exc, OSError) or isinstance(exc, SessionWriteError):
        return exc
    code, reason = _os_reason(exc)
    return SessionWriteError(code, f"could not {doing} ({reason}); {kept}", str(path))


class SessionWriter(SessionSink):
    """Appends blocks to a session file as they complete; a kill at any instant loses only the block in flight.

    Create a new session with the constructor, or continue a killed one with
    :meth:`reopen`. Blocks go to the journal (one small file each); :meth:`finish`
    merges them into the master file. The master is claimed with a hard link,
    which fails if the path exists, and is only ever replaced by a merge while
    it is still the file this writer created (or reopened): nothing is written over.
    """

    def __init__(self, path: str | Path, *, protocol_text: str, protocol_sha256: str, protocol_path: str,
                 seed: int, provenance: dict[str, Any], reference_ids: list[str],
                 run_record: str | None = None) -> None:
        self.path = Path(path)
        if os.path.lexists(self.path):
            raise SessionFileError(f"{self.path}: already exists; choose another --out (nothing was overwritten)")
        folder = journal_dir(self.path)
        if folder.is_dir() and any(folder.iterdir()):
            raise SessionFileError(f"{folder}: a journal of another session is in the way; "
                                   f"move it or choose another --out")
        _mkdir(self.path.parent)
        self.session_id = uuid.uuid4().hex
        self._write_failure: str | None = None
        self._lock = _WriterLock(folder, self.path)
        tmp = self.path.with_name(f".{self.path.name}.creating")
        try:
            with _in_memory(tmp) as f:
                f.attrs["schema"] = SCHEMA
                f.attrs["schema_version"] = SCHEMA_VERSION
                f.attrs["session_id"] = self.session_id
                f.attrs["created_utc"] = utc_now()
                f.attrs["clock_anchor"] = json.dumps(clock_anchor())
                f.attrs["status"] = "running"
                f.attrs["protocol_toml"] = protocol_text
                f.attrs["protocol_sha256"] = protocol_sha256
                f.attrs["protocol_path"] = protocol_path
                f.attrs["seed"] = seed
                f.attrs["provenance"] = json.dumps(
                    {**provenance, "versions": package_versions(), "host": socket.gethostname()}
                )
                if run_record is not None:  # the run as built (rig.loop.run_record), JSON
                    f.attrs["run_record"] = run_record
                f.attrs["resumes"] = "[]"
                f.attrs["controls"] = "[]"
                refs = f.create_group("references")
                refs.create_dataset("ids", data=strings_array(reference_ids), dtype=STRING_DTYPE)
                f.create_group("blocks")
                f.create_group("checkpoints")
            identity = _identity(tmp)
            claim_path(tmp, self.path)
            self._identity = identity
            self._controls = 0
        except BaseException as exc:
            _remove(tmp)
            self._lock.release()
            if self._lock.created:
                try:
                    folder.rmdir()
                except OSError:
                    pass  # something else was put there; leave it
            raise _os_error(exc, self.path, "create the session file", "nothing was created") from None

    @classmethod
    def reopen(cls, path: str | Path, note: dict[str, Any] | None = None) -> "SessionWriter":
        """Continue writing a killed or stopped session: merge its journal and record the resume.

        ``note`` (e.g. host, versions, device) is added to the master's
        ``resumes`` attribute (JSON list) with the time and the blocks found.
        """
        self = cls.__new__(cls)
        self.path = Path(path)
        session = read_session(self.path)  # validates everything first; raises SessionFileError
        self._identity = _identity(self.path)
        if session.attrs.get("status") == "complete":
            raise SessionFileError(f"{self.path}: the session is complete; there is nothing to resume")
        if int(session.attrs.get("schema_version", 1)) != SCHEMA_VERSION:
            raise SessionFileError(f"{self.path}: schema version {session.attrs.get('schema_version')} sessions "
                                   f"cannot be resumed by this rig (it writes version {SCHEMA_VERSION})")
        self.session_id = str(session.attrs["session_id"])
        self._write_failure = None
        self._controls = len(session.controls)  # numbering goes on across resumes
        self._lock = _WriterLock(journal_dir(self.path), self.path)
        resumes = json.loads(session.attrs.get("resumes", "[]"))
        resumes.append({"utc": utc_now(), "clock_anchor": clock_anchor(), "blocks_found": len(session.blocks),
                        "status_found": session.attrs.get("status"), **(note or {})})
        try:
            self._merge({"status": "running", "resumes": json.dumps(resumes)}, keep_journal_dir=True)
        except BaseException:
            self._lock.release()
            raise
        return self

    def _replace_master(self, tmp: Path) -> None:
        """Swap the merged copy ``tmp`` in for the master in one atomic, durable step, if it is still ours."""
        fsync_path(tmp)
        try:
            ours = _identity(self.path) == self._identity
        except FileNotFoundError:
            ours = False
        if not ours:
            raise SessionFileError(f"{self.path}: is no longer the file this session wrote (it was replaced or "
                                   f"removed); nothing was written over it, and the journal "
                                   f"{journal_dir(self.path)} still holds the session's blocks")
        identity = _identity(tmp)
        os.replace(tmp, self.path)
        self._identity = identity
        fsync_path(self.path.parent)

    def append_block(self, block: Block, presentations: Presentations, responses: Responses,
                     checkpoint: dict[str, bytes], timings: dict[str, float], showings: Sequence[Any] = ()) -> None:
        """Write one completed block, every showing of its stimuli and the optimizer state, as one journal file.

        ``presentations`` and ``responses`` hold each stimulus's final (valid)
        showing; ``showings`` (objects with ``positions``, ``presentations`` and
        ``responses``) hold every pass, including those whose responses were lost.
        The block is durable (fsync'ed) when this returns. If it cannot be written
        (a full disk), no partial file is left and the error names the block.
        """
        name = block_name(block.index)
        folder = journal_dir(self.path)
        final = folder / f"{name}.h5"
        if final.exists():
            raise SessionFileError(f"{self.path}: block {block.index} is already recorded")
        tmp = folder / f".{name}.h5.partial"
        try:
            with _in_memory(tmp) as f:  # replaces a .partial left by a killed process
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
            os.replace(tmp, final)
            fsync_path(folder)
        except BaseException as exc:
            _remove(tmp)
            if isinstance(exc, OSError):
                self._write_failure = f"block {block.index} could not be written ({_os_reason(exc)[1]})"
            raise _os_error(exc, self.path, f"write block {block.index} to {tmp}",
                            f"the blocks before it are safe in {folder}") from exc

    def append_unfinished(self, block: Block, showings: Sequence[Any]) -> None:
        """Keep the showings of a block the operator stopped, under ``unfinished/`` (never read as a block).

        The trials and gaze of a stopped block are data like any other; a resumed session shows the block again.
        """
        folder = journal_dir(self.path)
        number = len(unfinished_files(folder))
        name = f"{block_name(block.index)}-{number}"
        final = folder / f"unfinished-{block.index:06d}-{number}.h5"
        with self._journal_entry(final, f"keep the showings of unfinished block {block.index}",
                                 f"every whole block is safe in {folder}") as tmp, _in_memory(tmp) as f:
            f.attrs["schema"] = SCHEMA
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["session_id"] = self.session_id
            g = f.create_group("unfinished").create_group(name)
            g.attrs["index"] = block.index
            g.attrs["written_utc"] = utc_now()
            g.create_dataset("stimulus_ids", data=strings_array(block.stimulus_ids), dtype=STRING_DTYPE)
            _write_showings(g, showings)

    @contextlib.contextmanager
    def _journal_entry(self, final: Path, doing: str, kept: str) -> Iterator[Path]:
        """A temporary name to write ``final``'s content to, renamed to ``final`` (atomic, durable) once written.

        If writing fails, nothing is left behind and the error names the session, what failed and what was kept.
        """
        tmp = final.with_name(f".{final.name}.partial")
        try:
            yield tmp
            os.replace(tmp, final)
            fsync_path(final.parent)
        except BaseException as exc:
            _remove(tmp)
            raise _os_error(exc, self.path, doing, kept) from exc

    def record_control(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Keep one operator control (a pause, stop, extension, note, ...) in the journal; the entry as recorded.

        ``entry`` is JSON-ready (``kind``, ``value``, ``request_id``, ``requested_utc``, ``outcome``, ...); its
        ``number`` (counting on across resumes) and ``recorded_utc`` are added. Like a block, it is durable when
        this returns and is merged into the master's ``controls`` attribute at the end (docs/session-schema.md).
        """
        recorded = {"number": self._controls, **entry, "recorded_utc": utc_now()}
        folder = journal_dir(self.path)
        final = folder / f"control-{self._controls:06d}.json"
        with self._journal_entry(final, f"record the operator's {entry.get('kind')!r} control",
                                 f"every block is safe in {folder}") as tmp:
            _write_durably(tmp, json.dumps(recorded).encode())
        self._controls += 1
        return recorded

    def finish(self, status: str = "complete") -> None:
        """Mark the session as ended (``complete``, ``interrupted`` or ``failed``) and merge its journal.

        If the merge cannot be written (a full disk), the master and the journal
        are left exactly as they were, with no temporary file, and the error
        says so: ``rig run --resume`` merges and finishes the session later.
        """
        try:
            self._merge({"status": status, "ended_utc": utc_now()}, keep_journal_dir=False)
        finally:
            self._lock.release()

    def abandon(self) -> None:
        """Stop writing without finishing, as a killed process does: the lock goes, the journal stays unmerged.

        The session stays ``running``; :meth:`reopen` (``rig run --resume``)
        merges the journal and continues it. Tests use it to simulate a kill.
        """
        self._lock.release()

    def _merge(self, attrs: dict[str, Any], keep_journal_dir: bool) -> None:
        """Copy the master plus the journal's blocks into a new master, then swap it in atomically."""
        folder = journal_dir(self.path)
        entries = journal_files(folder)
        unfinished = unfinished_files(folder)
        controls = control_files(folder)
        tmp = self.path.with_name(f".{self.path.name}.merging")
        try:
            shutil.copyfile(self.path, tmp)
            _reserve(tmp, sum(source.stat().st_size for _, source in entries))
            with h5py.File(tmp, "a") as f:
                for _, source in entries:
                    with h5py.File(source, "r") as j:
                        if j.attrs.get("session_id") != self.session_id:
                            raise SessionFileError(f"{source}: belongs to another session; not merged")
                        for group in ("blocks", "checkpoints"):
                            for name in j[group]:
                                if name not in f[group]:
                                    j.copy(j[group][name], f[group], name=name)
                for source in unfinished:
                    with h5py.File(source, "r") as j:
                        if j.attrs.get("session_id") != self.session_id:
                            raise SessionFileError(f"{source}: belongs to another session; not merged")
                        kept = f.require_group("unfinished")
                        for name in j["unfinished"]:
                            if name not in kept:
                                j.copy(j["unfinished"][name], kept, name=name)
                if controls:  # in the order taken, after those of earlier runs of the session
                    kept = parse_json(f.attrs.get("controls", "[]"), f"{self.path}: root attribute controls")
                    kept += [parse_json(source.read_text(), str(source)) for source in controls]
                    f.attrs["controls"] = json.dumps(kept)
                for key, value in attrs.items():
                    f.attrs[key] = value
            self._replace_master(tmp)
        except BaseException as exc:
            _remove(tmp)
            after = self._write_failure
            raise _os_error(exc, self.path, (f"{after}, then " if after else "") + f"record status "
                            f"{attrs['status']!r} (merging {len(entries)} journal block(s) into the master)",
                            f"nothing was lost: the master is as it was and {folder} holds every block; with "
                            f"space, `rig run --resume {self.path}` merges and finishes it") from exc
        # Only now that the master holds them may the journal's copies go.
        for source in [path for _, path in entries] + unfinished + controls:
            source.unlink()
        for stale in [*folder.glob(".*.h5.partial"), *folder.glob(".control-*.json.partial")]:
            stale.unlink()
        if not keep_journal_dir:
            self._lock.release()
            try:
                folder.rmdir()
            except OSError:
                pass  # something else was put there; leave it


def annotate(path: str | Path, key: str, value: Any) -> None:
    """Add ``key`` (JSON of ``value``) to the root attributes of a finished session's master file.

    For what is only known once a session has ended (e.g. the acquisition GUI's recording as it stopped).
    A session whose journal was not merged (still running, or killed) is left as it is: its blocks matter more.
    """
    path = Path(path)
    if journal_files(journal_dir(path)):
        return
    try:
        with h5py.File(path, "a") as f:
            f.attrs[key] = json.dumps(value, default=str)
    except OSError as exc:
        print(f"rig: warning: could not add {key!r} to {path}: {exc}", file=sys.stderr)


def _write_block(g: h5py.Group, block: Block, presentations: Presentations, responses: Responses,
                 timings: dict[str, float], showings: Sequence[Any]) -> None:
    """The datasets and attributes of one block group (layout in docs/session-schema.md)."""
    g.attrs["index"] = block.index
    g.attrs["channel_names"] = json.dumps(responses.channel_names)
    g.attrs["timings"] = json.dumps(timings)
    g.attrs["written_utc"] = utc_now()
    g.create_dataset("codes", data=block.codes)
    g.create_dataset("stimulus_ids", data=strings_array(block.stimulus_ids), dtype=STRING_DTYPE)
    g.create_dataset("kinds", data=strings_array(block.kinds), dtype=STRING_DTYPE)
    g.create_dataset("threads", data=block.threads)
    g.create_dataset("code_index", data=block.code_index)
    onsets = g.create_dataset("onset_times", data=presentations.onset_times)
    onsets.attrs["clock"] = presentations.clock
    g.create_dataset("offset_times", data=presentations.offset_times)
    g.create_dataset("dropped_frames", data=presentations.dropped_frames)
    g.create_dataset("presentation_valid", data=presentations.valid)
    g.create_dataset("scores", data=responses.scores)
    g.create_dataset("valid", data=responses.valid)
    _write_showings(g, showings)
    g.attrs["sha256"] = block_digest({
        "index": block.index, "channel_names": responses.channel_names, "stimulus_ids": block.stimulus_ids,
        "kinds": block.kinds, "codes": block.codes, "threads": block.threads, "code_index": block.code_index,
        "onset_times": presentations.onset_times, "offset_times": presentations.offset_times,
        "dropped_frames": presentations.dropped_frames, "presentation_valid": presentations.valid,
        "scores": responses.scores, "valid": responses.valid,
    })


def _write_showings(g: h5py.Group, showings: Sequence[Any]) -> None:
    """Every showing of a block's stimuli: positions, presentations, responses, what the source saw, the trials."""
    for number, showing in enumerate(showings):
        sg = g.create_group(f"showings/{number:02d}")
        sg.create_dataset("positions", data=showing.positions)
        sg.create_dataset("onset_times", data=showing.presentations.onset_times)
        sg.create_dataset("offset_times", data=showing.presentations.offset_times)
        sg.create_dataset("dropped_frames", data=showing.presentations.dropped_frames)
        sg.create_dataset("presentation_valid", data=showing.presentations.valid)
        sg.create_dataset("scores", data=showing.responses.scores)
        sg.create_dataset("valid", data=showing.responses.valid)
        _write_datasets(sg, *showing.responses.showing_record())
        if showing.presentations.behavior is not None:  # the trials that showed them (rig.behavior.log)
            _write_datasets(sg, showing.presentations.behavior.datasets(), {})


_BYTES = h5py.vlen_dtype(np.dtype("uint8"))


def _write_datasets(sg: h5py.Group, datasets: dict[str, Any], attributes: dict[str, str]) -> None:
    """Datasets and string attributes of one showing beyond its scores: what the source saw
    (``Responses.showing_record``: a recording's stream log, onsets on time.monotonic, why stimuli were
    invalid) and the trials that showed it (``BehaviorLog.datasets``); listed in docs/session-schema.md.
    ``ByteStrings`` become variable-length uint8, ``TextStrings`` strings, arrays arrays.
    """
    for key, value in datasets.items():
        if isinstance(value, ByteStrings):
            data = np.empty(len(value), dtype=object)
            data[:] = [np.frombuffer(v, dtype=np.uint8) for v in value]
            sg.create_dataset(key, data=data, dtype=_BYTES)
        elif isinstance(value, TextStrings):
            sg.create_dataset(key, data=strings_array([str(v) for v in value]), dtype=STRING_DTYPE)
        else:
            sg.create_dataset(key, data=np.asarray(value))
    for key, value in attributes.items():
        sg.attrs[key] = value
