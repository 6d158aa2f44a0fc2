"""Generators: the DeePSiM family (fc6, fc7, fc8, pool5) and weight loading in both key formats,
the Fourier image space, user generators by factory, the registry."""
from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from protocols.generators import (
    GENERATOR_KINDS,
    DeePSiMFc6,
    FourierImageSpace,
    build_generator,
    load_deepsim_fc6,
)

# ---------------------------------------------------------------- DeePSiM fc6

LAYER_NAMES = [
    "defc7", "relu_defc7", "defc6", "relu_defc6", "defc5", "relu_defc5", "reshape",
    "deconv5", "relu_deconv5", "conv5_1", "relu_conv5_1",
    "deconv4", "relu_deconv4", "conv4_1", "relu_conv4_1",
    "deconv3", "relu_deconv3", "conv3_1", "relu_conv3_1",
    "deconv2", "relu_deconv2", "deconv1", "relu_deconv1", "deconv0",
]  # fmt: skip

# DESIGN §5: name, in, out, kernel, stride, padding
DECONV_TABLE = [
    ("deconv5", 256, 256, 4, 2, 1),
    ("conv5_1", 256, 512, 3, 1, 1),
    ("deconv4", 512, 256, 4, 2, 1),
    ("conv4_1", 256, 256, 3, 1, 1),
    ("deconv3", 256, 128, 4, 2, 1),
    ("conv3_1", 128, 128, 3, 1, 1),
    ("deconv2", 128, 64, 4, 2, 1),
    ("deconv1", 64, 32, 4, 2, 1),
    ("deconv0", 32, 3, 4, 2, 1),
]

XDREAM_NAMES = {
    "defc7": "fc7", "defc6": "fc6", "defc5": "fc5",
    "deconv5": "tconv5_0", "conv5_1": "tconv5_1", "deconv4": "tconv4_0", "conv4_1": "tconv4_1",
    "deconv3": "tconv3_0", "conv3_1": "tconv3_1", "deconv2": "tconv2", "deconv1": "tconv1", "deconv0": "tconv0",
}  # fmt: skip


def meta_fc6() -> DeePSiMFc6:
    with torch.device("meta"):
        return DeePSiMFc6()


def test_fc6_layer_names_in_order():
    assert [name for name, _ in meta_fc6().G.named_children()] == LAYER_NAMES


def test_fc6_layer_shapes_and_activations():
    G = meta_fc6().G
    for name in ("defc7", "defc6", "defc5"):
        layer = getattr(G, name)
        assert isinstance(layer, nn.Linear)
        assert (layer.in_features, layer.out_features) == (4096, 4096)
        assert layer.bias is not None
    assert isinstance(G.reshape, nn.Unflatten) and tuple(G.reshape.unflattened_size) == (256, 4, 4)
    for name, cin, cout, k, s, p in DECONV_TABLE:
        layer = getattr(G, name)
        assert type(layer) is nn.ConvTranspose2d, name
        assert (layer.in_channels, layer.out_channels) == (cin, cout), name
        assert (layer.kernel_size, layer.stride, layer.padding) == ((k, k), (s, s), (p, p)), name
        assert layer.bias is not None and layer.bias.shape == (cout,), name
    for name in LAYER_NAMES:
        if name.startswith("relu_"):
            act = getattr(G, name)
            assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.3, name
    assert LAYER_NAMES[-1] == "deconv0"  # no activation after the last layer
    assert (DeePSiMFc6.code_dim, DeePSiMFc6.image_size) == (4096, 256)


def test_fc6_parameter_count():
    n = sum(p.numel() for p in meta_fc6().parameters())
    assert abs(n - 56.1e6) <= 0.05e6, n


def test_fc6_random_weights_output_shape_and_range():
    torch.manual_seed(0)
    model = DeePSiMFc6()
    with torch.no_grad():
        images = model(torch.randn(2, 4096))
    assert images.shape == (2, 3, 256, 256)
    assert images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0  # not a constant image


