"""Reading a session back, master plus journal, read-only and never unpickling anything."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from rig.session.sandbox import failure_in_child
from rig.session.layout import (_PARTIAL_PREFIX, _READ_ERRORS, SCHEMA, SCHEMA_VERSION, SessionFileError,
                                _block_name, _journal_files, block_digest, journal_dir)


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
    failure = failure_in_child(lambda: _read_all(path, verify), probe_timeout_s(path))
    if failure is not None:
        raise SessionFileError(f"{path}: the HDF5 library {failure}: the file or its journal is damaged "
                               f"(nothing was read from it, and it was not changed)")
    return _read(path, verify)


#: Seconds a read may take in the probe (see rig/session/sandbox.py) before the file is called damaged:
#: this much plus PROBE_SECONDS_PER_GB for the master and journal together.
PROBE_BASE_S = 60.0
PROBE_SECONDS_PER_GB = 60.0


def probe_timeout_s(path: Path) -> float:
    """How long reading ``path`` and its journal may take before it is taken to hang."""
    size = path.stat().st_size + sum(p.stat().st_size for _, p in _journal_files(journal_dir(path)))
    return PROBE_BASE_S + PROBE_SECONDS_PER_GB * size / 1e9


def _read_all(path: Path, verify: bool) -> None:
    """Everything read_session and RecordedSession.checkpoint read, as the probe does it."""
    session = _read(path, verify)
    for index in session.checkpoints:
        session.checkpoint(index)


def _read(path: Path, verify: bool) -> RecordedSession:
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
