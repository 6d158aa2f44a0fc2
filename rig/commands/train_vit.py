"""``rig train-vit``: train the study's small CIFAR-10 ViT and save weights the simulator loads.

DATA is a folder holding CIFAR-10 python batches (data_batch_1..5, test_batch),
MNIST-style IDX files (e.g. /usr/share/datasets/fashion-mnist), or an
ImageFolder (train/ and val/ class folders, or class folders split at random).
The weights then serve as ``--neuron cifar_vit:... --weights OUT``, or by name
alone once copied to the torch hub cache as checkpoints/cifar_vit.pt.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rig.loop.assemble import pick_device
from simulators.cifar_vit import ARCHITECTURE, CIFAR_VIT_NAME, CIFAR_VIT_WEIGHTS_FILE
from simulators.datasets import load_dataset
from simulators.models import get_cfg
from simulators.training import TrainConfig, save_weights, train_cifar_vit

HELP = "train the small CIFAR-10 ViT (cifar_vit) on CIFAR-10 batches, IDX files or an ImageFolder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig train-vit``."""
    defaults = TrainConfig()
    parser.add_argument("data", type=Path, help="folder of CIFAR-10 python batches, IDX files, or an ImageFolder")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write (state dict, .pt); "
                        "a JSON record of the run is written beside it")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"default {defaults.epochs}")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"default {defaults.batch_size}")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"peak AdamW learning rate, default {defaults.lr}")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                        help=f"default {defaults.weight_decay}")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="initialisation, shuffling, augmentation")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of a single ImageFolder held out for validation (default 0.1)")
    parser.add_argument("--train-limit", type=int, help="train on a random subset of this many images")
    parser.add_argument("--val-limit", type=int, help="validate on a random subset of this many images")
    parser.add_argument("--no-augment", action="store_true", help="no random crops or flips")
    parser.add_argument("--model", default=CIFAR_VIT_NAME,
                        help=f"registered model to train (default {CIFAR_VIT_NAME}; e.g. test_vit for a quick check)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def run(args: argparse.Namespace) -> int:
    """Load the data, train, save the weights and the record; print the validation accuracy."""
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, seed=args.seed, augment=not args.no_augment)
    for name in ("train_limit", "val_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    get_cfg(args.model)  # an unknown name fails before the data is read
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.out.suffix == ".json":
        raise ValueError(f"--out {args.out}: the weights file cannot be .json (the run record goes there)")

    started = time.perf_counter()
    train, val = load_dataset(args.data, val_fraction=args.val_fraction, seed=args.seed)
    train = train.subset(args.train_limit, args.seed)
    val = val.subset(args.val_limit, args.seed + 1)
    loaded = time.perf_counter() - started
    architecture = ARCHITECTURE if args.model == CIFAR_VIT_NAME else ""
    print(f"rig train-vit: {args.model} {architecture} on {device}")
    print(f"  train: {len(train)} images from {train.source}")
    print(f"  val:   {len(val)} images from {val.source}  ({len(train.classes)} classes; loaded in {loaded:.1f} s)")
    print(f"  {config}", flush=True)

    result = train_cifar_vit(train, val, config, device=device, progress=not args.quiet, model_name=args.model)
    weights, record = save_weights(result, args.out, config, train, val, device)
    print(f"done: val accuracy {result.val_accuracy:.4f} after {config.epochs} epoch(s), "
          f"{result.seconds:.1f} s training")
    print(f"      wrote {weights} and {record}")
    hint = f"  (or copy it to <torch hub dir>/checkpoints/{CIFAR_VIT_WEIGHTS_FILE})" if args.model == CIFAR_VIT_NAME else ""
    print(f"      use: rig run PROTOCOL --neuron {args.model}:head:unit=0 --weights {weights}{hint}", flush=True)
    return 0
