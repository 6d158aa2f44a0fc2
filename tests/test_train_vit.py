"""The small CIFAR-10 ViT and `rig train-vit`: architecture, data readers, training, saved weights."""
from __future__ import annotations

import gzip
import json
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from rig.cli import EXIT_USAGE, main
from simulators.cifar_vit import CIFAR10_MEAN, CIFAR10_STD
from simulators.datasets import ImageData, load_cifar10, load_dataset, load_idx
from simulators.models import build_architecture, get_cfg, load_model
from simulators.neuron import SimulatedNeuron
from simulators.training import TrainConfig, _to_input, evaluate, train_cifar_vit


def _colour_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An easy 4-class task on noise: red, green, blue or grey images. uint8 (N,3,32,32)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 4)
    images = rng.integers(0, 70, (n, 3, 32, 32)).astype(np.uint8)
    for i, label in enumerate(labels):
        if label < 3:
            images[i, label] += 170
        else:
            images[i] += 100
    return images, labels


def _write_cifar(folder, per_batch: int = 8, test: int = 16) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        images, labels = _colour_images(per_batch, seed=i)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": images.reshape(per_batch, -1), b"labels": labels.tolist(),
                         b"batch_label": b"synthetic"}, f)
    images, labels = _colour_images(test, seed=99)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": images.reshape(test, -1), b"labels": labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i", b"j"]}, f)


def test_architecture_is_the_studys():
    model = build_architecture(get_cfg("cifar_vit"))
    assert model.patch_embed.proj.kernel_size == (4, 4) and model.patch_embed.proj.stride == (4, 4)
    assert model.pos_embed.shape == (1, 65, 256)  # 64 patches of a 32x32 image + CLS
    assert len(model.blocks) == 6
    for block in model.blocks:
        assert block.attn.num_heads == 8 and block.attn.qkv.in_features == 256
        assert block.mlp.fc1.out_features == 512
        assert block.mlp.drop1.p == 0.2 and block.attn.proj_drop.p == 0.2
    assert model.pos_drop.p == 0.2
    assert model.head.out_features == 10
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    cfg = get_cfg("cifar_vit")
    assert cfg.family == "vit" and cfg.input_size == 32 and cfg.num_prefix_tokens == 1
    assert cfg.mean == CIFAR10_MEAN and cfg.std == CIFAR10_STD


@pytest.mark.timeout(120)
def test_training_beats_chance_on_an_easy_task():
    """The training loop learns (on the tiny registered test_vit, for speed) and is seeded."""
    x, y = _colour_images(128, seed=0)
    vx, vy = _colour_images(48, seed=1)
    train = ImageData(torch.from_numpy(x), torch.from_numpy(y), list("rgbk"), "colours")
    val = ImageData(torch.from_numpy(vx), torch.from_numpy(vy), list("rgbk"), "colours-val")
    config = TrainConfig(epochs=4, batch_size=16, lr=3e-3, seed=0)
    result = train_cifar_vit(train, val, config, progress=False, model_name="test_vit")
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert result.val_accuracy >= 0.9  # chance is 0.25
    again = train_cifar_vit(train, val, config, progress=False, model_name="test_vit")
    assert [h.train_loss for h in again.history] == losses


@pytest.mark.timeout(180)
def test_rig_train_vit_on_cifar_batches_saves_loadable_weights(tmp_path, capsys, monkeypatch):
    data = tmp_path / "cifar" / "cifar-10-batches-py"
    _write_cifar(data)
    out = tmp_path / "w" / "vit.pt"
    code = main(["train-vit", str(tmp_path / "cifar"), "--out", str(out), "--epochs", "1", "--batch-size", "20",
                 "--quiet", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "val accuracy" in printed and "40 images" in printed
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["model"] == "cifar_vit" and record["train"]["images"] == 40 and record["val"]["images"] == 16
    assert record["classes"][:2] == ["a", "b"]  # names from batches.meta
    assert len(record["history"]) == 1

    # The file is a plain state dict that the registry loads, and gives back the recorded figures.
    assert set(torch.load(out, weights_only=True)) == set(build_architecture(get_cfg("cifar_vit")).state_dict())
    model, _ = load_model("cifar_vit", weights=str(out))
    _, test = load_cifar10(data)
    loss, accuracy = evaluate(model, test)
    assert accuracy == record["val_accuracy"]
    assert loss == pytest.approx(record["history"][-1]["val_loss"], rel=1e-5)

    # The simulated neuron preprocesses exactly as training did: its head units are the logits.
    neuron = SimulatedNeuron([f"cifar_vit:head:unit={k}" for k in range(10)], weights=str(out))
    images = test.images[:4]
    with torch.no_grad():
        logits = model(_to_input(images, get_cfg("cifar_vit"), torch.device("cpu")))
    np.testing.assert_allclose(neuron(images.float() / 255), logits.double().numpy(), rtol=1e-4, atol=1e-5)

    # Without a file the registry looks in the torch hub cache, and says so.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="cifar_vit.pt"):
        load_model("cifar_vit")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(out, tmp_path / "hub" / "checkpoints" / "cifar_vit.pt")
    by_name, _ = load_model("cifar_vit")
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(), model.state_dict().values()))


