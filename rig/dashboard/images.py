"""The page's images: a thread's best image and the latest block's images, regenerated from their codes.

A session stores codes, not images (DESIGN §2), so the viewer rebuilds the
session's generator (:func:`rig.analysis.images.session_generator`) and renders
what the page asks for, once: PNGs are kept by (block, thread, code).
"""
from __future__ import annotations

import io
import threading

import numpy as np
import torch
from PIL import Image

from protocols.generators.base import Generator
from rig.analysis.images import render, session_generator
from rig.session import RecordedSession

__all__ = ["ImageRenderer"]

#: PNGs kept in memory; a page shows a few dozen at a time.
CACHE_SIZE = 512


def png_bytes(image: torch.Tensor) -> bytes:
    """One (3, H, W) image in [0, 1] as PNG bytes."""
    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


class ImageRenderer:
    """Renders codes of a session's blocks through its generator, with a cache; one render at a time."""

    def __init__(self, session: RecordedSession, trust_generator: str | None = None) -> None:
        self._generator: Generator = session_generator(session, trust_generator=trust_generator)
        self._cache: dict[tuple[int, int, int], bytes] = {}
        self._lock = threading.Lock()

    def png(self, session: RecordedSession, block: int, thread: int, code: int) -> bytes:
        """Code ``code`` of thread ``thread`` in block ``block`` as a PNG; KeyError naming what is not there.

        The page asks for a block's images together, so a thread's whole generation is rendered in one pass.
        """
        with self._lock:
            if (block, thread, code) not in self._cache:
                found = [b for b in session.blocks if b.index == block]
                if not found:
                    raise KeyError(f"block {block} is not recorded (blocks 0..{len(session.blocks) - 1} are)")
                codes = found[0].codes
                if not (0 <= thread < codes.shape[0] and 0 <= code < codes.shape[1]):
                    raise KeyError(f"block {block} has threads 0..{codes.shape[0] - 1} and codes "
                                   f"0..{codes.shape[1] - 1}; asked for thread {thread}, code {code}")
                while self._cache and len(self._cache) + codes.shape[1] > CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
                for i, image in enumerate(render(self._generator, codes[thread])):
                    self._cache[(block, thread, i)] = png_bytes(image)
            return self._cache[(block, thread, code)]
