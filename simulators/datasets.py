"""Small labelled image sets for training the CIFAR-10 ViT, held in memory as 32×32 uint8.

Three layouts are read, detected from the folder:

- **CIFAR-10 python batches**: ``data_batch_1`` … ``data_batch_5`` and ``test_batch``
  (pickles from ``cifar-10-python.tar.gz``), in the folder or its ``cifar-10-batches-py/``, read as data
  only (:mod:`simulators.safe_pickle`: a crafted batch cannot run code);
- **IDX files** of the MNIST family (MNIST, Fashion-MNIST, e.g. Debian's
  ``/usr/share/datasets/fashion-mnist``): ``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``;
- **ImageFolder**: ``train/`` and ``val/`` (or ``test/``) folders of class folders, or
  one folder of class folders that is split at random into train and validation.

Grayscale images become 3 equal channels; other sizes are resized to 32×32
(bilinear). Everything is decoded once: a set the size of CIFAR-10 is 150 MB.
"""
from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from simulators.safe_pickle import load_data_pickle

__all__ = ["ImageData", "load_dataset", "load_cifar10", "load_idx", "load_image_folder_split", "IMAGE_SIZE"]

IMAGE_SIZE = 32
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass
class ImageData:
    """Labelled images: ``images`` uint8 (N,3,32,32), ``labels`` int64 (N,), class names, where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1:] != (3, IMAGE_SIZE,
                                                                                                   IMAGE_SIZE):
            raise ValueError(f"{self.source}: images must be uint8 (N,3,32,32), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.source}: {self.images.shape[0]} images but {tuple(self.labels.shape)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"{self.source}: labels must be in 0..{len(self.classes) - 1}, got "
                             f"{int(self.labels.min())}..{int(self.labels.max())}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, count: int | None, seed: int) -> "ImageData":
        """A random ``count`` of the images (all when None or larger than the set), seeded."""
        if count is None or count >= len(self):
            return self
        if count < 1:
            raise ValueError(f"a subset needs at least 1 image, got {count}")
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return ImageData(self.images[keep], self.labels[keep], self.classes, f"{self.source} (random {count})")


def to_model_images(images: np.ndarray) -> torch.Tensor:
    """(N,H,W) grayscale, (N,H,W,3) or (N,3,H,W) uint8 → (N,3,32,32) uint8."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None].expand(-1, 3, -1, -1)
    elif x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be (N,H,W), (N,H,W,3) or (N,3,H,W), got {tuple(images.shape)}")
    if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        out = []
        for chunk in x.split(4096):  # bounded float memory for big sets
            y = F.interpolate(chunk.float(), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False,
                              antialias=True)
            out.append(y.round_().clamp_(0, 255).to(torch.uint8))
        x = torch.cat(out) if out else x.new_zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE))
    return x.contiguous()


# --------------------------------------------------------------------------- CIFAR-10 python batches


