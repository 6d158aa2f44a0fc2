"""The study's small Vision Transformer for CIFAR-10 (DESIGN.md §8).

Patch 4 on a 32×32 input (64 patch tokens plus a CLS token), embedding 256,
8 heads, MLP hidden size 512, 6 layers, dropout 0.2, 10 classes; the study
reached 76 % on CIFAR-10. Built as a timm ``VisionTransformer``, so its units
are addressed like any timm ViT: ``cifar_vit:blocks.5:unit=12:token=cls``,
``cifar_vit:blocks.2.mlp.act:unit=100:token=7``, ``cifar_vit:head:unit=3``.

Dropout 0.2 is applied where the usual small-ViT recipe puts it: on the
embedded tokens, and after the attention projection and each MLP layer.

Weights are a file the user trains with ``rig train-vit`` (see
:mod:`simulators.training`); the registry looks for ``cifar_vit.pt`` in the
torch hub cache when no file is named.
"""
from __future__ import annotations

from torch import nn

__all__ = [
    "build_cifar_vit",
    "CIFAR_VIT_NAME",
    "CIFAR_VIT_WEIGHTS_FILE",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_CLASSES",
    "ARCHITECTURE",
]

CIFAR_VIT_NAME = "cifar_vit"
#: The file name looked up in ``torch.hub.get_dir()/checkpoints`` when no weights file is given.
CIFAR_VIT_WEIGHTS_FILE = "cifar_vit.pt"
# Per-channel statistics of the CIFAR-10 training set; training and simulation share them.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: DESIGN.md §8, in timm's argument names.
ARCHITECTURE = dict(
    img_size=32,
    patch_size=4,
    embed_dim=256,
    num_heads=8,
    mlp_ratio=2.0,  # MLP hidden size 512
    depth=6,
    num_classes=10,
    pos_drop_rate=0.2,
    proj_drop_rate=0.2,
)


def build_cifar_vit(num_classes: int = 10) -> nn.Module:
    """The small CIFAR-10 ViT with fresh random weights (seed them with ``torch.manual_seed``)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(**{**ARCHITECTURE, "num_classes": num_classes})
