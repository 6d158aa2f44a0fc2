"""Unit addressing on the real architectures: AlexNet, ResNet-101, EfficientNet-Lite, torchvision and timm ViTs.

Where no weights exist here the models have seeded random weights; every
readout is compared with the same quantity computed by hand from the layers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rig.cli import main
from simulators.models import load_model
from simulators.natural_images import load_foolbox_imagenet
from simulators.neuron import SimulatedNeuron, preprocess_for, read_units
from simulators.units import parse_unit, probe_layers, resolve_unit

pytestmark = pytest.mark.timeout(120)


def _images(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _read(model, cfg, specs: list[str], x: torch.Tensor, layers=None) -> torch.Tensor:
    layers = probe_layers(model, cfg) if layers is None else layers
    units = [resolve_unit(model, cfg, s, layers=layers) for s in specs]
    with torch.inference_mode():
        return read_units(model, units, x)


def _close(got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- CNNs


def test_alexnet_conv_centre_and_fc_units() -> None:
    model, cfg = load_model("alexnet", weights="random")
    layers = probe_layers(model, cfg)
    conv = resolve_unit(model, cfg, "alexnet:features.10:unit=3", layers=layers)
    assert conv.kind == "spatial" and conv.address.position == (6, 6)  # 13x13 map: centre by default
    fc = resolve_unit(model, cfg, "alexnet:classifier.6:unit=281", layers=layers)
    assert fc.kind == "vector"
    x = preprocess_for(cfg, _images(3))
    with torch.inference_mode():
        conv5 = model.features[:11](x)
        pooled = torch.flatten(model.avgpool(model.features(x)), 1)
        fc7 = model.classifier[:5](pooled)  # before its in-place ReLU
        logits = model.classifier[5:](fc7.clone())
    negative = int(fc7[0].argmin())  # classifier.5 is ReLU(inplace=True): an uncloned read would be 0
    assert fc7[0, negative] < 0
    specs = ["alexnet:features.10:unit=3", "alexnet:features.10:unit=3:pos=0,12",
             f"alexnet:classifier.4:unit={negative}", "alexnet:classifier.6:unit=281"]
    got = _read(model, cfg, specs, x)
    _close(got, torch.stack([conv5[:, 3, 6, 6], conv5[:, 3, 0, 12], fc7[:, negative], logits[:, 281]], dim=1))


def test_resnet101_units() -> None:
    model, cfg = load_model("resnet101", weights="random")
    x = preprocess_for(cfg, _images(1))
    specs = ["resnet101:layer3.22:unit=100", "resnet101:layer4:unit=7:pos=0,0", "resnet101:fc:unit=9"]
    got = _read(model, cfg, specs, x)
    with torch.inference_mode():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        layer3 = model.layer3(model.layer2(model.layer1(stem)))
        layer4 = model.layer4(layer3)
        logits = model.fc(torch.flatten(model.avgpool(layer4), 1))
    assert layer3.shape[-2:] == (14, 14)  # so the default position is (7, 7)
    _close(got, torch.stack([layer3[:, 100, 7, 7], layer4[:, 7, 0, 0], logits[:, 9]], dim=1))


@pytest.mark.parametrize("name, size, min_correct", [("efficientnet_lite1", 240, 16), ("efficientnet_lite2", 260, 16)])
def test_bundled_efficientnet_lite_classifies_and_has_units(name: str, size: int, min_correct: int) -> None:
    images, _, labels = load_foolbox_imagenet(size)
    # A mid-level unit, centre position, read in one pass with the logit of the first photo's class.
    neuron = SimulatedNeuron([f"{name}:blocks.5.0:unit=12", f"{name}:classifier:unit={labels[0]}"])
    model, cfg = neuron.model, neuron.cfg
    assert cfg.input_size == size and cfg.mean == cfg.std == (0.5, 0.5, 0.5)
    with torch.inference_mode():
        predicted = model(preprocess_for(cfg, images)).argmax(dim=1).tolist()
    correct = sum(p == t for p, t in zip(predicted, labels))
    assert correct >= min_correct, f"{name} top-1 {correct}/20"
    assert neuron.units[0].address.position == tuple(s // 2 for s in neuron.units[0].layer_shape[1:])
    out = neuron(images[:4])
    with torch.inference_mode():
        x = preprocess_for(cfg, images[:4])
        block = model.blocks[5][0](model.blocks[:5](model.bn1(model.conv_stem(x))))
    y, x_ = neuron.units[0].address.position
    np.testing.assert_allclose(out[:, 0], block[:, 12, y, x_].double().numpy(), rtol=1e-4, atol=1e-4)
    assert out[0, 1] == out[:, 1].max()  # the photo of that class scores highest on its logit


# --------------------------------------------------------------------------- torchvision ViTs


def _torchvision_block_parts(block, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision EncoderBlock written out: (MLP hidden after GELU, block output)."""
    h = block.ln_1(inputs)
    h, _ = block.self_attention(h, h, h, need_weights=False)
    h = h + inputs
    hidden = F.gelu(block.mlp[0](block.ln_2(h)))
    return hidden, h + block.mlp[3](hidden)


@pytest.fixture(scope="module")
def vit_b():
    return load_model("vit_b_16", weights="random")


@pytest.fixture(scope="module")
def vit_b_layers(vit_b):
    return probe_layers(*vit_b)


