"""Hostile and broken input (issue 12): a session file runs no code, protocol values are bounded, and every
expected failure of the ``rig`` command is one line with exit status 2 (bad input) or 1 (a run that failed)."""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from protocols.spec import ProtocolError, load_protocol
from rig.cli import EXIT_FAILED, EXIT_USAGE, main
from helpers.protocols import tiny_protocol

FACTORY = "lab_hostile_gans:make"
# A user generator module that leaves a mark whenever its code runs (imported or called).
USER_MODULE = """
from pathlib import Path
MARK = Path(__file__).with_name("RAN")
MARK.write_text("imported")
def make(**kw):
    from protocols.generators import FourierImageSpace
    MARK.write_text("called")
    return FourierImageSpace(max_frequency=2, image_size=16)
"""


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- defect 1: a session file runs no code


@pytest.fixture(scope="module")
def module_session(tmp_path_factory) -> Path:
    """A killed-looking session (status failed, last block gone) whose protocol names a module generator."""
    folder = tmp_path_factory.mktemp("module_gen")
    (folder / "lab_hostile_gans.py").write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    try:
        text = tiny_protocol(generations=3, max_frequency=2, image_size=16).replace(
            'kind = "fourier"\nmax_frequency = 2\nimage_size = 16', f'kind = "module"\nfactory = "{FACTORY}"')
        (folder / "p.toml").write_text(text)
        # A protocol file given directly is the user's own configuration: its factory runs.
        assert main(["run", str(folder / "p.toml"), "--out", str(folder / "s.h5"), "--quiet"]) == 0
        assert (folder / "RAN").read_text() == "called"
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("lab_hostile_gans", None)
    with h5py.File(folder / "s.h5", "r+") as f:
        f.attrs["status"] = "failed"
        del f["blocks"]["000002"]
        del f["checkpoints/000002"]
    return folder


def _fresh(folder: Path, name: str) -> Path:
    """A copy of the module session, and the mark removed, so a test sees whether code ran."""
    (folder / "RAN").unlink(missing_ok=True)
    sys.modules.pop("lab_hostile_gans", None)
    shutil.copy(folder / "s.h5", folder / name)
    return folder / name


@pytest.mark.parametrize("command", [
    ["run", "--resume", "{s}"],
    ["export-nwb", "{s}", "{out}.nwb", "--images"],
    ["report", "{s}", "--out", "{out}", "--no-nearest"],
    ["analyze", "nearest", "{s}"],
])
def test_a_module_generator_named_in_a_session_file_runs_only_when_trusted(module_session, monkeypatch, capsys,
                                                                          command):
    session = _fresh(module_session, "untrusted.h5")
    monkeypatch.syspath_prepend(str(module_session))  # importable: only the missing trust stops it
    argv = [a.format(s=session, out=module_session / "out") for a in command]
    capsys.readouterr()
    assert main(argv) == EXIT_USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert FACTORY in line and f"--trust-generator {FACTORY}" in line
    assert not (module_session / "RAN").exists()
    assert main(argv + ["--trust-generator", "other.module:make"]) == EXIT_USAGE
    assert "not this factory" in capsys.readouterr().err
    assert not (module_session / "RAN").exists()


def test_a_trusted_module_generator_resumes(module_session, monkeypatch, capsys):
    session = _fresh(module_session, "trusted.h5")
    monkeypatch.syspath_prepend(str(module_session))
    assert main(["run", "--resume", str(session), "--quiet", "--trust-generator", FACTORY]) == 0
    assert (module_session / "RAN").read_text() == "called"


def test_replay_of_a_module_generator_session_runs_no_code(module_session, capsys):
    session = _fresh(module_session, "replayed.h5")
    assert main(["replay", str(session)]) == 0
    assert not (module_session / "RAN").exists()


def test_trust_and_remote_options_are_refused_without_resume(tmp_path, capsys):
    (tmp_path / "p.toml").write_text(tiny_protocol())
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "s.h5"),
                 "--trust-generator", FACTORY]) == EXIT_USAGE
    assert "go with --resume" in _one_error_line(capsys.readouterr().err)


def _cifar_batch(path: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"training batch", b"labels": rng.integers(0, 10, count).tolist(),
                     b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                     b"filenames": [b"x.png"] * count}, f, protocol=2)


class _Payload:
    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self):
        return (os.system, (f"touch {self.mark}",))


