"""``rig sim-rig`` as a separate process or in a thread, and sessions recorded against it over loopback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from helpers.protocols import tiny_protocol
from protocols.spec import load_protocol
from rig.loop.assemble import assemble, resolve_neuron
from rig.loop.controller import Controller
from rig.recording.sidechannel import FaultRequest
from rig.recording.simrig import CALLBACK_MS, SimRig, SimRigConfig
from rig.session import SessionWriter
from simulators.neuron import SimulatedNeuron
from simulators.response_model import ResponseModel


ROOT = Path(__file__).resolve().parents[2]  # the repository


UNIT = "test_cnn:features.7:unit=5"


def start_sim_rig(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    """Start ``rig sim-rig`` on OS-chosen ports; return the process and its endpoints."""
    ready = tmp_path / "sim-rig.json"
    log = open(tmp_path / "sim-rig.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "rig.cli", "sim-rig", "--data-port", "0", "--side-port", "0",
         "--ready-file", str(ready), *extra],
        # One torch thread: sim-rig scores every onset, and on two cores its model would starve the display.
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"sim-rig did not start: {(tmp_path / 'sim-rig.log').read_text()}")
        time.sleep(0.05)
    time.sleep(0.05)  # the file is written in one call; give it a moment to be complete
    return process, json.loads(ready.read_text())


def run_in_process(protocol: Path, ports: dict, out: Path, *, display_kind: str = "psychopy", max_repeats: int = 30):
    """What ``rig run PROTOCOL --neuron zmq://... --sim-link ...`` does, in this process (assemble, a session
    file, the controller), so a test can read the parts afterwards (e.g. the simulated monkey's events).

    ``max_repeats`` is high: Xvfb on a busy machine drops frames now and then, and those stimuli come again.
    """
    import torch

    from protocols.spec import load_protocol
    from rig.loop.assemble import assemble, resolve_neuron
    from rig.loop.controller import Controller
    from rig.session import SessionWriter

    spec = load_protocol(protocol)
    parts = assemble(spec, resolve_neuron(spec, [f"zmq://127.0.0.1:{ports['data_port']}"], None),
                     device=torch.device("cpu"), display_kind=display_kind, sim_link=ports["side"])
    session = SessionWriter(out, protocol_text=spec.text, protocol_sha256=spec.sha256, protocol_path=str(spec.path),
                            seed=spec.seed, provenance=parts.provenance, reference_ids=parts.protocol.reference_ids)
    try:
        Controller(parts.protocol, parts.display, parts.source, session, max_repeats=max_repeats).run()
    finally:
        parts.display.close()
        parts.source.close()
    return parts


def stop_sim_rig(process: subprocess.Popen) -> int:
    """SIGTERM, then wait; returns the exit status."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9


THREAD_RIG_RECORDING = """
[recording]
units = ["Electrode 1:1"]
ttl_tolerance_ms = 8
timeout_s = {timeout_s}
connect_timeout_s = 5
"""


class ThreadRig:
    """SimRig in a background thread with OS-chosen ports."""

    def __init__(self, faults=(), gain=1000.0, offset=80.0, **config) -> None:
        neuron = SimulatedNeuron([UNIT], weights="random")
        # As a real rig: ~23 ms callbacks, a photodiode under a patch that toggles at each onset, 20 ms display lag.
        # ``config``: more SimRigConfig fields, set before the rig's thread starts.
        self.rig = SimRig(neuron, 1, ResponseModel(gain=gain, offset=offset, seed=3),
                          SimRigConfig(data_port=0, side_port=0, faults=list(faults), lag_ms=10.0,
                                       block_ms=CALLBACK_MS, photodiode="toggle", display_latency_ms=20.0,
                                       **config))
        self.thread = threading.Thread(target=self.rig.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.rig.stop()
        self.thread.join(5)
        self.rig.close()


def thread_rig_session(write_protocol, tmp_path, rig: SimRig, timeout_s: float = 1.0, generations: int = 2, popsize: int = 6):
    path = write_protocol(generations=generations, popsize=popsize, references=2)
    path.write_text(path.read_text() + THREAD_RIG_RECORDING.format(timeout_s=timeout_s))
    spec = load_protocol(path)
    recording = f"zmq://127.0.0.1:{rig.data_port}"
    parts = assemble(spec, resolve_neuron(spec, [recording], None), device=torch.device("cpu"),
                     sim_link=f"tcp://127.0.0.1:{rig.side_port}", pace=(0.03, 0.03))
    out = tmp_path / "zmq.h5"
    session = SessionWriter(out, protocol_text=spec.text, protocol_sha256=spec.sha256, protocol_path=str(spec.path),
                            seed=spec.seed, provenance=parts.provenance, reference_ids=parts.protocol.reference_ids)
    return parts, session, out


def record_with_fault(write_protocol, tmp_path, fault: FaultRequest, **session_options) -> tuple[SimRig, Path]:
    """Run an evolution against a SimRig over loopback with ``fault`` injected; the rig and the session file."""
    sim = ThreadRig([fault])
    try:
        parts, session, out = thread_rig_session(write_protocol, tmp_path, sim.rig, timeout_s=0.4, **session_options)
        try:
            Controller(parts.protocol, parts.display, parts.source, session, max_repeats=3).run()
        finally:
            parts.source.close()
    finally:
        sim.close()
    return sim.rig, out


def record_with_drop(tmp, fault: FaultRequest):
    """A two-block session recorded from SimRig over loopback with ``fault`` at block 0's 4th onset."""

    def write_protocol(generations: int, popsize: int, references: int):
        path = tmp / "small.toml"
        path.write_text(tiny_protocol(generations=generations, seed=0, popsize=popsize, references=references,
                                      max_frequency=4, image_size=64))
        return path

    return record_with_fault(write_protocol, tmp, fault, generations=2, popsize=6)[1]
