"""Reading a session back, master plus journal, read-only and never unpickling anything."""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from rig.session.sandbox import failure_in_child
from rig.session.layout import (JOURNAL_BLOCK, PARTIAL_PREFIX, READ_ERRORS, SCHEMA, SCHEMA_VERSION, SessionFileError,
                                block_digest, block_name, check_size, control_files, declared_limit, journal_dir,
                                journal_files, parse_json)


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
    #: The operator's controls (pause, stop, extend, note, reward), in the order the controller took them.
    controls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def extended_by(self) -> int:
        """Generations added by the operator's ``extend`` controls (those applied)."""
        return sum(int(c.get("value", 0)) for c in self.controls
                   if c.get("kind") == "extend" and c.get("outcome") == "applied")

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
                group = f["checkpoints"][block_name(index)]
                states = {}
                for key in group:
                    state = _dataset(group, key, f"{source}: /checkpoints/{block_name(index)}/{key}",
                                     declared_limit(source)).tobytes()
                    expected = group[key].attrs.get("sha256")
                    if expected is not None and hashlib.sha256(state).hexdigest() != expected:
                        raise SessionFileError(f"{source}: checkpoint {index}/{key} does not match its sha256 "
                                               f"(the file was altered or corrupted)")
                    states[key] = state
                return states
        except READ_ERRORS as exc:
            if isinstance(exc, SessionFileError):
                raise
            raise SessionFileError(f"{source}: damaged checkpoint after block {index}: {exc}") from None


@dataclass(frozen=True)
class Damage:
    """A block that could not be read back intact (damaged, altered, foreign or missing), and why."""

    index: int
    message: str


@dataclass
class SessionScan:
    """A session read back block by block: everything intact, and every block that is not.

    :func:`read_session` refuses a session with any damage; ``rig salvage``
    keeps the intact blocks before the first damaged one.
    """

    session: RecordedSession  #: the header and the intact blocks (``blocks`` holds no damaged one)
    damage: list[Damage]

    @property
    def first_damaged(self) -> int | None:
        """Index of the first block that is damaged or missing, or None."""
        return min((d.index for d in self.damage), default=None)

    def describe(self) -> str:
        """The damage in one line, with what ``rig salvage`` would keep."""
        shown = "; ".join(d.message for d in sorted(self.damage, key=lambda d: d.index)[:3])
        more = f" (and {len(self.damage) - 3} more)" if len(self.damage) > 3 else ""
        keep = self.first_damaged or 0
        return (f"{shown}{more}. `rig salvage {self.session.path} OUT.h5` copies the {keep} intact block(s) "
                f"before it into a new, resumable session file")


def _dataset(group: h5py.Group, name: str, where: str, limit: int) -> Any:
    """``group[name][()]``, once its declared size is checked against ``limit``."""
    dataset = group[name]
    if not isinstance(dataset, h5py.Dataset):
        raise TypeError(f"{where} is a {type(dataset).__name__}, not a dataset")
    check_size(dataset, where, limit)
    return dataset[()]


def _strings(group: h5py.Group, name: str, where: str, limit: int) -> list[str]:
    values = _dataset(group, name, where, limit)
    if np.ndim(values) != 1:
        raise ValueError(f"{where} must be a 1-D list of strings, got shape {np.shape(values)}")
    try:
        return [s.decode() if isinstance(s, bytes) else str(s) for s in values]
    except UnicodeDecodeError as exc:
        raise SessionFileError(f"{where} holds a string that is not UTF-8 ({exc.reason} at byte {exc.start})") from None


