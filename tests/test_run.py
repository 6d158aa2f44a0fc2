"""The spine end to end: `rig run` through the real loop into a real HDF5 file."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from protocols.generators.fourier import FourierImageSpace
from protocols.optimizers import build_optimizer
from protocols.spec import load_protocol
from rig.loop.assemble import assemble, pick_device, resolve_neuron
from rig.cli import EXIT_USAGE, main
from rig.loop.controller import Controller
from rig.session import SessionFileError, SessionWriter, read_session


def _run(protocol, out, *extra):
    return main(["run", str(protocol), "--out", str(out), "--quiet", *extra])


def test_run_writes_every_block(write_protocol, tmp_path, capsys):
    protocol = write_protocol(generations=4, popsize=12, references=3)
    out = tmp_path / "s.h5"
    assert _run(protocol, out) == 0
    printed = capsys.readouterr().out
    assert "done: 4 blocks" in printed

    # Plain h5py, no rig code: what a MATLAB user or another lab would see.
    with h5py.File(out, "r") as f:
        assert f.attrs["schema"] == "rig.session"
        assert f.attrs["status"] == "complete"
        assert f.attrs["protocol_toml"] == protocol.read_text()
        assert sorted(f["blocks"]) == ["000000", "000001", "000002", "000003"]
        for name in f["blocks"]:
            block = f["blocks"][name]
            assert block["codes"].shape == (1, 12, FourierImageSpace(max_frequency=4, image_size=64).code_dim)
            assert block["stimulus_ids"].shape == (15,)
            assert block["scores"].shape == (15, 1)
            assert np.isfinite(block["scores"][()]).all()
            assert block["valid"][()].all()
            ids = [s.decode() for s in block["stimulus_ids"][()]]
            assert sum(i.startswith("ref/") for i in ids) == 3
            assert len(set(ids)) == 15
        # State after the last block, so the session can be continued or inspected.
        assert list(f["checkpoints"]) == ["000003"]
        assert set(f["checkpoints"]["000003"]) == {"thread0"}

    # The best image and trajectory plot sit beside the session file.
    assert (tmp_path / "s_best_t0.png").stat().st_size > 0
    assert (tmp_path / "s_trajectory.png").stat().st_size > 0


def test_recorded_codes_follow_from_recorded_scores(write_protocol, tmp_path):
    """The file holds everything the optimizer saw: replaying its scores reproduces its codes exactly."""
    protocol = write_protocol(generations=4, popsize=10, seed=7)
    out = tmp_path / "s.h5"
    assert _run(protocol, out) == 0
    session = read_session(out)
    seed = session.provenance["thread_seeds"][0]
    opt = build_optimizer(dim=session.blocks[0].codes.shape[-1], seed=seed, **session.provenance["optimizer"])
    for block in session.blocks:
        codes = opt.ask()
        assert np.array_equal(codes, block.codes[0])
        opt.tell(codes, block.thread_scores(0, 0))


def test_same_seed_same_session_other_seed_differs(write_protocol, tmp_path):
    protocol = write_protocol(generations=3, popsize=8)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert _run(protocol, tmp_path / f"{name}.h5", "--seed", str(seed)) == 0
    a, b, c = (read_session(tmp_path / f"{n}.h5") for n in "abc")
    for x, y in zip(a.blocks, b.blocks):
        assert np.array_equal(x.codes, y.codes)
        assert x.stimulus_ids == y.stimulus_ids
        np.testing.assert_allclose(x.scores, y.scores, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(a.blocks[1].codes, c.blocks[1].codes)


def test_evolution_raises_a_real_units_score(tmp_path, write_protocol):
    """Against a pretrained unit, the population's mean score climbs well above where it started."""
    protocol = write_protocol(generations=12, popsize=20, references=2,
                              units=("efficientnet_lite0:blocks.4.0:unit=7",), weights="default")
    spec = load_protocol(protocol)
    parts = assemble(spec, resolve_neuron(spec, None, None), device=torch.device("cpu"))
    session = SessionWriter(tmp_path / "e.h5", protocol_text=spec.text, protocol_sha256=spec.sha256,
                            protocol_path=str(spec.path), seed=spec.seed, provenance=parts.provenance,
                            reference_ids=parts.protocol.reference_ids)
    Controller(parts.protocol, parts.display, parts.source, session).run()
    history = [h[0] for h in parts.protocol.history]
    first, last = history[0], history[-1]
    spread = np.std(read_session(tmp_path / "e.h5").blocks[0].thread_scores(0, 0))
    # "Well above": the final mean beats the first generation's best and its mean by 2 first-generation s.d.
    assert last.mean > first.max
    assert last.mean - first.mean > 2 * spread


def test_bad_layer_name_fails_before_anything_runs(write_protocol, tmp_path, capsys):
    protocol = write_protocol(units=("test_cnn:featurs.7:unit=5",))
    out = tmp_path / "s.h5"
    assert _run(protocol, out) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "featurs.7" in err and "features.7" in err  # names the bad layer and suggests the close match
    assert not out.exists()


def test_bad_protocol_field_fails_with_exit_2(write_protocol, tmp_path, capsys):
    protocol = write_protocol()
    protocol.write_text(protocol.read_text().replace("popsize = 12", "popsize = 1"))
    assert _run(protocol, tmp_path / "s.h5") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "[optimizer]" in err and "popsize" in err