class _FixedBGR(nn.Module):
    """Stands in for G: a known raw output, to check the output conversion alone."""

    def forward(self, codes):
        bgr = torch.empty(codes.shape[0], 3, 256, 256)
        bgr[:, 0] = 50.0  # B: 104 + 50 = 154
        bgr[:, 1] = -200.0  # G: 117 - 200 < 0 -> clamped to 0
        bgr[:, 2] = 200.0  # R: 123 + 200 > 255 -> clamped to 255
        bgr[:, 0, 0, 0] = -4.0  # B: 100
        return bgr


def test_fc6_output_conversion_swaps_to_rgb_adds_mean_and_clamps():
    model = meta_fc6()
    model.G = _FixedBGR()
    images = model(torch.zeros(1, 4096))
    assert torch.all(images[:, 0] == 1.0)  # R
    assert torch.all(images[:, 1] == 0.0)  # G
    assert images[0, 2, 0, 0].item() == pytest.approx(100 / 255)
    assert images[0, 2, 5, 5].item() == pytest.approx(154 / 255)


def test_fc6_rejects_wrong_code_shape():
    with pytest.raises(ValueError, match="4096"):
        meta_fc6()(torch.zeros(2, 100))


# ------------------------------------------------------------ weight loading


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Random weights of the right shapes, saved in the three public layouts (shared: 224 MB each)."""
    folder = tmp_path_factory.mktemp("deepsim_weights")
    shapes = {k: v.shape for k, v in meta_fc6().G.state_dict().items()}
    gen = torch.Generator().manual_seed(1234)
    reference = {k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}
    paths = {
        "common": folder / "upconvGAN_fc6.pt",
        "common-G-prefix": folder / "upconvGAN_fc6_prefixed.pt",
        "xdream": folder / "deepsim_xdream.pth",
    }
    torch.save(reference, paths["common"])
    torch.save({f"G.{k}": v for k, v in reference.items()}, paths["common-G-prefix"])
    xdream = {}
    for ours, theirs in XDREAM_NAMES.items():
        xdream[f"{theirs}.weight"] = reference[f"{ours}.weight"]
        if ours.startswith("defc"):
            xdream[f"{theirs}.bias"] = reference[f"{ours}.bias"]
    torch.save(xdream, paths["xdream"])
    yield paths, reference
    for path in paths.values():  # 672 MB: don't leave them in pytest's kept temp dirs
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("layout", ["common", "common-G-prefix", "xdream"])
def test_load_deepsim_fc6_both_key_formats(weight_files, layout):
    paths, reference = weight_files
    model = load_deepsim_fc6(paths[layout])
    assert isinstance(model, DeePSiMFc6)
    loaded = model.G.state_dict()
    assert set(loaded) == set(reference)
    for key, expected in reference.items():
        got = loaded[key]
        assert got.device.type == "cpu" and got.dtype == torch.float32, key
        if layout == "xdream" and key.endswith(".bias") and not key.startswith("defc"):
            assert torch.count_nonzero(got) == 0, key  # XDream has no deconv biases
        else:
            assert torch.equal(got, expected), key
    del model, loaded
    gc.collect()


def _tiny_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Tensors of the given shapes that take (almost) no disk: zero-stride views of one number."""
    return {k: torch.zeros(1).expand(*shape) for k, shape in shapes.items()}


