"""Natural photos for reference images and sanity checks.

``load_image_folder`` reads a flat folder or an ImageFolder-style tree.
``foolbox_imagenet_dir`` finds the 20 labelled ImageNet validation photos that
the PyPI package ``foolbox`` ships (``imagenet_<i>_<label>.jpg``), without
importing foolbox.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "foolbox_imagenet_dir", "load_image_folder", "load_foolbox_imagenet"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FOOLBOX_IMAGENET_PATTERN = "imagenet_*"


def foolbox_imagenet_dir() -> Path:
    """The ``foolbox/data`` folder holding ``imagenet_<i>_<label>.jpg`` (and other sets).

    Filter with ``load_image_folder(path, size, pattern="imagenet_*")``.
    """
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the ImageNet sample photos come from PyPI foolbox: pip install foolbox")
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not any(path.glob(FOOLBOX_IMAGENET_PATTERN)):
        raise FileNotFoundError(f"no {FOOLBOX_IMAGENET_PATTERN} files in {path}; reinstall foolbox")
    return path


def _load_square(path: Path, size: int) -> torch.Tensor:
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    height, width = tensor.shape[1:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = tensor[:, top:top + side, left:left + side].unsqueeze(0)
    if side != size:
        square = F.interpolate(square, size=(size, size), mode="bilinear",
                               align_corners=False, antialias=True)
    return square[0].clamp_(0.0, 1.0)  # antialiased resize can overshoot slightly


def load_image_folder(
    path: str | Path, size: int, pattern: str = "*"
) -> tuple[torch.Tensor, list[str]]:
    """Load every image under ``path`` (recursively) matching ``pattern``, sorted by path.

    Each image is centre-cropped to a square and resized to ``size``. Returns
    ``(images, ids)``: a float tensor (N,3,size,size) in [0,1] and each file's
    path relative to ``path`` without its suffix (e.g. ``imagenet_00_243`` or
    ``cats/img1``).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = sorted(
        (f for f in root.rglob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda f: f.relative_to(root).as_posix(),
    )
    if not files:
        raise FileNotFoundError(
            f"no images matching {pattern!r} ({', '.join(IMAGE_SUFFIXES)}) under {root}"
        )
    images = torch.stack([_load_square(f, size) for f in files])
    ids = [f.relative_to(root).with_suffix("").as_posix() for f in files]
    return images, ids


def load_foolbox_imagenet(size: int) -> tuple[torch.Tensor, list[str], list[int]]:
    """The 20 foolbox ImageNet photos: ``(images, ids, labels)``; labels are ImageNet class indices."""
    images, ids = load_image_folder(foolbox_imagenet_dir(), size, pattern=FOOLBOX_IMAGENET_PATTERN)
    labels = [int(i.rsplit("_", 1)[1]) for i in ids]
    return images, ids, labels
