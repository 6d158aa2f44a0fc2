"""Fuzzing protocol files and command lines (issue 12): every case succeeds or fails with one clean line.

Three properties, bounded in time (about a minute together on a 2-core CPU):

- random TOML of the protocol schema's shape (every table and field, with wrong
  types, huge and negative numbers, NaN and infinities, huge strings, deep
  nesting) through :func:`load_protocol`: a spec or a ProtocolError, nothing else;
- the tiny test protocol with one to three fields made hostile, run with
  ``rig run ... --generations 1`` in-process: exit 0, or exit 2/1 with one
  ``rig run: error:`` line naming something, never a traceback or an "internal error";
- random argument lists for the commands that finish on their own (``sim-rig``
  serves until stopped, ``sweep`` and ``train-vit`` train: they get bad input only).
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.spec import ProtocolError, load_protocol
from rig.cli import main
from helpers.protocols import tiny_protocol

def fuzz(examples: int) -> settings:
    """Bounded, reproducible fuzzing: ``examples`` cases, no per-case deadline (a model loads in some)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

#: The schema's tables and fields (protocols/spec.py, the generator, optimizer and response model options).
SCHEMA: dict[str, tuple[str, ...]] = {
    "protocol": ("kind", "name", "description", "generations", "seed"),
    "evolution": ("threads",),
    "generator": ("kind", "max_frequency", "image_size", "weights", "factory", "options"),
    "optimizer": ("kind", "popsize", "sigma0", "diagonal", "update_every", "mutation_rate", "n_conserve", "decay"),
    "references": ("source", "count"),
    "neuron": ("kind", "units", "weights", "max_batch", "response"),
    "display": ("width_cm", "resolution", "refresh_hz", "on_frames", "background", "photodiode", "pace"),
    "screening": ("source", "count", "block_size", "repeats", "image_size"),
}
RESPONSE_FIELDS = ("gain", "offset", "rectify", "window_s", "noise", "multiplicative_sd", "latency_s", "seed")
KINDS = ("evolution", "screening", "fourier", "cmaes", "genetic", "simple-es", "cholesky-cmaes", "module",
         "simulated", "deepsim-fc6", "relu", "poisson", "none")

_numbers = st.one_of(
    st.integers(-3, 50),
    st.sampled_from([2**31, 2**32, 2**63 - 1, -(2**63), 10**9, 100_000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 1e-308, 0.5, 3.0, 1e300]),
)
_strings = st.one_of(st.sampled_from(KINDS), st.text(max_size=20), st.just("x" * 100_000),
                     st.sampled_from(["../../../../etc", "/etc/passwd", "os:system", "test_cnn:features.7:unit=5",
                                      "test_cnn:nope:unit=99999999", "zmq://garbage"]))
_scalars = st.one_of(_numbers, _strings, st.booleans())
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.sampled_from(RESPONSE_FIELDS + KINDS),
                                                                         inner, max_size=3)), max_leaves=8)


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (inline tables and arrays; NaN and infinities as TOML spells them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def protocol_documents(draw) -> str:
    """TOML text of the protocol schema's shape with hostile values, sometimes deeply nested."""
    lines = []
    for table in draw(st.lists(st.sampled_from(sorted(SCHEMA)), unique=True, max_size=len(SCHEMA))):
        lines.append(f"[{table}]")
        for key in draw(st.lists(st.sampled_from(SCHEMA[table]), unique=True, max_size=4)):
            lines.append(f"{key} = {toml_value(draw(_values))}")
    depth = draw(st.sampled_from([0, 0, 0, 0, 50, 3_000]))
    if depth:
        lines.append("[deep]\nx = " + "[" * depth + "]" * depth)
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)
@fuzz(100)
@given(text=protocol_documents())
def test_random_protocol_files_load_or_fail_with_a_protocol_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.toml"
        path.write_text(text)
        try:
            load_protocol(path)
        except ProtocolError as exc:
            assert str(path) in str(exc)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``rig ARGV`` in-process: the exit status and stderr (stdout discarded)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, err.getvalue()


