"""The Fourier space's bounded pixels (the default) and the sigmoid space older sessions rebuild as."""
from __future__ import annotations

import pytest
import torch

from protocols.generators.fourier import MAX_CONTRAST, FourierImageSpace, as_recorded, spelled_out


def _saturated(images: torch.Tensor) -> torch.Tensor:
    """Share of each image's values within 0.02 of 0 or 1."""
    return ((images <= 0.02) | (images >= 0.98)).float().mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def spaces() -> tuple[FourierImageSpace, FourierImageSpace]:
    return FourierImageSpace(image_size=64), FourierImageSpace(image_size=64, pixels="sigmoid")


def test_bounded_is_the_default_and_does_not_saturate_as_codes_grow(spaces):
    bounded, sigmoid = spaces
    assert bounded.pixels == "bounded"
    # CMA-ES's mean grows over an evolution: codes 10 to 30 times sigma0's scale saturate the sigmoid space.
    codes = 30 * 3.0 * torch.randn(16, bounded.code_dim, generator=torch.Generator().manual_seed(0))
    assert _saturated(sigmoid(codes)).min() > 0.5
    images = bounded(codes)
    assert _saturated(images).max() <= 0.05
    logits = torch.logit(images.double())
    rms = logits.pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert torch.all(rms <= MAX_CONTRAST + 1e-6) and torch.all(rms > 0.99 * MAX_CONTRAST)  # at the bound
    # Only the code's scale is bounded: its shape still changes the image.
    assert (images[0] - images[1]).abs().mean() > 0.05


def test_bounded_equals_sigmoid_for_small_codes_and_is_exactly_reproducible(spaces):
    bounded, sigmoid = spaces
    assert torch.all(bounded(torch.zeros(1, bounded.code_dim)) == 0.5)
    small = 0.05 * torch.randn(4, bounded.code_dim, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(bounded(small), sigmoid(small), atol=1e-4)  # first order: the start looks as before
    codes = 3.0 * torch.randn(4, bounded.code_dim, generator=torch.Generator().manual_seed(2))
    assert torch.equal(bounded(codes), FourierImageSpace(image_size=64, pixels="bounded")(codes))


def test_a_generator_table_is_recorded_spelled_out_and_read_back_as_it_ran():
    assert spelled_out({"kind": "fourier"}) == {"kind": "fourier", "pixels": "bounded"}
    assert as_recorded({"kind": "fourier"}) == {"kind": "fourier", "pixels": "sigmoid"}  # before the option
    assert as_recorded({"kind": "fourier", "pixels": "bounded"})["pixels"] == "bounded"
    assert spelled_out({"kind": "deepsim-fc6"}) == as_recorded({"kind": "deepsim-fc6"}) == {"kind": "deepsim-fc6"}

# A session recording the space spelled out, and an older one rebuilding its sigmoid space: test_precision.py
# (one session run for both).
