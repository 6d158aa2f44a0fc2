"""A weightless image space: low-frequency Fourier coefficients in a decorrelated colour space.

Why it exists: the DeePSiM GAN's weights cannot be shipped or downloaded here
(DESIGN §5), yet an evolution should run out of the box, in CI and on a fresh
lab machine. This space needs no weights, is exactly reproducible from its two
constructor arguments, and is smooth enough that CMA-ES makes visible progress
on a simulated neuron. It is the feature-visualisation parameterisation of
Olah et al. (Distill 2017, "Feature Visualization"; Lucid's ``fft_image``):

1. For each of three *decorrelated* colour channels, the code holds the real
   and imaginary parts of the 2-D Fourier coefficients up to ``max_frequency``
   cycles per image (plus a real DC term), scaled by 1/f so that, as in
   natural images, coarse structure dominates.
2. The inverse FFT gives three spatial maps at ``image_size``; the frequency
   content does not depend on ``image_size``, so the same code renders the
   same picture at any resolution.
3. A fixed 3×3 matrix mixes them into RGB (see :data:`COLOUR_SQRT_COVARIANCE`).
4. The maps become pixels in [0, 1]; the zero code is uniform mid-grey (0.5).
   ``pixels = "bounded"`` (the default) first divides the maps by their RMS
   over the image, so only their shape comes from the code, then applies a
   sigmoid at an RMS contrast that grows with the code's scale but never
   exceeds :data:`MAX_CONTRAST`. ``pixels = "sigmoid"`` applies the sigmoid to
   the maps as they are (the space before the bound): CMA-ES's mean grows over
   an evolution and the sigmoid clips, so after a few generations most pixels
   are white or black.

The gain is set so that codes drawn from N(0, 3²) (the labs' σ₀ = 3) give
images with varied structure that use much of [0, 1] without saturating.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from protocols.registry import Options, option

from .base import GENERATORS, Generator

__all__ = ["COLOUR_SQRT_COVARIANCE", "FourierImageSpace", "FourierOptions", "MAX_CONTRAST", "MAX_FREQUENCY",
           "MAX_IMAGE_SIZE", "PIXELS", "as_recorded", "spelled_out"]

#: Square root of the ImageNet RGB colour covariance, as used in Lucid
#: (``lucid/optvis/param/color.py``, ``color_correlation_svd_sqrt``): its
#: columns are the principal colour axes — luminance (0.26, 0.27, 0.27), then a
#: red–blue and a green–magenta opponent axis — each scaled by the square root
#: of its eigenvalue. Decorrelated channels of equal variance therefore give
#: RGB images with natural-image colour statistics: mostly luminance, little
#: saturated colour.
COLOUR_SQRT_COVARIANCE = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)

#: Standard deviation of the pre-sigmoid value of a pixel for codes ~ N(0, 1).
#: At σ₀ = 3 it is 1.5: ±2 SD spans sigmoid 0.05–0.95, so images use much of the
#: range while pixels within 0.02 of black or white stay rare (~1 %, checked on
#: 1000 random codes; the mean |pixel − 0.5| per image was 0.20–0.33).
_LOGIT_STD_PER_UNIT_CODE = 0.5


#: How maps become pixels: the bounded default, and the space as it was before the bound (older sessions).
PIXELS = ("bounded", "sigmoid")
#: What a recorded ``[generator]`` table without ``pixels`` ran with: it was written before the option existed.
_PIXELS_BEFORE_THE_OPTION = "sigmoid"

#: The most RMS contrast, in logits per RMS of the map, of a bounded image. A pixel lies within 0.02 of 0 or
#: 1 only where the sigmoid's argument reaches ±logit(0.98) = ±3.89, i.e. where the map is 3.89 / 0.85 = 4.6
#: times its RMS; by Markov's inequality on the squared map at most 1 / 4.6² = 4.8% of an image's values can
#: be that far out, whatever the code. (A smooth map comes nowhere near that bound.)
MAX_CONTRAST = 0.85


def _frequencies(max_frequency: int) -> list[tuple[int, int]]:
    """The (fy, fx) with one complex coefficient each: a half-plane, so no two are conjugates.

    Sorted by radial frequency, so the code runs from coarse to fine.
    """
    f = max_frequency
    half = [(fy, 0) for fy in range(1, f + 1)]
    half += [(fy, fx) for fx in range(1, f + 1) for fy in range(-f, f + 1)]
    return sorted(half, key=lambda p: (p[0] ** 2 + p[1] ** 2, p[1], p[0]))


#: Limits: max_frequency 64 is a 49,923-number code, and 1024-pixel images are 12 MB each (float32).
MAX_FREQUENCY = 64
MAX_IMAGE_SIZE = 1024


@dataclass(frozen=True)
class FourierOptions(Options):
    """``[generator] kind = "fourier"``."""

    #: Highest frequency, in cycles per image, along either axis.
    max_frequency: int = option(8, low=1, high=MAX_FREQUENCY)
    #: Side of the square output, in pixels; must exceed 2·max_frequency.
    image_size: int = option(128, low=1, high=MAX_IMAGE_SIZE)
    #: "bounded": RMS-normalised maps at a bounded contrast (at most 4.8% of values can saturate);
    #: "sigmoid": the space before the bound, which saturates as an evolution goes on.
    pixels: str = option("bounded", choices=PIXELS)

    def check(self) -> None:
        if self.image_size <= 2 * self.max_frequency:
            # Above the Nyquist limit the frequencies would alias.
            self.invalid("image_size", f"> 2 * max_frequency = {2 * self.max_frequency}")


@GENERATORS.register("fourier", FourierOptions)
class FourierImageSpace(Generator):
    """Weightless image space: 1/f-scaled low-frequency Fourier codes → RGB images in [0, 1].

    Code layout, per colour channel c in 0..2 (channel-major):
    ``[dc, re_1 … re_K, im_1 … im_K]`` with K = 2·F² + 2·F coefficients for
    ``max_frequency`` F, ordered coarse to fine; ``code_dim = 3·(1 + 2K)``
    (867 for F = 8).

    Args:
        **options: :class:`FourierOptions` (``max_frequency``, ``image_size``, ``pixels``).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.configure(options)
        max_frequency, image_size = self.options.max_frequency, self.options.image_size
        self.max_frequency = max_frequency
        self.image_size = image_size
        self.pixels = self.options.pixels
        freqs = _frequencies(max_frequency)
        self.n_coefficients = len(freqs)
        self.code_dim = 3 * (1 + 2 * self.n_coefficients)

        radius = torch.tensor([math.hypot(fy, fx) for fy, fx in freqs], dtype=torch.float64)
        # 1/f amplitude; the DC term counts as f = 1, like the coarsest waves.
        amplitude = torch.cat([torch.ones(1, dtype=torch.float64), 1.0 / radius])
        colour = torch.tensor(COLOUR_SQRT_COVARIANCE, dtype=torch.float64)
        colour = colour / colour.norm(dim=0).max()  # luminance axis has unit norm, as in Lucid
        # Each complex coefficient c contributes Re(c·e^{iθ}) to its channel, with
        # variance var(re) = var(im) for iid code entries; so a pixel's channel
        # variance per unit code variance is Σ amplitude², and the RGB variance
        # is that times the squared row norm of the colour matrix.
        rgb_std = amplitude.pow(2).sum().sqrt() * colour.norm(dim=1).mean()
        gain = _LOGIT_STD_PER_UNIT_CODE / rgb_std

        # Buffers, not parameters: nothing here is learned. Non-persistent: the
        # state dict stays empty, as everything follows from the two arguments.
        # `amplitude` is registered first because Generator.forward takes the
        # dtype of the first buffer for the codes, and the index buffers are int64.
        self.register_buffer("amplitude", (amplitude * gain).float(), persistent=False)
        self.register_buffer("colour", colour.float(), persistent=False)
        self.register_buffer(
            "freq_y", torch.tensor([fy % image_size for fy, _ in freqs]), persistent=False
        )
        self.register_buffer("freq_x", torch.tensor([fx for _, fx in freqs]), persistent=False)

    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        """Render codes (N, code_dim) as images (N, 3, image_size, image_size) in [0, 1]."""
        n, k, size = codes.shape[0], self.n_coefficients, self.image_size
        per_channel = codes.view(n, 3, 1 + 2 * k)
        dc = per_channel[:, :, 0] * self.amplitude[0]
        coeffs = torch.complex(per_channel[:, :, 1 : 1 + k], per_channel[:, :, 1 + k :]) * self.amplitude[1:]
        spectrum = torch.zeros(n, 3, size, size, dtype=coeffs.dtype, device=codes.device)
        spectrum[:, :, self.freq_y, self.freq_x] = coeffs
        spectrum[:, :, 0, 0] = dc.to(coeffs.dtype)
        # norm="forward": no 1/N on the inverse, so a coefficient's effect does
        # not depend on image_size. Taking the real part of a half-plane
        # spectrum gives each coefficient the contribution Re(c·e^{iθ}).
        channels = torch.fft.ifft2(spectrum, norm="forward").real
        rgb = torch.einsum("ij,njhw->nihw", self.colour, channels)
        if self.pixels == "sigmoid":
            return torch.sigmoid(rgb)
        return torch.sigmoid(_bounded_contrast(rgb))