def test_cifar_batches_are_read_as_data_and_a_crafted_one_is_refused_unrun(tmp_path, capsys):
    from simulators.datasets import load_cifar10
    from simulators.safe_pickle import UnsafePickleError, load_data_pickle

    for name, seed in (("data_batch_1", 1), ("test_batch", 2)):
        _cifar_batch(tmp_path / name, 4, seed)
    train, test = load_cifar10(tmp_path)
    assert train.images.shape == (4, 3, 32, 32) and len(test) == 4
    expected = np.random.default_rng(1).integers(0, 10, 4)
    np.testing.assert_array_equal(train.labels.numpy(), expected)

    mark = tmp_path / "PWNED"
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Payload(mark), b"labels": [0]}, f)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        load_data_pickle(tmp_path / "data_batch_1")
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)
    assert main(["train-vit", str(tmp_path), "--out", str(tmp_path / "w.pt")]) == EXIT_USAGE
    assert "data_batch_1" in _one_error_line(capsys.readouterr().err)
    assert not mark.exists()


def test_object_arrays_and_other_globals_are_refused(tmp_path):
    from simulators.safe_pickle import UnsafePickleError, load_data_pickle

    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": np.array([1, "a"], dtype=object)}))
    with pytest.raises(UnsafePickleError, match="object arrays"):
        load_data_pickle(path)
    path.write_bytes(pickle.dumps({b"d": np.zeros(3, dtype=[("a", "i4")])}))
    with pytest.raises(UnsafePickleError):
        load_data_pickle(path)
    for protocol in (2, 4, 5):
        path.write_bytes(pickle.dumps({"a": np.arange(6.0).reshape(2, 3), "b": [b"x", 1, None]}, protocol=protocol))
        loaded = load_data_pickle(path)
        np.testing.assert_array_equal(loaded["a"], np.arange(6.0).reshape(2, 3))
        assert loaded["b"] == [b"x", 1, None]


# --------------------------------------------------------------------------- defect 5: unbounded values


@pytest.mark.parametrize("change, field", [
    (("sigma0 = 3.0", "sigma0 = 1e308"), "sigma0"),
    (("popsize = 6", "popsize = 1000000000"), "popsize"),
    (("max_frequency = 3", "max_frequency = 30000"), "max_frequency"),
    (("image_size = 32", "image_size = 100000"), "image_size"),
    (("[neuron]", "[neuron.response]\ngain = 1e300\n[neuron]"), "gain"),
    (("generations = 4", "generations = 1000000000"), "generations"),
])
def test_unbounded_values_are_refused_up_front_naming_the_field(tmp_path, capsys, change, field):
    (tmp_path / "p.toml").write_text(tiny_protocol().replace(*change))
    out = tmp_path / "s.h5"
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(out), "--quiet"]) == EXIT_USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert field in line and "p.toml" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.toml"]  # no session, no journal


def test_a_block_that_will_not_fit_in_memory_is_refused_with_the_estimate(tmp_path, monkeypatch, capsys):
    import rig.loop.memory

    monkeypatch.setattr(rig.loop.memory, "available_host_bytes", lambda: 2**20)
    (tmp_path / "p.toml").write_text(tiny_protocol())
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "s.h5"), "--quiet"]) == EXIT_USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert "one block needs about" in line and "GiB" in line and "popsize" in line
    assert not (tmp_path / "s.h5").exists()


# --------------------------------------------------------------------------- defect 3: protocol robustness


def test_a_deeply_nested_protocol_is_a_protocol_error_naming_the_file(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text(tiny_protocol() + "\n[extra]\nx = " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ProtocolError, match="deep.toml: .*nest too deeply"):
        load_protocol(path)


@pytest.fixture(scope="module")
def plain_session(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plain")
    (folder / "p.toml").write_text(tiny_protocol(generations=3))
    assert main(["run", str(folder / "p.toml"), "--out", str(folder / "s.h5"), "--quiet"]) == 0
    return folder


def _with_provenance(folder: Path, name: str, failed: bool = False, **changes) -> Path:
    out = folder / name
    shutil.copy(folder / "s.h5", out)
    with h5py.File(out, "r+") as f:
        provenance = json.loads(f.attrs["provenance"])
        for key, value in changes.items():
            if isinstance(value, dict):
                provenance[key] = {**provenance[key], **value}
            else:
                provenance[key] = value
        f.attrs["provenance"] = json.dumps(provenance)
        if failed:
            f.attrs["status"] = "failed"
            del f["blocks"]["000002"]
            del f["checkpoints/000002"]
    return out


@pytest.mark.parametrize("changes, field", [
    ({"thread_seeds": "seven"}, "thread_seeds"),
    ({"thread_seeds": [[1, 2]]}, "thread_seeds"),
    ({"thread_channels": [5]}, "thread_channels"),
    ({"thread_channels": [-1]}, "thread_channels"),
])
def test_replay_names_a_bad_provenance_field(plain_session, capsys, changes, field):
    session = _with_provenance(plain_session, "bad.h5", **changes)
    assert main(["replay", str(session)]) == EXIT_USAGE
    assert field in _one_error_line(capsys.readouterr().err)


def test_resume_names_bad_thread_seeds(plain_session, capsys):
    session = _with_provenance(plain_session, "bad_resume.h5", failed=True, thread_seeds=[1.5])
    assert main(["run", "--resume", str(session), "--quiet"]) == EXIT_USAGE
    assert "thread_seeds" in _one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- defect 9: references, remote streams


def test_a_references_path_traversal_is_refused_naming_the_field(tmp_path, capsys):
    text = tiny_protocol().replace("count = 1", 'count = 1\nsource = "../../../../../../../../../etc"')
    (tmp_path / "p.toml").write_text(text)
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "s.h5"), "--quiet"]) == EXIT_USAGE
    assert "[references] source" in _one_error_line(capsys.readouterr().err)


