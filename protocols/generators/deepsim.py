"""The DeePSiM generators (Dosovitskiy & Brox 2016) the labs evolve codes in: fc6, fc7, fc8, pool5.

The architectures are those of the widely used PyTorch port (``upconvGAN`` in
the Ponce lab's code), layer for layer and name for name:

* fc6 and fc7: three ``Linear(4096, 4096)`` (``defc7``, ``defc6``, ``defc5``), a
  reshape to (256, 4, 4), then the transposed convolutions of DESIGN §5;
* fc8: the same, except that ``defc7`` is ``Linear(1000, 4096)``;
* pool5: codes are pool5 maps (256, 6, 6), flattened to 9216 here. A
  convolutional head replaces the linear stack: ``Rconv6`` 256→512 and
  ``Rconv7`` 512→512 (3×3, padding 1), ``Rconv8`` 512→512 (3×3, no padding:
  6×6 to 4×4); ``deconv5`` then takes 512 channels instead of 256.

LeakyReLU(0.3) follows every layer but the last. The raw output is 256×256
BGR, mean-subtracted, on a 0–255 scale; :meth:`DeePSiM.generate` turns it into
RGB in [0, 1] (swap to RGB, add (123, 117, 104), clamp, divide by 255).

The weights cannot be obtained from here. Users supply a file of either public
PyTorch port, named in the protocol or placed in the cache directory
(:func:`deepsim_cache_dir`); :func:`load_deepsim` maps either key format onto
this module. It never falls back to random weights; only tests and benchmarks
build the modules with their random init.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from protocols.registry import Options, option

from .base import GENERATORS, Generator

__all__ = [
    "DEEPSIM_VARIANTS",
    "DeePSiM",
    "DeePSiMFc6",
    "DeePSiMFc7",
    "DeePSiMFc8",
    "DeePSiMOptions",
    "DeePSiMPool5",
    "WEIGHTS_HELP",
    "deepsim_cache_dir",
    "find_cached_weights",
    "load_deepsim",
    "load_deepsim_fc6",
    "weights_help",
]

#: The DeePSiM generators offered, by the AlexNet layer whose code they invert.
DEEPSIM_VARIANTS: tuple[str, ...] = ("fc6", "fc7", "fc8", "pool5")

#: ImageNet channel means added back to the output, in RGB order (DESIGN §5:
#: swap the channels to RGB, *then* add (123, 117, 104)).
_RGB_MEAN = (123.0, 117.0, 104.0)

#: (name, in, out, kernel, stride, padding) of the transposed convolutions, DESIGN §5.
#: pool5's deconv5 takes 512 channels (its head ends with 512).
_DECONVS = (
    ("deconv5", 256, 256, 4, 2, 1),
    ("conv5_1", 256, 512, 3, 1, 1),
    ("deconv4", 512, 256, 4, 2, 1),
    ("conv4_1", 256, 256, 3, 1, 1),
    ("deconv3", 256, 128, 4, 2, 1),
    ("conv3_1", 128, 128, 3, 1, 1),
    ("deconv2", 128, 64, 4, 2, 1),
    ("deconv1", 64, 32, 4, 2, 1),
    ("deconv0", 32, 3, 4, 2, 1),
)
_FC_LAYERS = ("defc7", "defc6", "defc5")
#: pool5's head: (name, relu name, in, out, padding), all 3×3 stride 1.
_POOL5_HEAD = (
    ("Rconv6", "Rrelu6", 256, 512, 1),
    ("Rconv7", "Rrelu7", 512, 512, 1),
    ("Rconv8", "Rrelu8", 512, 512, 0),
)

#: XDream's names for the shared transposed convolutions (no biases in its port).
_XDREAM_DECONVS = OrderedDict([
    ("deconv5", "tconv5_0"), ("conv5_1", "tconv5_1"), ("deconv4", "tconv4_0"), ("conv4_1", "tconv4_1"),
    ("deconv3", "tconv3_0"), ("conv3_1", "tconv3_1"), ("deconv2", "tconv2"), ("deconv1", "tconv1"),
    ("deconv0", "tconv0"),
])  # fmt: skip
#: XDream's names for each variant's head (with biases).
_XDREAM_HEADS = {
    "fc": OrderedDict([("defc7", "fc7"), ("defc6", "fc6"), ("defc5", "fc5")]),
    "pool5": OrderedDict([("Rconv6", "conv6"), ("Rconv7", "conv7"), ("Rconv8", "conv8")]),
}


_CODE_DIMS = {"fc6": 4096, "fc7": 4096, "fc8": 1000, "pool5": 256 * 6 * 6}


def _head_kind(variant: str) -> str:
    return "pool5" if variant == "pool5" else "fc"


def _check_variant(variant: str) -> None:
    if variant not in DEEPSIM_VARIANTS:
        raise ValueError(f"unknown DeePSiM variant {variant!r}; valid variants: {', '.join(DEEPSIM_VARIANTS)}")


def _build_sequential(variant: str) -> nn.Sequential:
    _check_variant(variant)
    layers: list[tuple[str, nn.Module]] = []
    if variant == "pool5":
        for name, relu, cin, cout, pad in _POOL5_HEAD:
            layers += [(name, nn.Conv2d(cin, cout, 3, stride=1, padding=pad)), (relu, nn.LeakyReLU(0.3))]
    else:
        code_dim = 1000 if variant == "fc8" else 4096
        for name in _FC_LAYERS:
            layers += [(name, nn.Linear(code_dim, 4096)), (f"relu_{name}", nn.LeakyReLU(0.3))]
            code_dim = 4096
        layers.append(("reshape", nn.Unflatten(1, (256, 4, 4))))
    for name, cin, cout, k, s, p in _DECONVS:
        if name == "deconv5" and variant == "pool5":
            cin = 512
        layers.append((name, nn.ConvTranspose2d(cin, cout, k, stride=s, padding=p)))
        if name != "deconv0":  # the last layer is linear
            layers.append((f"relu_{name}", nn.LeakyReLU(0.3)))
    return nn.Sequential(OrderedDict(layers))


class DeePSiM(Generator):
    """A DeePSiM generator: codes to 256×256 RGB images in [0, 1].

    ``G`` is the raw network (BGR, mean-subtracted, 0–255 scale) with the
    common port's layer names; :meth:`generate` converts its output. A bare
    instance has PyTorch's random init and is only meant for tests and
    timing; real use goes through :func:`load_deepsim`.
    """

    image_size = 256

    def __init__(self, variant: str) -> None:
        super().__init__()
        _check_variant(variant)
        self.variant = variant
        self.code_dim = _CODE_DIMS[variant]
        self.G = _build_sequential(variant)

    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        """Run ``G`` and convert BGR mean-subtracted 0–255 output to RGB in [0, 1]."""
        if self.variant == "pool5":
            codes = codes.view(-1, 256, 6, 6)
        bgr = self.G(codes)
        rgb = bgr.flip(1)
        # Not a buffer: the loader builds the module on the meta device, and a
        # 3-element tensor costs nothing to make per call.
        mean = torch.tensor(_RGB_MEAN, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        return (rgb + mean).clamp(0.0, 255.0) / 255.0


class DeePSiMFc6(DeePSiM):
    """DeePSiM fc6: 4096-d codes (DESIGN §5)."""

    code_dim = 4096

    def __init__(self) -> None:
        super().__init__("fc6")


class DeePSiMFc7(DeePSiM):
    """DeePSiM fc7: 4096-d codes, the fc6 architecture with its own weights."""

    code_dim = 4096

    def __init__(self) -> None:
        super().__init__("fc7")


class DeePSiMFc8(DeePSiM):
    """DeePSiM fc8: 1000-d codes."""

    code_dim = 1000

    def __init__(self) -> None:
        super().__init__("fc8")


class DeePSiMPool5(DeePSiM):
    """DeePSiM pool5: codes are (256, 6, 6) maps flattened to 9216."""

    code_dim = 256 * 6 * 6

    def __init__(self) -> None:
        super().__init__("pool5")


_CLASSES = {"fc6": DeePSiMFc6, "fc7": DeePSiMFc7, "fc8": DeePSiMFc8, "pool5": DeePSiMPool5}


# ------------------------------------------------------------------ weight files


def deepsim_cache_dir() -> Path:
    """Where weight files are looked for when a protocol names none.

    ``$RIG_DEEPSIM_DIR`` if set, else ``$XDG_CACHE_HOME/rig/deepsim``, else
    ``~/.cache/rig/deepsim``. Read at call time so tests and users can move it.
    """
    if os.environ.get("RIG_DEEPSIM_DIR"):
        return Path(os.environ["RIG_DEEPSIM_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "rig" / "deepsim"


def _cache_names(variant: str) -> tuple[str, ...]:
    # The common port's file name first, then XDream's (nets/pytorch/deepsim/<layer>.pt).
    return (f"upconvGAN_{variant}.pt", f"upconvGAN_{variant}.pth", f"{variant}.pt", f"{variant}.pth")


def find_cached_weights(variant: str) -> Path | None:
    """The first weight file for ``variant`` in :func:`deepsim_cache_dir`, or ``None``."""
    _check_variant(variant)
    folder = deepsim_cache_dir()
    for name in _cache_names(variant):
        if (folder / name).is_file():
            return folder / name
    return None


def weights_help(variant: str) -> str:
    """Where weights for ``variant`` come from, for error messages."""
    return (
        f"the DeePSiM {variant} weights are not downloadable from here; supply upconvGAN_{variant}.pt "
        f"(the common PyTorch port) or XDream's DeePSiM {variant} port ({variant}.pt) and name it in the "
        f"protocol file ([generator] weights = ...) or put it in {deepsim_cache_dir()}"
    )


#: Told to users whenever fc6 weights are missing: where they come from.
WEIGHTS_HELP = weights_help("fc6")


def _expected_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """Our state-dict keys (without ``G.``) and shapes, computed without allocating."""
    with torch.device("meta"):
        seq = _build_sequential(variant)
    return {k: tuple(v.shape) for k, v in seq.state_dict().items()}


def _xdream_keys(variant: str) -> dict[str, str]:
    """XDream key -> our key, for every tensor XDream's port stores."""
    mapping = {}
    for ours, theirs in _XDREAM_HEADS[_head_kind(variant)].items():
        mapping[f"{theirs}.weight"] = f"{ours}.weight"
        mapping[f"{theirs}.bias"] = f"{ours}.bias"
    for ours, theirs in _XDREAM_DECONVS.items():
        mapping[f"{theirs}.weight"] = f"{ours}.weight"
    return mapping


