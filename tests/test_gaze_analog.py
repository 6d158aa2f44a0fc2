"""Eye signals on the recording: ``[gaze] source = "recording"`` (ADC channels over ZeroMQ, NAME-analog over LSL)
and ``[gaze] source = "lsl"`` (an eye tracker's LSL stream), against sim-rig's simulated monkey.

Sim-rig runs in a forked process (the test process's imports are already paid for; a thread would share the
GIL with the reader, which stamps arrival times), on real sockets. Its truth file says what the monkey did and
where its eye was (``truth_gaze``), on time.monotonic, the clock of PacedFrames here; the gaze read through the
recording must match it in degrees, within the map's noise, at the right times.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.gaze_conformance import TASK, GazeConformance
from protocols.base import Block
from protocols.spec import BehaviorSpec, RecordingSpec
from rig.behavior.frames import PacedFrames
from rig.behavior.gaze.base import GazeError, GazeSamples, GazeTask
from rig.behavior.gaze.recording import NEEDS_RECORDING, AnalogGazeTap, RecordingGaze
from rig.behavior.machine import StimulusTiming
from rig.behavior.outcomes import TrialOutcome
from rig.behavior.parts import part_registry
from rig.behavior.runner import TrialRunner
from rig.display.psychopy import dropped_frames
from rig.recording.openephys.reader import ZmqReader
from rig.recording.openephys.server import OpenEphysPublisher
from rig.recording.openephys.wire import DATA_ENVELOPE
from rig.recording.sidechannel import SceneNotice, SimRigLink, format_scene, parse_scene
from rig.recording.simrig import CALLBACK_MS, SimRigConfig, gaze_calibration, read_truth, serve
from rig.recording.source import recording_from_url

#: Degrees -> volts in sim-rig (0.2 V/deg, offsets), and the calibration that undoes it.
GAZE_MAP = (0.2, 0.01, 0.1, -0.01, 0.2, -0.2)
NOISE_V = 0.005
LAG_MS = 5.0
#: A monkey that breaks often, never blinks or rests, and looks at the point quickly.
MONKEY = {"break_hazard_hz": 3.0, "blink_rate_hz": 0.0, "acquire_latency_ms": 100.0, "acquire_latency_sd_ms": 20.0,
          "acquire_latency_min_ms": 60.0, "rest_hazard_hz": 0.0, "rest_hazard_per_reward_hz": 0.0}


class ForkedRig:
    """SimRig in a forked process (no second torch import), with OS-chosen ports."""

    def __init__(self, truth: Path | None = None, **config) -> None:
        config = {"data_port": 0, "side_port": 0, "lag_ms": LAG_MS, "block_ms": CALLBACK_MS,
                  "gaze_adc": ("ADC1", "ADC2"), "gaze_map": GAZE_MAP, "gaze_noise_v": NOISE_V, "gaze_seed": 7,
                  "gaze_monkey": MONKEY, "truth_file": str(truth) if truth else None, "truth_gaze": True, **config}
        self.pipe, child = multiprocessing.get_context("fork").Pipe()
        self.process = multiprocessing.get_context("fork").Process(target=serve, args=(SimRigConfig(**config), child),
                                                                   daemon=True)
        self.process.start()
        if not self.pipe.poll(30):
            self.process.kill()
            raise RuntimeError("sim-rig did not start")
        self.ports = self.pipe.recv()
        self.truth = truth
        self.summary: dict = {}

    @property
    def url(self) -> str:
        return f"zmq://127.0.0.1:{self.ports['data_port']}"

    @property
    def side(self) -> str:
        return f"tcp://127.0.0.1:{self.ports['side_port']}"

    def close(self) -> None:
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGTERM)
            if self.pipe.poll(10):
                self.summary = self.pipe.recv()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()


def write_calibration(path: Path, gaze_map=GAZE_MAP) -> Path:
    """The calibration that inverts sim-rig's map (volts -> degrees)."""
    path.write_text(gaze_calibration(gaze_map).to_toml())
    return path