def test_a_session_file_cannot_point_a_resume_at_a_remote_stream_silently(plain_session, capsys):
    remote = "zmq://203.0.113.7:5556"
    session = _with_provenance(plain_session, "remote.h5", failed=True)
    with h5py.File(session, "r+") as f:  # the neuron a session was run with is in its run record
        f.attrs["run_record"] = json.dumps({**json.loads(f.attrs["run_record"]), "units": [remote]})
    assert main(["run", "--resume", str(session), "--quiet"]) == EXIT_USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert "203.0.113.7" in line and "--allow-remote-stream" in line
    assert main(["run", "--resume", str(session), "--neuron", "zmq://127.0.0.1:1"]) == EXIT_USAGE
    assert "must repeat the recorded neuron" in _one_error_line(capsys.readouterr().err)


def test_loopback_hosts():
    from rig.loop.replay import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("203.0.113.7") and not is_loopback("lab-acq.example.org")


# --------------------------------------------------------------------------- defects 4 and 6: the command line


@pytest.mark.parametrize("extra, names", [
    (["--weights", "/etc/passwd"], "/etc/passwd"),
    (["--seed", str(10**30)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--pace-ms", "nan,inf"], "--pace-ms"),
    (["--neuron", "zmq://127.0.0.1:5999", "--sim-link", "garbage"], "--sim-link"),
    (["--generations", "0"], "--generations"),
])
def test_bad_options_are_one_line_naming_the_option_and_leave_nothing(tmp_path, capsys, extra, names):
    (tmp_path / "p.toml").write_text(tiny_protocol())
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "s.h5"), "--quiet", *extra]) == EXIT_USAGE
    assert names in _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.toml"]


def test_out_under_a_regular_file_is_refused(tmp_path, capsys):
    (tmp_path / "p.toml").write_text(tiny_protocol())
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "p.toml" / "s.h5")]) == EXIT_USAGE
    assert "--out" in _one_error_line(capsys.readouterr().err)


def test_out_under_a_regular_file_deeper_is_refused_and_missing_folders_are_created(tmp_path, capsys):
    """make demo writes demo-output/dry-run.h5 after removing demo-output: missing folders are made, but a
    regular file anywhere in the path is refused before anything runs."""
    (tmp_path / "p.toml").write_text(tiny_protocol(generations=1))
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "p.toml" / "a" / "s.h5")]) == EXIT_USAGE
    assert "p.toml is not a folder" in _one_error_line(capsys.readouterr().err)
    out = tmp_path / "new" / "deeper" / "s.h5"
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(out), "--quiet"]) == 0
    assert out.is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only (mode 0555) folders")
def test_out_in_a_read_only_folder_is_refused(tmp_path, capsys):
    (tmp_path / "p.toml").write_text(tiny_protocol())
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(locked / "s.h5")]) == EXIT_USAGE
    assert "--out" in _one_error_line(capsys.readouterr().err)


def test_an_os_error_while_running_is_exit_1_naming_the_path_and_errno(tmp_path, monkeypatch, capsys):
    from rig.session import SessionWriter

    def full(self, block, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "s.h5.journal"))

    monkeypatch.setattr(SessionWriter, "append_block", full)
    (tmp_path / "p.toml").write_text(tiny_protocol())
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(tmp_path / "s.h5"), "--quiet"]) == EXIT_FAILED
    line = _one_error_line(capsys.readouterr().err)
    assert "s.h5.journal" in line and "No space left on device" in line and "ENOSPC" in line


def test_an_unexpected_error_is_one_line_with_a_debug_hint_or_a_traceback_with_rig_debug(tmp_path, monkeypatch,
                                                                                       capsys):
    import rig.commands.run

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(rig.commands.run, "run", bug)
    assert main(["run", "x.toml"]) == EXIT_FAILED
    line = _one_error_line(capsys.readouterr().err)
    assert "internal error: KeyError" in line and "RIG_DEBUG=1" in line
    monkeypatch.setenv("RIG_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["run", "x.toml"])


def test_help_and_usage_errors_return_instead_of_exiting(capsys):
    assert main(["run", "--help"]) == 0
    assert main(["no-such-command"]) == EXIT_USAGE
    assert "invalid choice" in _one_error_line(capsys.readouterr().err)
