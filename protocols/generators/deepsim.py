"""DeePSiM fc6 (Dosovitskiy & Brox 2016): the GAN generator the labs evolve codes in.

The architecture follows DESIGN §5 exactly. The weights cannot be obtained
from here: users supply one of the two public PyTorch ports, and
:func:`load_deepsim_fc6` maps either onto this module. It never falls back to
random weights; only tests build :class:`DeePSiMFc6` with its random init.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .base import Generator

__all__ = ["DeePSiMFc6", "load_deepsim_fc6", "WEIGHTS_HELP"]

#: Told to users whenever weights are missing: where they come from.
WEIGHTS_HELP = (
    "the DeePSiM fc6 weights are not downloadable from here; supply upconvGAN_fc6.pt "
    "(the common PyTorch port) or XDream's DeePSiM fc6 port and name it in the protocol "
    "file ([generator] weights = ...)"
)

#: ImageNet channel means added back to the output, in RGB order (DESIGN §5:
#: swap the channels to RGB, *then* add (123, 117, 104)).
_RGB_MEAN = (123.0, 117.0, 104.0)

#: (name, in, out, kernel, stride, padding) of the transposed convolutions, DESIGN §5.
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

#: XDream's names for our layers, in network order. Its transposed convs have no bias.
_XDREAM_NAMES = OrderedDict(
    [
        ("defc7", "fc7"),
        ("defc6", "fc6"),
        ("defc5", "fc5"),
        ("deconv5", "tconv5_0"),
        ("conv5_1", "tconv5_1"),
        ("deconv4", "tconv4_0"),
        ("conv4_1", "tconv4_1"),
        ("deconv3", "tconv3_0"),
        ("conv3_1", "tconv3_1"),
        ("deconv2", "tconv2"),
        ("deconv1", "tconv1"),
        ("deconv0", "tconv0"),
    ]
)
_FC_LAYERS = ("defc7", "defc6", "defc5")


def _build_sequential() -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    for name in _FC_LAYERS:
        layers += [(name, nn.Linear(4096, 4096)), (f"relu_{name}", nn.LeakyReLU(0.3))]
    layers.append(("reshape", nn.Unflatten(1, (256, 4, 4))))
    for name, cin, cout, k, s, p in _DECONVS:
        layers.append((name, nn.ConvTranspose2d(cin, cout, k, stride=s, padding=p)))
        if name != "deconv0":  # the last layer is linear
            layers.append((f"relu_{name}", nn.LeakyReLU(0.3)))
    return nn.Sequential(OrderedDict(layers))


class DeePSiMFc6(Generator):
    """DeePSiM fc6 generator: 4096-d codes to 256×256 RGB images in [0, 1].

    ``G`` is the raw network (BGR, mean-subtracted, 0–255 scale); :meth:`generate`
    converts its output to RGB in [0, 1]. A bare instance has PyTorch's random
    init and is only meant for tests; real use goes through :func:`load_deepsim_fc6`.
    """

    code_dim = 4096
    image_size = 256

    def __init__(self) -> None:
        super().__init__()
        self.G = _build_sequential()

    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        """Run ``G`` and convert BGR mean-subtracted 0–255 output to RGB in [0, 1]."""
        bgr = self.G(codes)
        rgb = bgr.flip(1)
        # Not a buffer: the loader builds the module on the meta device, and a
        # 3-element tensor costs nothing to make per call.
        mean = torch.tensor(_RGB_MEAN, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        return (rgb + mean).clamp(0.0, 255.0) / 255.0


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """Our state-dict keys (without ``G.``) and shapes, computed without allocating."""
    with torch.device("meta"):
        seq = _build_sequential()
    return {k: tuple(v.shape) for k, v in seq.state_dict().items()}


def _xdream_keys() -> dict[str, str]:
    """XDream key -> our key, for every tensor XDream's port stores."""
    mapping = {}
    for ours, theirs in _XDREAM_NAMES.items():
        mapping[f"{theirs}.weight"] = f"{ours}.weight"
        if ours in _FC_LAYERS:
            mapping[f"{theirs}.bias"] = f"{ours}.bias"
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


def load_deepsim_fc6(path: str | os.PathLike, device: str | torch.device = "cpu") -> DeePSiMFc6:
    """Load DeePSiM fc6 weights from either public PyTorch port.

    Accepted formats, detected from the keys:

    * the common port (``upconvGAN_fc6.pt``): ``defc7.weight`` … ``deconv0.bias``,
      with any shared prefix such as ``G.``;
    * XDream's port: ``fc7/fc6/fc5`` and ``tconv5_0`` … ``tconv0`` weights, no biases
      on the transposed convolutions (ours are set to zero).

    A checkpoint wrapping the state dict as ``{"state_dict": ...}`` or
    ``{"model": ...}`` is unwrapped.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says where weights come from).
        ValueError: the file is not a state dict of one of these formats, or has
            missing/unexpected keys or wrong shapes (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DeePSiM fc6 weights file {str(path)!r} does not exist: {WEIGHTS_HELP}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that is not plain tensors
        raise ValueError(f"{str(path)!r} could not be read as a PyTorch state dict ({exc}); {WEIGHTS_HELP}") from exc
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        # Training checkpoints wrap the weights; take them if that is all it is.
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"{str(path)!r} does not hold a state dict (a mapping of names to tensors); {WEIGHTS_HELP}")

    shapes = _expected_shapes()
    xdream = _xdream_keys()
    formats = (
        ("common port (defc7.weight ... deconv0.bias, optional prefix such as 'G.')", set(shapes), False),
        ("XDream port (fc7/fc6/fc5.weight/bias, tconv5_0.weight ... tconv0.weight)", set(xdream), True),
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
            f"{str(path)!r} is not a known DeePSiM fc6 format: keys {_few(keys)} match neither "
            f"the {formats[0][0]} nor the {formats[1][0]}; {WEIGHTS_HELP}"
        )
    missing = expected - set(stripped)
    unexpected = set(stripped) - expected
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(prefix + k for k in missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(stripped[k] for k in unexpected)}")
        raise ValueError(f"{str(path)!r} looks like the {fmt} but has {' and '.join(parts)}")

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
        raise ValueError(f"{str(path)!r} ({fmt}) has tensors of the wrong shape or type: {'; '.join(wrong[:5])}{more}")
    if is_xdream:
        for name, _, cout, *_ in _DECONVS:
            state[f"{name}.bias"] = torch.zeros(cout)

    # Build on the meta device and adopt the loaded tensors: the 224 MB of
    # weights are allocated once, never randomly initialised and then overwritten.
    with torch.device("meta"):
        model = DeePSiMFc6()
    model.G.load_state_dict(state, strict=True, assign=True)
    return model.to(device)
