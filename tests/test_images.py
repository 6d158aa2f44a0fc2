"""The shared pixel definition: checks, crop, resize, blur, contrast, pipeline, model input."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from protocols.images import (
    PixelPipeline,
    center_crop,
    check_images,
    gaussian_blur,
    limit_contrast,
    resize,
    stimulus_pixels,
    to_model_input,
)
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


def test_center_crop_keeps_the_middle():
    images = torch.arange(100.0).view(1, 1, 10, 10).expand(1, 3, 10, 10)
    out = center_crop(images, 0.5)
    assert out.shape == (1, 3, 5, 5)
    assert out[0, 0, 0, 0].item() == 22 and out[0, 0, -1, -1].item() == 66  # rows/cols 2..6
    assert center_crop(images, 1.0).shape == images.shape
    with pytest.raises(ValueError, match=r"crop fraction must be a number in \(0, 1\]"):
        center_crop(images, 1.5)


def test_gaussian_blur_preserves_mean_smooths_and_is_noop_at_zero():
    images = rand(size=48)
    assert gaussian_blur(images, 0) is images
    blurred = gaussian_blur(images, 2.0)
    assert blurred.shape == images.shape
    assert torch.allclose(blurred.mean(), images.mean(), atol=0.01)
    assert blurred.std() < 0.5 * images.std()
    # An impulse spreads with the requested width: second moment ≈ σ² along each axis.
    impulse = torch.zeros(1, 3, 41, 41)
    impulse[..., 20, 20] = 1.0
    spread = gaussian_blur(impulse, 2.0)[0, 0]
    x = torch.arange(41.0) - 20
    assert math.isclose(float((spread.sum(0) * x**2).sum()), 4.0, rel_tol=0.05)
    with pytest.raises(ValueError, match="blur sigma"):
        gaussian_blur(images, -1.0)


def test_limit_contrast_scales_around_grey_and_clips():
    images = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    half = limit_contrast(images, contrast=0.5)
    assert half[0, 0, 0].tolist() == [0.25, 0.375, 0.5, 0.75]
    clipped = limit_contrast(images, low=0.2, high=0.9)
    assert clipped[0, 0, 0].tolist() == pytest.approx([0.2, 0.25, 0.5, 0.9])
    with pytest.raises(ValueError, match="contrast must be in"):
        limit_contrast(images, contrast=0)
    with pytest.raises(ValueError, match="low < high"):
        limit_contrast(images, low=0.6, high=0.4)


def test_stimulus_pixels_from_visual_angle():
    # 2·57.3·tan(0.5°) ≈ 1 cm at 57.3 cm; 40 px/cm.
    assert stimulus_pixels(1.0, 57.3, 50.0, 2000) == 40
    assert stimulus_pixels(8.0, 57.3, 50.0, 2000) == round(2 * 57.3 * math.tan(math.radians(4)) * 40)
    with pytest.raises(ValueError, match="distance_cm"):
        stimulus_pixels(1.0, 0, 50.0, 2000)


def test_pipeline_order_and_protocol_table():
    images = rand(size=64)
    pipe = PixelPipeline.from_dict({"size": 16, "crop": 0.5, "blur_sigma": 1.0, "contrast": 0.8})
    expected = limit_contrast(gaussian_blur(resize(center_crop(images, 0.5), 16), 1.0), 0.8)
    assert torch.allclose(pipe(images), expected)
    assert PixelPipeline().is_identity and not pipe.is_identity
    assert torch.equal(PixelPipeline()(images), images)
    with pytest.raises(ValueError, match=r"\[images\]: unknown field\(s\) \['blur'\]; valid fields: \['size'"):
        PixelPipeline.from_dict({"blur": 2})
    with pytest.raises(ValueError, match=r"\[images\]: contrast must be in"):
        PixelPipeline.from_dict({"contrast": 2.0})
    with pytest.raises(ValueError, match="size must be an int"):
        PixelPipeline(size=12.5)


def test_simulator_preprocessing_is_the_shared_definition():
    cfg = get_cfg("efficientnet_lite0")
    images = rand(size=128)
    x = preprocess_for(cfg, images)
    assert torch.equal(x, to_model_input(images, cfg.input_size, cfg.mean, cfg.std))
    manual = (resize(images, 224) - 0.5) / 0.5  # lite0: mean = std = 0.5
    assert torch.allclose(x, manual, atol=1e-6)
    blurred = to_model_input(images, 224, cfg.mean, cfg.std, PixelPipeline(blur_sigma=2.0))
    assert blurred.shape == x.shape and blurred.std() < x.std()
    with pytest.raises(ValueError, match=r"images must be in \[0,1\]"):
        preprocess_for(cfg, images * 2 - 1)
