"""Typed unit addresses: parse the text once, resolve against the model once.

Spec syntax::

    MODEL:LAYER:unit=N[:pos=Y,X|pos=center][:token=cls|mean|N]

e.g. ``efficientnet_lite0:blocks.5.0:unit=12``, ``alexnet:features.10:unit=3:pos=6,6``,
``test_vit:blocks.1:unit=4:token=cls``. LAYER is a module path from
``model.named_modules()``. The keyword parts may come in any order.

The same syntax addresses every family:

- CNN conv channels take ``pos=Y,X`` (default: the centre, H//2, W//2); fc
  layers (e.g. AlexNet ``classifier.6``) take neither pos nor token.
- ViT token layers take ``token=cls`` (default), ``token=N`` (token index; the
  CLS token is 0, patches follow) or ``token=mean`` (mean over patch tokens).
  - torchvision ``vit_b_16``/``vit_l_16``: logits ``heads.head``; block output
    ``encoder.layers.encoder_layer_K``; MLP hidden after the GELU
    ``encoder.layers.encoder_layer_K.mlp.1``.
  - timm ViTs (``vit_s14_focus``, ``test_vit``): block output ``blocks.K``;
    MLP hidden after the GELU ``blocks.K.mlp.act``; logits ``head``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

import torch
from torch import nn

from simulators.models import ModelCfg

__all__ = [
    "UnitAddress",
    "parse_unit",
    "LayerInfo",
    "probe_layers",
    "list_layers",
    "ResolvedUnit",
    "resolve_unit",
    "example_unit",
]

SYNTAX = "MODEL:LAYER:unit=N[:pos=Y,X|pos=center][:token=cls|mean|N]"
EXAMPLE = "alexnet:features.10:unit=3:pos=6,6"
_TOKEN_WORDS = ("cls", "mean")


def _syntax_error(text: str, problem: str) -> ValueError:
    return ValueError(f"bad unit spec {text!r}: {problem}; syntax: {SYNTAX}, e.g. {EXAMPLE}")


@dataclass(frozen=True)
class UnitAddress:
    """One unit: a channel of a layer, at a spatial position (CNN) or token (ViT).

    ``position=None`` means the centre of a spatial layer; ``token=None``
    means ``"cls"`` on a token layer. Both are filled in by ``resolve_unit``.
    """

    model: str
    layer: str
    unit: int
    position: tuple[int, int] | None = None
    token: str | int | None = None

    def __post_init__(self) -> None:
        for label, name in (("model", self.model), ("layer", self.layer)):
            if not isinstance(name, str) or not name or ":" in name or "=" in name:
                raise ValueError(f"{label} must be a non-empty name without ':' or '=', got {name!r}")
        if not _is_index(self.unit):
            raise ValueError(f"unit must be an int >= 0, got {self.unit!r}")
        if self.position is not None:
            if not (isinstance(self.position, tuple) and len(self.position) == 2
                    and all(_is_index(v) for v in self.position)):
                raise ValueError(f"position must be a tuple (y, x) of ints >= 0, got {self.position!r}")
        if self.token is not None and self.token not in _TOKEN_WORDS and not _is_index(self.token):
            raise ValueError(f"token must be 'cls', 'mean' or an int >= 0, got {self.token!r}")

    def __str__(self) -> str:
        text = f"{self.model}:{self.layer}:unit={self.unit}"
        if self.position is not None:
            text += f":pos={self.position[0]},{self.position[1]}"
        if self.token is not None:
            text += f":token={self.token}"
        return text


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_int(text: str, key: str, value: str) -> int:
    if not value.isdigit():
        raise _syntax_error(text, f"{key}={value!r} is not an int >= 0")
    return int(value)


def _parse_pos(text: str, value: str) -> tuple[int, int] | None:
    if value == "center":
        return None
    parts = value.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise _syntax_error(text, f"pos={value!r} must be 'Y,X' (ints >= 0) or 'center'")
    return int(parts[0]), int(parts[1])


def _parse_token(text: str, value: str) -> str | int:
    if value in _TOKEN_WORDS:
        return value
    if value.isdigit():
        return int(value)
    raise _syntax_error(text, f"token={value!r} must be 'cls', 'mean' or an int >= 0")


def parse_unit(text: str) -> UnitAddress:
    """Parse a unit spec (see module docstring) into a ``UnitAddress``."""
    if not isinstance(text, str):
        raise ValueError(f"unit spec must be a string, got {type(text).__name__}")
    parts = [p.strip() for p in text.strip().split(":")]
    if len(parts) < 3:
        raise _syntax_error(text, "need at least MODEL, LAYER and unit=N")
    model, layer, options = parts[0], parts[1], parts[2:]
    for label, name in (("MODEL", model), ("LAYER", layer)):
        if not name or "=" in name:
            raise _syntax_error(text, f"{label} part {name!r} must be a plain name")
    values: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not value:
            raise _syntax_error(text, f"part {option!r} is not key=value")
        if key not in ("unit", "pos", "token"):
            raise _syntax_error(text, f"unknown key {key!r} (valid: unit, pos, token)")
        if key in values:
            raise _syntax_error(text, f"{key} is given twice")
        values[key] = value
    if "unit" not in values:
        raise _syntax_error(text, "unit=N is missing")
    return UnitAddress(
        model=model,
        layer=layer,
        unit=_parse_int(text, "unit", values["unit"]),
        position=_parse_pos(text, values["pos"]) if "pos" in values else None,
        token=_parse_token(text, values["token"]) if "token" in values else None,
    )


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class LayerInfo:
    """A module's output shape for one image (batch dim dropped) and how often it runs.

    Modules reused inside a forward pass (e.g. torchvision ResNet's ``relu``)
    fire several times; ``shape`` is from the last call, which is the one read.
    """

    shape: tuple[int, ...]
    n_calls: int


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def probe_layers(model: nn.Module, cfg: ModelCfg) -> dict[str, LayerInfo]:
    """Run one blank image through ``model`` and record every named module's output.

    Modules whose output is not a tensor (tuples, None) are left out.
    """
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def make_hook(name: str):
        def hook(_module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor):
                calls[name] = calls.get(name, 0) + 1
                shapes[name] = tuple(output.shape[1:])
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if n]
    size = cfg.input_size
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, size, size, device=_model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return {name: LayerInfo(shapes[name], calls[name]) for name in calls}


def list_layers(model: nn.Module, cfg: ModelCfg) -> list[tuple[str, tuple[int, ...]]]:
    """Every named module that outputs a tensor, with its output shape for one image."""
    return [(name, info.shape) for name, info in probe_layers(model, cfg).items()]


# --------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class ResolvedUnit:
    """A unit checked against its model, with defaults made explicit.

    ``kind`` is ``"spatial"`` (N,C,H,W), ``"vector"`` (N,D) or ``"token"`` (N,T,D).
    For token layers, ``token_index`` is the token read, or ``None`` for the
    mean over patch tokens (from ``first_patch_token`` on).
    """

    address: UnitAddress  # with position/token defaults filled in
    kind: str
    layer_shape: tuple[int, ...]
    n_calls: int
    token_index: int | None = None
    first_patch_token: int = 0

    def read(self, activation: torch.Tensor) -> torch.Tensor:
        """This unit's value for each image in a batched ``activation``, shape (N,)."""
        unit = self.address.unit
        if self.kind == "spatial":
            y, x = self.address.position
            return activation[:, unit, y, x]
        if self.kind == "vector":
            return activation[:, unit]
        if self.token_index is None:
            return activation[:, self.first_patch_token:, unit].mean(dim=1)
        return activation[:, self.token_index, unit]


def _layer_error(name: str, cfg: ModelCfg, model: nn.Module, layers: dict[str, LayerInfo]) -> ValueError:
    if name in dict(model.named_modules()):
        return ValueError(
            f"layer {name!r} of {cfg.name} does not output a single tensor; "
            f"address one of its submodules or its parent; run `rig units {cfg.name}` for all layers"
        )
    close = difflib.get_close_matches(name, list(layers), n=5, cutoff=0.6)
    return ValueError(
        f"layer {name!r} not found in {cfg.name}; close matches: {close}; "
        f"run `rig units {cfg.name}` for all layers"
    )


def _check_unit(address: UnitAddress, n_units: int, shape: tuple[int, ...]) -> None:
    if address.unit >= n_units:
        raise ValueError(
            f"{address}: unit {address.unit} out of range; layer {address.layer} output "
            f"{shape} has units 0..{n_units - 1}"
        )


def _resolve_spatial(address: UnitAddress, info: LayerInfo) -> ResolvedUnit:
    channels, height, width = info.shape
    if address.token is not None:
        raise ValueError(
            f"{address}: token given for layer {address.layer} with spatial output "
            f"(C,H,W)={info.shape}; use pos=Y,X with 0<=Y<{height}, 0<=X<{width}"
        )
    _check_unit(address, channels, info.shape)
    position = address.position if address.position is not None else (height // 2, width // 2)
    y, x = position
    if y >= height or x >= width:
        raise ValueError(
            f"{address}: position ({y},{x}) out of range; layer {address.layer} is "
            f"{height}x{width}, valid 0<=Y<{height}, 0<=X<{width}"
        )
    return ResolvedUnit(replace(address, position=position), "spatial", info.shape, info.n_calls)


def _resolve_vector(address: UnitAddress, info: LayerInfo) -> ResolvedUnit:
    if address.position is not None or address.token is not None:
        raise ValueError(
            f"{address}: pos/token given for layer {address.layer} with output {info.shape}, "
            f"which has neither positions nor tokens; give only unit=N"
        )
    _check_unit(address, info.shape[0], info.shape)
    return ResolvedUnit(address, "vector", info.shape, info.n_calls)


def _resolve_token(
    address: UnitAddress, info: LayerInfo, cfg: ModelCfg, full_length: int
) -> ResolvedUnit:
    n_tokens, dim = info.shape
    if address.position is not None:
        raise ValueError(
            f"{address}: position given for token layer {address.layer} (T,D)={info.shape}; "
            f"use token=cls|mean|N with 0<=N<{n_tokens}"
        )
    _check_unit(address, dim, info.shape)
    # Layers before the CLS token is prepended (e.g. patch embedding) are shorter.
    prefix = cfg.num_prefix_tokens if n_tokens == full_length else 0
    token = "cls" if address.token is None else address.token
    if token == "cls":
        if prefix == 0:
            raise ValueError(
                f"{address}: layer {address.layer} (T,D)={info.shape} has no class token; "
                f"use token=mean or token=N with 0<=N<{n_tokens}"
            )
        index = 0
    elif token == "mean":
        index = None
    else:
        if token >= n_tokens:
            raise ValueError(
                f"{address}: token {token} out of range; layer {address.layer} has tokens "
                f"0..{n_tokens - 1}"
            )
        index = token
    return ResolvedUnit(
        replace(address, token=token), "token", info.shape, info.n_calls,
        token_index=index, first_patch_token=prefix,
    )


def resolve_unit(
    model: nn.Module,
    cfg: ModelCfg,
    address: UnitAddress | str,
    layers: dict[str, LayerInfo] | None = None,
) -> ResolvedUnit:
    """Check ``address`` against ``model`` and fill in its defaults.

    Spatial layers default to the centre position (H//2, W//2); token layers
    to the class token. ``layers`` (from ``probe_layers``) saves a forward
    pass when resolving many units. Raises ``ValueError`` saying what is valid.
    """
    if isinstance(address, str):
        address = parse_unit(address)
    if address.model != cfg.name:
        raise ValueError(f"{address}: names model {address.model!r}, not {cfg.name!r}")
    if layers is None:
        layers = probe_layers(model, cfg)
    info = layers.get(address.layer)
    if info is None:
        raise _layer_error(address.layer, cfg, model, layers)
    token_lengths = [i.shape[0] for i in layers.values() if len(i.shape) == 2]
    full_length = max(token_lengths) if token_lengths else 0
    if len(info.shape) == 3:  # (C,H,W): CNN layers and a ViT's patch-embedding conv
        if cfg.family == "vit" and info.shape[1] == full_length:
            # e.g. timm's attn.q_norm: (heads, tokens, head_dim) is not an image grid.
            raise ValueError(
                f"{address}: layer {address.layer} output {info.shape} is per attention head "
                f"(heads, tokens, dim), not spatial; address the block's attn.qkv or attn.proj instead"
            )
        return _resolve_spatial(address, info)
    if len(info.shape) == 1:
        return _resolve_vector(address, info)
    if len(info.shape) == 2:
        return _resolve_token(address, info, cfg, full_length)
    raise ValueError(
        f"{address}: layer {address.layer} output shape {info.shape} is not (C,H,W), (D) or "
        f"(T,D); pick another layer"
    )



def example_unit(
    model: nn.Module, cfg: ModelCfg, layer: str, layers: dict[str, LayerInfo]
) -> UnitAddress | None:
    """Unit 0 of ``layer`` as a valid, fully spelled-out address, or ``None`` if none exists.

    Token layers without a class token (e.g. a patch embedding) get
    ``token=mean``; layers whose output can't be addressed give ``None``.
    """
    candidates = [dict(), dict(token="mean")]
    for extra in candidates:
        try:
            address = UnitAddress(cfg.name, layer, 0, **extra)
            return resolve_unit(model, cfg, address, layers=layers).address
        except ValueError:
            continue
    return None
