"""Train the study's small CIFAR-10 ViT (:mod:`simulators.cifar_vit`) on in-memory 32×32 images.

Training feeds the model exactly what the simulated neuron will: images in
[0,1] normalised by the registered config (:func:`simulators.neuron.preprocess_for`),
so saved weights work unchanged as ``load_model("cifar_vit", weights=FILE)``.

Recipe: AdamW (weight decay 0.05), linear warm-up over the first 5 % of steps
then cosine decay, cross-entropy, random 4-pixel-padded crops and horizontal
flips. Shuffling, augmentation and initialisation all follow ``seed``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from simulators.cifar_vit import CIFAR_VIT_NAME
from simulators.datasets import ImageData
from simulators.models import ModelCfg, get_cfg
from simulators.neuron import preprocess_for

__all__ = ["TrainConfig", "EpochRecord", "TrainResult", "train_cifar_vit", "evaluate", "save_weights"]

_EVAL_BATCH = 256
_PAD = 4


@dataclass(frozen=True)
class TrainConfig:
    """Options of one training run; checked when built."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    augment: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch size must be an integer >= 1, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ValueError(f"lr must be a number in (0, 1), got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


@dataclass
class EpochRecord:
    """Figures of one epoch: mean training loss and accuracy, validation loss and accuracy, seconds."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


@dataclass
class TrainResult:
    """The trained model (eval mode, on the training device) and what happened."""

    model: nn.Module
    model_name: str = CIFAR_VIT_NAME
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def val_accuracy(self) -> float:
        """Validation accuracy after the last epoch."""
        return self.history[-1].val_accuracy


def _to_input(images: torch.Tensor, cfg: ModelCfg, device: torch.device) -> torch.Tensor:
    return preprocess_for(cfg, images.to(device, non_blocking=True).float().div_(255))


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crops of the image padded by 4 pixels, and horizontal flips, per image (uint8 in and out)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (_PAD, _PAD, _PAD, _PAD))
    offsets = torch.randint(0, 2 * _PAD + 1, (n, 2), generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    out = torch.empty_like(images)
    for i, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(-1) if flip else crop
    return out


@torch.inference_mode()
def evaluate(model: nn.Module, data: ImageData, device: torch.device | str = "cpu",
             model_name: str = CIFAR_VIT_NAME) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` (registered as ``model_name``) on ``data``, in eval mode."""
    device = torch.device(device)
    cfg = get_cfg(model_name)
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(data), _EVAL_BATCH):
        x = _to_input(data.images[start:start + _EVAL_BATCH], cfg, device)
        y = data.labels[start:start + _EVAL_BATCH].to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    n = max(len(data), 1)
    return loss_sum / n, correct / n


def _schedule(total_steps: int) -> Any:
    warmup = max(1, int(0.05 * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def train_cifar_vit(
    train: ImageData,
    val: ImageData,
    config: TrainConfig = TrainConfig(),
    device: torch.device | str = "cpu",
    progress: bool = True,
    model_name: str = CIFAR_VIT_NAME,
) -> TrainResult:
    """Train a fresh ``model_name`` (the registered ``cifar_vit`` by default) on ``train``.

    Any registered classifier trains the same way (tests use the tiny ``test_vit``);
    the model is evaluated on ``val`` after every epoch.
    """
    from tqdm.auto import tqdm

    cfg = get_cfg(model_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = cfg.builder()
        with torch.no_grad():
            n_classes = model.eval()(torch.zeros(1, 3, cfg.input_size, cfg.input_size)).shape[-1]
    for name, data in (("training", train), ("validation", val)):
        if len(data) == 0:
            raise ValueError(f"the {name} set ({data.source}) is empty")
        if len(data.classes) > n_classes:
            raise ValueError(f"{data.source}: {len(data.classes)} classes, but {model_name} has {n_classes} outputs")
    device = torch.device(device)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config.epochs * steps_per_epoch))
    generator = torch.Generator().manual_seed(config.seed)
    # Dropout draws from the global generator; seed it for the run, then put it back.
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed + 1)
    result = TrainResult(model, model_name)
    started = time.perf_counter()
    try:
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            order = torch.randperm(len(train), generator=generator)
            loss_sum, correct, seen = 0.0, 0, 0
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", unit="batch",
                       disable=not progress, leave=True, dynamic_ncols=True)
            for step in bar:
                idx = order[step * config.batch_size:(step + 1) * config.batch_size]
                images = train.images[idx]
                if config.augment:
                    images = _augment(images, generator)
                x = _to_input(images, cfg, device)
                y = train.labels[idx].to(device)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.item() * len(idx)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(idx)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            bar.close()
            val_loss, val_acc = evaluate(model, val, device, model_name)
            record = EpochRecord(epoch, loss_sum / seen, correct / seen, val_loss, val_acc,
                                 time.perf_counter() - epoch_start)
            result.history.append(record)
            if progress:
                tqdm.write(f"epoch {epoch}/{config.epochs}: train loss {record.train_loss:.4f} "
                           f"acc {record.train_accuracy:.4f}  val loss {val_loss:.4f} acc {val_acc:.4f}  "
                           f"({record.seconds:.1f} s)")
    finally:
        torch.random.set_rng_state(rng_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result


def save_weights(result: TrainResult, out: str | Path, config: TrainConfig, train: ImageData, val: ImageData,
                 device: torch.device | str) -> tuple[Path, Path]:
    """Write the state dict to ``out`` and a JSON record of the run beside it (``out`` with ``.json``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    torch.save(state, out)
    record = {
        "model": result.model_name,
        "weights": str(out),
        "config": asdict(config),
        "device": str(device),
        "train": {"source": train.source, "images": len(train)},
        "val": {"source": val.source, "images": len(val)},
        "classes": train.classes,
        "history": [asdict(h) for h in result.history],
        "val_accuracy": result.val_accuracy,
        "seconds": result.seconds,
        "torch": torch.__version__,
    }
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps(record, indent=2))
    return out, sidecar
