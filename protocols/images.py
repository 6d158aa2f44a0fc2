"""The shared pixel definition: what every consumer of generated images does to them.

Generators emit RGB in [0, 1] at their own size. Before a model scores them or
a display shows them, images may be cropped, resized, blurred and limited in
contrast. All of that happens here, once, so the simulator, the display and
the session see the same pixels:

* :func:`check_images`: (N, 3, H, W) floats in [0, 1], or a clear error;
* :func:`center_crop`, :func:`resize`, :func:`gaussian_blur`, :func:`limit_contrast`;
* :class:`PixelPipeline`: those steps in a fixed order (crop, resize, blur,
  contrast), built from a protocol table with every field checked;
* :func:`to_model_input`: pipeline, resize to the model's input, normalise;
* :func:`stimulus_pixels`: the on-screen size in pixels of a stimulus given in
  degrees of visual angle, for resizing to what the display will show.

Resizing is bilinear with antialiasing (a downscale averages instead of
aliasing), to a square, and nothing is cropped unless asked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "PixelPipeline",
    "center_crop",
    "check_images",
    "gaussian_blur",
    "limit_contrast",
    "resize",
    "stimulus_pixels",
    "to_model_input",
]

# Generators sometimes emit tiny overshoots; anything further out is a units mistake
# (e.g. [-1, 1] or [0, 255] images).
_RANGE_TOLERANCE = 1e-3


def check_images(images: Any) -> torch.Tensor:
    """Return ``images`` as float32 if they are a (N, 3, H, W) float tensor in [0, 1].

    Raises:
        ValueError: wrong type, shape or dtype, or values outside [0, 1] (the range found is named).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N,3,H,W), got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floats in [0,1], got dtype {images.dtype}")
    if images.numel():
        low, high = images.min().item(), images.max().item()
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(f"images must be in [0,1], got values in [{low:.3g}, {high:.3g}]")
    return images.float()


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


def center_crop(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """Keep the central ``fraction`` of each side (1.0 keeps everything)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"crop fraction must be a number in (0, 1], got {fraction!r}")
    h, w = images.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return images[..., top : top + ch, left : left + cw]


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur with a Gaussian of ``sigma`` pixels (separable, reflected edges); 0 is a no-op."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"blur sigma must be a finite number >= 0 (pixels), got {sigma!r}")
    if sigma == 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)  # reflect padding needs pad < size
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def limit_contrast(images: torch.Tensor, contrast: float = 1.0, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Scale deviations from mid-grey (0.5) by ``contrast``, then clip to [``low``, ``high``].

    ``contrast`` < 1 lowers contrast; ``low``/``high`` limit the luminance range
    (e.g. to keep a monitor within its calibrated range).
    """
    for name, value in (("contrast", contrast), ("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 0 < contrast <= 1:
        raise ValueError(f"contrast must be in (0, 1], got {contrast}")
    if not 0 <= low < high <= 1:
        raise ValueError(f"luminance limits must satisfy 0 <= low < high <= 1, got low = {low}, high = {high}")
    if contrast != 1:
        images = 0.5 + contrast * (images - 0.5)
    if (low, high) != (0.0, 1.0):
        images = images.clamp(low, high)
    return images


def stimulus_pixels(size_deg: float, distance_cm: float, screen_width_cm: float, screen_width_px: int) -> int:
    """Pixels spanned on screen by a stimulus ``size_deg`` degrees wide, centred on the line of sight."""
    for name, value in (("size_deg", size_deg), ("distance_cm", distance_cm), ("screen_width_cm", screen_width_cm)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not size_deg < 180:
        raise ValueError(f"size_deg must be < 180, got {size_deg}")
    _check_size(screen_width_px, "screen_width_px")
    width_cm = 2 * distance_cm * math.tan(math.radians(size_deg) / 2)
    return max(1, round(width_cm * screen_width_px / screen_width_cm))


@dataclass(frozen=True)
class PixelPipeline:
    """Crop, resize, blur and contrast steps, applied in that order.

    Attributes:
        size: Output side in pixels; ``None`` keeps the size.
        crop: Central fraction of each side kept before resizing (1.0: none).
        blur_sigma: Gaussian blur in output pixels (0: none).
        contrast: Scale of deviations from mid-grey, in (0, 1].
        low, high: Luminance limits, 0 <= low < high <= 1.
    """

    size: int | None = None
    crop: float = 1.0
    blur_sigma: float = 0.0
    contrast: float = 1.0
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.size is not None:
            _check_size(self.size)
        probe = torch.full((1, 3, 4, 4), 0.5)
        center_crop(probe, self.crop)
        gaussian_blur(probe, self.blur_sigma)
        limit_contrast(probe, self.contrast, self.low, self.high)

    @classmethod
    def from_dict(cls, table: dict[str, Any], where: str = "[images]") -> PixelPipeline:
        """Build from a protocol table; unknown or invalid fields raise ValueError naming ``where``."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(table) - set(valid))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; valid fields: {valid}")
        try:
            return cls(**table)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @property
    def is_identity(self) -> bool:
        """True when the pipeline leaves every image unchanged."""
        return self == PixelPipeline()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the steps to checked images; the result stays in [0, 1]."""
        images = check_images(images)
        if self.crop != 1.0:
            images = center_crop(images, self.crop)
        if self.size is not None:
            images = resize(images, self.size)
        images = gaussian_blur(images, self.blur_sigma)
        return limit_contrast(images, self.contrast, self.low, self.high).clamp(0.0, 1.0)


def to_model_input(images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float],
                   pipeline: PixelPipeline | None = None) -> torch.Tensor:
    """Images in [0, 1] to a model's input: optional pipeline, resize to ``size``, normalise by mean/std."""
    images = check_images(images)
    if pipeline is not None and not pipeline.is_identity:
        images = pipeline(images)
    images = resize(images, size)
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t
