"""Reward outputs (rig/behavior/reward): log, serial and module, on real parts.

- ``command`` mode runs over a real pseudo-terminal pair: the output opens the
  slave's path with pyserial; a thread here reads the master and stamps each
  command's arrival.
- ``dtr``/``rts`` modes cannot run over a pty: Linux ptys have no
  modem-control lines (TIOCMBIS, TIOCMBIC and TIOCMGET fail with ENOTTY on both
  ends), so the output refuses them at build, which is tested. The pulse logic
  is tested over pyserial's own ``loop://`` handler instead: with
  ``?logging=debug`` it logs every DTR/RTS change as it is applied, and the
  log records' own timestamps are the observer, so nothing here shares the
  output's clock or its idea of the levels.
- An unplugged device is the pty's master closed mid-reward (writes then fail
  with EIO, as from a USB adapter that is pulled), or a ``flaky://`` handler
  (pyserial's handler packages) whose DTR fails on the second pulse.

Timing is asserted twice over (:func:`assert_intervals`): the *median* error
of a reward's intervals within 6 ms, and *every* interval within 25 ms. Both
bound the OS scheduler, not the output: on a 2-core shared VM the output's
intervals were accurate to a median 0.01-0.06 ms (95th percentile 0.1-0.5 ms)
when the machine was idle, but with two busy processes beside the tests the
median error of a whole reward reached 4 ms (threads wait for a time slice),
and a plain ``time.sleep`` in an idle process was once 21 ms late. The
intervals are chosen so that each plausible bug (pause ignored, pulse and
pause swapped, rewards overlapping) moves them by 30 ms or more, so both
bounds still catch it.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import select
import statistics
import sys
import threading
import time
import types

import pytest
import serial
from serial.urlhandler import protocol_loop

from protocols.registry import OptionError
from rig.behavior.reward import REWARD_OUTPUTS, RewardDelivery, RewardError, RewardOutput
from rig.behavior.reward.log import LogReward
from rig.behavior.reward.module import ModuleReward
from rig.behavior.reward.serial import SerialReward

#: The median error of a reward's intervals: a loaded machine's scheduling delay (see the module docstring).
MEDIAN_TOLERANCE_S = 0.006
#: Any one interval or latency: an OS scheduling outlier on a loaded machine, not the output's accuracy.
EVENT_TOLERANCE_S = 0.025


def reward(pulses: int, pulse_ms: float, pause_ms: float, t: float = 0.0) -> RewardDelivery:
    return RewardDelivery(time=t, pulses=pulses, pulse_ms=pulse_ms, pause_ms=pause_ms)


def assert_intervals(measured: list[float], expected: list[float]) -> None:
    """Every interval within EVENT_TOLERANCE_S of the expected one, their median error within MEDIAN_TOLERANCE_S."""
    assert len(measured) == len(expected)
    errors = [m - e for m, e in zip(measured, expected)]
    assert all(abs(e) < EVENT_TOLERANCE_S for e in errors), f"intervals {measured} s, expected {expected} s"
    assert abs(statistics.median(errors)) < MEDIAN_TOLERANCE_S, f"intervals {measured} s, expected {expected} s"


class PtyPeer:
    """The far end of a pty pair: a thread reads the master and stamps (perf_counter) each line's arrival."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        self.lines: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        pending = b""
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.02)[0]:
                continue
            try:
                data = os.read(self.master, 1024)
            except OSError:
                return
            now = time.perf_counter()
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                self.lines.append((now, line + b"\n"))

    def wait_for(self, count: int, timeout: float = 3.0) -> list[tuple[float, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.002)
        return list(self.lines)

    def unplug(self) -> None:
        """Hang up the line as a pulled USB adapter does: the slave's writes fail with EIO from now on."""
        self.stop()
        os.close(self.master)
        self.master = -1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def close(self) -> None:
        self.stop()
        for fd in (self.master, self._slave):
            if fd >= 0:
                os.close(fd)


@pytest.fixture
def pty_peer():
    peer = PtyPeer()
    yield peer
    peer.close()


@pytest.fixture
def outputs():
    """Builds serial outputs and closes them all afterwards, whatever the test did."""
    built: list[RewardOutput] = []

    def build(kind: str = "serial", **options) -> RewardOutput:
        out = REWARD_OUTPUTS.build(kind, options)
        built.append(out)
        return out

    yield build
    for out in built:
        out.close()


# --- command mode, over a real pty ------------------------------------------------------------------------------

def test_command_pulses_arrive_as_commands_spaced_pulse_plus_pause(pty_peer, outputs):
    out = outputs(port=pty_peer.path, mode="command")
    asked = time.perf_counter()
    out.deliver(reward(5, pulse_ms=30, pause_ms=40))
    returned = time.perf_counter()
    assert returned - asked < EVENT_TOLERANCE_S, "deliver must return at once; the pulses run in the background"
    assert out.wait(timeout=2.0)
    lines = pty_peer.wait_for(5)
    assert [text for _, text in lines] == [b"R30\n"] * 5
    assert_intervals([b[0] - a[0] for a, b in zip(lines, lines[1:])], [0.070] * 4)
    assert lines[0][0] - asked < EVENT_TOLERANCE_S  # the first pulse starts at once


def test_the_command_template_gets_pulse_number_and_count(pty_peer, outputs):
    out = outputs(port=pty_peer.path, mode="command", command="open {pulse}/{pulses} {pulse_ms:.1f}\n")
    out.deliver(reward(3, pulse_ms=12.5, pause_ms=5))
    assert out.wait(timeout=2.0)
    assert [text for _, text in pty_peer.wait_for(3)] == [b"open 0/3 12.5\n", b"open 1/3 12.5\n", b"open 2/3 12.5\n"]


def test_rewards_asked_back_to_back_queue_and_do_not_overlap(pty_peer, outputs):
    out = outputs(port=pty_peer.path, mode="command", command="R{pulse_ms:.0f} {pulse}\n")
    out.deliver(reward(3, pulse_ms=40, pause_ms=60))
    out.deliver(reward(2, pulse_ms=25, pause_ms=35))
    assert out.wait(timeout=2.0)
    lines = pty_peer.wait_for(5)
    assert [text for _, text in lines] == [b"R40 0\n", b"R40 1\n", b"R40 2\n", b"R25 0\n", b"R25 1\n"]
    times = [t for t, _ in lines]
    # The second reward starts when the first one's last pulse (40 ms) and its pause (60 ms) are over.
    assert_intervals([b - a for a, b in zip(times, times[1:])], [0.100, 0.100, 0.100, 0.060])


def test_an_unplugged_device_is_raised_by_the_next_check_and_nothing_hangs(pty_peer, outputs):
    out = outputs(port=pty_peer.path, mode="command")
    out.deliver(reward(6, pulse_ms=30, pause_ms=30, t=12.0))
    assert pty_peer.wait_for(1, timeout=1.0), "the first pulse's command never arrived"
    pty_peer.unplug()
    deadline = time.monotonic() + 1.0  # the next pulse's write is due 60 ms after the first
    with pytest.raises(RewardError) as failure:
        while time.monotonic() < deadline:
            out.check()
            time.sleep(0.005)
    message = str(failure.value)
    assert pty_peer.path in message and "6 pulse(s) of 30 ms" in message and "Errno 5" in message
    with pytest.raises(RewardError, match=re.escape(pty_peer.path)):
        out.deliver(reward(1, pulse_ms=10, pause_ms=0))
    started = time.monotonic()
    assert out.wait(timeout=1.0) is False  # the failed reward was not delivered
    out.close()
    out.close()
    assert time.monotonic() - started < 0.5


def test_a_missing_port_is_refused_at_build_naming_it():
    with pytest.raises(RewardError, match=r"/dev/rig-no-such-reward-port.*plugged in.*ls /dev/serial/by-id/"):
        REWARD_OUTPUTS.build("serial", {"port": "/dev/rig-no-such-reward-port", "mode": "command"})


def test_a_port_in_use_by_another_output_is_refused(pty_peer, outputs):
    outputs(port=pty_peer.path, mode="command")
    with pytest.raises(RewardError, match=rf"{re.escape(pty_peer.path)}.*could not be opened.*lock"):
        outputs(port=pty_peer.path, mode="command")


@pytest.mark.parametrize("line", ["dtr", "rts"])
def test_a_pty_has_no_modem_lines_so_dtr_and_rts_are_refused_at_build(pty_peer, line):
    with pytest.raises(RewardError, match=rf"{re.escape(pty_peer.path)}.*cannot drive {line.upper()}.*Errno 25.*"
                                          rf"no modem-control lines"):
        REWARD_OUTPUTS.build("serial", {"port": pty_peer.path, "mode": line})


# --- dtr/rts modes, over pyserial's loop:// handler, which logs every control-line change -----------------------

_LEVEL = re.compile(r"_update_(dtr|rts)_state\((True|False)\)")


class LineLog(logging.Handler):
    """Collects (record time, level) of every change pyserial's loop:// applies to one control line."""

    def __init__(self, line: str) -> None:
        super().__init__(logging.DEBUG)
        self.line = line
        self.levels: list[tuple[float, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _LEVEL.search(record.getMessage())
        if match and match.group(1) == self.line:
            self.levels.append((record.created, match.group(2) == "True"))

    def changes(self) -> list[tuple[float, bool]]:
        """The levels with repeats of the same level dropped (a set to the level already there is no edge)."""
        out: list[tuple[float, bool]] = []
        for t, level in self.levels:
            if not out or out[-1][1] != level:
                out.append((t, level))
        return out


@pytest.fixture
def loop_log(request):
    logger = logging.getLogger("pySerial.loop")
    handlers: list[LineLog] = []

    def watch(line: str) -> LineLog:
        handler = LineLog(line)
        logger.addHandler(handler)
        handlers.append(handler)
        return handler

    yield watch
    for handler in handlers:
        logger.removeHandler(handler)


@pytest.mark.parametrize("line, active_high", [("dtr", True), ("rts", False)])
def test_line_pulses_are_idle_active_idle_with_the_asked_timing(loop_log, outputs, line, active_high):
    log = loop_log(line)
    out = outputs(port="loop://?logging=debug", mode=line, active_high=active_high)
    active, idle = active_high, not active_high
    out.deliver(reward(4, pulse_ms=40, pause_ms=10))
    assert out.wait(timeout=2.0)
    edges = log.changes()
    # Idle from the moment the port opened (pyserial asserts both lines unless told otherwise), then 4 pulses.
    assert [level for _, level in edges] == [idle] + [active, idle] * 4
    times = [t for t, _ in edges[1:]]
    widths = [off - on for on, off in zip(times[0::2], times[1::2])]
    pauses = [on - off for off, on in zip(times[1::2], times[2::2])]
    assert_intervals(widths + pauses, [0.040] * 4 + [0.010] * 3)


def test_line_rewards_back_to_back_keep_the_pause_between_them(loop_log, outputs):
    log = loop_log("dtr")
    out = outputs(port="loop://?logging=debug", mode="dtr")
    for _ in range(2):
        out.deliver(reward(2, pulse_ms=20, pause_ms=40))
    assert out.wait(timeout=2.0)
    edges = log.changes()
    assert [level for _, level in edges] == [False] + [True, False] * 4
    times = [t for t, _ in edges[1:]]
    # The gap from each fall to the next rise is the pause, across the two rewards too.
    assert_intervals([on - off for off, on in zip(times[1::2], times[2::2])], [0.040] * 3)


def test_close_during_a_pulse_leaves_the_line_idle_and_stops_the_thread(loop_log, outputs):
    log = loop_log("dtr")
    out = outputs(port="loop://?logging=debug", mode="dtr")
    out.deliver(reward(1, pulse_ms=2000, pause_ms=0))
    time.sleep(0.05)
    assert log.changes()[-1][1] is True  # the pulse is running
    started = time.monotonic()
    out.close()
    out.close()
    assert time.monotonic() - started < 0.5
    assert log.changes()[-1][1] is False
    assert not [t for t in threading.enumerate() if t.name.startswith("reward: reward output 'serial' on loop://")]
    with pytest.raises(RewardError, match="closed"):
        out.deliver(reward(1, pulse_ms=10, pause_ms=0))


class FlakySerial(protocol_loop.Serial):
    """``flaky://``: loop:// whose DTR fails (EIO, as a pulled USB adapter) on its second assertion."""

    levels: list[bool] = []

    def from_url(self, url: str) -> None:  # loop:// would refuse the scheme; nothing to parse
        pass

    def _update_dtr_state(self) -> None:
        if self._dtr_state and FlakySerial.levels.count(True) >= 1:
            raise OSError(errno.EIO, "Input/output error")
        FlakySerial.levels.append(self._dtr_state)


class SlowSerial(protocol_loop.Serial):
    """``slow://``: loop:// that takes 0.5 s to open (a network port that does not answer), and says if closed."""

    closed: list[bool] = []

    def from_url(self, url: str) -> None:
        pass

    def open(self) -> None:
        time.sleep(0.5)
        super().open()

    def close(self) -> None:
        SlowSerial.closed.append(self.is_open)
        super().close()


@pytest.fixture
def handlers(monkeypatch):
    """Registers ``flaky://`` and ``slow://`` through pyserial's protocol_handler_packages, its own extension point."""
    package = types.ModuleType("rig_test_serial_handlers")
    package.__path__ = []
    monkeypatch.setitem(sys.modules, package.__name__, package)
    for scheme, cls in (("flaky", FlakySerial), ("slow", SlowSerial)):
        handler = types.ModuleType(f"{package.__name__}.protocol_{scheme}")
        handler.Serial = cls
        monkeypatch.setitem(sys.modules, handler.__name__, handler)
    monkeypatch.setattr(serial, "protocol_handler_packages", [*serial.protocol_handler_packages, package.__name__])
    FlakySerial.levels, SlowSerial.closed = [], []


def test_a_line_that_fails_mid_reward_is_raised_and_left_idle(handlers, outputs):
    out = outputs(port="flaky://rig", mode="dtr")
    out.deliver(reward(3, pulse_ms=20, pause_ms=20, t=3.5))
    assert out.wait(timeout=2.0) is False
    with pytest.raises(RewardError) as failure:
        out.check()
    message = str(failure.value)
    assert "flaky://rig" in message and "pulse 2 of" in message and "3 pulse(s) of 20 ms" in message
    assert "Errno 5" in message
    levels = FlakySerial.levels
    edges = [level for i, level in enumerate(levels) if i == 0 or levels[i - 1] != level]
    assert edges == [False, True, False]  # idle from the open, pulse 1, idle: pulse 2 never asserted
    assert levels[-2:] == [False, False]  # pulse 1's end, then idle set again after the failure


def test_a_port_slow_to_open_is_refused_after_open_timeout_s_and_closed_when_it_opens(handlers):
    started = time.monotonic()
    with pytest.raises(RewardError, match=r"slow://rig.*did not open within open_timeout_s = 0.1 s"):
        REWARD_OUTPUTS.build("serial", {"port": "slow://rig", "mode": "command", "open_timeout_s": 0.1})
    assert time.monotonic() - started < 0.4
    deadline = time.monotonic() + 2.0
    while not SlowSerial.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert SlowSerial.closed[:1] == [True]  # it opened late and was closed then (later closes: garbage collection)


# --- log and module ---------------------------------------------------------------------------------------------

def test_log_records_every_reward_and_opens_nothing():
    out = REWARD_OUTPUTS.build("log", {})
    assert isinstance(out, LogReward)
    asked = [reward(2, 50, 20, t=1.0), RewardDelivery(time=2.0, pulses=1, pulse_ms=80, pause_ms=0, manual=True)]
    for r in asked:
        out.deliver(r)
    assert out.deliveries == asked
    assert out.wait(timeout=0) is True
    out.close()
    out.close()
    assert out.describe() == {"class": "rig.behavior.reward.log.LogReward", "kind": "log", "version": 1,
                              "options": {}}
    with pytest.raises(ValueError, match="pulses must be >= 1"):
        out.deliver(reward(0, 50, 20))


class FakeValve:
    """A lab's reward object: ``deliver`` blocks for the pulses (software timing) unless ``hardware_timed``."""

    def __init__(self, channel: str, hardware_timed: bool = False, fail_on: int = 0) -> None:
        self.channel = channel
        self.hardware_timed = hardware_timed
        self.fail_on = fail_on
        self.calls: list[tuple[float, tuple, str]] = []
        self.closed = 0

    def deliver(self, pulses: int, pulse_ms: float, pause_ms: float) -> None:
        self.calls.append((time.perf_counter(), (pulses, pulse_ms, pause_ms), threading.current_thread().name))
        if len(self.calls) == self.fail_on:
            raise OSError("DAQmx error -200279: the device Dev1 is not responding")
        if not self.hardware_timed:
            time.sleep((pulses * pulse_ms + (pulses - 1) * pause_ms) / 1000.0)

    def close(self) -> None:
        self.closed += 1


made: list[FakeValve] = []


def make_valve(**options) -> FakeValve:
    valve = FakeValve(**options)
    made.append(valve)
    return valve


def make_log_output() -> RewardOutput:
    return LogReward()


def make_nothing() -> object:
    return object()


def make_missing_device() -> object:
    raise FileNotFoundError("no LabJack found")


def module_output(outputs, factory: str = "make_valve", **options) -> RewardOutput:
    return outputs("module", factory=f"{__name__}:{factory}", options=options)


def test_module_calls_the_factory_with_its_options_and_delivers_in_the_background(outputs):
    made.clear()
    out = module_output(outputs, channel="Dev1/port0/line0")
    assert isinstance(out, ModuleReward) and made[0].channel == "Dev1/port0/line0"
    asked = time.perf_counter()
    out.deliver(reward(2, pulse_ms=60, pause_ms=40))
    out.deliver(reward(1, pulse_ms=30, pause_ms=0))
    assert time.perf_counter() - asked < EVENT_TOLERANCE_S, "the lab's blocking deliver must not block the display"
    assert out.wait(timeout=2.0)
    valve = made[0]
    assert [args for _, args, _ in valve.calls] == [(2, 60.0, 40.0), (1, 30.0, 0.0)]
    assert all(thread != threading.current_thread().name for _, _, thread in valve.calls)
    assert out.describe()["wraps"] == f"{__name__}.FakeValve"
    assert out.describe()["options"] == {"factory": f"{__name__}:make_valve",
                                         "options": {"channel": "Dev1/port0/line0"}}
    out.close()
    out.close()
    assert valve.closed == 1


def test_module_rewards_do_not_overlap_even_when_deliver_returns_at_once(outputs):
    made.clear()
    out = module_output(outputs, channel="ctr0", hardware_timed=True)
    out.deliver(reward(3, pulse_ms=20, pause_ms=30))  # 120 ms of pulses, then a 30 ms pause
    out.deliver(reward(1, pulse_ms=20, pause_ms=30))
    assert out.wait(timeout=2.0)
    (first, _, _), (second, _, _) = made[0].calls
    assert 0.150 - 0.0005 <= second - first < 0.150 + EVENT_TOLERANCE_S  # never early; late only by an outlier


def test_module_failure_becomes_a_reward_error_naming_the_factory(outputs):
    made.clear()
    out = module_output(outputs, channel="Dev1", fail_on=2)
    out.deliver(reward(1, pulse_ms=10, pause_ms=0))
    out.deliver(reward(1, pulse_ms=10, pause_ms=0))
    assert out.wait(timeout=2.0) is False
    with pytest.raises(RewardError, match=rf"{__name__}:make_valve.*DAQmx error -200279") as failure:
        out.check()
    assert isinstance(failure.value.__cause__, OSError)
    with pytest.raises(RewardError, match="make_valve"):
        out.deliver(reward(1, pulse_ms=10, pause_ms=0))


def test_module_factory_results_and_errors(outputs):
    assert isinstance(module_output(outputs, "make_log_output"), LogReward)
    with pytest.raises(ValueError, match=r"returned a object; it must return a RewardOutput or an object with deliver"):
        module_output(outputs, "make_nothing")
    with pytest.raises(RewardError, match=r"make_missing_device.*no LabJack found"):
        module_output(outputs, "make_missing_device")
    with pytest.raises(ValueError, match=r"rejected options \['volts'\]"):
        module_output(outputs, volts=5)
    with pytest.raises(ValueError, match="must be 'package.module:callable'"):
        outputs("module", factory="my_lab juice")
    with pytest.raises(ValueError, match="cannot import module 'rig_no_such_lab.juice'"):
        outputs("module", factory="rig_no_such_lab.juice:valve")


# --- options -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, field", [
    ({"port": "/dev/ttyUSB0", "mode": "ttl"}, "mode"),
    ({"port": "/dev/ttyUSB0"}, "mode"),
    ({"port": "/dev/ttyUSB0", "mode": "dtr", "baudrate": -9600}, "baudrate"),
    ({"port": "/dev/ttyUSB0", "mode": "dtr", "baudrate": 9600.5}, "baudrate"),
    ({"port": "/dev/ttyUSB0", "mode": "command", "command": "R{pulse_ms:.0f\n"}, "command"),
    ({"port": "/dev/ttyUSB0", "mode": "command", "command": "R{volume_ul}\n"}, "command"),
    ({"port": "/dev/ttyUSB0", "mode": "command", "command": "R{pulse_ms:d}\n"}, "command"),
    ({"port": "/dev/ttyUSB0", "mode": "command", "command": ""}, "command"),
    ({"port": "/dev/ttyUSB0", "mode": "dtr", "active_high": "yes"}, "active_high"),
    ({"port": "/dev/ttyUSB0", "mode": "dtr", "open_timeout_s": 0}, "open_timeout_s"),
    ({"port": "", "mode": "dtr"}, "port"),
    ({"mode": "dtr"}, "port"),
    ({"port": "/dev/ttyUSB0", "mode": "dtr", "baud": 9600}, "baud"),
])
def test_bad_serial_options_name_the_field(options, field):
    with pytest.raises(OptionError, match=rf"reward output 'serial'.*{field}") as failure:
        REWARD_OUTPUTS.options("serial", options)
    assert failure.value.field == field


def test_serial_describes_itself_from_its_options(pty_peer, outputs):
    out = outputs(port=pty_peer.path, mode="command")
    assert isinstance(out, SerialReward)
    assert out.describe() == {
        "class": "rig.behavior.reward.serial.SerialReward", "kind": "serial", "version": 1,
        "options": {"port": pty_peer.path, "mode": "command", "active_high": True, "baudrate": 9600,
                    "command": "R{pulse_ms:.0f}\n", "open_timeout_s": 2.0}}