def _attr(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _attributes(obj: h5py.HLObject, where: str, limit: int) -> dict[str, Any]:
    """Every attribute of ``obj``, each size-checked before it is read; errors name the attribute."""
    values = {}
    for name in obj.attrs:
        here = f"{where} attribute {name}"
        try:
            check_size(obj.attrs.get_id(name), here, limit)
            values[name] = _attr(obj.attrs[name])
            if isinstance(values[name], str):
                values[name].encode("utf-8")  # h5py hands back bytes that are not UTF-8 as lone surrogates
        except SessionFileError:
            raise
        except READ_ERRORS as exc:
            raise SessionFileError(f"{here} cannot be read: {type(exc).__name__}: {exc}") from None
    return values


#: Root attributes whose type a reader relies on, when present.
_ROOT_TYPES = {"session_id": str, "status": str, "created_utc": str, "ended_utc": str, "protocol_toml": str,
               "protocol_sha256": str, "protocol_path": str, "seed": int, "provenance": str, "resumes": str,
               "clock_anchor": str, "run_record": str, "controls": str}


def _check_root(attrs: dict[str, Any], where: str) -> dict[str, Any]:
    """Type-check the root attributes and parse ``provenance``; the parsed provenance."""
    for name, kind in _ROOT_TYPES.items():
        if name in attrs and (not isinstance(attrs[name], kind) or isinstance(attrs[name], bool)):
            raise SessionFileError(f"{where} attribute {name} is {type(attrs[name]).__name__} "
                                   f"{str(attrs[name])[:40]!r}, expected {kind.__name__}")
    provenance = parse_json(attrs.get("provenance", "{}"), f"{where} attribute provenance")
    if not isinstance(provenance, dict):
        raise SessionFileError(f"{where} attribute provenance is not a JSON object")
    if not isinstance(parse_json(attrs.get("resumes", "[]"), f"{where} attribute resumes"), list):
        raise SessionFileError(f"{where} attribute resumes is not a JSON list")
    if "clock_anchor" in attrs:
        parse_json(attrs["clock_anchor"], f"{where} attribute clock_anchor")
    _check_controls(parse_json(attrs.get("controls", "[]"), f"{where} attribute controls"), f"{where} attribute controls")
    return provenance


def _check_controls(controls: Any, where: str) -> list[dict[str, Any]]:
    """The operator's controls: a JSON list of objects, each with a ``kind``."""
    if not isinstance(controls, list) or not all(isinstance(c, dict) and isinstance(c.get("kind"), str)
                                                  for c in controls):
        raise SessionFileError(f"{where} is not a JSON list of controls (objects with a kind)")
    return controls


def read_controls(path: Path, attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The controls merged into the master (its ``controls`` attribute) and those still in its journal."""
    controls = _check_controls(parse_json(attrs.get("controls", "[]"), f"{path}: root attribute controls"),
                               f"{path}: root attribute controls")
    for source in control_files(journal_dir(path)):
        try:
            text = source.read_text()
        except (OSError, UnicodeError) as exc:
            raise SessionFileError(f"{source}: cannot be read ({exc})") from None
        controls += _check_controls([parse_json(text, str(source))], str(source))
    return controls


def _read_block(g: h5py.Group, name: str, source: Path, limit: int) -> RecordedBlock:
    where = f"{source}: {g.name}"
    attrs = _attributes(g, where, limit)
    index = attrs.get("index")
    if type(index) is not int:
        raise ValueError(f"attribute index is {index!r}, not a block number")
    if block_name(index) != name:
        raise ValueError(f"group {g.name} says it is block {index}")

    def array(key: str, dtype: Any) -> np.ndarray:
        return np.asarray(_dataset(g, key, f"{where}/{key}", limit), dtype=dtype)

    channel_names = parse_json(attrs.get("channel_names"), f"{where} attribute channel_names")
    timings = parse_json(attrs.get("timings"), f"{where} attribute timings")
    if not isinstance(channel_names, list) or not isinstance(timings, dict):
        raise ValueError("attribute channel_names must be a JSON list and timings a JSON object")
    block = RecordedBlock(
        index=index,
        codes=array("codes", np.float64),
        stimulus_ids=_strings(g, "stimulus_ids", f"{where}/stimulus_ids", limit),
        kinds=_strings(g, "kinds", f"{where}/kinds", limit),
        threads=array("threads", np.int64),
        code_index=array("code_index", np.int64),
        onset_times=array("onset_times", np.float64),
        dropped_frames=array("dropped_frames", np.int64),
        scores=array("scores", np.float64),
        valid=array("valid", bool),
        channel_names=[str(c) for c in channel_names],
        timings=timings,
        offset_times=array("offset_times", np.float64) if "offset_times" in g else None,
        presentation_valid=array("presentation_valid", bool) if "presentation_valid" in g else None,
        clock=str(_attributes(g["onset_times"], f"{where}/onset_times", limit).get("clock", "")),
        source=source,
    )
    _check_shapes(block, g.name)
    _check_scores(block, where)
    if "showings" in g:
        block.showings = [{key: _dataset(s, key, f"{where}/showings/{number}/{key}", limit) for key in s}
                          for number, s in sorted(g["showings"].items(), key=_showing_order)]
        for number, showing in enumerate(block.showings):
            _check_showing(showing, len(block.stimulus_ids), len(block.channel_names), f"{g.name}/showings/{number:02d}")
    digest = attrs.get("sha256")
    if digest is not None:
        block.digest_ok = digest == block_digest({
            "index": block.index, "channel_names": block.channel_names, "stimulus_ids": block.stimulus_ids,
            "kinds": block.kinds, "codes": block.codes, "threads": block.threads, "code_index": block.code_index,
            "onset_times": block.onset_times, "offset_times": block.offset_times,
            "dropped_frames": block.dropped_frames, "presentation_valid": block.presentation_valid,
            "scores": block.scores, "valid": block.valid,
        })
    return block


def _showing_order(item: tuple[str, Any]) -> tuple[int, str]:
    """Showings in the order they ran: "02" before "10" before "100" (names are numbers, zero-padded to 2)."""
    name = item[0]
    return (int(name), name) if name.isdigit() else (1 << 62, name)


def _check_shapes(b: RecordedBlock, where: str) -> None:
    """Every per-stimulus field has one entry per stimulus, so later code can index without surprises."""
    n = len(b.stimulus_ids)
    per_stimulus = {"kinds": len(b.kinds), "threads": b.threads.shape, "code_index": b.code_index.shape,
                    "onset_times": b.onset_times.shape, "dropped_frames": b.dropped_frames.shape,
                    "valid": b.valid.shape}
    optional = {"offset_times": b.offset_times, "presentation_valid": b.presentation_valid}
    per_stimulus.update({k: v.shape for k, v in optional.items() if v is not None})
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


#: A showing's per-position datasets (the raw stream's are checked where they are decoded).
_SHOWING_FIELDS = ("onset_times", "offset_times", "dropped_frames", "presentation_valid", "valid", "position_trial",
                   "position_lost_to_behavior")


def _check_showing(showing: dict[str, Any], n: int, channels: int, where: str) -> None:
    """A showing's positions index the block's stimuli, and its other fields have one entry per position."""
    positions = np.asarray(showing.get("positions"))
    if positions.ndim != 1 or positions.dtype.kind not in "iu" or np.any(positions < 0) or np.any(positions >= n):
        raise ValueError(f"{where}/positions: expected a 1-D list of stimulus positions in 0..{n - 1}, "
                         f"got shape {positions.shape} of {positions.dtype}")
    k = len(positions)
    wrong = {key: np.shape(showing[key]) for key in _SHOWING_FIELDS if key in showing and np.shape(showing[key]) != (k,)}
    if "scores" in showing and np.shape(showing["scores"]) != (k, channels):
        wrong["scores"] = np.shape(showing["scores"])
    if wrong:
        raise ValueError(f"{where}: {k} positions but {wrong}")


def _check_scores(b: RecordedBlock, where: str) -> None:
    """The one rule for scores: a valid response is finite; an invalid one may be anything (NaN as written).

    Every command reads through here, so a NaN or inf in a valid stimulus's
    score (even with a recomputed sha256) is damage for all of them alike.
    """
    bad = np.argwhere(b.valid[:, None] & ~np.isfinite(b.scores))
    if len(bad):
        row, channel = (int(i) for i in bad[0])
        raise SessionFileError(f"{where}/scores: valid stimulus {b.stimulus_ids[row]!r} has the non-finite score "
                               f"{float(b.scores[row, channel])!r} on channel {b.channel_names[channel]!r} ({len(bad)} such); "
                               f"a valid response is always finite (only invalid ones are NaN)")


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
    to report such blocks itself. Every dataset's and attribute's declared
    size is checked before it is read; a valid stimulus's score must be finite;
    block numbers must run 0, 1, 2, ... without a gap.

    Raises:
        SessionFileError: missing, truncated, corrupted, crafted or foreign file,
            a missing block, or a schema version newer than this rig understands;
            the message names the file and the group, dataset or attribute.
    """
    scan = scan_session(path, verify)
    if scan.damage:
        raise SessionFileError(scan.describe())
    return scan.session


def scan_session(path: str | Path, verify: bool = True) -> SessionScan:
    """Read a session like :func:`read_session`, but return damaged and missing blocks rather than raise.

    The header (root attributes, references) must be intact. With ``verify`` a
    block failing its SHA-256 counts as damaged.
    """
    path = Path(path)
    if not path.exists():
        hint = f" (its journal {journal_dir(path)} exists: the session was killed while being created)" \
            if journal_dir(path).exists() else ""
        raise SessionFileError(f"{path}: no such session file{hint}")
    if not path.is_file():
        raise SessionFileError(f"{path}: not a file")
    failure = failure_in_child(functools.partial(_read_all, path, verify), probe_timeout_s(path))
    if failure is not None:
        raise SessionFileError(f"{path}: the HDF5 library {failure}: the file or its journal is damaged "
                               f"(nothing was read from it, and it was not changed)")
    return _scan(path, verify)


#: Seconds a read may take in the probe (see rig/session/sandbox.py) before the file is called damaged:
#: this much plus PROBE_SECONDS_PER_GB for the master and journal together.
PROBE_BASE_S = 60.0
PROBE_SECONDS_PER_GB = 60.0


def probe_timeout_s(path: Path) -> float:
    """How long reading ``path`` and its journal may take before it is taken to hang."""
    size = path.stat().st_size + sum(p.stat().st_size for _, p in journal_files(journal_dir(path)))
    return PROBE_BASE_S + PROBE_SECONDS_PER_GB * size / 1e9


def _read_all(path: Path, verify: bool) -> None:
    """Everything read_session and RecordedSession.checkpoint read, as the probe does it."""
    session = _scan(path, verify).session
    for index in session.checkpoints:
        session.checkpoint(index)


def _block_index(name: str, where: str) -> int:
    if not JOURNAL_BLOCK.match(f"{name}.h5"):
        raise SessionFileError(f"{where}/{name}: not a block number (groups are named 000000, 000001, ...)")
    return int(name)


def _scan(path: Path, verify: bool) -> SessionScan:
    where = "/"
    limit = declared_limit(path)
    blocks: dict[int, RecordedBlock] = {}
    damage: dict[int, Damage] = {}
    checkpoints: dict[int, Path] = {}
    with _session_file(path) as f:
        try:
            attrs = _attributes(f, f"{path}: root", limit)
            schema = attrs.get("schema")
            if schema != SCHEMA:
                raise SessionFileError(f"{path}: not a rig session file (schema attribute is {schema!r})")
            version = attrs.get("schema_version", -1)
            if not isinstance(version, int) or version < 1:
                raise SessionFileError(f"{path}: root attribute schema_version {version!r} is not a schema version")
            if version > SCHEMA_VERSION:
                raise SessionFileError(
                    f"{path}: root attribute schema_version: session schema version {version} is newer than this "
                    f"rig understands "
                    f"({SCHEMA_VERSION}); upgrade rig to read it"
                )
            provenance = _check_root(attrs, f"{path}: root")
            where = "/references/ids"
            reference_ids = _strings(f["references"], "ids", f"{path}: /references/ids", limit)
            where = "/blocks"
            names = [n for n in sorted(f["blocks"]) if not n.startswith(PARTIAL_PREFIX)]
            indices = [_block_index(n, f"{path}: /blocks") for n in names]
            where = "/checkpoints"
            for name in f["checkpoints"]:
                if not name.startswith(PARTIAL_PREFIX):
                    checkpoints[_block_index(name, f"{path}: /checkpoints")] = path
        except SessionFileError:
            raise
        except READ_ERRORS as exc:
            raise SessionFileError(f"{path}: damaged session file at {where}: {type(exc).__name__}: {exc}") from None
        for name, index in zip(names, indices):
            try:
                blocks[index] = _read_block(f["blocks"][name], name, path, limit)
            except SessionFileError as exc:
                damage[index] = Damage(index, str(exc))
            except READ_ERRORS as exc:
                damage[index] = Damage(index, f"{path}: damaged session file at /blocks/{name}: "
                                              f"{type(exc).__name__}: {exc}")

    session_id = attrs.get("session_id")
    for index, source in journal_files(journal_dir(path)):
        try:
            _read_journal_block(source, index, session_id, blocks, checkpoints)
        except SessionFileError as exc:
            damage.setdefault(index, Damage(index, str(exc)))

    if verify:
        for block in [b for b in blocks.values() if b.digest_ok is False]:
            damage[block.index] = Damage(block.index, f"{block.source}: block {block.index} does not match its "
                                                      f"sha256: the file was altered or corrupted after it was written")
    for index in range(max([*blocks, *damage], default=-1)):
        if index not in blocks and index not in damage:
            damage[index] = Damage(index, f"{path}: block {index} is missing (neither the master nor the journal "
                                          f"holds it), though later blocks are recorded")
    for index in damage:
        blocks.pop(index, None)
    session = RecordedSession(path=path, attrs=attrs, provenance=provenance, reference_ids=reference_ids,
                              blocks=[blocks[i] for i in sorted(blocks)], checkpoints=checkpoints,
                              controls=read_controls(path, attrs))
    return SessionScan(session, [damage[i] for i in sorted(damage)])


def read_journal_block(source: Path, index: int, session_id: str) -> RecordedBlock:
    """One journal file's block, read in this process (no probe): for a live viewer of a running session,
    which reads each block as it lands. The file must belong to ``session_id``; SessionFileError otherwise."""
    blocks: dict[int, RecordedBlock] = {}
    _read_journal_block(source, index, session_id, blocks, {})
    return blocks[index]


def _read_journal_block(source: Path, index: int, session_id: Any, blocks: dict[int, RecordedBlock],
                        checkpoints: dict[int, Path]) -> None:
    """Add journal file ``source``'s block (unless the master has it) and note its checkpoint."""
    where = "/"
    try:
        with h5py.File(source, "r") as j:
            found = _attributes(j, f"{source}: root", declared_limit(source)).get("session_id")
            if session_id is None or found != session_id:
                raise SessionFileError(f"{source}: journal file of another session "
                                       f"(session_id {found!r}, expected {session_id!r})")
            name = block_name(index)
            where = f"/blocks/{name}"
            if index not in blocks:  # after a merge the master's copy is the same block
                blocks[index] = _read_block(j["blocks"][name], name, source, declared_limit(source))
            if name in j.get("checkpoints", {}) and index not in checkpoints:
                checkpoints[index] = source
    except SessionFileError:
        raise
    except READ_ERRORS as exc:
        raise SessionFileError(f"{source}: damaged journal file at {where}: {type(exc).__name__}: {exc}") from None