def assert_clean(status: int, err: str) -> None:
    """0, or 2/1 with exactly one ``rig ...: error:`` line (library warnings aside); never a bug."""
    assert status in (0, 1, 2), (status, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if status:
        ours = [line for line in err.splitlines() if line.startswith("rig")]
        assert len(ours) == 1 and ": error: " in ours[0], err
        assert len(ours[0].split(": error: ", 1)[1].strip()) > 3, err


# Fields of tiny_protocol() that a mutation replaces, as "key = value" lines.
_MUTABLE = ("generations", "seed", "threads", "max_frequency", "image_size", "popsize", "sigma0", "count",
            "weights", "kind")
_RUN_VALUES = st.one_of(st.integers(-2, 12), st.sampled_from([2**31, 2**63 - 1, 100_000, 10**9]),
                        st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 1e300, 0.0, 0.5, 3.0]),
                        st.sampled_from(["fourier", "module", "random", "", "x" * 10_000, "cmaes", "genetic"]),
                        st.booleans(), st.lists(st.integers(0, 3), max_size=2))
_EXTRA = st.sampled_from(["", "[neuron.response]\ngain = 1e300\n", "[neuron.response]\ngain = 2.0\nwindow_s = inf\n",
                          "[display]\nresolution = [0, 1]\n", "[display]\nrefresh_hz = nan\n",
                          "[neuron.response]\nmultiplicative_sd = 1e200\n", "[evolution]\n", "[neuron]\n"])
_counter = itertools.count()


@pytest.mark.timeout(90)
@fuzz(15)
@given(changes=st.lists(st.tuples(st.sampled_from(_MUTABLE), _RUN_VALUES), min_size=1, max_size=3), extra=_EXTRA)
def test_rig_run_on_hostile_protocols_succeeds_or_fails_in_one_line(changes, extra, tmp_path_factory):
    text = tiny_protocol(generations=2, popsize=4, max_frequency=2, image_size=16)
    for key, value in changes:
        lines = text.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
        lines[at] = f"{key} = {toml_value(value)}"
        text = "\n".join(lines) + "\n"
    folder = tmp_path_factory.mktemp(f"run{next(_counter)}")
    (folder / "p.toml").write_text(text + extra)
    status, err = run_cli(["run", str(folder / "p.toml"), "--out", str(folder / "s.h5"), "--generations", "1",
                           "--quiet", "--device", "cpu"])
    assert_clean(status, err)
    if status == 2:
        assert not (folder / "s.h5").exists()


_ARG_VALUES = st.sampled_from(["", "-1", "0", "1", "2", "nan", "inf", "1e999", str(10**30), "x" * 5_000, "/etc/passwd",
                               "/dev/null", "/nonexistent/dir/f.h5", "zmq://garbage", "tcp://", "garbage", "a,b",
                               "nan,inf", "100,150", "cpu", "cuda:7", "test_cnn", "test_cnn:features.7:unit=5",
                               "os:system", "{session}", "{folder}", "{folder}/new.h5", "{protocol}"])
_OPTIONS = st.sampled_from(["--out", "--seed", "--generations", "--weights", "--neuron", "--device", "--pace-ms",
                            "--sim-link", "--resume", "--trust-generator", "--thread", "--k", "--natural",
                            "--window-ms", "--baseline", "--rescore", "--images", "--overwrite", "--json",
                            "--quiet", "--allow-remote-stream", "--no-nearest", "--network", "--thresholds"])
_COMMANDS = st.sampled_from([["run"], ["replay"], ["export-nwb"], ["report"], ["units"], ["models"],
                             ["analyze", "trajectory"], ["analyze", "convergence"], ["analyze", "nearest"],
                             ["analyze", "prototype"], ["train-vit"]])


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "p.toml").write_text(tiny_protocol(generations=2, popsize=4, max_frequency=2, image_size=16))
    assert main(["run", str(folder / "p.toml"), "--out", str(folder / "s.h5"), "--quiet"]) == 0
    return folder


@pytest.mark.timeout(90)
@fuzz(60)
@given(command=_COMMANDS, words=st.lists(st.one_of(_OPTIONS, _ARG_VALUES), max_size=6))
def test_random_command_lines_succeed_or_fail_in_one_line(command, words, tiny_session):
    folder = tiny_session / f"c{next(_counter)}"
    folder.mkdir()
    argv = command + [w.format(session=tiny_session / "s.h5", folder=folder, protocol=tiny_session / "p.toml")
                      for w in words]
    if command == ["train-vit"]:
        argv[1:1] = ["/nonexistent-data"]  # never a real data set: it would train
    if command == ["run"]:
        argv += ["--generations", "1", "--quiet"]
    status, err = run_cli(argv)
    assert_clean(status, err)