def _common_shapes(prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {prefix + k: tuple(v.shape) for k, v in meta_fc6().G.state_dict().items()}


def test_load_unwraps_state_dict_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": _tiny_state(_common_shapes("module.G.")), "epoch": 3}, path)
    model = load_deepsim_fc6(path)
    assert tuple(model.G.defc7.weight.shape) == (4096, 4096)
    assert model.G.deconv0.weight.device.type == "cpu"


def test_load_missing_file_says_where_weights_come_from(tmp_path):
    path = tmp_path / "nowhere" / "upconvGAN_fc6.pt"
    with pytest.raises(FileNotFoundError) as err:
        load_deepsim_fc6(path)
    message = str(err.value)
    assert str(path) in message
    assert "not downloadable from here" in message
    assert "upconvGAN_fc6.pt" in message and "XDream" in message
    assert "[generator] weights" in message


def test_load_wrong_shape_names_key_and_shapes(tmp_path):
    shapes = _common_shapes("G.")
    shapes["G.conv4_1.weight"] = (256, 128, 3, 3)
    path = tmp_path / "bad_shape.pt"
    torch.save(_tiny_state(shapes), path)
    with pytest.raises(ValueError) as err:
        load_deepsim_fc6(path)
    message = str(err.value)
    assert str(path) in message
    assert "G.conv4_1.weight" in message and "(256, 128, 3, 3)" in message and "(256, 256, 3, 3)" in message


def test_load_missing_and_unexpected_keys_are_named(tmp_path):
    shapes = _common_shapes()
    del shapes["deconv3.bias"]
    shapes["deconv9.weight"] = (1,)
    path = tmp_path / "bad_keys.pt"
    torch.save(_tiny_state(shapes), path)
    with pytest.raises(ValueError) as err:
        load_deepsim_fc6(path)
    message = str(err.value)
    assert str(path) in message and "common port" in message
    assert "missing keys 'deconv3.bias'" in message
    assert "unexpected keys 'deconv9.weight'" in message


def test_load_xdream_with_deconv_bias_is_rejected(tmp_path):
    shapes = {}
    for ours, theirs in XDREAM_NAMES.items():
        for kind, shape in _common_shapes().items():
            if kind.startswith(ours + "."):
                shapes[theirs + kind[len(ours):]] = shape
    path = tmp_path / "xdream_with_bias.pth"
    torch.save(_tiny_state(shapes), path)
    with pytest.raises(ValueError, match=r"XDream port.*unexpected keys 'tconv0\.bias'"):
        load_deepsim_fc6(path)


def test_load_unknown_format_lists_keys_and_formats(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2), "encoder.bias": torch.zeros(2)}, path)
    with pytest.raises(ValueError) as err:
        load_deepsim_fc6(path)
    message = str(err.value)
    assert str(path) in message and "encoder.weight" in message
    assert "common port" in message and "XDream port" in message


