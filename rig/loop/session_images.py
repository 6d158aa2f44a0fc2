"""The screening source "images from sessions": images taken by reference from earlier session files.

Each ``[[screening.take]]`` table (protocols/session_images.py) names a session
file and which of its images to take; they are regenerated from their recorded
codes through that session's own generator, rebuilt from its run record
(rig/loop/rebuild.py). Natural images can join as a group of their own. Every
image's origin (session id, file and its SHA-256, thread, generation, index,
score, the code's SHA-256) goes into the new session's provenance, so the
check can be repeated and its images traced back; a rebuilt screening (a
resume) must take the very same images again (:func:`check_taken_again`).

Image ids are ``GROUP/NAME``; the group is what ``rig report`` compares.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from protocols.images import resize
from protocols.session_images import SessionTake
from protocols.spec import ProtocolError, ProtocolSpec
from rig.session import RecordedSession, SessionFileError, read_session


@dataclass(frozen=True)
class TakenImages:
    """The images of a ``source = "sessions"`` screening, their ids and where each came from."""

    images: torch.Tensor
    ids: list[str]
    #: One dict per image, in order: its group, and its session and code, or its natural image set.
    origins: list[dict[str, Any]]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def code_sha256(code: np.ndarray) -> str:
    """SHA-256 of a code as little-endian float64: the identity of a generated image, given its generator."""
    return hashlib.sha256(np.ascontiguousarray(code, dtype="<f8").tobytes()).hexdigest()


def group_of(image_id: str) -> str:
    """The group of a taken image's id (``GROUP/NAME``)."""
    group, sep, _ = image_id.partition("/")
    if not sep:
        raise ValueError(f"image id {image_id!r} has no group (expected GROUP/NAME)")
    return group


def take_images(spec: ProtocolSpec, trust_generator: str | None = None) -> TakenImages:
    """Every ``[[screening.take]]`` of ``spec``'s screening at its ``image_size``; a ProtocolError names the
    table and the file when a session is missing, unreadable, altered or lacks what is asked of it."""
    size = spec.screening.image_size
    images, ids, origins = [], [], []
    for number, take in enumerate(spec.screening.take, start=1):
        where = f"{spec.path}: [[screening.take]] #{number} (group {take.group!r})"
        if take.natural is not None:
            batch, names, origin = _natural(spec, take, size)
        else:
            batch, names, origin = _from_session(spec, take, where, size, trust_generator)
        images.append(batch)
        ids += [f"{take.group}/{name}" for name in names]
        origins += origin
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ProtocolError(f"{spec.path}: [[screening.take]]: images taken twice into one group: {duplicates[:5]}")
    return TakenImages(torch.cat(images), ids, origins)


#: What must be the same, image by image, for an image taken again to be the one recorded (besides its id).
_SAME_ORIGIN = (("session_sha256", "session file SHA-256"), ("code_sha256", "code SHA-256"))


def check_taken_again(session: RecordedSession, ids: Sequence[str], taken: Sequence[dict[str, Any]] | None) -> None:
    """Refuse a rebuilt screening (a resume) whose images are not the ones ``session`` recorded.

    ``ids`` and ``taken`` are the image ids and origins found now. The ids must
    be the recorded ones in the same order; with images taken from sessions, each
    must also come from a session file with the recorded SHA-256 and from a code
    with the recorded SHA-256. A source file replaced or re-run since would
    otherwise put other images under the recorded ids. The SessionFileError
    names the first image that differs, its source file and what differs.
    """
    recorded_ids = list(session.reference_ids)
    recorded = session.provenance.get("screening", {}).get("taken")
    if taken is not None and (not isinstance(recorded, list) or len(recorded) != len(recorded_ids)
                              or not all(isinstance(o, dict) for o in recorded)):
        raise SessionFileError(f"{session.path}: provenance screening.taken must hold the origin of each of its "
                               f"{len(recorded_ids)} images; cannot check the images taken now against them")
    now_origins = taken if taken is not None else [{}] * len(ids)
    then_origins = recorded if taken is not None else [{}] * len(recorded_ids)
    rows = zip_longest(recorded_ids, then_origins, ids, now_origins)
    for number, (then_id, then, now_id, now) in enumerate(rows, start=1):
        then, now = then or {}, now or {}
        differs = [] if then_id == now_id else [f"id {now_id!r} now" if now_id is not None else "no such image now"]
        differs += [f"{what} {str(now.get(key))[:12]}... now, {str(then.get(key))[:12]}... recorded"
                    for key, what in _SAME_ORIGIN if now.get(key) != then.get(key)]
        if differs:
            source = then.get("session") or then.get("natural") or now.get("session") or "its image set"
            image = repr(then_id) if then_id is not None else f"{now_id!r} (not recorded)"
            raise SessionFileError(f"{session.path}: the images taken now are not the recorded ones: image #{number} "
                                   f"{image} (from {source}): {'; '.join(differs)}. The source file was "
                                   f"replaced or re-run since the screening began; restore it to resume")


