"""Stimuli and their responses, from session files: the evidence ``rig compare`` fits readouts to.

An evolution session stores codes, not images: its images come back through its
generator, rebuilt from the run record (:func:`rig.loop.rebuild.rebuild`), and its
reference images from the protocol's reference source. A screening session adds
the natural images it screened. A stimulus's response is the mean of its valid
showings on one channel; the showings themselves are kept for the noise ceiling.

Stimulus keys, and the fold groups that keep near-duplicates on one side of a split:

- a generated image is ``<session>#g<block>/<stimulus id>``, grouped by its generation;
- a re-shown evolved image (``[evolution] repeat_fraction``, id ``rep/<id>``) joins its original's key;
- a natural image is ``nat/<image id>``: one stimulus per session however many blocks showed it, and
  one fold group across sessions, so the same photo never sits on both sides of a split.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from protocols.evolution import REPEAT_PREFIX
from rig.analysis.images import load_natural_images, render
from rig.session import RecordedSession, read_session

#: Images rendered per call of the generator (bounds memory for 1,500-image sessions).
RENDER_CHUNK = 64
GENERATED = "generated"
NATURAL = "natural"


class ImageSet:
    """Images held as a recipe: rendered in chunks when the features are read, never all at once."""

    def __len__(self) -> int:
        raise NotImplementedError

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """(n, 3, H, W) images in [0, 1], ``size`` at a time, in order."""
        raise NotImplementedError


class GeneratedImages(ImageSet):
    """Images of recorded codes through the session's generator."""

    def __init__(self, generator, codes: np.ndarray) -> None:
        self.generator = generator
        self.codes = np.asarray(codes, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.codes)

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.codes), size):
            yield render(self.generator, self.codes[start:start + size])


class TensorImages(ImageSet):
    """Images already in memory (natural images)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), size):
            yield self.images[start:start + size]


@dataclass
class SessionStimuli:
    """One session's stimuli: images (generated first, then natural), keys, fold groups, valid showings."""

    path: Path
    sha256: str
    #: Who responded: the channel's name and, for a simulated neuron, its model weights' digest.
    neuron: str
    channel: str
    keys: list[str]
    kinds: list[str]
    groups: list[str]
    showings: list[list[float]]
    images: list[ImageSet] = field(default_factory=list)

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """Every stimulus's image, in key order."""
        for part in self.images:
            yield from part.chunks(size)


@dataclass
class Stimuli:
    """Every session's stimuli together: one row per stimulus, in session order."""

    sessions: list[SessionStimuli]

    @property
    def keys(self) -> list[str]:
        return [k for s in self.sessions for k in s.keys]

    @property
    def kinds(self) -> np.ndarray:
        return np.array([k for s in self.sessions for k in s.kinds])

    @property
    def groups(self) -> np.ndarray:
        """Fold groups as integers (stimuli of one group never sit on both sides of a split)."""
        names = [g for s in self.sessions for g in s.groups]
        _, codes = np.unique(np.array(names), return_inverse=True)
        return codes

    @property
    def showings(self) -> list[list[float]]:
        return [r for s in self.sessions for r in s.showings]

    @property
    def responses(self) -> np.ndarray:
        """Each stimulus's mean over its valid showings."""
        return np.array([np.mean(r) for r in self.showings], dtype=np.float64)

    def __len__(self) -> int:
        return sum(len(s.keys) for s in self.sessions)

    def provenance(self) -> list[dict]:
        """Path, SHA-256, neuron and number of stimuli of each session (for tables and twins)."""
        return [{"path": str(s.path.resolve()), "sha256": s.sha256, "neuron": s.neuron, "channel": s.channel,
                 "stimuli": len(s.keys)} for s in self.sessions]


