"""The shared pixel definition: what every consumer of generated images checks and does to them.

Generators emit RGB in [0, 1] at their own size. Before a model scores them,
images are checked, resized and normalised here, once, so the simulator, the
display and the session see the same pixels:

* :func:`check_image_batch`: (N, 3, H, W) floats in [0, 1] (of an expected
  shape, if given), clamped, or a clear error; the one check of "images in
  [0, 1]", used by the Generator base class for every generator's output;
* :func:`check_images`: the same for any images, as float32;
* :func:`resize`: bilinear with antialiasing (a downscale averages instead of
  aliasing), to a square; nothing is cropped;
* :func:`to_model_input`: resize to the model's input, normalise.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "check_image_batch",
    "check_images",
    "resize",
    "to_model_input",
]

# Generators sometimes emit tiny overshoots; anything further out is a units mistake
# (e.g. [-1, 1] or [0, 255] images).
_RANGE_TOLERANCE = 1e-3


def check_image_batch(images: Any, shape: tuple[int, ...] | None = None, who: str = "images") -> torch.Tensor:
    """``images`` clamped to [0, 1] if they are a (N, 3, H, W) float tensor within [0, 1] (to 1e-3).

    Args:
        images: What to check.
        shape: The exact shape expected, if known (a generator's output).
        who: How messages name the images ("images of generator 'fourier'").

    Raises:
        ValueError: wrong type, shape or dtype, or values outside [0, 1] (the range found is named).
    """
    is_tensor = isinstance(images, torch.Tensor)
    got = tuple(images.shape) if is_tensor else type(images).__name__
    if shape is not None and got != tuple(shape):
        raise ValueError(f"{who} must be a tensor of shape {tuple(shape)}, got {got}")
    if not is_tensor or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{who} must be a tensor (N,3,H,W), got {got}")
    if not images.is_floating_point():
        raise ValueError(f"{who} must be floats in [0,1], got dtype {images.dtype}")
    if images.numel() and images.device.type != "meta":  # a meta tensor has shapes but no values
        low, high = images.min().item(), images.max().item()
        if not torch.isfinite(images).all():  # NaN fails both comparisons below, so it is looked for first
            raise ValueError(f"{who} must be finite numbers in [0,1], got {int((~torch.isfinite(images)).sum())} "
                             f"NaN or infinite values")
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(f"{who} must be in [0,1], got values in [{low:.3g}, {high:.3g}] "
                             f"(a GAN ending in tanh needs (x + 1) / 2)")
    return images.clamp(0.0, 1.0)


def check_images(images: Any) -> torch.Tensor:
    """Return ``images`` as float32 if they are a (N, 3, H, W) float tensor in [0, 1].

    Raises:
        ValueError: wrong type, shape or dtype, or values outside [0, 1] (the range found is named).
    """
    return check_image_batch(images).float()


def _check_size(size: Any, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{name} must be an int >= 1 (pixels), got {size!r}")
    return size


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to ``size``×``size``, bilinear with antialiasing; a no-op at that size already."""
    size = _check_size(size)
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def to_model_input(images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Images in [0, 1] to a model's input: resize to ``size``, normalise by mean/std."""
    images = resize(check_images(images), size)
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t