def _bounded_contrast(rgb: torch.Tensor) -> torch.Tensor:
    """Each image's maps scaled to an RMS of ``MAX_CONTRAST · tanh(rms / MAX_CONTRAST)``.

    Equal to ``rgb`` to first order for small codes (so the start of an evolution looks as it did), and
    never above ``MAX_CONTRAST`` however large the code grows.
    """
    rms = rgb.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    # tanh(r / c) / (r / c) -> 1 as r -> 0: the zero code stays exactly mid-grey, with no 0 / 0.
    ratio = rms / MAX_CONTRAST
    gain = torch.where(ratio > 0, torch.tanh(ratio) / ratio.clamp_min(torch.finfo(rgb.dtype).tiny), 1.0)
    return rgb * gain


def spelled_out(table: Mapping[str, Any]) -> dict[str, Any]:
    """A ``[generator]`` table to record for a new session: a Fourier space's ``pixels`` written out.

    A recorded table then rebuilds the same space whatever later default ``pixels`` gets.
    """
    table = dict(table)
    if table.get("kind") == "fourier":
        table.setdefault("pixels", FourierOptions.pixels)
    return table


def as_recorded(table: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded ``[generator]`` table as it ran: one without ``pixels`` predates the option (sigmoid)."""
    table = dict(table)
    if table.get("kind") == "fourier":
        table.setdefault("pixels", _PIXELS_BEFORE_THE_OPTION)
    return table