def held(truth: GazeSamples, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tracker's output at ``at``: its latest sample at or before (an analog output holds each sample)."""
    index = np.clip(np.searchsorted(truth.times, at, side="right") - 1, 0, len(truth) - 1)
    return truth.x[index], truth.y[index]


def block_means(truth: GazeSamples, at: np.ndarray, k: int = 30, rate: float = 30000.0):
    """What a sample at ``at`` should read: the mean of the tracker's output over the ``k`` ADC samples around it
    (the source delivers means of ``k`` samples, stamped at their centre)."""
    offsets = (np.arange(k) - (k - 1) / 2) / rate
    x, y = held(truth, (at[:, None] + offsets[None, :]).ravel())
    return x.reshape(-1, k).mean(axis=1), y.reshape(-1, k).mean(axis=1)


def _compare_with_truth(samples: GazeSamples, truth_path: Path) -> tuple[float, float]:
    """The median error (degrees) of ``samples`` against what they should read, at the time shift (s) that makes
    it least, and that shift (searched over ±5 ms, 0.1 ms apart): the times are right when it is near 0."""
    truth, _ = read_truth(truth_path)
    best = (np.inf, 0.0)
    for shift in np.arange(-50, 51) / 10000:
        tx, ty = block_means(truth, samples.times + shift)
        best = min(best, (float(np.median(np.hypot(samples.x - tx, samples.y - ty))), float(shift)))
    return best


def recording_gaze(recording, calibration: Path, **options) -> RecordingGaze:
    source = part_registry("gaze").build("recording", {"calibration": str(calibration), "delay_ms": LAG_MS,
                                                       **options})
    source.attach_recording(recording)
    return source


def read_for(source, seconds: float, period: float = 1 / 60) -> tuple[list[GazeSamples], list[float]]:
    """Read as a trial machine does, once a frame for ``seconds``; each read's samples and its ``until``."""
    parts, untils = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(period)
        until = time.monotonic()
        parts.append(source.read(until))
        untils.append(until)
    return parts, untils


# --------------------------------------------------------------------------- ZeroMQ: a monkey on ADC1/ADC2


@pytest.fixture(scope="module")
def adc_rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adc")
    rig = ForkedRig(tmp / "truth.jsonl")
    yield rig, write_calibration(tmp / "cal.toml")
    rig.close()


@pytest.mark.timeout(60)
def test_gaze_read_through_the_recording_matches_the_monkey_in_degrees_and_time(adc_rig):
    rig, calibration = adc_rig
    recording = recording_from_url(RecordingSpec(units=["Electrode 1:1"], connect_timeout_s=10), rig.url)
    source = recording_gaze(recording, calibration)
    source.start(GazeTask((0.0, 0.0), 1.5, "time.monotonic", time.monotonic()))
    recording.start()
    try:
        parts, untils = read_for(source, 4.0)  # no scene: the monkey looks around, saccades every 0.3-1 s
        health = source.health()
    finally:
        source.close()
        recording.close()
    samples = GazeSamples.concat(parts)
    truth, _ = read_truth(rig.truth)
    assert health["unpaired"] == 0 and health["gaps"] == 0 and recording.reader.stats.malformed == 0
    # About 1000 samples a second (means of 30 ADC samples), none missing once the stream flows.
    span = samples.times[-1] - samples.times[0]
    assert len(samples) >= 0.99 * span * 1000 and np.all(np.diff(samples.times) < 0.0011)
    assert samples.valid.all()
    # The times: the position matches the truth best within a millisecond and a half of no shift (the saccades
    # make any offset show; what is left is sim-rig's own work on a callback before it sends it, the part of
    # the delay that delay_ms would state on a real rig).
    error, best = _compare_with_truth(samples, rig.truth)
    # The degrees: within the map's noise (0.005 V = 0.025 deg a sample and axis, /sqrt(30) once averaged).
    assert error < 0.015 and abs(best) <= 0.0015, (error, best)
    # The latency: a read at `until` has every sample acquired up to one callback plus the lag before it.
    stale = np.array([u - p.times[-1] for u, p in zip(untils, parts) if len(p)])
    assert np.median(stale) < (CALLBACK_MS + LAG_MS) / 1000 + 0.005, np.median(stale)
    assert np.percentile(stale, 95) < (CALLBACK_MS + LAG_MS) / 1000 + 0.015, np.percentile(stale, 95)
    assert abs(health["offset_s"] - (samples.times[0] - (samples.times[0] - health["offset_s"]))) < 1  # finite


@pytest.mark.timeout(60)
def test_a_trial_machine_on_paced_frames_sees_the_monkeys_breaks_from_adc_gaze(adc_rig):
    rig, calibration = adc_rig
    recording = recording_from_url(RecordingSpec(units=["Electrode 1:1"], connect_timeout_s=10), rig.url)
    source = recording_gaze(recording, calibration)
    link = SimRigLink(rig.side, clock="time.monotonic", monotonic_offset=0.0)
    spec = BehaviorSpec(stimuli_per_trial=3, hold_ms=100, iti_ms=100, timeout_ms=100, acquire_ms=1000,
                        not_working_s=60)
    runner = TrialRunner(spec, StimulusTiming(3, 3, 0.1), PacedFrames(60.0), source,
                         GAZE_REWARD(), dropped_frames=dropped_frames, say=lambda message: None)
    runner.add_listener(link.on_trial_event)
    breaks: list[float] = []
    runner.add_listener(lambda kind, t, info: breaks.append(t) if kind == "break" else None)
    recording.start()
    started = time.monotonic()
    try:
        result = runner.run(_block(12), lambda position, t: None)
    finally:
        runner.close()
        recording.close()
        link.close()
    time.sleep(0.2)  # the truth of the last callbacks reaches the file
    _, records = read_truth(rig.truth)
    outcomes = result.log.trials["outcome"]
    truth_breaks = np.array([r["time"] for r in records if r["type"] == "gaze_event" and r["kind"] == "break"
                             and r["time"] >= started])
    scenes = [r for r in records if r["type"] == "scene" and r["time"] >= started]
    # The monkey saw the scenes when the screen changed (one late by the side channel on a busy machine at most).
    assert scenes and sum(r["applied"] != r["time"] for r in scenes) <= 1
    assert breaks, f"no break in {len(result.onsets)} stimuli; outcomes {outcomes}"
    for t in breaks:
        # The machine dates a break at the first sample outside the window: after the saccade began, within its
        # first part (4-10 degrees away from a 1.5 degree window).
        before = truth_breaks[truth_breaks <= t + 0.002]
        assert len(before) and t - before[-1] < 0.05, f"break at {t:.4f} has no monkey break just before it"
    assert int(TrialOutcome.BROKE_FIXATION) in outcomes and (~result.valid).any()
    assert np.allclose(sorted(breaks), sorted(t for t in result.log.trials["break_time"] if np.isfinite(t)))


def GAZE_REWARD():  # noqa: N802 - a factory in the shape of a class
    return part_registry("reward").build("log", {})


def _block(n: int) -> Block:
    return Block(0, [f"s{i}" for i in range(n)], ["generated"] * n, np.zeros(n), np.arange(n),
                 torch.zeros(n, 3, 8, 8), np.zeros((n, 2)))


@pytest.mark.timeout(60)
def test_the_reader_keeps_up_with_many_channels_and_decodes_only_the_two_adc_channels(tmp_path):
    channels = 96
    rig = ForkedRig(None, data_channels=channels, truth_gaze=False, send_queue=100_000)
    tap = AnalogGazeTap("ADC1", "ADC2", rate_hz=1000.0, delay_s=LAG_MS / 1000)
    decoded: list[str] = []
    data = tap.data
    tap.data = lambda stream, channel, *rest: (decoded.append(channel), data(stream, channel, *rest))
    try:
        with ZmqReader(f"tcp://127.0.0.1:{rig.ports['data_port']}") as reader:
            reader.add_tap(tap)
            got, untils = [], []
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                reader.wait(0.02)
                reader.read_next()  # as a recording between showings: records taken now and then
                until = time.monotonic()
                got.append(tap.take(until))
                untils.append(until)
            stats = reader.stats
            assert reader.health.backpressure_waits == 0
    finally:
        rig.close()
    callbacks = len(decoded) // 2
    assert stats.gaps == 0 and stats.lost_messages == 0 and stats.malformed == 0 and stats.tap_errors == 0
    assert set(decoded) == {"ADC1", "ADC2"}  # the other 96 channels were never decoded
    assert stats.messages >= callbacks * (channels + 2) - (channels + 2)  # every channel's message arrived
    assert tap.stats.unpaired <= 1 and tap.stats.gaps == 0  # (the first callback may be joined halfway)
    samples = GazeSamples.concat(got)
    assert len(samples) > 0.9 * 3.0 * 1000
    stale = np.array([u - g.times[-1] for u, g in zip(untils, got) if len(g)])
    assert np.median(stale) < (CALLBACK_MS + LAG_MS) / 1000 + 0.01, np.median(stale)


# --------------------------------------------------------------------------- malformed ADC messages


class _PacedAdc:
    """Callbacks of ``n`` samples at 30 kHz on CH1, ADC1, ADC2, each sent when its last sample is due (the
    receive-time clock assumes a recording in real time), and malformed messages between them."""

    def __init__(self, publisher: OpenEphysPublisher, n: int = 300) -> None:
        self.publisher, self.n = publisher, n
        self.selected = publisher.continuous("acq", [(0, "CH1"), (1, "ADC1"), (2, "ADC2")], 30000.0)
        self.sample = 0
        self.origin = time.monotonic()

    def wait(self) -> None:
        due = self.origin + (self.sample + self.n) / 30000.0
        time.sleep(max(0.0, due - time.monotonic()))

    def callback(self, x: float, y: float) -> None:
        self.wait()
        n = self.n
        self.publisher.send_continuous(self.selected, self.sample, n, [np.full(n, 0.5, "<f4"), np.full(n, x, "<f4"),
                                                                       np.full(n, y, "<f4")])
        self.sample += n

    def header(self, channel: int, num_samples: int | None = None) -> bytes:
        n = self.n if num_samples is None else num_samples
        return self.selected.templates[channel] % (self.publisher.next_message_num(), n, self.sample, 4 * n, 0)


def test_malformed_and_short_adc_payloads_are_counted_and_skipped_never_crash(tmp_path):
    publisher = OpenEphysPublisher(data_port=0, header_style="juce")
    tap = AnalogGazeTap("ADC1", "ADC2", rate_hz=0.0)
    try:
        with ZmqReader(publisher.endpoint) as reader:
            reader.add_tap(tap)
            time.sleep(0.3)  # the subscription is up
            adc = _PacedAdc(publisher)
            n, send = adc.n, publisher.send_frames
            for _ in range(3):
                adc.callback(0.2, -0.2)
            # A short ADC1 payload (its header says n samples): malformed; then its ADC2 alone: unpaired.
            adc.wait()
            send([DATA_ENVELOPE, adc.header(1), np.zeros(n - 3, "<f4").tobytes()])
            send([DATA_ENVELOPE, adc.header(2), np.zeros(n, "<f4").tobytes()])
            adc.sample += n
            # A payload of odd length, a header that is not JSON, a lone envelope: malformed, skipped.
            adc.wait()
            send([DATA_ENVELOPE, adc.header(1), b"\x00" * 7])
            send([DATA_ENVELOPE, b'{"message_num": 1, "type": "data", "content": {"channel_name": "ADC1"', b"\x00" * 8])
            send([DATA_ENVELOPE])
            adc.sample += n
            adc.callback(float("nan"), 0.1)  # no gaze: NaN,
            adc.callback(9.0, 0.1)  # and beyond the rails
            for _ in range(3):
                adc.callback(0.3, 0.3)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and tap.stats.messages < 17:
                time.sleep(0.02)
            time.sleep(0.05)
            samples = tap.take(time.monotonic())
            reader.read_next()  # the reader is still alive: no ReaderFailedError
            stats = reader.stats
    finally:
        publisher.close()
    assert stats.malformed == 4 and stats.tap_errors == 0
    assert tap.stats.unpaired == 1  # the ADC2 whose ADC1 was short
    assert tap.stats.gaps == 1  # the two callbacks lost between the good ones
    # A few samples may be lost while the clock's envelope settles (those stamped again lower are dropped).
    dropped = tap.stats.out_of_order
    assert dropped < n and len(samples) == 8 * n - dropped
    kind = np.select([samples.x == np.float32(0.2), ~samples.valid, samples.y == np.float32(0.3)], [0, 1, 2], -1)
    assert np.all(np.diff(kind) >= 0) and (kind >= 0).all()  # 0.2 V, then no gaze, then 0.3 V, in order
    assert (kind == 1).sum() + (kind == 0).sum() + (kind == 2).sum() == len(samples)
    assert np.isnan(samples.x[kind == 1]).all() and (kind == 2).sum() > 2 * n
    assert np.all(np.diff(samples.times) > 0)
    # Sample times are 1/30000 s apart within a callback, and the lost callbacks leave their gap in time.
    first = samples.times[kind == 0]
    np.testing.assert_allclose(np.diff(first[-n // 2:]), 1 / 30000, atol=1e-7)
    assert samples.times[kind == 1][0] - first[-1] == pytest.approx(2 * n / 30000 + 1 / 30000, abs=2e-3)


def test_a_tap_that_raises_is_counted_and_the_reader_goes_on():
    publisher = OpenEphysPublisher(data_port=0)
    selected = publisher.continuous("acq", [(0, "ADC1"), (1, "ADC2")], 30000.0)

    class Broken:
        channels = frozenset({"ADC1"})

        def watermark(self, *args):
            pass

        def data(self, *args):
            raise ValueError("broken tap")

    try:
        with ZmqReader(publisher.endpoint) as reader:
            reader.add_tap(Broken())
            time.sleep(0.3)
            for k in range(3):
                publisher.send_continuous(selected, k * 10, 10, [np.zeros(10, "<f4")] * 2)
            deadline = time.monotonic() + 5
            while reader.stats.messages < 6 and time.monotonic() < deadline:
                time.sleep(0.02)
            records = reader.read_next()
    finally:
        publisher.close()
    assert reader.stats.tap_errors == 3 and "broken tap" in reader.stats.tap_error_messages[0]
    assert records  # the watermarks still came


# --------------------------------------------------------------------------- LSL


@pytest.fixture(scope="module")
def lsl_rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lsl")
    name = f"gazetest{os.getpid()}"
    rig = ForkedRig(tmp / "truth.jsonl", transport="lsl", lsl_name=name)
    yield rig, name, write_calibration(tmp / "cal.toml")
    rig.close()




@pytest.mark.timeout(60)
def test_an_lsl_gaze_stream_is_read_by_name_calibrated_and_on_time(lsl_rig):
    rig, name, calibration = lsl_rig
    source = part_registry("gaze").build("lsl", {"stream": f"{name}-analog", "channels": ["ADC1", "ADC2"],
                                                 "calibration": str(calibration), "valid_range": [-5.0, 5.0]})
    source.start(GazeTask((0.0, 0.0), 1.5, "time.monotonic", time.monotonic()))
    try:
        parts, untils = read_for(source, 3.0)
        health = source.health()
    finally:
        source.close()
    samples = GazeSamples.concat(parts)
    assert health["stream"]["decimate"] == 30 and health["gaps"] == 0
    assert len(samples) > 0.9 * 2.5 * 1000 and samples.valid.all()
    error, best = _compare_with_truth(samples, rig.truth)
    assert error < 0.015 and abs(best) <= 0.0015, (error, best)


@pytest.mark.timeout(60)
def test_recording_gaze_over_an_lsl_recording_reads_its_analog_stream(lsl_rig):
    rig, name, calibration = lsl_rig
    recording = recording_from_url(RecordingSpec(units=["Electrode 1:1"], connect_timeout_s=10), f"lsl://{name}")
    source = part_registry("gaze").build("recording", {"calibration": str(calibration)})
    source.attach_recording(recording)
    source.start(GazeTask((0.0, 0.0), 1.5, "time.monotonic", time.monotonic()))
    try:
        parts, _ = read_for(source, 2.0)
    finally:
        source.close()
    samples = GazeSamples.concat(parts)
    assert len(samples) > 0.9 * 1.5 * 1000
    error, best = _compare_with_truth(samples, rig.truth)
    assert error < 0.015 and abs(best) <= 0.0015, (error, best)


# --------------------------------------------------------------------------- refusals


def test_a_session_whose_neuron_is_not_a_recording_fails_clearly(tmp_path):
    source = part_registry("gaze").build("recording", {"calibration": str(write_calibration(tmp_path / "c.toml"))})
    with pytest.raises(GazeError, match=r'needs --neuron zmq://\.\.\. or lsl://\.\.\.'):
        source.start(GazeTask((0.0, 0.0), 1.5, "time.monotonic", 0.0))
    with pytest.raises(GazeError, match=r'\[gaze\] source = "recording" needs --neuron'):
        source.attach_recording(None)
    assert "recording" in NEEDS_RECORDING


def test_options_are_checked_when_the_source_is_built(tmp_path):
    registry = part_registry("gaze")
    with pytest.raises(ValueError, match="rig calibrate"):
        registry.build("recording", {})
    with pytest.raises(ValueError, match="not found"):
        registry.build("recording", {"calibration": str(tmp_path / "missing.toml")})
    with pytest.raises(ValueError, match="channels"):
        registry.build("recording", {"calibration": "identity", "channels": ["ADC1", "ADC1"]})
    with pytest.raises(ValueError, match="stream"):
        registry.build("lsl", {"calibration": "identity"})


def test_an_unknown_display_clock_is_refused_unless_its_offset_is_given(tmp_path):
    class Recording:
        class transport:  # noqa: N801
            scheme = "zmq"

        class reader:  # noqa: N801
            taps = []

            @classmethod
            def add_tap(cls, tap):
                cls.taps.append(tap)

    source = part_registry("gaze").build("recording", {"calibration": "identity"})
    source.attach_recording(Recording)
    with pytest.raises(GazeError, match="display's clock 'mystery'"):
        source.start(GazeTask((0.0, 0.0), 1.5, "mystery", 0.0))
    source.attach_recording(Recording, monotonic_offset=12.5)
    source.start(GazeTask((0.0, 0.0), 1.5, "mystery", 0.0))
    assert Recording.reader.taps[-1].monotonic_offset == 12.5


# --------------------------------------------------------------------------- the side channel's scene message


def test_scene_messages_round_trip_and_hostile_ones_raise_value_error():
    notice = SceneNotice(1.5, "time.monotonic", 101.5, True, False, (1.0, -2.0))
    assert parse_scene(format_scene(notice)) == notice
    frames = format_scene(notice)
    for body in (b"[]", b'{"time": 1}', b'{"time": 1, "monotonic": "x", "fixation": true, "stimulus": false}',
                 b'{"time": 1, "monotonic": 2, "fixation": 1, "stimulus": false}',
                 b'{"time": 1, "monotonic": 2, "fixation": true, "stimulus": false, "fixation_deg": [1e9, 0]}',
                 b"\xff", b'{"time": NaN, "monotonic": 2, "fixation": true, "stimulus": false}'):
        with pytest.raises(ValueError, match="scene message"):
            parse_scene([frames[0], body])
    with pytest.raises(ValueError, match="scene message"):
        parse_scene([frames[0]])


def test_sim_rig_refuses_bad_gaze_options():
    for bad in ({"gaze_adc": ("ADC1",)}, {"gaze_adc": ("CH1", "ADC2")}, {"gaze_adc": ("ADC1", "ADC1")},
                {"gaze_adc": ("ADC1", "ADC2"), "gaze_map": (1, 0, 0, 2, 0, 0)},
                {"gaze_adc": ("ADC1", "ADC2"), "gaze_map": (1, 0, 0)},
                {"gaze_adc": ("ADC1", "ADC2"), "gaze_noise_v": -1.0},
                {"gaze_adc": ("ADC1", "ADC2"), "gaze_blink_v": -6.0},
                {"gaze_adc": ("ADC1", "ADC2"), "gaze_monkey": {"raw_map": [1, 0, 0, 0, 1, 0]}}):
        with pytest.raises(ValueError, match="gaze"):
            SimRigConfig(**bad)


def test_sim_rig_command_line_builds_the_gaze_config():
    import argparse

    from rig.commands.sim_rig import _block_ms, _gaze_config, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--gaze-adc", "ADC1,ADC2", "--gaze-map", "0.1,0,0.5,0,0.1,-0.5", "--gaze-noise",
                              "0.01", "--gaze-seed", "4", "--gaze-monkey", '{"break_hazard_hz": 2}',
                              "--buffer-size", "512"])
    config = _gaze_config(args)
    assert config["gaze_adc"] == ("ADC1", "ADC2") and config["gaze_map"] == (0.1, 0, 0.5, 0, 0.1, -0.5)
    assert config["gaze_monkey"] == {"break_hazard_hz": 2} and config["gaze_seed"] == 4
    assert _block_ms(args) == pytest.approx(1000 * 512 / 44100)
    for bad in (["--gaze-adc", "ADC1"], ["--gaze-adc", "A,B", "--gaze-map", "1,2"],
                ["--gaze-adc", "A,B", "--gaze-monkey", "[1]"], ["--gaze-adc", "A,B", "--gaze-monkey", '{"nope": 1}']):
        with pytest.raises(ValueError):
            _gaze_config(parser.parse_args(bad))
    with pytest.raises(ValueError, match="not both"):
        _block_ms(parser.parse_args(["--buffer-size", "256", "--block-ms", "5"]))


# --------------------------------------------------------------------------- the gaze conformance suite


class _SyntheticAdc(threading.Thread):
    """Feeds a tap as a reader would: a callback of 300 samples (30 kHz) every 10 ms, X and Y constant but for
    a stretch of rail (no gaze) every second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.taps: list = []
        self.stop = threading.Event()

    def add_tap(self, tap) -> None:
        self.taps.append(tap)
        if not self.is_alive():
            self.start()

    def run(self) -> None:
        sample, n = 0, 300
        while not self.stop.wait(0.01):
            x = np.full(n, 0.1 if (sample // 30000) % 2 == 0 or sample % 30000 > 3000 else -5.0, "<f4")
            y = np.full(n, -0.1, "<f4")
            now = time.monotonic()
            for tap in self.taps:
                tap.watermark("acq", sample + n, 30000.0, now)
                tap.data("acq", "ADC1", sample, 30000.0, x.tobytes(), now)
                tap.data("acq", "ADC2", sample, 30000.0, y.tobytes(), now)
            sample += n


class _FakeRecording:
    def __init__(self) -> None:
        self.reader = _SyntheticAdc()

        class Transport:
            scheme = "zmq"

        self.transport = Transport()


class TestRecordingGazeConformance(GazeConformance):
    """``recording`` under the shared suite, fed a synthetic ADC pair in real time (display clock: TASK's)."""

    kind = "recording"

    @pytest.fixture(autouse=True)
    def _feeder(self):
        self.recordings: list[_FakeRecording] = []
        yield
        for recording in self.recordings:
            recording.reader.stop.set()

    def make_source(self):
        recording = _FakeRecording()
        self.recordings.append(recording)
        source = part_registry("gaze").build("recording", {"calibration": "identity", "rate_hz": 500.0})
        # The suite's clock reads TASK.now (100 s) now, so the samples arriving are on it.
        source.attach_recording(recording, monotonic_offset=time.monotonic() - TASK.now)
        return source


class TestLslGazeConformance(GazeConformance):
    """``lsl`` under the shared suite, reading a 500 Hz stream in degrees pushed from this process (x, y; a
    stretch of NaN, no gaze, every second)."""

    kind = "lsl"

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def outlet(cls):
        import pylsl

        name = f"gazeconf{os.getpid()}"
        info = pylsl.StreamInfo(name, "Gaze", 2, 500.0, pylsl.cf_float32, f"{name}-src")
        channels = info.desc().append_child("channels")
        for label in ("x", "y"):
            channels.append_child("channel").append_child_value("label", label)
        outlet = pylsl.StreamOutlet(info)
        stop = threading.Event()

        def push() -> None:
            k = 0
            while not stop.wait(0.01):
                y = np.where(np.arange(k, k + 5) % 500 < 20, np.nan, -1.0)
                outlet.push_chunk(np.column_stack([np.full(5, 1.0), y]).astype(np.float32))
                k += 5

        thread = threading.Thread(target=push, daemon=True)
        thread.start()
        cls.stream = name
        yield
        stop.set()
        thread.join(2)

    def make_source(self):
        source = part_registry("gaze").build("lsl", {"stream": self.stream, "channels": ["x", "y"],
                                                     "calibration": "identity"})
        source.monotonic_offset = time.monotonic() - TASK.now
        return source