def test_vit_b16_logits_block_output_and_mlp_hidden(vit_b, vit_b_layers) -> None:
    model, cfg = vit_b
    x = preprocess_for(cfg, _images(2, seed=1))
    layer = "encoder.layers.encoder_layer_5"
    specs = [
        "vit_b_16:heads.head:unit=281",
        f"vit_b_16:{layer}:unit=11",  # token defaults to cls
        f"vit_b_16:{layer}:unit=11:token=37",
        f"vit_b_16:{layer}:unit=11:token=mean",
        f"vit_b_16:{layer}.mlp.1:unit=2000:token=cls",
        f"vit_b_16:{layer}.mlp.1:unit=2000:token=196",
        f"vit_b_16:{layer}.mlp.1:unit=2000:token=mean",
    ]
    got = _read(model, cfg, specs, x, vit_b_layers)
    with torch.inference_mode():
        tokens = model._process_input(x)
        tokens = torch.cat([model.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = model.encoder.dropout(tokens + model.encoder.pos_embedding)
        block_input = model.encoder.layers[:5](tokens)
        hidden, out = _torchvision_block_parts(model.encoder.layers[5], block_input)
        encoded = model.encoder.ln(model.encoder.layers[6:](out))
        logits = model.heads(encoded[:, 0])
    assert out.shape == (2, 197, 768) and hidden.shape == (2, 197, 3072)
    expected = [logits[:, 281], out[:, 0, 11], out[:, 37, 11], out[:, 1:, 11].mean(1),
                hidden[:, 0, 2000], hidden[:, 196, 2000], hidden[:, 1:, 2000].mean(1)]
    _close(got, torch.stack(expected, dim=1))


@pytest.mark.parametrize("spec, problem", [
    ("encoder.layers.encoder_layer_0:unit=1:token=197", r"token 197 out of range.*0\.\.196"),
    ("encoder.layers.encoder_layer_0.mlp.1:unit=3072", r"unit 3072 out of range.*0\.\.3071"),
    ("heads.head:unit=1:token=cls", "neither positions nor tokens"),
    ("encoder.layers.encoder_layer11:unit=1", "close matches.*encoder_layer_11"),
    ("conv_proj:unit=1:token=cls", "token given.*pos=Y,X"),
])
def test_vit_b16_bad_units_say_what_is_valid(vit_b, vit_b_layers, spec: str, problem: str) -> None:
    model, cfg = vit_b
    with pytest.raises(ValueError, match=problem):
        resolve_unit(model, cfg, f"vit_b_16:{spec}", layers=vit_b_layers)


def test_vit_l16_has_the_same_layer_paths() -> None:
    # Same torchvision class as vit_b_16 (tested above), 24 blocks of width 1024; a forward
    # pass at this size costs more than this suite's budget, so only the addresses are checked.
    model, cfg = load_model("vit_l_16", weights="random")
    modules = dict(model.named_modules())
    assert cfg.family == "vit" and cfg.num_prefix_tokens == 1
    assert isinstance(modules["encoder.layers.encoder_layer_23.mlp.1"], torch.nn.GELU)
    assert modules["encoder.layers.encoder_layer_23.mlp.0"].out_features == 4096
    assert modules["heads.head"].out_features == 1000


# --------------------------------------------------------------------------- timm ViTs


def _timm_block_parts(block, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm Block written out: (MLP hidden after GELU, block output)."""
    h = inputs + block.ls1(block.attn(block.norm1(inputs)))
    hidden = F.gelu(block.mlp.fc1(block.norm2(h)))
    return hidden, h + block.ls2(block.mlp.fc2(hidden))


def test_timm_vit_s14_block_output_and_mlp_hidden() -> None:
    model, cfg = load_model("vit_s14_focus", weights="random")  # the architecture; weights are tested elsewhere
    x = preprocess_for(cfg, _images(2, seed=3))
    specs = ["vit_s14_focus:blocks.4.mlp.act:unit=1535:token=cls",
             "vit_s14_focus:blocks.4.mlp.act:unit=5:token=256",
             "vit_s14_focus:blocks.4:unit=383:token=mean",
             "vit_s14_focus:norm:unit=0"]
    got = _read(model, cfg, specs, x)
    with torch.inference_mode():
        tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        hidden, out = _timm_block_parts(model.blocks[4], model.blocks[:4](tokens))
        final = model.forward_features(x)
    assert tokens.shape == (2, 257, 384)
    _close(got, torch.stack([hidden[:, 0, 1535], hidden[:, 256, 5], out[:, 1:, 383].mean(1), final[:, 0, 0]], dim=1))


# --------------------------------------------------------------------------- one syntax, rig units


@pytest.mark.parametrize("model_name", ["test_vit", "test_cnn", "vit_s14_focus"])
def test_rig_units_prints_only_valid_specs(model_name: str, capsys) -> None:
    assert main(["units", model_name]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    specs = [line.split()[-1] for line in lines if line.split()[-1] != "-"]
    assert len(specs) >= 0.9 * len(lines)
    model, cfg = load_model(model_name, weights="random")
    layers = probe_layers(model, cfg)
    for spec in specs:  # each printed example is accepted exactly as printed
        assert str(resolve_unit(model, cfg, parse_unit(spec), layers=layers).address) == spec
    if model_name != "test_cnn":
        assert any(s.endswith(":token=mean") for s in specs)  # patch embedding has no class token
        assert any(".mlp.act:unit=0:token=cls" in s for s in specs)


def test_attention_head_tensors_are_not_spatial() -> None:
    model, cfg = load_model("test_vit")
    with pytest.raises(ValueError, match="per attention head"):
        resolve_unit(model, cfg, "test_vit:blocks.0.attn.q_norm:unit=0")