def _natural(spec: ProtocolSpec, take: SessionTake, size: int):
    """A group of natural images, loaded as ``[references]`` and ``[screening]`` load theirs."""
    from rig.loop.assemble import BUNDLED_REFERENCES, _load_images

    images, names, folder = _load_images(spec, "screening.take", take.natural, take.count, size)
    source = take.natural if take.natural == BUNDLED_REFERENCES else str(folder)
    return images, names, [{"group": take.group, "natural": source, "image": n} for n in names]


def _from_session(spec: ProtocolSpec, take: SessionTake, where: str, size: int, trust_generator: str | None):
    """A group of a session's images, regenerated from their codes through the session's own generator."""
    from rig.loop.rebuild import rebuild

    path = (spec.path.parent / take.session).expanduser().resolve()
    if not path.is_file():
        raise ProtocolError(f"{where}: session file {path} not found (session = {take.session!r} is relative "
                            f"to the protocol file)")
    sha = file_sha256(path)
    if take.sha256 is not None and sha != take.sha256:
        raise ProtocolError(f"{where}: {path} has SHA-256 {sha}, not the sha256 = {take.sha256!r} pinned in the "
                            f"protocol: it is another or an altered file")
    try:
        session = read_session(path)
        generator = rebuild(session).generator(trust_generator)
    except (SessionFileError, ValueError, OSError) as exc:
        raise ProtocolError(f"{where}: cannot take images from {path}: {exc}") from None
    threads = session.provenance.get("thread_channels", [])
    if not isinstance(threads, list) or not 0 <= take.thread < len(threads):
        raise ProtocolError(f"{where}: {path} has no thread {take.thread} (it has {len(threads)} evolution "
                            f"thread(s))")
    picks = _select(session, take, threads[take.thread], where)
    codes = np.stack([session.blocks[b].codes[take.thread][i] for b, i, _ in picks])
    with torch.inference_mode():
        images = generator(torch.from_numpy(codes.astype(np.float64))).float().cpu()
    session_id = str(session.attrs.get("session_id", ""))
    origins, names = [], []
    for (b, i, score), code in zip(picks, codes):
        generation = session.blocks[b].index
        names.append(f"{path.stem}-t{take.thread}-g{generation}-i{i}")
        origins.append({"group": take.group, "session": str(path), "session_id": session_id,
                        "session_sha256": sha, "thread": take.thread, "generation": int(generation),
                        "index": int(i), "score": float(score), "code_sha256": code_sha256(code),
                        "selection": take.selection})
    return resize(images, size), names, origins


def _select(session: RecordedSession, take: SessionTake, channel: int, where: str) -> list[tuple[int, int, float]]:
    """(block position, index in the population, score) of each image taken, best first for ranked picks."""
    blocks = session.blocks
    if not blocks:
        raise ProtocolError(f"{where}: {session.path} has no complete block")
    if take.images:
        position = {b.index: p for p, b in enumerate(blocks)}
        picks = []
        for generation, index in take.images:
            if generation not in position:
                raise ProtocolError(f"{where}: {session.path} has no generation {generation} (it has "
                                    f"{blocks[0].index}..{blocks[-1].index})")
            scores = blocks[position[generation]].thread_scores(take.thread, channel)
            if index >= len(scores):
                raise ProtocolError(f"{where}: generation {generation} of {session.path} has {len(scores)} images "
                                    f"in thread {take.thread}; no index {index}")
            picks.append((position[generation], index, float(scores[index])))
        return picks
    candidates = blocks[-1:] if take.final_best else blocks
    wanted = take.final_best or take.top
    scored = [(p, i, float(s)) for p, b in zip(range(len(blocks) - len(candidates), len(blocks)), candidates)
              for i, s in enumerate(b.thread_scores(take.thread, channel)) if np.isfinite(s)]
    if len(scored) < wanted:
        what = "the final generation" if take.final_best else "the session"
        raise ProtocolError(f"{where}: asked for {wanted} images but {what} of {session.path} has only "
                            f"{len(scored)} validly scored in thread {take.thread}")
    # Highest score first; ties go to the earlier generation and index, so the choice is reproducible.
    return sorted(scored, key=lambda t: (-t[2], t[0], t[1]))[:wanted]
