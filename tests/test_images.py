"""The shared pixel definition: checks, resize, model input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from protocols.images import check_image_batch, check_images, resize, to_model_input
from simulators.models import get_cfg
from simulators.neuron import preprocess_for


def rand(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.zeros(2, 1, 8, 8), r"tensor \(N,3,H,W\), got \(2, 1, 8, 8\)"),
        ([1, 2], r"got list"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "dtype torch.uint8"),
        (torch.full((1, 3, 4, 4), 255.0), r"\[0,1\], got values in \[255, 255\]"),
        (torch.full((1, 3, 4, 4), -1.0), r"values in \[-1, -1\]"),
    ],
)
def test_check_images_rejects_bad_input(images, match):
    with pytest.raises(ValueError, match=match):
        check_images(images)


def test_check_images_accepts_tiny_overshoot_and_returns_float32():
    out = check_images(torch.full((1, 3, 2, 2), 1.0005, dtype=torch.float64))
    assert out.dtype == torch.float32


def test_resize_is_antialiased_bilinear_and_noop_at_size():
    images = rand()
    assert resize(images, 32) is images
    # A fine checkerboard averages to grey when downscaled with antialiasing.
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float().expand(1, 3, 64, 64)
    small = resize(checker, 8)
    assert small.shape == (1, 3, 8, 8) and torch.allclose(small, torch.full_like(small, 0.5), atol=0.02)
    assert torch.allclose(resize(images, 64), F.interpolate(images, size=(64, 64), mode="bilinear",
                                                            align_corners=False, antialias=True))
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        resize(images, 0)


def test_check_image_batch_checks_the_expected_shape_and_clamps_a_tiny_overshoot():
    images = torch.full((2, 3, 4, 4), 1.0005)
    out = check_image_batch(images, (2, 3, 4, 4), "images of generator 'g'")
    assert out.dtype == images.dtype and out.max() == 1.0
    with pytest.raises(ValueError, match=r"images of generator 'g' must be a tensor of shape \(2, 3, 8, 8\), got \(2, 3, 4, 4\)"):
        check_image_batch(images, (2, 3, 8, 8), "images of generator 'g'")


def test_simulator_preprocessing_is_the_shared_definition():
    cfg = get_cfg("efficientnet_lite0")
    images = rand(size=128)
    x = preprocess_for(cfg, images)
    assert torch.equal(x, to_model_input(images, cfg.input_size, cfg.mean, cfg.std))
    manual = (resize(images, 224) - 0.5) / 0.5  # lite0: mean = std = 0.5
    assert torch.allclose(x, manual, atol=1e-6)
    with pytest.raises(ValueError, match=r"images must be in \[0,1\]"):
        preprocess_for(cfg, images * 2 - 1)


def test_nan_or_infinite_pixels_are_refused_by_the_one_image_check():
    import torch

    from protocols.images import check_image_batch

    images = torch.full((2, 3, 4, 4), 0.5)
    images[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        check_image_batch(images, who="images")
    images[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        check_image_batch(images, who="images")