def test_load_non_state_dict_is_rejected(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(ValueError, match="state dict"):
        load_deepsim_fc6(path)


# ------------------------------------------------------ Fourier image space


@pytest.fixture(scope="module")
def fourier() -> FourierImageSpace:
    return FourierImageSpace()


def test_fourier_shape_and_code_dim(fourier):
    assert (fourier.max_frequency, fourier.image_size) == (8, 128)
    assert fourier.code_dim == 3 * (1 + 2 * (2 * 8**2 + 2 * 8)) == 867
    assert FourierImageSpace(max_frequency=2, image_size=32).code_dim == 75
    assert fourier(torch.zeros(3, fourier.code_dim)).shape == (3, 3, 128, 128)


def test_fourier_is_weightless(fourier):
    assert list(fourier.parameters()) == []
    assert fourier.state_dict() == {}


def test_fourier_zero_code_is_mid_grey(fourier):
    images = fourier(torch.zeros(2, fourier.code_dim))
    assert torch.all(images == 0.5)


def test_fourier_range_for_extreme_codes(fourier):
    images = fourier(100 * torch.randn(4, fourier.code_dim, generator=torch.Generator().manual_seed(0)))
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_fourier_sigma0_codes_give_varied_unsaturated_structure(fourier):
    codes = 3.0 * torch.randn(64, fourier.code_dim, generator=torch.Generator().manual_seed(1))
    images = fourier(codes)
    deviation = (images - 0.5).abs().mean(dim=(1, 2, 3))
    assert torch.all(deviation > 0.1) and torch.all(deviation < 0.35), deviation
    saturated = ((images < 0.02) | (images > 0.98)).float().mean(dim=(1, 2, 3))
    assert torch.all(saturated < 0.5), saturated
    # Structure within each image, not a flat colour.
    assert torch.all(images.std(dim=(2, 3)).mean(dim=1) > 0.1)


def test_fourier_different_codes_give_different_images(fourier):
    codes = 3.0 * torch.randn(2, fourier.code_dim, generator=torch.Generator().manual_seed(2))
    a, b = fourier(codes)
    assert (a - b).abs().mean() > 0.1
    # Every code dimension matters: each one alone changes the image.
    small = FourierImageSpace(image_size=32)
    single = small(torch.eye(small.code_dim))
    assert torch.all((single - 0.5).abs().amax(dim=(1, 2, 3)) > 1e-4)


def test_fourier_amplitude_falls_as_one_over_frequency(fourier):
    # Channel 0's code is [dc, re_1 … re_K, im_1 … im_K], coarse to fine: re_1 is a
    # frequency of 1 cycle per image, re_K the corner (F, F) at F·√2.
    k = fourier.n_coefficients
    codes = torch.zeros(3, fourier.code_dim)
    codes[0, 0] = codes[1, 1] = codes[2, k] = 0.1  # small: stay in sigmoid's near-linear part
    logits = torch.logit(fourier(codes).double()).abs().amax(dim=(1, 2, 3))
    assert logits[1] / logits[2] == pytest.approx(8 * 2**0.5, rel=1e-3)
    assert logits[0] / logits[1] == pytest.approx(1.0, rel=1e-3)  # DC counts as f = 1


def test_fourier_batch_invariance(fourier):
    codes = 3.0 * torch.randn(5, fourier.code_dim, generator=torch.Generator().manual_seed(3))
    batch = fourier(codes)
    for i in range(5):
        assert torch.allclose(fourier(codes[i : i + 1])[0], batch[i], atol=1e-6, rtol=0)


def test_fourier_deterministic_and_resolution_independent():
    codes = 3.0 * torch.randn(2, 867, generator=torch.Generator().manual_seed(4))
    big = FourierImageSpace(image_size=128)(codes)
    assert torch.equal(big, FourierImageSpace(image_size=128)(codes))
    small = FourierImageSpace(image_size=64)(codes)
    # Same frequencies in cycles per image: the 64-px image is the 128-px one subsampled.
    assert torch.allclose(small, big[:, :, ::2, ::2], atol=1e-5)


def test_fourier_follows_dtype_and_device():
    space = FourierImageSpace(max_frequency=2, image_size=16).to(torch.float64)
    images = space(torch.ones(1, space.code_dim, dtype=torch.float32))
    assert images.dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_frequency": 0}, "max_frequency"),
        ({"max_frequency": 8, "image_size": 16}, "image_size"),
        ({"max_frequency": 2.5}, "max_frequency"),
    ],
)
def test_fourier_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FourierImageSpace(**kwargs)


# ------------------------------------------------------------------ registry


def test_build_generator_fourier_with_options():
    assert set(GENERATOR_KINDS) == {"fourier", "deepsim-fc6", "deepsim-fc7", "deepsim-fc8", "deepsim-pool5", "module"}
    space = build_generator("fourier", max_frequency=4, image_size=64)
    assert isinstance(space, FourierImageSpace)
    assert (space.max_frequency, space.image_size) == (4, 64)


def test_build_generator_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match=r"'biggan'.*fourier.*deepsim-fc6"):
        build_generator("biggan")


def test_build_generator_unknown_option_is_named():
    with pytest.raises(ValueError, match=r"'size' for generator 'fourier' \(did you mean 'image_size'\?\); "
                                         r"valid options: max_frequency \(an int in 1\.\.64, default 8\), image_size"):
        build_generator("fourier", size=64)


def test_build_generator_deepsim_needs_weights(tmp_path):
    with pytest.raises(ValueError, match=r"weights.*upconvGAN_fc6\.pt"):
        build_generator("deepsim-fc6")
    with pytest.raises(FileNotFoundError, match="not downloadable"):
        build_generator("deepsim-fc6", weights=tmp_path / "missing.pt")


# ------------------------------------------------- DeePSiM fc7, fc8, pool5

from protocols.generators import (  # noqa: E402
    DEEPSIM_VARIANTS,
    DeePSiM,
    DeePSiMFc7,
    DeePSiMFc8,
    DeePSiMPool5,
    ModuleGenerator,
    deepsim_cache_dir,
    load_deepsim,
)

