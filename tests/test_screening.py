"""The Screening protocol: a fixed natural image set shown through the real loop into a real session file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from protocols.screening import Screening
from protocols.spec import ProtocolError, parse_protocol
from rig.analysis import natural_scores
from rig.cli import EXIT_USAGE, main
from rig.session import read_session
from simulators.neuron import SimulatedNeuron

SCREENING = """
[protocol]
kind = "screening"
seed = 4

[screening]
{source}
block_size = {block_size}
repeats = {repeats}
image_size = 32

[neuron]
units = ["test_cnn:features.7:unit=5", "test_cnn:features.7:unit=9"]
weights = "random"
"""


def _image_folder(root, classes=("cat", "dog"), per_class=3):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_every_image_once_per_repeat_in_seeded_blocks():
    images = torch.rand(7, 3, 8, 8)
    ids = [f"im{i}" for i in range(7)]
    s = Screening(images=images, image_ids=ids, seed=1, block_size=3, repeats=2)
    assert s.generations == 6
    shown = []
    while not s.finished:
        block = s.propose()
        assert len(block) <= 3 and set(block.kinds) == {"reference"}
        for sid, image in zip(block.stimulus_ids, block.images):
            assert torch.equal(image, images[ids.index(sid[4:])])   # each id shows its own image
        shown.append([sid[4:] for sid in block.stimulus_ids])
        scores = np.array([[float(sid[-1])] for sid in block.stimulus_ids])
        from protocols.base import Responses
        s.observe(block, Responses(scores, np.ones(len(block), bool), ["c"]))
    first, second = sum(shown[:3], []), sum(shown[3:], [])
    assert sorted(first) == ids and sorted(second) == ids and first != second
    _, means = s.mean_responses()
    assert means[:, 0].tolist() == [float(i) for i in range(7)]
    with pytest.raises(RuntimeError, match="all 6 blocks are done"):
        s.propose()


@pytest.mark.timeout(120)
def test_rig_run_screens_an_image_folder(tmp_path, capsys):
    folder = _image_folder(tmp_path / "imagenette")
    protocol = tmp_path / "screen.toml"
    protocol.write_text(SCREENING.format(source='source = "imagenette"', block_size=4, repeats=2))
    out = tmp_path / "screen.h5"
    assert main(["run", str(protocol), "--out", str(out), "--quiet"]) == 0
    assert "screening 6 natural images x 2 repeat(s) in 4 block(s)" in capsys.readouterr().out
    session = read_session(out)
    assert session.attrs["status"] == "complete"
    assert session.reference_ids == ["cat/0", "cat/1", "cat/2", "dog/0", "dog/1", "dog/2"]
    ids, scores = natural_scores(session, 1)
    # The recorded responses are what the neuron gives each image (same resize as the loader).
    from simulators.natural_images import load_image_folder
    images, folder_ids = load_image_folder(folder, 32)
    expected = SimulatedNeuron(["test_cnn:features.7:unit=9"], weights="random")(images)[:, 0]
    assert ids == folder_ids
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(120)
def test_bundled_foolbox_photos_are_the_default(tmp_path):
    protocol = tmp_path / "screen.toml"
    protocol.write_text(SCREENING.format(source="", block_size=0, repeats=1))
    out = tmp_path / "s.h5"
    assert main(["run", str(protocol), "--out", str(out), "--quiet"]) == 0
    session = read_session(out)
    assert len(session.blocks) == 1 and len(session.reference_ids) == 20
    assert all(i.startswith("imagenet_") for i in session.reference_ids)


def test_screening_file_errors_name_the_field(tmp_path, capsys):
    with pytest.raises(ProtocolError, match=r"\[screening\] repeats: expected an integer in 1\.\.1000, got 0"):
        parse_protocol(SCREENING.format(source="", block_size=0, repeats=0))
    with pytest.raises(ProtocolError, match='only valid with \\[protocol\\] kind = "screening"'):
        parse_protocol('[protocol]\nkind="evolution"\ngenerations=1\nseed=0\n[generator]\nkind="fourier"\n'
                       '[optimizer]\nkind="cmaes"\n[screening]\nrepeats=1\n')
    protocol = tmp_path / "screen.toml"
    protocol.write_text(SCREENING.format(source='source = "nowhere"', block_size=0, repeats=1))
    assert main(["run", str(protocol), "--out", str(tmp_path / "x.h5"), "--quiet"]) == EXIT_USAGE
    assert "[screening] source:" in capsys.readouterr().err
