"""The generator interface: any module mapping latent codes to images."""
from __future__ import annotations

import abc

import torch
from torch import nn


class Generator(nn.Module, abc.ABC):
    """Maps a batch of codes ``(N, code_dim)`` to RGB images ``(N, 3, H, W)`` in [0, 1].

    Subclasses implement :meth:`generate`; :meth:`forward` validates the input
    once so implementations receive a clean float tensor on the right device.
    """

    #: Length of one latent code.
    code_dim: int
    #: Side of the square output image, in pixels.
    image_size: int

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
        return self.generate(codes)

    @abc.abstractmethod
    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        """Turn validated codes into images (N, 3, image_size, image_size) in [0, 1]."""