# The upconvGAN definitions (Ponce lab, core/GAN_utils.py), written out independently:
# name -> (type, in, out, kernel, stride, padding)
_TAIL = [
    ("conv5_1", "T", 256, 512, 3, 1, 1), ("deconv4", "T", 512, 256, 4, 2, 1), ("conv4_1", "T", 256, 256, 3, 1, 1),
    ("deconv3", "T", 256, 128, 4, 2, 1), ("conv3_1", "T", 128, 128, 3, 1, 1), ("deconv2", "T", 128, 64, 4, 2, 1),
    ("deconv1", "T", 64, 32, 4, 2, 1), ("deconv0", "T", 32, 3, 4, 2, 1),
]  # fmt: skip
UPCONVGAN = {
    "fc7": [("defc7", "L", 4096, 4096), ("defc6", "L", 4096, 4096), ("defc5", "L", 4096, 4096),
            ("deconv5", "T", 256, 256, 4, 2, 1)] + _TAIL,
    "fc8": [("defc7", "L", 1000, 4096), ("defc6", "L", 4096, 4096), ("defc5", "L", 4096, 4096),
            ("deconv5", "T", 256, 256, 4, 2, 1)] + _TAIL,
    "pool5": [("Rconv6", "C", 256, 512, 3, 1, 1), ("Rconv7", "C", 512, 512, 3, 1, 1), ("Rconv8", "C", 512, 512, 3, 1, 0),
              ("deconv5", "T", 512, 256, 4, 2, 1)] + _TAIL,
}  # fmt: skip
XDREAM_HEADS = {"defc7": "fc7", "defc6": "fc6", "defc5": "fc5", "Rconv6": "conv6", "Rconv7": "conv7", "Rconv8": "conv8"}
CODE_DIMS = {"fc6": 4096, "fc7": 4096, "fc8": 1000, "pool5": 9216}


def meta_deepsim(variant: str) -> DeePSiM:
    with torch.device("meta"):
        return DeePSiM(variant)


@pytest.mark.parametrize("variant", ["fc7", "fc8", "pool5"])
def test_deepsim_variant_architecture_matches_upconvgan(variant):
    G = meta_deepsim(variant).G
    table = UPCONVGAN[variant]
    learned = [name for name, m in G.named_children() if list(m.parameters(recurse=False))]
    assert learned == [row[0] for row in table]
    types = {"L": nn.Linear, "C": nn.Conv2d, "T": nn.ConvTranspose2d}
    for name, kind, cin, cout, *rest in table:
        layer = getattr(G, name)
        assert type(layer) is types[kind], name
        assert layer.bias is not None, name
        if kind == "L":
            assert (layer.in_features, layer.out_features) == (cin, cout), name
        else:
            k, s, p = rest
            assert (layer.in_channels, layer.out_channels) == (cin, cout), name
            assert (layer.kernel_size, layer.stride, layer.padding) == ((k, k), (s, s), (p, p)), name
    children = list(G.named_children())
    for i, (name, module) in enumerate(children[:-1]):
        if list(module.parameters(recurse=False)):  # every learned layer but the last: LeakyReLU(0.3)
            act = children[i + 1][1]
            assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.3, name
    assert children[-1][0] == "deconv0"
    if variant == "pool5":
        assert [n for n, _ in children[:6]] == ["Rconv6", "Rrelu6", "Rconv7", "Rrelu7", "Rconv8", "Rrelu8"]


@pytest.mark.parametrize("variant", DEEPSIM_VARIANTS)
def test_deepsim_shapes_flow_from_code_to_256px(variant):
    model = meta_deepsim(variant)
    assert model.code_dim == CODE_DIMS[variant] and model.image_size == 256
    sizes = {}
    hooks = [getattr(model.G, n).register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[1:])))
             for n in ("deconv5", "deconv0") + (("Rconv8",) if variant == "pool5" else ())]
    out = model(torch.zeros(2, model.code_dim, device="meta"))
    for h in hooks:
        h.remove()
    assert tuple(out.shape) == (2, 3, 256, 256)
    assert sizes["deconv5"] == (256, 8, 8) and sizes["deconv0"] == (3, 256, 256)
    if variant == "pool5":
        assert sizes["Rconv8"] == (512, 4, 4)  # its head turns 6×6 into 4×4