def file_digest(path: Path) -> str:
    """SHA-256 of a session file (the cache key and the provenance of a twin)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pick_channel(session: RecordedSession, channel: str | None) -> int:
    """The channel compared: the only one, or the one named; a clear error listing the names otherwise."""
    if not session.blocks:
        raise ValueError(f"{session.path}: no complete blocks recorded; nothing to compare")
    names = list(session.blocks[0].channel_names)
    if channel is None:
        if len(names) != 1:
            raise ValueError(f"{session.path}: {len(names)} channels {names}; choose one with --channel NAME")
        return 0
    if channel not in names:
        raise ValueError(f"{session.path}: no channel {channel!r}; channels: {names}")
    return names.index(channel)


def neuron_identity(session: RecordedSession, channel: int) -> str:
    """The responding neuron: its channel name, plus the weights digest of a simulated model."""
    name = session.blocks[0].channel_names[channel]
    neuron = session.provenance.get("neuron", {})
    inner = neuron.get("neuron") if isinstance(neuron, dict) else None
    digest = None
    if isinstance(inner, dict):  # a twin is told apart by its readout, a model unit by its weights
        digest = inner.get("readout_sha256") or inner.get("weights_sha256")
    return f"{name} ({digest[:12]})" if isinstance(digest, str) and digest else name


def _natural_key(stimulus_id: str) -> str:
    # Evolution references are "ref/<id>", screened images "nat/<id>": the same photo either way.
    return "nat/" + stimulus_id.partition("/")[2]


def _collect(session: RecordedSession, channel: int, tag: str):
    """Per key: kind, group, valid responses, and (generated) its code; in first-seen order."""
    order: dict[str, dict] = {}
    for block in session.blocks:
        for i, sid in enumerate(block.stimulus_ids):
            kind = block.kinds[i]
            if kind == "reference":
                key, group, code = _natural_key(sid), _natural_key(sid), None
            else:
                original = sid[len(REPEAT_PREFIX):] if sid.startswith(REPEAT_PREFIX) else sid
                key, group = f"{tag}#b{block.index}/{original}", f"{tag}#b{block.index}"
                code = None
                if not sid.startswith(REPEAT_PREFIX):
                    code = block.codes[int(block.threads[i]), int(block.code_index[i])]
            entry = order.setdefault(key, {"kind": NATURAL if kind == "reference" else GENERATED,
                                           "group": group, "showings": [], "code": None})
            if code is not None:
                entry["code"] = code
            if block.valid[i] and np.isfinite(block.scores[i, channel]):
                entry["showings"].append(float(block.scores[i, channel]))
    return order


def session_stimuli(path: str | Path, channel: str | None = None, trust_generator: str | None = None) -> SessionStimuli:
    """The stimuli of one evolution or screening session, with their images (see the module docstring)."""
    from rig.loop.assemble import load_references
    from rig.loop.rebuild import rebuild

    path = Path(path)
    session = read_session(path)
    index = pick_channel(session, channel)
    rebuilt = rebuild(session)
    tag = path.stem
    entries = {k: e for k, e in _collect(session, index, tag).items() if e["showings"]}
    generated = [k for k, e in entries.items() if e["kind"] == GENERATED]
    natural = [k for k, e in entries.items() if e["kind"] == NATURAL]
    missing = [k for k in generated if entries[k]["code"] is None]
    if missing:
        raise ValueError(f"{path}: re-shown stimuli {missing[:3]} have no original in their block")
    images: list[ImageSet] = []
    if generated:
        generator = rebuilt.generator(trust_generator)
        images.append(GeneratedImages(generator, np.stack([entries[k]["code"] for k in generated])))
    if natural:
        if rebuilt.spec.kind == "screening":
            pictures, ids = load_natural_images(path, rebuilt.spec.screening.image_size)
        else:
            size = int(rebuilt.spec.generator.get("image_size", 224))
            pictures, ids = load_references(rebuilt.spec, size, torch.device("cpu"))
        by_id = {f"nat/{i}": n for n, i in enumerate(ids)}
        absent = [k for k in natural if k not in by_id]
        if absent:
            raise ValueError(f"{path}: natural images {absent[:3]} are not in the image set the session names")
        images.append(TensorImages(pictures[[by_id[k] for k in natural]].cpu()))
    keys = generated + natural
    return SessionStimuli(path=path, sha256=file_digest(path), neuron=neuron_identity(session, index),
                          channel=session.blocks[0].channel_names[index], keys=keys,
                          kinds=[entries[k]["kind"] for k in keys], groups=[entries[k]["group"] for k in keys],
                          showings=[entries[k]["showings"] for k in keys], images=images)


def load_stimuli(paths: Sequence[str | Path], channel: str | None = None, allow_mixed: bool = False,
                 trust_generator: str | None = None) -> Stimuli:
    """Every session's stimuli; sessions of different neurons are refused unless ``allow_mixed``."""
    if not paths:
        raise ValueError("give at least one session file")
    sessions = [session_stimuli(p, channel, trust_generator) for p in paths]
    neurons = sorted({s.neuron for s in sessions})
    if len(neurons) > 1 and not allow_mixed:
        listed = ", ".join(f"{s.path.name}: {s.neuron}" for s in sessions)
        raise ValueError(f"the sessions recorded different neurons ({listed}); compare one neuron at a time, "
                         f"or pass --allow-mixed to pool them")
    return Stimuli(sessions)