def test_existing_session_is_never_overwritten(write_protocol, tmp_path, capsys):
    out = tmp_path / "s.h5"
    out.write_bytes(b"precious")
    assert _run(write_protocol(), out) == EXIT_USAGE
    assert out.read_bytes() == b"precious"
    assert "already exists" in capsys.readouterr().err


def test_read_session_rejects_foreign_files(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(SessionFileError, match="not a rig session file"):
        read_session(foreign)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(SessionFileError, match="not a readable HDF5 file"):
        read_session(garbage)


def test_units_command_lists_layers_and_rejects_unknown_models(capsys):
    assert main(["units", "test_cnn"]) == 0
    out = capsys.readouterr().out
    assert "features.7" in out and "32x8x8" in out
    assert main(["units", "tset_cnn"]) == EXIT_USAGE
    assert "test_cnn" in capsys.readouterr().err


def test_device_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        pick_device("gpu0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to compare against the CPU")
def test_gpu_matches_cpu(write_protocol, tmp_path):
    protocol = write_protocol(generations=2, popsize=8)
    assert _run(protocol, tmp_path / "cpu.h5", "--device", "cpu") == 0
    assert _run(protocol, tmp_path / "gpu.h5", "--device", "cuda") == 0
    cpu, gpu = read_session(tmp_path / "cpu.h5"), read_session(tmp_path / "gpu.h5")
    np.testing.assert_array_equal(cpu.blocks[0].codes, gpu.blocks[0].codes)
    np.testing.assert_allclose(cpu.blocks[0].scores, gpu.blocks[0].scores, rtol=1e-3, atol=1e-4)


class _LosesFirstShowing:
    """A response source wrapper that loses chosen stimuli the first time they are shown, like a stream gap."""

    def __init__(self, source, lose_ids, always=False):
        self.source, self.lose_ids, self.always = source, set(lose_ids), always
        self.channel_names = source.channel_names
        self.seen: list[list[str]] = []

    def record(self, block, presentations):
        responses = self.source.record(block, presentations)
        first_time = not self.seen
        self.seen.append(list(block.stimulus_ids))
        if first_time or self.always:
            for i, sid in enumerate(block.stimulus_ids):
                if sid in self.lose_ids:
                    responses.valid[i] = False
                    responses.scores[i] = np.nan
        return responses

    def describe(self):
        return self.source.describe()


def _assembled(write_protocol, tmp_path, **kwargs):
    spec = load_protocol(write_protocol(**kwargs))
    parts = assemble(spec, resolve_neuron(spec, None, None), device=torch.device("cpu"))
    session = SessionWriter(tmp_path / "lossy.h5", protocol_text=spec.text, protocol_sha256=spec.sha256,
                            protocol_path=str(spec.path), seed=spec.seed, provenance=parts.provenance,
                            reference_ids=parts.protocol.reference_ids)
    return parts, session


def test_lost_stimuli_are_shown_again_and_never_scored_as_zero(write_protocol, tmp_path):
    parts, session = _assembled(write_protocol, tmp_path, generations=1, popsize=8, references=2)
    lose = ["g0000/t0/c003", "ref/" + parts.protocol.reference_ids[0]]
    lossy = _LosesFirstShowing(parts.source, lose)
    Controller(parts.protocol, parts.display, lossy, session).run()
    assert sorted(lossy.seen[1]) == sorted(lose)  # only the lost ones were shown again
    with h5py.File(tmp_path / "lossy.h5", "r") as f:
        block = f["blocks/000000"]
        assert block["valid"][()].all()
        assert sorted(block["showings"]) == ["00", "01"]
        first = block["showings/00"]
        ids = [s.decode() for s in block["stimulus_ids"][()]]
        lost_positions = sorted(ids.index(i) for i in lose)
        assert sorted(np.flatnonzero(~first["valid"][()]).tolist()) == lost_positions
        assert np.isnan(first["scores"][()][~first["valid"][()]]).all()  # lost means NaN, not 0
        assert sorted(block["showings/01/positions"][()].tolist()) == lost_positions
        # The final score of a re-shown stimulus is the one recorded at its second showing.
        again = block["showings/01"]
        for k, pos in enumerate(again["positions"][()]):
            assert block["scores"][pos, 0] == again["scores"][k, 0]


def test_block_lost_for_good_fails_without_touching_earlier_blocks(write_protocol, tmp_path):
    from rig.loop.controller import IncompleteBlockError

    parts, session = _assembled(write_protocol, tmp_path, generations=3, popsize=8, references=1)
    controller = Controller(parts.protocol, parts.display, parts.source, session, max_repeats=2)
    controller.step()
    controller.source = _LosesFirstShowing(parts.source, ["g0001/t0/c000"], always=True)
    with pytest.raises(IncompleteBlockError, match=r"block 1: 1 stimuli .* after 2 repeats: \['g0001/t0/c000'\]"):
        controller.run()
    recorded = read_session(tmp_path / "lossy.h5")
    assert [b.index for b in recorded.blocks] == [0]
    assert recorded.attrs["status"] == "failed"