def test_deepsim_classes_and_parameter_counts():
    assert [type(meta_deepsim(v)) for v in DEEPSIM_VARIANTS] == [DeePSiM] * 4
    with torch.device("meta"):
        models = {"fc6": DeePSiMFc6(), "fc7": DeePSiMFc7(), "fc8": DeePSiMFc8(), "pool5": DeePSiMPool5()}
    counts = {v: sum(p.numel() for p in m.parameters()) for v, m in models.items()}
    assert counts["fc7"] == counts["fc6"]
    assert counts["fc6"] - counts["fc8"] == (4096 - 1000) * 4096  # only defc7's input differs
    # pool5: three 3×3 convs instead of the linear stack; deconv5 takes 512 channels.
    head = (256 * 512 * 9 + 512) + 2 * (512 * 512 * 9 + 512)
    assert counts["pool5"] == counts["fc6"] - 3 * (4096 * 4096 + 4096) + head + 256 * 256 * 16
    with pytest.raises(ValueError, match=r"'fc9'.*fc6, fc7, fc8, pool5"):
        DeePSiM("fc9")


@pytest.mark.parametrize("variant", ["fc8", "pool5"])
def test_deepsim_random_weights_give_images_in_range(variant):
    torch.manual_seed(0)
    model = DeePSiM(variant).eval()
    with torch.inference_mode():
        images = model(torch.randn(1, model.code_dim))
    assert images.shape == (1, 3, 256, 256) and images.min() >= 0 and images.max() <= 1
    assert images.std() > 0


