"""[neuron] precision and runtime: checked in the protocol, honoured by the forward pass, recorded and rebuilt."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from protocols.generators.fourier import FourierImageSpace
from protocols.spec import ProtocolError, parse_protocol
from rig.loop.rebuild import rebuild
from rig.session import read_session
from simulators.neuron import SimulatedNeuron
from tests.helpers.protocols import run_tiny_session, tiny_protocol

UNIT = "test_cnn:features.7:unit=5"


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def fp32(images) -> np.ndarray:
    return SimulatedNeuron([UNIT], weights="random")(images)


@pytest.mark.parametrize("line, message", [
    ('precision = "fp64"', r"\[neuron\] precision: expected one of \['fp32', 'bf16', 'fp16'\]"),
    ('runtime = "tensorrt"', r"\[neuron\] runtime: expected one of \['eager', 'compiled', 'onnxruntime'\]"),
])
def test_protocol_refuses_unknown_choices_naming_the_field(line, message):
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(tiny_protocol(extra=line), "p.toml")


@pytest.mark.parametrize("precision, runtime, message", [
    ("fp16", "eager", r'precision = "fp16" runs only on a CUDA GPU'),
    ("bf16", "onnxruntime", r'runtime = "onnxruntime" runs fp32 only'),
])
def test_choices_this_machine_cannot_run_are_refused(precision, runtime, message):
    with pytest.raises(ValueError, match=message):
        SimulatedNeuron([UNIT], weights="random", precision=precision, runtime=runtime)


def test_bf16_runs_in_bf16_and_stays_close(images, fp32):
    bf16 = SimulatedNeuron([UNIT], weights="random", precision="bf16")(images)
    assert not np.array_equal(bf16, fp32)  # the products really ran in bf16 (8 bits of mantissa)
    assert np.abs(bf16 - fp32).max() <= 0.05 * np.abs(fp32).max()


def test_onnxruntime_exports_once_and_scores_as_fp32_eager(images, fp32, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    neuron = SimulatedNeuron([UNIT], weights="random", runtime="onnxruntime", max_batch=5)  # passes of 5, 5, 2
    np.testing.assert_allclose(neuron(images), fp32, rtol=1e-5, atol=1e-5)
    exported = list((tmp_path / "rig" / "onnx").glob("test_cnn-*.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    SimulatedNeuron([UNIT], weights="random", runtime="onnxruntime")(images[:2])
    assert exported[0].stat().st_mtime_ns == stamp  # the second neuron reused the cached export


def test_a_session_records_how_it_ran_and_an_older_one_rebuilds_as_it_ran(tmp_path):
    out = run_tiny_session(tmp_path, generations=1, extra='precision = "bf16"')
    session = read_session(out)
    record = json.loads(session.attrs["run_record"])
    assert (record["precision"], record["runtime"]) == ("bf16", "eager")
    assert record["generator"]["pixels"] == "bounded"  # the Fourier space's default, spelled out
    assert session.provenance["neuron"]["neuron"]["precision"] == "bf16"
    rebuilt = rebuild(session)
    assert rebuilt.generator().pixels == "bounded"
    parts = rebuilt.assemble("cpu")
    assert (parts.source.neuron.precision, parts.record.precision) == ("bf16", "bf16")  # resumes in bf16

    # A session written before the fields existed reads as fp32 eager, and its Fourier space as the sigmoid one.
    del record["precision"], record["runtime"], record["generator"]["pixels"]
    with h5py.File(out, "a") as f:
        f.attrs["run_record"] = json.dumps(record)
    old = rebuild(read_session(out))
    assert (old.record.precision, old.record.runtime) == ("fp32", "eager")
    generator = old.generator()
    codes = 20 * torch.randn(3, generator.code_dim, generator=torch.Generator().manual_seed(3))
    assert torch.equal(generator(codes), FourierImageSpace(max_frequency=3, image_size=32, pixels="sigmoid")(codes))


def test_a_session_naming_no_runtime_runs_onnxruntime_on_a_cpu_and_resumes_in_it(tmp_path):
    # The default by issue 18's rule (simulators.runtime.default_runtime): the record keeps what ran, so the
    # session resumes as it ran even if the default changes again; its scores are fp32 eager's to 1e-5.
    out = run_tiny_session(tmp_path, generations=2)
    session = read_session(out)
    assert json.loads(session.attrs["run_record"])["runtime"] == "onnxruntime"
    assert session.provenance["neuron"]["neuron"]["runtime"] == "onnxruntime"
    parts = rebuild(session).assemble("cpu")
    assert (parts.source.neuron.runtime, parts.record.runtime) == ("onnxruntime", "onnxruntime")
    block = session.blocks[-1]
    codes = torch.as_tensor(block.codes[0], dtype=torch.float32)  # thread 0's codes, in code order
    eager = SimulatedNeuron([UNIT], weights="random")(rebuild(session).generator()(codes))[:, 0]
    np.testing.assert_allclose(block.thread_scores(0, 0), eager, rtol=1e-5, atol=1e-5)


def test_compiled_leaves_the_read_layers_and_their_holders_eager():
    # torch.compile cannot carry the early stop (an exception from a hook) through a compiled frame, so the read
    # layer and every module holding it stay eager; the parts between are compiled (lazily: nothing runs here).
    neuron = SimulatedNeuron(["test_vit:blocks.1.mlp.act:unit=3"], weights="random", runtime="compiled")
    compiled = {name for name, m in neuron.model.named_modules() if getattr(m, "_compiled_call_impl", None)}
    assert {"patch_embed", "blocks.0", "blocks.1.attn", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2", "head"} <= compiled
    assert not compiled & {"", "blocks", "blocks.1", "blocks.1.mlp", "blocks.1.mlp.act"}
