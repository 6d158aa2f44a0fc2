"""The digital twin as a neuron: its file, its answers, its provenance, and rig run with --neuron twin:FILE."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rig.cli import EXIT_USAGE, main
from rig.predictivity.features import LayerFeatures, Readout
from rig.predictivity.readout import fit_readout
from rig.session import read_session
from simulators.twin import TwinNeuron, build_neuron, read_twin, save_twin


@pytest.fixture(scope="module")
def twin_file(tmp_path_factory):
    """A twin of test_cnn's features.4 (grid=2) fitted to a made-up neuron: one channel's mean, linearly."""
    folder = tmp_path_factory.mktemp("twin")
    images = torch.rand(60, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    features = LayerFeatures("test_cnn", ["features.4"], Readout(pool="grid=2"), weights="random")(images)["features.4"]
    y = 40 + 100 * features[:, :4].mean(axis=1)
    fitted = fit_readout(features, y, np.repeat(np.arange(12), 5), components=20)
    path = save_twin(folder / "twin.npz", model="test_cnn", layer="features.4", pool="grid=2", token="cls",
                     readout=fitted, weights_source="random", responses=y,
                     provenance={"sessions": [{"path": "s.h5", "sha256": "ab" * 32}], "cv_r": 0.9})
    return path, images, fitted, features


def test_twin_answers_with_its_readout_and_records_where_it_came_from(twin_file):
    path, images, fitted, features = twin_file
    neuron = build_neuron([f"twin:{path}"], weights="random")
    assert isinstance(neuron, TwinNeuron)
    answers = neuron(images[:10])
    assert answers.shape == (10, 1) and answers.dtype == np.float64
    assert np.allclose(answers[:, 0], fitted.predict(features[:10]), atol=1e-6)
    described = neuron.describe()
    assert described["model"] == "test_cnn" and described["layer"] == "features.4" and described["pool"] == "grid=2"
    assert described["twin_file"] == str(path.resolve()) and len(described["readout_sha256"]) == 64
    assert described["fitted_to"]["sessions"][0]["sha256"] == "ab" * 32
    assert described["response"]["min"] < described["response"]["mean"] < described["response"]["max"]


def test_bad_twin_files_are_clear_errors(twin_file, tmp_path):
    path, *_ = twin_file
    with pytest.raises(FileNotFoundError, match="twin file .*missing.npz not found"):
        TwinNeuron(f"twin:{tmp_path / 'missing.npz'}")
    (tmp_path / "text.npz").write_text("not a twin")
    with pytest.raises(ValueError, match="not a twin written by rig compare --save-twin"):
        read_twin(tmp_path / "text.npz")
    with np.load(path) as data:
        arrays = dict(data)
    arrays["coef"] = arrays["coef"][:3]
    np.savez(tmp_path / "cut.npz", **arrays)
    with pytest.raises(ValueError, match="readout arrays do not fit together"):
        read_twin(tmp_path / "cut.npz")
    header = json.loads(str(arrays["header"]))
    header["layer"] = "features.2"  # 8 channels, not the 16 its readout takes
    arrays["header"], arrays["coef"] = np.array(json.dumps(header)), dict(np.load(path))["coef"]
    np.savez(tmp_path / "layer.npz", **arrays)
    with pytest.raises(ValueError, match="its readout takes 64 features, but layer features.2"):
        TwinNeuron(f"twin:{tmp_path / 'layer.npz'}", weights="random")
    with pytest.raises(ValueError, match="a twin is one neuron"):
        build_neuron([f"twin:{path}", "test_cnn:features.4:unit=1"])


def test_rig_run_evolves_the_twin(twin_file, tmp_path, capsys):
    path, *_ = twin_file
    out = tmp_path / "dry.h5"
    # The twin brings its own model weights (here the seeded random ones it was fitted with).
    assert main(["run", "protocols/dry-run.toml", "--neuron", f"twin:{path}", "--generations", "1",
                 "--out", str(out), "--quiet"]) == 0
    session = read_session(out)
    recorded = session.provenance["neuron"]["neuron"]
    assert recorded["class"] == "simulators.twin.TwinNeuron" and recorded["layer"] == "features.4"
    assert session.blocks[0].channel_names == [f"twin:{path.resolve()}"]
    assert len(session.blocks) == 1 and np.all(np.isfinite(session.blocks[0].scores))
    assert main(["run", "protocols/dry-run.toml", "--neuron", "twin:", "--out", str(tmp_path / "x.h5")]) == EXIT_USAGE
    assert "a twin is named twin:PATH" in capsys.readouterr().err


def test_a_relative_twin_path_is_recorded_whole_so_the_session_resumes_from_any_folder(twin_file, tmp_path,
                                                                                      monkeypatch):
    path, *_ = twin_file
    protocol = Path("protocols/dry-run.toml").resolve()
    monkeypatch.chdir(path.parent)
    out = tmp_path / "relative.h5"
    assert main(["run", str(protocol), "--neuron", f"twin:{path.name}", "--generations", "1",
                 "--out", str(out), "--quiet"]) == 0
    record = json.loads(read_session(out).attrs["run_record"])
    assert record["units"] == [f"twin:{path.resolve()}"]
