"""SimulatedNeuron: preprocessing, batched readout, early stop, provenance."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from simulators.models import ModelCfg, PretrainedCfg
from simulators.neuron import SimulatedNeuron, preprocess_for, read_units
from simulators.units import UnitAddress, probe_layers, resolve_unit


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


CNN_UNITS = [
    "test_cnn:features.0:unit=2",
    "test_cnn:features.3:unit=5:pos=2,13",
    "test_cnn:features.8:unit=31",
    "test_cnn:head:unit=4",
]
VIT_UNITS = [
    "test_vit:patch_embed.proj:unit=1:pos=0,3",
    "test_vit:blocks.0:unit=2:token=mean",
    "test_vit:blocks.1.mlp.fc1:unit=40:token=3",
    "test_vit:blocks.1:unit=7",
]


# --------------------------------------------------------------------------- construction


def test_units_must_share_a_model() -> None:
    with pytest.raises(ValueError, match=r"same model.*\['test_cnn', 'test_vit'\]"):
        SimulatedNeuron(["test_cnn:head:unit=0", "test_vit:head:unit=0"])


def test_bad_units_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="unit 99 out of range"):
        SimulatedNeuron(["test_cnn:head:unit=1", "test_cnn:head:unit=99"])
    with pytest.raises(ValueError, match="unknown model"):
        SimulatedNeuron(["tset_cnn:head:unit=1"])


def test_accepts_strings_and_addresses() -> None:
    neuron = SimulatedNeuron([UnitAddress("test_cnn", "head", 1), "test_cnn:features.3:unit=0"])
    assert neuron.channel_names == ["test_cnn:head:unit=1", "test_cnn:features.3:unit=0"]
    assert neuron.cfg.name == "test_cnn" and neuron.device == torch.device("cpu")


# --------------------------------------------------------------------------- preprocessing


def test_preprocess_resizes_and_normalises() -> None:
    neuron = SimulatedNeuron(["test_cnn:head:unit=0"])
    cfg = neuron.cfg
    flat = torch.full((2, 3, 20, 48), 0.5)  # any H, W
    out = neuron.preprocess(flat)
    assert out.shape == (2, 3, cfg.input_size, cfg.input_size)
    expected = (0.5 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    assert torch.allclose(out, expected.view(1, 3, 1, 1).expand_as(out), atol=1e-6)
    assert torch.equal(out, preprocess_for(cfg, flat))


@pytest.mark.parametrize("images, problem", [
    (torch.rand(2, 1, 32, 32), "(N,3,H,W)"),
    (torch.rand(3, 32, 32), "(N,3,H,W)"),
    ((torch.rand(2, 3, 8, 8) * 255).to(torch.uint8), "floats"),
    (torch.rand(2, 3, 8, 8) * 255, "in [0,1]"),
    (torch.rand(2, 3, 8, 8) * 2 - 1, "in [0,1]"),
])
def test_preprocess_rejects_wrong_images(images: torch.Tensor, problem: str) -> None:
    neuron = SimulatedNeuron(["test_cnn:head:unit=0"])
    with pytest.raises(ValueError, match=re.escape(problem)):
        neuron(images)


# --------------------------------------------------------------------------- readout


def _manual_cnn(neuron: SimulatedNeuron, images: torch.Tensor) -> np.ndarray:
    """The CNN_UNITS responses computed by running the layers by hand, without hooks."""
    model = neuron.model
    with torch.inference_mode():
        x = neuron.preprocess(images)
        f0 = model.features[0](x)
        out0 = f0[:, 2, 16, 16].clone()  # before the in-place ReLU after it
        f3 = model.features[:4](x)
        f8 = model.features(x)
        head = model(x)
    columns = [out0, f3[:, 5, 2, 13], f8[:, 31, 4, 4], head[:, 4]]
    return torch.stack(columns, dim=1).double().numpy()


def test_cnn_readout_equals_manual_slices() -> None:
    neuron = SimulatedNeuron(CNN_UNITS)
    images = _images(6)
    out = neuron(images)
    assert out.shape == (6, 4) and out.dtype == np.float64
    np.testing.assert_allclose(out, _manual_cnn(neuron, images), rtol=1e-5, atol=1e-6)
    # features.0 is followed by ReLU(inplace=True): without cloning it would read >= 0.
    assert (out[:, 0] < 0).any()


def test_centre_default_equals_explicit_centre() -> None:
    default = SimulatedNeuron(["test_cnn:features.3:unit=5"])
    explicit = SimulatedNeuron(["test_cnn:features.3:unit=5:pos=8,8"])
    images = _images(4)
    np.testing.assert_array_equal(default(images), explicit(images))


@pytest.mark.parametrize("units", [CNN_UNITS, VIT_UNITS], ids=["cnn", "vit"])
def test_batched_units_equal_separate_calls(units: list[str]) -> None:
    images = _images(5, seed=3)
    together = SimulatedNeuron(units)(images)
    separate = np.concatenate([SimulatedNeuron([u])(images) for u in units], axis=1)
    np.testing.assert_allclose(together, separate, rtol=1e-5, atol=1e-6)


def test_batching_images_does_not_change_responses() -> None:
    neuron = SimulatedNeuron(VIT_UNITS)
    images = _images(4, seed=5)
    one_by_one = np.concatenate([neuron(images[i:i + 1]) for i in range(4)])
    np.testing.assert_allclose(neuron(images), one_by_one, rtol=1e-4, atol=1e-5)


def test_unit_values_of_model_input_are_the_responses_left_as_a_tensor() -> None:
    # The one pass a CUDA graph captures (bench/cuda_graphs.py) must be the pass responses come from.
    neuron = SimulatedNeuron(CNN_UNITS)
    images = _images(3, seed=6)
    with torch.inference_mode():
        x = neuron.preprocess(images)
        values = neuron.unit_values(x)
        # The model read at the units once, over input preprocessed once: not the neuron's own path.
        expected = read_units(neuron.model, neuron.units, x)
    assert isinstance(values, torch.Tensor) and values.shape == (3, len(CNN_UNITS))
    torch.testing.assert_close(values, expected, rtol=0, atol=0)
    np.testing.assert_array_equal(values.double().numpy(), neuron(images))


def test_images_go_through_the_model_in_passes_of_at_most_max_batch() -> None:
    neuron = SimulatedNeuron(VIT_UNITS, max_batch=3)
    passes: list[int] = []
    handle = neuron.model.register_forward_pre_hook(lambda _m, args: passes.append(args[0].shape[0]))
    try:
        images = _images(8, seed=6)
        chunked = neuron(images)
    finally:
        handle.remove()
    assert passes == [3, 3, 2]
    whole = SimulatedNeuron(VIT_UNITS, max_batch=8)
    whole.model.load_state_dict(neuron.model.state_dict())
    np.testing.assert_allclose(chunked, whole(images), rtol=1e-5, atol=1e-6)
    assert neuron.describe()["kwargs"]["max_batch"] == 3


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_max_batch_must_be_a_positive_int(bad) -> None:
    with pytest.raises(ValueError, match="max_batch must be an int >= 1"):
        SimulatedNeuron(CNN_UNITS[:1], max_batch=bad)


def test_forward_pass_stops_after_last_needed_layer() -> None:
    neuron = SimulatedNeuron(["test_cnn:features.3:unit=5", "test_cnn:features.0:unit=1"])
    fired = []
    handle = neuron.model.features[4].register_forward_hook(lambda *a: fired.append(1))
    try:
        early = neuron(_images(3))
        assert fired == []  # features.4 and later never ran
        with torch.inference_mode():
            full = read_units(neuron.model, neuron.units, neuron.preprocess(_images(3)), stop_early=False)
        assert fired == [1]
    finally:
        handle.remove()
    np.testing.assert_array_equal(early, full.double().numpy())


class _ReusedReLU(nn.Module):
    """One ReLU module called twice per pass, as in torchvision's ResNet blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.tail = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.tail(self.relu(self.conv2(self.relu(self.conv1(x)))))