def _cifar_folder(folder: Path) -> Path | None:
    for candidate in (folder, folder / "cifar-10-batches-py"):
        if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
            return candidate
    return None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a {type(batch).__name__}, not a dict)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels', has {sorted(map(str, batch))}")
    if not isinstance(data, np.ndarray) or not isinstance(labels, (list, np.ndarray)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < 2**31 for v in labels):
        raise ValueError(f"{path}: a CIFAR-10 batch's 'data' must be an array and its 'labels' a list of class "
                         f"indices, got {type(data).__name__} and {type(labels).__name__}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{path}: 'data' must be uint8 (N, 3072) with N labels, got {data.dtype} {data.shape} "
                         f"and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _read_pickle(path: Path) -> object:
    """A CIFAR-10 batch file's data, read without running code (see simulators/safe_pickle.py)."""
    try:
        return load_data_pickle(path)
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise ValueError(f"{path}: not a CIFAR-10 python batch: {exc}") from None


def load_cifar10(folder: str | Path) -> tuple[ImageData, ImageData]:
    """The CIFAR-10 python batches in ``folder``: (training set, test set)."""
    folder = Path(folder)
    root = _cifar_folder(folder)
    if root is None:
        raise FileNotFoundError(f"{folder}: no CIFAR-10 python batches (data_batch_1..5, test_batch)")
    train_files = sorted(root.glob("data_batch_[0-9]"))
    missing = [name for name in ("data_batch_1", "test_batch") if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: CIFAR-10 batch file(s) {missing} missing (need data_batch_1..5, test_batch)")
    classes = _cifar_classes(root)
    parts = [_read_cifar_batch(p) for p in train_files]
    test_x, test_y = _read_cifar_batch(root / "test_batch")
    names = ",".join(p.name for p in train_files)
    train = ImageData(torch.from_numpy(np.concatenate([p[0] for p in parts])),
                      torch.from_numpy(np.concatenate([p[1] for p in parts])), classes, f"{root} [{names}]")
    return train, ImageData(torch.from_numpy(test_x), torch.from_numpy(test_y), classes, f"{root} [test_batch]")


def _cifar_classes(root: Path) -> list[str]:
    from simulators.cifar_vit import CIFAR10_CLASSES

    meta = root / "batches.meta"
    if meta.is_file():
        table = _read_pickle(meta)
        names = table.get(b"label_names") if isinstance(table, dict) else None
        if isinstance(names, list) and names:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return list(CIFAR10_CLASSES)


# --------------------------------------------------------------------------- IDX (MNIST family)


def _idx_path(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    # Header: two zero bytes, type code 0x08 (uint8), number of dimensions, then big-endian int32 sizes.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
        raise ValueError(f"{path}: not an IDX file of {ndim}-d unsigned bytes")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape).copy()  # frombuffer is read-only; torch wants writable memory


def load_idx(folder: str | Path) -> tuple[ImageData, ImageData]:
    """MNIST-family IDX files in ``folder``: (training set, test set), resized to 32×32 RGB."""
    folder = Path(folder)
    paths = {key: _idx_path(folder, stem) for key, stem in _IDX_FILES.items()}
    missing = [_IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(f"{folder}: IDX file(s) {missing} missing (optionally .gz)")
    raw = {}
    for split in ("train", "test"):
        images = _read_idx(paths[f"{split}_images"], 3)
        labels = _read_idx(paths[f"{split}_labels"], 1).astype(np.int64)
        if len(images) != len(labels):
            raise ValueError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
        raw[split] = images, labels
    # IDX files carry no class names; the classes are the label values seen in either split.
    n_classes = max(int(labels.max()) + 1 if len(labels) else 0 for _, labels in raw.values())
    classes = [str(i) for i in range(n_classes)]
    train, test = (
        ImageData(to_model_images(images), torch.from_numpy(labels), classes, str(paths[f"{split}_images"]))
        for split, (images, labels) in raw.items()
    )
    return train, test


# --------------------------------------------------------------------------- ImageFolder


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if files:
            classes[sub.name] = files
    if not classes:
        raise FileNotFoundError(f"{folder}: no class folders with images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return classes


def _decode(files: list[Path], labels: list[int], classes: list[str], source: str) -> ImageData:
    from PIL import Image, UnidentifiedImageError

    images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                images[i] = np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{path}: cannot read image: {exc}") from None
    return ImageData(to_model_images(images), torch.tensor(labels, dtype=torch.int64), classes, source)


def load_image_folder_split(folder: str | Path, val_fraction: float = 0.1, seed: int = 0) -> tuple[ImageData, ImageData]:
    """An ImageFolder: ``train/`` + ``val/`` (or ``test/``), else one folder split ``val_fraction`` at random."""
    folder = Path(folder)
    val_dir = next((folder / n for n in ("val", "test") if (folder / n).is_dir()), None)
    if (folder / "train").is_dir() and val_dir is not None:
        train_classes = _class_folders(folder / "train")
        val_classes = _class_folders(val_dir)
        classes = sorted(train_classes)
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise ValueError(f"{val_dir}: classes {unknown} are not in {folder / 'train'} (classes: {classes})")
        sets = []
        for by_class, where in ((train_classes, folder / "train"), (val_classes, val_dir)):
            files = [f for c in classes for f in by_class.get(c, [])]
            labels = [i for i, c in enumerate(classes) for _ in by_class.get(c, [])]
            sets.append(_decode(files, labels, classes, str(where)))
        return sets[0], sets[1]
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    by_class = _class_folders(folder)
    classes = sorted(by_class)
    files = [f for c in classes for f in by_class[c]]
    labels = np.array([i for i, c in enumerate(classes) for _ in by_class[c]])
    order = np.random.default_rng(seed).permutation(len(files))
    n_val = max(1, int(round(val_fraction * len(files))))
    if n_val >= len(files):
        raise ValueError(f"{folder}: {len(files)} images are too few to split off {val_fraction:.0%} for validation")
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    return (
        _decode([files[i] for i in train_idx], labels[train_idx].tolist(), classes, f"{folder} (train split)"),
        _decode([files[i] for i in val_idx], labels[val_idx].tolist(), classes, f"{folder} (val split {val_fraction})"),
    )


def load_dataset(folder: str | Path, val_fraction: float = 0.1, seed: int = 0) -> tuple[ImageData, ImageData]:
    """(train, validation) from ``folder``, in whichever of the three layouts it holds."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder not found: {folder}")
    if _cifar_folder(folder) is not None:
        return load_cifar10(folder)
    if any(_idx_path(folder, stem) for stem in _IDX_FILES.values()):
        return load_idx(folder)
    try:
        return load_image_folder_split(folder, val_fraction, seed)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{folder}: found neither CIFAR-10 python batches (data_batch_1..5, test_batch), MNIST-style IDX files "
            f"(train-images-idx3-ubyte[.gz], ...) nor an ImageFolder (class folders, or train/ and val/)"
        ) from None
