"""Figures for reports and sweeps: each function draws one PNG and returns its path."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # reports are made on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rig.analysis.convergence import Convergence  # noqa: E402
from rig.analysis.prototype import PrototypeComparison  # noqa: E402


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    return image.clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def montage(images: torch.Tensor, labels: Sequence[str], path: Path, columns: int = 10, title: str = "") -> Path:
    """A grid of images, each with a label under it (e.g. the best image of each generation)."""
    rows = -(-len(images) // columns)
    cols = min(columns, len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows + 0.4), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(_to_hwc(image))
        ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def image_png(image: torch.Tensor, path: Path, title: str = "") -> Path:
    """One image, shown large with a title."""
    fig, ax = plt.subplots(figsize=(3.2, 3.5), dpi=110)
    ax.imshow(_to_hwc(image))
    ax.axis("off")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def natural_distribution(natural: np.ndarray, comparison: PrototypeComparison, path: Path, title: str = "",
                         source: str = "") -> Path:
    """Histogram of natural-image scores with the prototype's score marked."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=110)
    ax.hist(natural, bins=max(5, min(40, len(natural) // 2)), color="#8aa", edgecolor="white",
            label=f"{len(natural)} natural images{f' ({source})' if source else ''}")
    ax.axvline(comparison.natural_mean, color="#444", linestyle=":", label=f"natural mean {comparison.natural_mean:.3g}")
    ax.axvline(comparison.prototype, color="#c22", linewidth=2, label=f"prototype {comparison.prototype:.3g}")
    pct = "undefined" if np.isnan(comparison.percent_over_mean) else f"{comparison.percent_over_mean:+.0f}%"
    ratio = "undefined" if np.isnan(comparison.ratio_to_best) else f"{comparison.ratio_to_best:.2f}"
    z = "undefined" if np.isnan(comparison.z_over_natural) else f"{comparison.z_over_natural:+.2f}"
    ax.set_title(f"{title}\nvs natural mean {pct}; / best natural {ratio}; percentile {comparison.percentile:.0f}; "
                 f"(prototype - mean) / SD {z}", fontsize=8)
    ax.set_xlabel("response")
    ax.set_ylabel("images")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def nearest_figure(prototype: torch.Tensor, natural: torch.Tensor, ids: Sequence[str], similarities: np.ndarray,
                   path: Path, network: str) -> Path:
    """The prototype followed by its nearest natural images, with cosine similarities."""
    size = natural.shape[-1]
    # Shown side by side at one size; the features were computed at each image's own resolution.
    prototype = torch.nn.functional.interpolate(prototype[None], size=(size, size), mode="bilinear",
                                                align_corners=False, antialias=True)
    images = torch.cat([prototype, natural])
    labels = ["prototype"] + [f"{i}\ncos {s:.3f}" for i, s in zip(ids, similarities)]
    return montage(images, labels, path, columns=len(images),
                   title=f"nearest natural images ({network} penultimate features, cosine similarity)")


def convergence_figure(curves: dict[str, Convergence], path: Path, title: str = "convergence") -> Path:
    """Min–max-normalised mean score per generation for several evolutions, with the 50% and 80% lines."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, c in curves.items():
        reached = ", ".join(f"{int(k * 100)}%: {'never' if v is None else v}" for k, v in c.reached.items())
        ax.plot(c.generations, c.normalised, label=f"{label} ({reached})")
    for threshold in (0.5, 0.8):
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("generation")
    ax.set_ylabel("normalised mean score")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