def test_module_called_twice_is_read_on_its_last_call() -> None:
    torch.manual_seed(0)
    model = _ReusedReLU().eval()
    cfg = ModelCfg("reused", "cnn", _ReusedReLU, PretrainedCfg(8, (0.5,) * 3, (0.5,) * 3))
    layers = probe_layers(model, cfg)
    assert layers["relu"].n_calls == 2
    unit = resolve_unit(model, cfg, "reused:relu:unit=3", layers=layers)
    x = torch.randn(4, 3, 8, 8)
    with torch.inference_mode():
        got = read_units(model, [unit], x)[:, 0]
        expected = model.relu(model.conv2(model.relu(model.conv1(x))))[:, 3, 4, 4]
    assert torch.equal(got, expected)


def test_empty_batch() -> None:
    neuron = SimulatedNeuron(CNN_UNITS)
    assert neuron(torch.zeros(0, 3, 32, 32)).shape == (0, 4)


# --------------------------------------------------------------------------- provenance


def test_describe_is_json_and_rebuilds_the_neuron() -> None:
    neuron = SimulatedNeuron(VIT_UNITS[:2] + ["test_vit:blocks.1:unit=7"])
    info = json.loads(json.dumps(neuron.describe()))
    assert info["class"] == "simulators.neuron.SimulatedNeuron"
    assert info["model"] == "test_vit" and info["weights_source"] == "random"
    assert info["units"] == neuron.channel_names and info["device"] == "cpu"
    assert info["resolved_units"][2] == "test_vit:blocks.1:unit=7:token=cls"
    rebuilt = SimulatedNeuron(**info["kwargs"])
    images = _images(2)
    np.testing.assert_array_equal(rebuilt(images), neuron(images))


def test_describe_records_weight_file_hash() -> None:
    info = SimulatedNeuron(["efficientnet_lite0:blocks.5.0:unit=12"]).describe()
    # torchvision/timm-style file names carry the first 8 hex digits of the SHA-256.
    assert info["weights_source"].endswith("efficientnet-lite0-57934424.pth")
    assert info["weights_sha256"].startswith("57934424")
