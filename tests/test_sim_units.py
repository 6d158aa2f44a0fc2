"""Unit addresses: parsing, layer listing and resolution against a model."""

from __future__ import annotations

import pytest
import torch

from simulators.models import load_model
from simulators.neuron import preprocess_for
from simulators.units import (
    SYNTAX,
    UnitAddress,
    list_layers,
    parse_unit,
    probe_layers,
    resolve_unit,
)


@pytest.fixture(scope="module")
def cnn():
    return load_model("test_cnn")


@pytest.fixture(scope="module")
def vit():
    return load_model("test_vit")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, expected", [
    ("efficientnet_lite0:blocks.5.0:unit=12", UnitAddress("efficientnet_lite0", "blocks.5.0", 12)),
    ("alexnet:features.10:unit=3:pos=6,6", UnitAddress("alexnet", "features.10", 3, (6, 6))),
    ("test_vit:blocks.1:unit=4:token=cls", UnitAddress("test_vit", "blocks.1", 4, token="cls")),
    ("test_vit:blocks.1.mlp.fc1:unit=40:token=mean", UnitAddress("test_vit", "blocks.1.mlp.fc1", 40, token="mean")),
    ("test_vit:blocks.0:unit=0:token=16", UnitAddress("test_vit", "blocks.0", 0, token=16)),
])
def test_parse_and_str_round_trip(text: str, expected: UnitAddress) -> None:
    address = parse_unit(text)
    assert address == expected
    assert str(address) == text
    assert parse_unit(str(address)) == address


def test_parse_accepts_any_keyword_order_and_center() -> None:
    address = parse_unit("vit_b_16:encoder.layers.encoder_layer_11.mlp.1:token=cls:unit=12")
    assert address == UnitAddress("vit_b_16", "encoder.layers.encoder_layer_11.mlp.1", 12, token="cls")
    assert parse_unit("alexnet:features.10:pos=center:unit=3").position is None


