"""Many units at once: several threads' images go through the model together, in shared forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protocols.spec import load_protocol
from rig.loop.assemble import NeuronChoice, assemble, resolve_neuron
from rig.loop.controller import Controller
from rig.session import SessionWriter, read_session
from simulators.neuron import SimulatedNeuron

pytestmark = pytest.mark.timeout(120)

UNITS = ("test_vit:blocks.1.mlp.act:unit=3:token=cls", "test_vit:blocks.0:unit=5:token=mean",
         "test_vit:blocks.1:unit=7:token=4", "test_vit:head:unit=2")


def _run(tmp_path, write_protocol, units, generations=3, popsize=8, references=3):
    path = write_protocol(generations=generations, threads=len(units), popsize=popsize, references=references,
                          units=units)
    spec = load_protocol(path)
    parts = assemble(spec, NeuronChoice(tuple(units), "random"), device="cpu")
    neuron = parts.source.neuron
    batch_sizes: list[int] = []
    forward = neuron._forward  # each forward pass, whatever runs it (ONNX Runtime by default on a CPU)

    def counted(x: torch.Tensor) -> torch.Tensor:
        batch_sizes.append(x.shape[0])
        return forward(x)

    neuron._forward = counted
    out = tmp_path / f"t{len(units)}.h5"
    session = SessionWriter(out, protocol_text=spec.text, protocol_sha256=spec.sha256, protocol_path=str(path),
                            seed=parts.seed, provenance=parts.provenance, reference_ids=parts.protocol.reference_ids)
    try:
        Controller(parts.protocol, parts.display, parts.source, session).run()
    finally:
        neuron._forward = forward
    return read_session(out), batch_sizes, parts


def test_threads_share_forward_passes(tmp_path, write_protocol) -> None:
    session, batch_sizes, parts = _run(tmp_path, write_protocol, UNITS)
    # Each block's images (every thread's population and the references) go through the model
    # together, in passes of max_batch images: with 8 codes per thread, every full pass holds
    # several threads' images, and a block costs ceil(35 / max_batch) passes, not one per thread.
    per_block, max_batch = len(UNITS) * 8 + 3, parts.source.neuron.max_batch
    assert 8 < max_batch < per_block  # the case this test is about: shared passes, split into several
    full, rest = divmod(per_block, max_batch)
    assert batch_sizes == ([max_batch] * full + ([rest] if rest else [])) * 3
    assert len(session.blocks) == 3
    for block in session.blocks:
        assert block.codes.shape[0] == len(UNITS)
        assert block.scores.shape == (len(UNITS) * 8 + 3, len(UNITS))


def test_max_batch_from_the_protocol_reaches_the_neuron(tmp_path, write_protocol) -> None:
    path = write_protocol(generations=1, threads=2, popsize=8, references=3, units=UNITS[:2])
    path.write_text(path.read_text().replace("[neuron]", "[neuron]\nmax_batch = 5"))
    spec = load_protocol(path)
    neuron = resolve_neuron(spec, None, "random")
    assert neuron.max_batch == 5
    assert resolve_neuron(spec, list(UNITS[2:]), "random").max_batch == 5  # --neuron keeps it
    parts = assemble(spec, neuron, device="cpu")
    assert parts.source.neuron.max_batch == 5
    assert parts.provenance["neuron"]["neuron"]["kwargs"]["max_batch"] == 5  # recorded in the session


def test_each_thread_is_scored_on_its_own_unit(tmp_path, write_protocol) -> None:
    session, _, parts = _run(tmp_path, write_protocol, UNITS, generations=2)
    block = session.blocks[-1]
    # Regenerate each thread's images from its recorded codes and score them one thread at a
    # time with only that thread's unit: the batched session must have recorded the same.
    for thread, unit in enumerate(UNITS):
        with torch.inference_mode():
            images = parts.generator(torch.from_numpy(block.codes[thread]).float())
        alone = SimulatedNeuron([unit], weights="random")(images)[:, 0]
        np.testing.assert_allclose(block.thread_scores(thread, thread), alone, rtol=1e-4, atol=1e-5)
    # Different units, different scores: threads did not all read one channel.
    assert len({round(float(block.thread_scores(t, t)[0]), 6) for t in range(len(UNITS))}) == len(UNITS)