def _save_png(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.mark.timeout(120)
def test_rig_train_vit_on_image_folders(tmp_path, capsys):
    rng = np.random.default_rng(0)
    # train/ and val/: grayscale 28x28 and colour 40x40 images, resized and made RGB on load.
    for split, n in (("train", 6), ("val", 2)):
        for k, cls in enumerate(("coat", "shoe")):
            for i in range(n):
                gray = rng.integers(0, 255, (28, 28), dtype=np.uint8)
                _save_png(tmp_path / "split" / split / cls / f"{i}.png", gray)
                _save_png(tmp_path / "split" / split / cls / f"c{i}.jpg",
                          rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    train, val = load_dataset(tmp_path / "split")
    assert len(train) == 24 and len(val) == 8 and train.classes == ["coat", "shoe"]
    assert train.images.shape == (24, 3, 32, 32) and train.images.dtype == torch.uint8
    # Files load in name order: a class's grayscale "0.png".. come before its colour "c0.jpg"..
    assert torch.equal(train.images[0][0], train.images[0][1]) and torch.equal(train.images[0][0], train.images[0][2])
    assert not torch.equal(train.images[6][0], train.images[6][1])

    out = tmp_path / "w.pt"
    assert main(["train-vit", str(tmp_path / "split"), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                 "--model", "test_vit", "--quiet"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["model"] == "test_vit" and record["train"]["images"] == 24 and record["val"]["images"] == 8
    load_model("test_vit", weights=str(out))

    # One folder of classes is split at random, reproducibly.
    for k, cls in enumerate(("a", "b", "c")):
        for i in range(8):
            _save_png(tmp_path / "flat" / cls / f"{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    train, val = load_dataset(tmp_path / "flat", val_fraction=0.25, seed=3)
    assert len(train) == 18 and len(val) == 6 and train.classes == ["a", "b", "c"]
    again, _ = load_dataset(tmp_path / "flat", val_fraction=0.25, seed=3)
    assert torch.equal(train.images, again.images)


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_become_rgb_32px(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, :14] = 255  # top half white
        images += rng.integers(0, 3, images.shape, dtype=np.uint8) * (images == 0)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    train, test = load_idx(tmp_path)
    assert train.images.shape == (12, 3, 32, 32) and test.images.shape == (5, 3, 32, 32)
    assert torch.equal(train.images[:, 0], train.images[:, 1]) and torch.equal(train.images[:, 0], train.images[:, 2])
    assert train.images[:, :, :14].min() >= 250 and train.images[:, :, 18:].max() <= 5  # resized, not cropped
    assert train.labels.tolist() == [i % 10 for i in range(12)]
    assert load_dataset(tmp_path)[0].source.endswith("train-images-idx3-ubyte.gz")

    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_idx(tmp_path)


@pytest.mark.parametrize(
    "setup, argv, message",
    [
        (None, ["--epochs", "1"], "data folder not found"),
        ("empty", ["--epochs", "1"], "neither CIFAR-10 python batches"),
        ("no_test_batch", ["--epochs", "1"], "test_batch"),
        ("corrupt", ["--epochs", "1"], "data_batch_2: not a CIFAR-10 python batch"),
        ("cifar", ["--epochs", "0"], "epochs must be an integer >= 1"),
        ("cifar", ["--lr", "-1"], "lr must be"),
        ("cifar", ["--model", "cifar_vitt"], "unknown model 'cifar_vitt'"),
        ("cifar", ["--train-limit", "0"], "--train-limit must be >= 1"),
        ("eleven_classes", ["--epochs", "1"], "11 classes, but cifar_vit has 10 outputs"),
    ],
)
def test_bad_input_is_named(tmp_path, capsys, setup, argv, message):
    data = tmp_path / "data"
    if setup is not None:
        data.mkdir()
    if setup in ("no_test_batch", "corrupt", "cifar"):
        _write_cifar(data, per_batch=2, test=2)
    if setup == "no_test_batch":
        (data / "test_batch").unlink()
    if setup == "corrupt":
        (data / "data_batch_2").write_bytes(b"not a pickle")
    if setup == "eleven_classes":
        for k in range(11):
            _save_png(data / f"c{k}" / "0.png", np.zeros((8, 8), dtype=np.uint8))
            _save_png(data / f"c{k}" / "1.png", np.zeros((8, 8), dtype=np.uint8))
    out = tmp_path / "w.pt"
    assert main(["train-vit", str(data), "--out", str(out), "--quiet", *argv]) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not out.exists()
