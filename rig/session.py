"""The session file (HDF5): everything needed to understand and replay a session.

Layout, schema version 1 (plain h5py/MATLAB-readable types only)::

    /                      attrs: schema, schema_version, created_utc, status,
                                  protocol_toml, protocol_sha256, protocol_path,
                                  seed, provenance (JSON: neuron, display, generator,
                                  optimizer, device, package versions, host)
    /references/ids        reference image identities (strings)
    /blocks/NNNNNN/        one group per completed block, in order
        codes              (threads, popsize, code_dim) float64
        stimulus_ids, kinds           strings, presentation order
        threads, code_index           int64, -1 for reference images
        onset_times, offset_times     float64, display clock (attr clock)
        dropped_frames, presentation_valid
        scores             (stimuli, channels) float64, NaN where invalid
        valid              bool per stimulus
        showings/NN/       every pass of the display over the block: positions
                           shown, onset_times, dropped_frames, presentation_valid,
                           scores, valid (00 is the whole block; later ones re-show
                           stimuli whose responses were lost)
        attrs: index, channel_names (JSON), timings (JSON)
    /checkpoints/NNNNNN/   optimizer state after block NNNNNN, one opaque
                           byte string per thread (dataset of uint8); stored
                           every few blocks and after the last one, since the
                           recorded scores replay the optimizer in between

Each block is written in one open/close of the file, first under a temporary
name and then moved into place, so a process killed mid-write leaves at most
one incomplete ``.partial`` group that readers ignore.
"""
from __future__ import annotations

import json
import platform
import socket
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from protocols.base import Block, Responses
from rig.display import Presentations

SCHEMA = "rig.session"
SCHEMA_VERSION = 1
_PARTIAL_PREFIX = ".partial-"
_STR = h5py.string_dtype(encoding="utf-8")


class SessionFileError(ValueError):
    """A session file cannot be created or read as a session."""


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


class SessionWriter:
    """Appends blocks to a session file as they complete."""

    def __init__(self, path: str | Path, *, protocol_text: str, protocol_sha256: str, protocol_path: str,
                 seed: int, provenance: dict[str, Any], reference_ids: list[str]) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise SessionFileError(f"{self.path}: already exists; choose another --out (nothing was overwritten)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(self.path, "w-") as f:
            f.attrs["schema"] = SCHEMA
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["created_utc"] = _utc_now()
            f.attrs["status"] = "running"
            f.attrs["protocol_toml"] = protocol_text
            f.attrs["protocol_sha256"] = protocol_sha256
            f.attrs["protocol_path"] = protocol_path
            f.attrs["seed"] = seed
            f.attrs["provenance"] = json.dumps(
                {**provenance, "versions": package_versions(), "host": socket.gethostname()}
            )
            refs = f.create_group("references")
            refs.create_dataset("ids", data=np.array(reference_ids, dtype=object), dtype=_STR)
            f.create_group("blocks")
            f.create_group("checkpoints")

    def append_block(self, block: Block, presentations: Presentations, responses: Responses,
                     checkpoint: dict[str, bytes], timings: dict[str, float], showings: Sequence[Any] = ()) -> None:
        """Write one completed block, every showing of its stimuli and the optimizer state, in one file open.

        ``presentations`` and ``responses`` hold each stimulus's final (valid)
        showing; ``showings`` (objects with ``positions``, ``presentations`` and
        ``responses``) hold every pass, including those whose responses were lost.
        """
        name = _block_name(block.index)
        with h5py.File(self.path, "a") as f:
            if name in f["blocks"]:
                raise SessionFileError(f"{self.path}: block {block.index} is already recorded")
            partial = _PARTIAL_PREFIX + name
            for group in ("blocks", "checkpoints"):
                if partial in f[group]:  # left by a process killed mid-write
                    del f[group][partial]
            g = f["blocks"].create_group(partial)
            g.attrs["index"] = block.index
            g.attrs["channel_names"] = json.dumps(responses.channel_names)
            g.attrs["timings"] = json.dumps(timings)
            g.attrs["written_utc"] = _utc_now()
            g.create_dataset("codes", data=block.codes)
            g.create_dataset("stimulus_ids", data=np.array(block.stimulus_ids, dtype=object), dtype=_STR)
            g.create_dataset("kinds", data=np.array(block.kinds, dtype=object), dtype=_STR)
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
                sg.create_dataset("dropped_frames", data=showing.presentations.dropped_frames)
                sg.create_dataset("presentation_valid", data=showing.presentations.valid)
                sg.create_dataset("scores", data=showing.responses.scores)
                sg.create_dataset("valid", data=showing.responses.valid)
            if checkpoint:
                c = f["checkpoints"].create_group(partial)
                for key, state in checkpoint.items():
                    c.create_dataset(key, data=np.frombuffer(state, dtype=np.uint8))
                f["checkpoints"].move(partial, name)
            # Moving into place last: a reader never sees a half-written block under its real name.
            f["blocks"].move(partial, name)

    def finish(self, status: str = "complete") -> None:
        """Mark the session as ended (``complete``, ``interrupted`` or ``failed``)."""
        with h5py.File(self.path, "a") as f:
            f.attrs["status"] = status
            f.attrs["ended_utc"] = _utc_now()


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
    """A session file read back: its attributes and every complete block."""

    path: Path
    attrs: dict[str, Any]
    provenance: dict[str, Any]
    reference_ids: list[str]
    blocks: list[RecordedBlock]

    def checkpoint(self, index: int) -> dict[str, bytes]:
        """Optimizer state blobs stored after block ``index``."""
        with h5py.File(self.path, "r") as f:
            group = f["checkpoints"][_block_name(index)]
            return {key: group[key][()].tobytes() for key in group}


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in dataset[()]]


def read_session(path: str | Path) -> RecordedSession:
    """Read a session file without modifying it; incomplete blocks are skipped."""
    path = Path(path)
    if not path.exists():
        raise SessionFileError(f"{path}: no such session file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise SessionFileError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        if f.attrs.get("schema") != SCHEMA:
            raise SessionFileError(f"{path}: not a rig session file (schema attribute is {f.attrs.get('schema')!r})")
        version = int(f.attrs.get("schema_version", -1))
        if version > SCHEMA_VERSION:
            raise SessionFileError(
                f"{path}: session schema version {version} is newer than this rig understands "
                f"({SCHEMA_VERSION}); upgrade rig to read it"
            )
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        blocks = []
        for name in sorted(f["blocks"]):
            if name.startswith(_PARTIAL_PREFIX):
                continue
            g = f["blocks"][name]
            blocks.append(
                RecordedBlock(
                    index=int(g.attrs["index"]),
                    codes=g["codes"][()],
                    stimulus_ids=_strings(g["stimulus_ids"]),
                    kinds=_strings(g["kinds"]),
                    threads=g["threads"][()],
                    code_index=g["code_index"][()],
                    onset_times=g["onset_times"][()],
                    dropped_frames=g["dropped_frames"][()],
                    scores=g["scores"][()],
                    valid=g["valid"][()],
                    channel_names=json.loads(g.attrs["channel_names"]),
                    timings=json.loads(g.attrs["timings"]),
                )
            )
        return RecordedSession(
            path=path,
            attrs=attrs,
            provenance=json.loads(attrs.get("provenance", "{}")),
            reference_ids=_strings(f["references"]["ids"]),
            blocks=blocks,
        )