@pytest.mark.parametrize("text, problem", [
    ("alexnet:features.10", "need at least"),
    ("alexnet:features.10:3", "'3' is not key=value"),
    ("alexnet:features.10:channel=3", "unknown key 'channel'"),
    ("alexnet:features.10:unit=-1", "not an int >= 0"),
    ("alexnet:features.10:unit=x", "not an int >= 0"),
    ("alexnet:features.10:unit=1:unit=2", "unit is given twice"),
    ("alexnet:features.10:pos=1,2", "unit=N is missing"),
    ("alexnet:features.10:unit=1:pos=1", "pos='1'"),
    ("alexnet:features.10:unit=1:token=first", "token='first'"),
    (":features.10:unit=1", "MODEL part"),
    ("alexnet::unit=1", "LAYER part"),
    ("alexnet:unit=1:unit=2", "LAYER part"),
])
def test_bad_spec_names_the_bad_part_and_shows_syntax(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_unit(text)
    assert problem in str(err.value)
    assert SYNTAX in str(err.value) and "e.g." in str(err.value)


@pytest.mark.parametrize("kwargs", [
    dict(unit=-1), dict(unit=True), dict(unit=1, position=(1,)), dict(unit=1, position=(-1, 0)),
    dict(unit=1, token="first"), dict(unit=1, token=-2),
])
def test_address_is_checked_when_built(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        UnitAddress("test_cnn", "features.0", **kwargs)


# --------------------------------------------------------------------------- layers


def test_list_layers_matches_actual_shapes(cnn) -> None:
    model, cfg = cnn
    x = torch.zeros(1, 3, cfg.input_size, cfg.input_size)
    expected = {}
    with torch.inference_mode():
        for i, module in enumerate(model.features):
            x = module(x)
            expected[f"features.{i}"] = tuple(x.shape[1:])
        expected["features"] = tuple(x.shape[1:])
        for name in ("pool", "flatten", "head"):
            x = getattr(model, name)(x)
            expected[name] = tuple(x.shape[1:])
    layers = list_layers(model, cfg)
    assert dict(layers) == expected
    assert {name for name, _ in layers} == {n for n, _ in model.named_modules() if n}


def test_list_layers_skips_non_tensor_outputs() -> None:
    from simulators.models import ModelCfg, PretrainedCfg

    class WithAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Conv2d(3, 8, 4, stride=4)
            self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)
            return self.attn(tokens, tokens, tokens)[0]

    cfg = ModelCfg("attn_model", "vit", WithAttention, PretrainedCfg(8, (0.5,) * 3, (0.5,) * 3))
    model = WithAttention().eval()
    assert dict(list_layers(model, cfg)) == {"embed": (8, 2, 2)}
    with pytest.raises(ValueError, match="does not output a single tensor"):
        resolve_unit(model, cfg, "attn_model:attn:unit=0")


# --------------------------------------------------------------------------- resolving


def test_wrong_layer_lists_close_matches(cnn) -> None:
    model, cfg = cnn
    with pytest.raises(ValueError) as err:
        resolve_unit(model, cfg, "test_cnn:featrues.3:unit=0")
    message = str(err.value)
    assert "layer 'featrues.3' not found in test_cnn" in message
    assert "'features.3'" in message.split("close matches:")[1]
    assert "run `rig units test_cnn` for all layers" in message


def test_wrong_layer_on_efficientnet() -> None:
    model, cfg = load_model("efficientnet_lite0", weights="random")
    with pytest.raises(ValueError) as err:
        resolve_unit(model, cfg, "efficientnet_lite0:blocks.9:unit=0")
    message = str(err.value)
    assert "close matches: [" in message and "'blocks." in message
    assert "rig units efficientnet_lite0" in message


def test_conv_defaults_to_centre(cnn) -> None:
    model, cfg = cnn
    resolved = resolve_unit(model, cfg, "test_cnn:features.3:unit=5")
    assert resolved.kind == "spatial" and resolved.layer_shape == (16, 16, 16)
    assert resolved.address.position == (8, 8)
    assert str(resolved.address) == "test_cnn:features.3:unit=5:pos=8,8"


@pytest.mark.parametrize("spec, fragments", [
    ("test_cnn:features.3:unit=16", ["unit 16 out of range", "0..15"]),
    ("test_cnn:features.3:unit=1:pos=16,0", ["position (16,0) out of range", "0<=Y<16"]),
    ("test_cnn:head:unit=10", ["unit 10 out of range", "0..9"]),
    ("test_cnn:head:unit=1:pos=0,0", ["neither positions nor tokens"]),
    ("test_cnn:features.3:unit=1:token=cls", ["token given", "pos=Y,X"]),
    ("test_vit:blocks.1:unit=1:pos=0,0", ["position given for token layer", "0<=N<17"]),
    ("test_vit:blocks.1:unit=1:token=17", ["token 17 out of range", "0..16"]),
    ("test_vit:blocks.1.mlp.fc1:unit=64", ["unit 64 out of range", "0..63"]),
    ("test_vit:patch_embed:unit=1", ["no class token", "token=mean"]),
])
def test_out_of_range_says_what_is_valid(spec, fragments, cnn, vit) -> None:
    model, cfg = vit if spec.startswith("test_vit") else cnn
    with pytest.raises(ValueError) as err:
        resolve_unit(model, cfg, spec)
    assert all(f in str(err.value) for f in fragments), str(err.value)


def test_unit_of_another_model_is_rejected(vit) -> None:
    with pytest.raises(ValueError, match="names model 'test_cnn', not 'test_vit'"):
        resolve_unit(*vit, UnitAddress("test_cnn", "head", 1))


def test_token_defaults_and_prefix(vit) -> None:
    model, cfg = vit
    layers = probe_layers(model, cfg)
    cls = resolve_unit(model, cfg, "test_vit:blocks.1:unit=3", layers=layers)
    assert cls.address.token == "cls" and cls.token_index == 0
    mean = resolve_unit(model, cfg, "test_vit:blocks.1:unit=3:token=mean", layers=layers)
    assert mean.token_index is None and mean.first_patch_token == 1
    # Patch embedding comes before the CLS token: its mean covers all tokens.
    patch = resolve_unit(model, cfg, "test_vit:patch_embed:unit=3:token=mean", layers=layers)
    assert patch.first_patch_token == 0


def test_token_readout_matches_manual_computation(vit) -> None:
    model, cfg = vit
    x = preprocess_for(cfg, torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    with torch.inference_mode():  # the timm ViT forward, written out up to blocks.1
        tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        tokens = model.blocks[1](model.blocks[0](tokens))
    assert tokens.shape == (3, 17, 32)
    cases = {
        "token=cls": tokens[:, 0, 7],
        "token=mean": tokens[:, 1:, 7].mean(dim=1),
        "token=5": tokens[:, 5, 7],
    }
    for suffix, expected in cases.items():
        resolved = resolve_unit(model, cfg, f"test_vit:blocks.1:unit=7:{suffix}")
        assert torch.allclose(resolved.read(tokens), expected), suffix