def _marked_state(variant: str, layout: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """A state dict in ``layout`` whose every tensor is a distinct constant (stored as one number)."""
    shapes = {k: tuple(v.shape) for k, v in meta_deepsim(variant).G.state_dict().items()}
    marks = {k: float(i + 1) for i, k in enumerate(shapes)}
    if layout == "xdream":
        names = {**XDREAM_NAMES, **XDREAM_HEADS}
        state = {}
        for ours, shape in shapes.items():
            layer, _, what = ours.partition(".")
            if what == "bias" and layer not in XDREAM_HEADS:
                continue  # XDream's transposed convolutions have no bias
            state[f"{names[layer]}.{what}"] = torch.full((1,), marks[ours]).expand(*shape)
        return state, marks
    prefix = "G." if layout == "common-G-prefix" else ""
    return {prefix + k: torch.full((1,), marks[k]).expand(*s) for k, s in shapes.items()}, marks


@pytest.mark.parametrize("variant", DEEPSIM_VARIANTS)
@pytest.mark.parametrize("layout", ["common", "common-G-prefix", "xdream"])
def test_load_deepsim_every_variant_both_key_formats(tmp_path, variant, layout):
    state, marks = _marked_state(variant, layout)
    path = tmp_path / f"{variant}-{layout}.pt"
    torch.save(state, path)
    model = load_deepsim(variant, path)
    assert type(model).__name__ == {"fc6": "DeePSiMFc6", "fc7": "DeePSiMFc7", "fc8": "DeePSiMFc8",
                                    "pool5": "DeePSiMPool5"}[variant]
    for key, tensor in model.G.state_dict().items():
        deconv_bias = key.endswith(".bias") and key.partition(".")[0] not in XDREAM_HEADS
        expected = 0.0 if layout == "xdream" and deconv_bias else marks[key]
        assert tensor.dtype == torch.float32 and torch.all(tensor == expected), key


def test_load_deepsim_wrong_variant_file_is_rejected_with_shapes(tmp_path):
    state, _ = _marked_state("fc8", "common")
    path = tmp_path / "upconvGAN_fc8.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"DeePSiM fc6.*'defc7\.weight': \(4096, 1000\) \(expected \(4096, 4096\)\)"):
        load_deepsim("fc6", path)
    with pytest.raises(ValueError, match=r"DeePSiM pool5 common port.*missing keys 'Rconv6\.bias'.*unexpected keys 'defc5\.bias'"):
        load_deepsim("pool5", path)


def test_deepsim_weights_from_the_cache_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("RIG_DEEPSIM_DIR", str(tmp_path / "cache"))
    assert deepsim_cache_dir() == tmp_path / "cache"
    with pytest.raises(ValueError) as err:
        build_generator("deepsim-fc8")
    assert "none found in the cache directory" in str(err.value) and str(tmp_path / "cache") in str(err.value)
    (tmp_path / "cache").mkdir()
    state, marks = _marked_state("fc8", "xdream")
    torch.save(state, tmp_path / "cache" / "fc8.pt")  # XDream's file name
    model = build_generator("deepsim-fc8")
    assert isinstance(model, DeePSiMFc8) and torch.all(model.G.defc6.bias == marks["defc6.bias"])
    monkeypatch.delenv("RIG_DEEPSIM_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert deepsim_cache_dir() == tmp_path / "xdg" / "rig" / "deepsim"


# ---------------------------------------------------------- user generators


@pytest.fixture()
def user_package(tmp_path, monkeypatch):
    """An importable module of user generators, as a lab would have on PYTHONPATH."""
    (tmp_path / "lab_gans.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Tiny(nn.Module):\n"
        "    def __init__(self, code_dim=8, image_size=16, tanh=False):\n"
        "        super().__init__()\n"
        "        self.code_dim, self.image_size, self.tanh = code_dim, image_size, tanh\n"
        "        self.fc = nn.Linear(code_dim, 3 * image_size * image_size)\n"
        "    def forward(self, z):\n"
        "        x = self.fc(z).view(-1, 3, self.image_size, self.image_size)\n"
        "        return torch.tanh(x * 10) if self.tanh else torch.sigmoid(x)\n"
        "def make(**kw):\n"
        "    return Tiny(**kw)\n"
        "def not_a_module():\n"
        "    return 42\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lab_gans"
    import sys

    sys.modules.pop("lab_gans", None)


def test_module_generator_from_factory_with_options(user_package):
    gen = build_generator("module", factory="lab_gans:make", options={"code_dim": 5, "image_size": 12})
    assert isinstance(gen, ModuleGenerator) and (gen.code_dim, gen.image_size) == (5, 12)
    images = gen(torch.randn(3, 5))
    assert images.shape == (3, 3, 12, 12) and images.min() >= 0 and images.max() <= 1
    with pytest.raises(ValueError, match=r"expects codes of shape \(N, 5\)"):
        gen(torch.zeros(2, 4))
    assert build_generator("module", factory="lab_gans:Tiny").code_dim == 8  # a class is a factory too


def test_module_generator_rejects_out_of_range_output(user_package):
    gen = build_generator("module", factory="lab_gans:make", options={"tanh": True})
    with pytest.raises(ValueError, match=r"'lab_gans:make' must be in \[0,1\], got values in \[-1.*\(x \+ 1\) / 2"):
        gen(torch.randn(4, 8))


@pytest.mark.parametrize(
    "factory, options, match",
    [
        ("lab_gans.make", None, r"must be 'package\.module:callable'"),
        ("no_such_pkg_xyz:make", None, r"cannot import module 'no_such_pkg_xyz'"),
        ("lab_gans:missing", None, r"has no attribute 'missing'; it has \[.*'make'"),
        ("lab_gans:NOT_CALLABLE", None, r"names a int, not something callable"),
        ("lab_gans:not_a_module", None, r"returned a int; it must return a torch\.nn\.Module"),
        ("lab_gans:make", {"colour": 1}, r"rejected options \['colour'\]"),
        ("lab_gans:make", "code_dim=3", r"options must be a table"),
    ],
)
def test_module_generator_bad_factories_are_explained(user_package, factory, options, match):
    with pytest.raises(ValueError, match=match):
        build_generator("module", factory=factory, options=options)


def test_module_generator_needs_a_factory_and_sizes():
    with pytest.raises(ValueError, match="needs factory"):
        build_generator("module")
    with pytest.raises(ValueError, match="code_dim"):
        ModuleGenerator(nn.Identity())
