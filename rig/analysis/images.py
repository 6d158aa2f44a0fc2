"""Images behind a session: prototypes regenerated from recorded codes, and natural image sets.

A session file stores codes, not images (DESIGN §2); images come back from the
codes plus the generator named in the file's provenance.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from protocols.generators.base import Generator
from rig.analysis.sources import session_thread
from rig.session import RecordedSession, read_session
from simulators.natural_images import load_foolbox_imagenet, load_image_folder

BUNDLED = "foolbox-imagenet"


def session_generator(session: RecordedSession, weights: str | None = None,
                      trust_generator: str | None = None) -> Generator:
    """Rebuild the session's generator as it ran (``weights`` overrides a GAN weight path).

    A ``kind = "module"`` generator runs only when ``trust_generator`` names its factory.
    """
    from rig.loop.rebuild import rebuild

    return rebuild(session).generator(trust_generator, weights)


def render(generator: Generator, codes: np.ndarray) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] for ``codes`` (N, code_dim)."""
    with torch.inference_mode():
        return generator(torch.from_numpy(np.asarray(codes, dtype=np.float64).reshape(len(codes), -1))).float().cpu()


def best_codes_per_generation(session: RecordedSession, thread: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each generation's best code of a thread, and its score."""
    t = session_thread(session, thread)
    codes, scores = [], []
    for block in session.blocks:
        s = block.thread_scores(t.thread, t.channel)
        i = int(np.nanargmax(s))
        codes.append(block.codes[t.thread][i])
        scores.append(s[i])
    return np.stack(codes), np.array(scores)


def load_natural_images(source: str | Path, size: int = 224, base: Path | None = None) -> tuple[torch.Tensor, list[str]]:
    """A natural image set: ``foolbox-imagenet``, a folder (ImageFolder layout or flat), or a screening session."""
    if str(source) == BUNDLED:
        images, ids, _ = load_foolbox_imagenet(size)
        return images, ids
    path = Path(source).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if path.suffix.lower() in (".h5", ".hdf5"):
        session = read_session(path)
        screening = session.provenance.get("screening")
        if screening is None:
            raise ValueError(f"{path}: not a screening session; give a folder of images or {BUNDLED!r}")
        images, ids = load_natural_images(screening["folder"], size)
        keep = [ids.index(i) for i in session.reference_ids if i in ids]
        return images[keep], [ids[i] for i in keep]
    return load_image_folder(path, size)