def _few(keys, n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def _strip_prefix(keys: list[str], known: set[str]) -> str:
    """The prefix (e.g. ``"G."`` or ``"module.G."``) shared by all keys before a known name."""
    prefixes = set()
    for key in keys:
        for name in known:
            if key.endswith(name) and (len(key) == len(name) or key[-len(name) - 1] == "."):
                prefixes.add(key[: -len(name)])
    # The prefix must be shared by every key; a mixed file is reported as such later.
    for prefix in sorted(prefixes, key=len):
        if all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def _read_state_dict(path: Path, variant: str) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"DeePSiM {variant} weights file {str(path)!r} does not exist: {weights_help(variant)}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that is not plain tensors
        raise ValueError(
            f"{str(path)!r} could not be read as a PyTorch state dict ({exc}); {weights_help(variant)}"
        ) from exc
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        # Training checkpoints wrap the weights; take them if that is all it is.
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(
            f"{str(path)!r} does not hold a state dict (a mapping of names to tensors); {weights_help(variant)}"
        )
    return obj


def load_deepsim(variant: str, path: str | os.PathLike, device: str | torch.device = "cpu") -> DeePSiM:
    """Load DeePSiM ``variant`` weights from either public PyTorch port.

    Accepted formats, detected from the keys:

    * the common port (``upconvGAN_<variant>.pt``): the layer names of
      :class:`DeePSiM` (``defc7.weight`` … or ``Rconv6.weight`` …, to
      ``deconv0.bias``), with any shared prefix such as ``G.``;
    * XDream's port: ``fc7/fc6/fc5`` (or pool5's ``conv6/conv7/conv8``) with
      biases and ``tconv5_0`` … ``tconv0`` without (ours are set to zero).

    A checkpoint wrapping the state dict as ``{"state_dict": ...}`` or
    ``{"model": ...}`` is unwrapped.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says where weights come from).
        ValueError: unknown variant; the file is not a state dict of one of these
            formats, or has missing/unexpected keys or wrong shapes (named in the message).
    """
    _check_variant(variant)
    path = Path(path)
    obj = _read_state_dict(path, variant)
    shapes = _expected_shapes(variant)
    xdream = _xdream_keys(variant)
    head = "defc7.weight ... " if variant != "pool5" else "Rconv6.weight ... "
    xhead = "fc7/fc6/fc5" if variant != "pool5" else "conv6/conv7/conv8"
    formats = (
        (f"common port ({head}deconv0.bias, optional prefix such as 'G.')", set(shapes), False),
        (f"XDream port ({xhead}.weight/bias, tconv5_0.weight ... tconv0.weight)", set(xdream), True),
    )
    keys = list(obj)
    best = None
    for fmt, expected, is_xdream in formats:
        prefix = _strip_prefix(keys, expected)
        stripped = {k[len(prefix):]: k for k in keys}
        overlap = len(expected & set(stripped))
        if best is None or overlap > best[0]:
            best = (overlap, fmt, expected, is_xdream, prefix, stripped)
    overlap, fmt, expected, is_xdream, prefix, stripped = best
    if overlap == 0:
        raise ValueError(
            f"{str(path)!r} is not a known DeePSiM {variant} format: keys {_few(keys)} match neither "
            f"the {formats[0][0]} nor the {formats[1][0]}; {weights_help(variant)}"
        )
    missing = expected - set(stripped)
    unexpected = set(stripped) - expected
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(prefix + k for k in missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(stripped[k] for k in unexpected)}")
        raise ValueError(f"{str(path)!r} looks like the DeePSiM {variant} {fmt} but has {' and '.join(parts)}")

    state: dict[str, torch.Tensor] = {}
    wrong = []
    for key, original in stripped.items():
        ours = xdream[key] if is_xdream else key
        tensor = obj[original]
        if tuple(tensor.shape) != shapes[ours]:
            wrong.append(f"{original!r}: {tuple(tensor.shape)} (expected {shapes[ours]})")
            continue
        if not tensor.is_floating_point():
            wrong.append(f"{original!r}: dtype {tensor.dtype} (expected floating point)")
            continue
        state[ours] = tensor.to(torch.float32)
    if wrong:
        more = f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""
        raise ValueError(
            f"{str(path)!r} (DeePSiM {variant}, {fmt}) has tensors of the wrong shape or type "
            f"(a file for another variant?): {'; '.join(wrong[:5])}{more}"
        )
    if is_xdream:
        for ours in _XDREAM_DECONVS:
            state[f"{ours}.bias"] = torch.zeros(shapes[f"{ours}.bias"])

    # Build on the meta device and adopt the loaded tensors: the weights are
    # allocated once, never randomly initialised and then overwritten.
    with torch.device("meta"):
        model = _CLASSES[variant]()
    model.G.load_state_dict(state, strict=True, assign=True)
    return model.to(device)


def load_deepsim_fc6(path: str | os.PathLike, device: str | torch.device = "cpu") -> DeePSiMFc6:
    """Load DeePSiM fc6 weights (see :func:`load_deepsim`)."""
    return load_deepsim("fc6", path, device=device)


# ------------------------------------------------------------------ registration


@dataclass(frozen=True)
class DeePSiMOptions(Options):
    """``[generator] kind = "deepsim-fc6"`` (and fc7, fc8, pool5)."""

    #: The weights file; None: the file in :func:`deepsim_cache_dir`.
    weights: str | os.PathLike | None = option(None, valid="a path to a weights file")
    device: str = "cpu"


def _register(variant: str) -> None:
    @GENERATORS.register(f"deepsim-{variant}", DeePSiMOptions)
    def build(weights: str | os.PathLike | None, device: str) -> DeePSiM:
        if weights is None:
            weights = find_cached_weights(variant)
            if weights is None:
                raise ValueError(f"generator 'deepsim-{variant}' needs weights: none given (weights = <path>) "
                                 f"and none found in the cache directory; {weights_help(variant)}")
        return load_deepsim(variant, weights, device=device)


for _variant in DEEPSIM_VARIANTS:
    _register(_variant)
