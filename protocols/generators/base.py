"""The generator interface: any module mapping latent codes to images, and the registry of kinds."""
from __future__ import annotations

import abc

import torch
from torch import nn

from protocols.images import check_image_batch
from protocols.registry import Configurable, Registry

__all__ = ["GENERATORS", "Generator"]

#: Every generator kind, registered beside its code (``@GENERATORS.register("fourier", FourierOptions)``).
GENERATORS: Registry[Generator] = Registry("generator")


class Generator(Configurable, nn.Module, abc.ABC):
    """Maps a batch of codes ``(N, code_dim)`` to RGB images ``(N, 3, H, W)`` in [0, 1].

    Subclasses implement :meth:`generate`. :meth:`forward` validates the input
    once, so implementations receive a clean float tensor on the right device,
    and checks the output once (shape, floating point, within [0, 1] to a 1e-3
    tolerance, then clamped), so no implementation checks its own.
    """

    interface = "generator"
    #: Length of one latent code.
    code_dim: int
    #: Side of the square output image, in pixels.
    image_size: int

    @property
    def name(self) -> str:
        """How messages name this generator: its label (a module generator's factory), kind or class."""
        return getattr(self, "label", None) or self.kind or type(self).__name__

    def forward(self, codes: torch.Tensor) -> torch.Tensor:  # noqa: D401
        """Return images in [0, 1] for ``codes`` of shape (N, code_dim)."""
        if codes.ndim != 2 or codes.shape[1] != self.code_dim:
            raise ValueError(
                f"{type(self).__name__} expects codes of shape (N, {self.code_dim}), "
                f"got {tuple(codes.shape)}"
            )
        param = next(self.parameters(), None)
        buffer = next(self.buffers(), None)
        ref = param if param is not None else buffer
        if ref is not None:
            codes = codes.to(device=ref.device, dtype=ref.dtype)
        else:
            codes = codes.float()
        images = self.generate(codes)
        return check_image_batch(images, (codes.shape[0], 3, self.image_size, self.image_size),
                                 f"images of generator {self.name!r}")

    @abc.abstractmethod
    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        """Turn validated codes into images (N, 3, image_size, image_size) in [0, 1]."""
