"""The ``serial`` reward output: a TTL on a serial port's DTR or RTS line, or a command to a microcontroller.

A protocol says::

    [reward]
    kind = "serial"
    port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"
    mode = "dtr"          # "dtr" | "rts": the line drives the solenoid's driver; "command": a microcontroller times it
    active_high = true    # dtr/rts: the solenoid opens while the line is asserted

Modes:

- ``dtr`` / ``rts``: this process times each pulse: the line goes idle →
  active for ``pulse_ms`` → idle, with ``pause_ms`` between pulses, on a
  background thread that sleeps most of the way and spins the last
  millisecond (:func:`sleep_until`). "Active" is pyserial's logical level:
  ``active_high = true`` opens the solenoid while the line is asserted
  (``dtr = True``: positive volts on RS-232; *low* on the DTR#/RTS# pin of an
  FTDI-style TTL adapter, whose pins are inverted). Prefer ``true``: the OS
  de-asserts DTR and RTS when the port is closed (HUPCL), so a process that
  crashes leaves the solenoid shut. Linux asserts both lines for the moment
  between opening the device and pyserial setting them (well under a
  millisecond, too short for a solenoid to open).
- ``command``: at each pulse's start, ``command`` is formatted and written
  (then flushed); the microcontroller opens the solenoid for the time it
  names. Its format fields: ``pulse_ms`` (float), ``pulse`` (0-based number
  of this pulse) and ``pulses`` (how many in this reward); the default
  ``"R{pulse_ms:.0f}\\n"`` sends ``R150`` and a newline. The text must be
  ASCII. An Arduino resets when the port opens (DTR toggles): its first
  ~2 s of commands are lost, so open the port (build the output) before the
  session starts, as the rig does.

Rewards asked for while one runs wait behind it, in order; the next starts
``pause_ms`` after the last one's last pulse ends, so two never overlap and
none is dropped. A device that fails during a reward (unplugged: pyserial
raises SerialException or OSError) is kept and raised as :class:`RewardError`
by the next :meth:`~RewardOutput.check` or :meth:`~RewardOutput.deliver`.

What a pseudo-terminal can test: Linux ptys carry data, so ``command`` mode
runs over a real pty pair in the tests; they have no modem-control lines
(TIOCMBIS/TIOCMBIC/TIOCMGET fail with ENOTTY on both ends), so ``dtr``/``rts``
on a pty is refused at build, and the line logic is tested over pyserial's
``loop://`` handler, which logs every DTR/RTS change.

:class:`RewardWorker` (the background queue) and :class:`QueuedRewardOutput`
(an output built on it) serve this output and the ``module`` kind's wrapper.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import serial

from protocols.registry import Options, option
from rig.behavior.reward.base import REWARD_OUTPUTS, RewardDelivery, RewardError, RewardOutput

__all__ = ["MODES", "QueuedRewardOutput", "RewardWorker", "SerialOptions", "SerialReward", "sleep_until"]

#: ``dtr``/``rts``: a line is the TTL; ``command``: a microcontroller times the pulse.
MODES = ("dtr", "rts", "command")
#: The end of every wait is spun rather than slept: a thread woken from sleep is ~0.1 ms late on Linux,
#: more under load, and a solenoid's volume goes with its open time.
SPIN_S = 0.001
#: A command write that cannot complete in this time (a stalled device) fails instead of blocking the thread.
WRITE_TIMEOUT_S = 1.0
#: How long close() waits for the pulse thread before closing the port under it.
JOIN_TIMEOUT_S = 2.0
_CHECK_PORTS = ("is the device plugged in and powered? do you have permission to open it (on Linux, the 'dialout' "
                "group)? `ls /dev/serial/by-id/` lists the serial devices present")


def sleep_until(deadline: float, stop: threading.Event) -> bool:
    """Wait until ``time.perf_counter()`` reaches ``deadline``: sleep to within :data:`SPIN_S`, then spin.

    Returns False at once if ``stop`` is set (before or during the wait), else True.
    """
    while (left := deadline - time.perf_counter()) > SPIN_S:
        if stop.wait(left - SPIN_S):
            return False
    while time.perf_counter() < deadline:
        if stop.is_set():
            return False
    return not stop.is_set()


def _describe_reward(reward: RewardDelivery) -> str:
    """``3 pulse(s) of 50 ms, 20 ms apart (asked at t = 12.345 s)``, for messages."""
    return (f"{reward.pulses} pulse(s) of {reward.pulse_ms:g} ms, {reward.pause_ms:g} ms apart "
            f"(asked at t = {reward.time:.3f} s)")


class RewardWorker:
    """Runs rewards one at a time, in the order asked, on a daemon thread.

    ``run(reward, stop)`` delivers one reward; it may return at once (hardware
    timing) or when the pulses are done, and should return early once ``stop``
    is set. The worker starts no reward before the previous one's
    ``duration_s`` has passed since it started plus its ``pause_ms``, so
    rewards never overlap whichever way ``run`` times them.

    An exception from ``run`` ends the worker: it is kept (a :class:`RewardError`
    as raised, anything else wrapped with ``name`` and the reward), the queue is
    emptied, ``on_failure`` is called (e.g. to leave the line idle), and
    :meth:`check` and :meth:`submit` raise it from then on.

    Args:
        run: Delivers one reward.
        name: How messages name the output (``reward output 'serial' on /dev/ttyUSB0``).
        on_failure: Called once after a failure, on the worker thread; its own exceptions are ignored.
    """

    def __init__(self, run: Callable[[RewardDelivery, threading.Event], None], name: str,
                 on_failure: Callable[[], None] | None = None) -> None:
        self.name = name
        self._run = run
        self._on_failure = on_failure
        self._queue: collections.deque[RewardDelivery] = collections.deque()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._failure: RewardError | None = None
        self._ready_at = 0.0  # perf_counter time the next reward may start
        self._thread = threading.Thread(target=self._loop, name=f"reward: {name}", daemon=True)
        self._thread.start()

    def submit(self, reward: RewardDelivery) -> None:
        """Queue ``reward``; raises the kept failure, or :class:`RewardError` once closed."""
        with self._changed:
            self.check()
            if self._stop.is_set():
                raise RewardError(f"{self.name} is closed; it delivers no more rewards")
            self._queue.append(reward)
            self._changed.notify_all()

    def check(self) -> None:
        """Raise the failure of a reward run so far, as a new :class:`RewardError` (same message and cause)."""
        failure = self._failure
        if failure is not None:
            raise RewardError(str(failure)) from failure.__cause__

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the queue to drain: True once every reward asked for is delivered; False if ``timeout`` (s)
        ran out, the device failed (:meth:`check` says how) or the worker was closed with rewards pending."""
        with self._changed:
            self._changed.wait_for(lambda: not self._queue or self._failure is not None or self._stop.is_set(),
                                   timeout)
            return not self._queue and self._failure is None

    def close(self) -> bool:
        """Stop the thread (cutting short a reward in progress, dropping those queued); safe twice.

        Returns False if the thread did not stop within :data:`JOIN_TIMEOUT_S` (stuck in a driver call).
        """
        with self._changed:
            self._stop.set()
            self._changed.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT_S)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._stop.is_set())
                if self._stop.is_set():
                    return
                reward = self._queue[0]  # stays queued until delivered, so wait() waits for it
            if not sleep_until(self._ready_at, self._stop):
                return
            start = time.perf_counter()
            try:
                self._run(reward, self._stop)
            except Exception as exc:  # any failure: this thread must not die silently
                self._fail(reward, exc)
                return
            end = start + reward.duration_s
            if not sleep_until(end, self._stop):
                return
            self._ready_at = max(end, time.perf_counter()) + reward.pause_ms / 1000.0
            with self._changed:
                self._queue.popleft()
                self._changed.notify_all()

    def _fail(self, reward: RewardDelivery, exc: Exception) -> None:
        if not isinstance(exc, RewardError):
            wrapped = RewardError(f"{self.name}: the reward of {_describe_reward(reward)} failed: "
                                  f"{type(exc).__name__}: {exc}")
            wrapped.__cause__ = exc
            exc = wrapped
        if self._on_failure is not None:
            try:
                self._on_failure()
            except Exception:  # the device is already failing; the first error is the one to report
                pass
        with self._changed:
            self._failure = exc
            self._queue.clear()
            self._changed.notify_all()


class QueuedRewardOutput(RewardOutput):
    """A reward output whose rewards run on a :class:`RewardWorker`, set as ``self._worker`` by the subclass.

    Subclasses release their device in :meth:`_release`, called once by :meth:`close` after the worker stops.
    """

    _worker: RewardWorker
    _closed: bool = False

    def _deliver(self, reward: RewardDelivery) -> None:
        self._worker.submit(reward)

    def check(self) -> None:
        """Raise :class:`RewardError` if a reward failed (the device was unplugged, the lab's code raised)."""
        self._worker.check()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the queued rewards; False if ``timeout`` ran out or the device failed."""
        return self._worker.wait(timeout)

    def close(self) -> None:
        """Stop the worker (a reward in progress is cut short, those queued dropped), then release; safe twice."""
        if self._closed:
            return
        self._closed = True
        self._worker.close()
        self._release()

    def _release(self) -> None:
        """Release the device (override); the worker has stopped."""


@dataclass(frozen=True)
class SerialOptions(Options):
    """``[reward] kind = "serial"``."""

    #: The port: a device path (/dev/ttyUSB0, /dev/serial/by-id/..., COM3) or a pyserial URL (loop://, rfc2217://).
    port: str = option(valid="a device path (/dev/ttyUSB0, COM3) or a pyserial URL (loop://, rfc2217://host:port)")
    #: "dtr" or "rts": that line is the TTL, timed here; "command": a microcontroller times each pulse.
    #: Required: it follows the wiring, which no default can guess.
    mode: str = option(choices=MODES)
    #: dtr/rts: True if the solenoid opens while the line is asserted (the safe choice: see the module docstring).
    active_high: bool = option(True)
    baudrate: int = option(9600, low=1, high=12_000_000)
    #: command: sent at each pulse's start; format fields pulse_ms (float), pulse (0-based), pulses; ASCII.
    command: str = option("R{pulse_ms:.0f}\n", valid="an ASCII template with fields {pulse_ms}, {pulse} and "
                                                     "{pulses}, e.g. 'R{pulse_ms:.0f}\\n'")
    #: How long opening the port may take (a network URL can hang); then it is an error.
    open_timeout_s: float = option(2.0, low=0.0, low_open=True, high=60.0)

    def check(self) -> None:
        if not self.port.strip():
            self.invalid("port", "a device path (/dev/ttyUSB0, COM3) or a pyserial URL, not empty")
        try:
            text = format_command(self.command, pulse_ms=100.0, pulse=0, pulses=1)
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            self.invalid("command", f"a template with only the fields {{pulse_ms}}, {{pulse}} and {{pulses}} "
                                    f"(formatting it failed: {type(exc).__name__}: {exc})")
        if not text:
            self.invalid("command", "a template that formats to at least one character")


def format_command(template: str, *, pulse_ms: float, pulse: int, pulses: int) -> bytes:
    """The bytes of ``template`` for one pulse; raises what ``str.format`` raises, or ValueError if not ASCII."""
    try:
        return template.format(pulse_ms=pulse_ms, pulse=pulse, pulses=pulses).encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not ASCII ({exc.reason})") from None


@REWARD_OUTPUTS.register("serial", SerialOptions)
class SerialReward(QueuedRewardOutput):
    """Juice through a serial port: a TTL on DTR or RTS, or a command per pulse (see the module docstring).

    The port is opened here, so a missing device is a :class:`RewardError`
    before the session starts.

    Args:
        **options: :class:`SerialOptions`.
    """

    def __init__(self, **options: Any) -> None:
        self.configure(options)
        opts: SerialOptions = self.options  # type: ignore[assignment]
        self.port_name = opts.port
        self._line = None if opts.mode == "command" else opts.mode
        self._idle = not opts.active_high
        self._port = _open_port(opts, self._line, self._idle)
        name = f"reward output 'serial' on {opts.port}"
        run = self._run_commands if self._line is None else self._run_line
        self._worker = RewardWorker(run, name, on_failure=self._leave_idle)

    def _release(self) -> None:
        # The pulse thread leaves the line idle when stopped; again here in case it was stuck in a driver call.
        self._leave_idle()
        try:
            self._port.close()
        except Exception:  # an unplugged device fails on close too; there is nothing left to release
            pass

    def _run_line(self, reward: RewardDelivery, stop: threading.Event) -> None:
        period = (reward.pulse_ms + reward.pause_ms) / 1000.0
        start = time.perf_counter()
        for pulse in range(reward.pulses):
            # Edges on an absolute schedule from the reward's start, so a late wake-up does not accumulate.
            on = start + pulse * period
            if not sleep_until(on, stop):
                return
            self._set_line(not self._idle, reward, pulse)
            finished = sleep_until(on + reward.pulse_ms / 1000.0, stop)
            self._set_line(self._idle, reward, pulse)
            if not finished:
                return

    def _run_commands(self, reward: RewardDelivery, stop: threading.Event) -> None:
        period = (reward.pulse_ms + reward.pause_ms) / 1000.0
        start = time.perf_counter()
        for pulse in range(reward.pulses):
            if not sleep_until(start + pulse * period, stop):
                return
            data = format_command(self.options.command, pulse_ms=reward.pulse_ms, pulse=pulse,
                                  pulses=reward.pulses)
            try:
                self._port.write(data)
                self._port.flush()
            except Exception as exc:  # SerialException, OSError, termios.error (flush after a hang-up)
                raise self._failed(reward, pulse, f"writing {data!r}", exc) from exc

    def _set_line(self, level: bool, reward: RewardDelivery, pulse: int) -> None:
        try:
            setattr(self._port, self._line, level)
        except Exception as exc:
            raise self._failed(reward, pulse, f"setting {self._line.upper()} {level}", exc) from exc

    def _failed(self, reward: RewardDelivery, pulse: int, doing: str, exc: Exception) -> RewardError:
        return RewardError(
            f"reward output 'serial' on {self.port_name}: {doing} failed at pulse {pulse + 1} of the reward of "
            f"{_describe_reward(reward)}: {type(exc).__name__}: {exc}; was the device unplugged? {_CHECK_PORTS}")

    def _leave_idle(self) -> None:
        if self._line is None:
            return
        try:
            setattr(self._port, self._line, self._idle)
        except Exception:  # unplugged: nothing to set; the OS drops the lines when the device goes
            pass


def _open_port(opts: SerialOptions, line: str | None, idle: bool) -> serial.SerialBase:
    """Open ``opts.port`` within ``opts.open_timeout_s`` with ``line`` (dtr/rts, or None) idle from the start.

    Raises:
        RewardError: the port is missing, refused, slow to open, or cannot drive ``line``.
    """
    where = f"reward output 'serial': port {opts.port!r}"
    try:
        # exclusive: a second process (another session) cannot open the same solenoid's port (flock on POSIX).
        port = serial.serial_for_url(opts.port, baudrate=opts.baudrate, timeout=0, write_timeout=WRITE_TIMEOUT_S,
                                     exclusive=True, do_not_open=True)
    except (ValueError, serial.SerialException) as exc:  # an unknown URL scheme
        raise RewardError(f"{where} is not a usable port or pyserial URL: {exc}") from None
    if line is not None:
        # pyserial asserts DTR and RTS when it opens a port unless told otherwise: set idle first.
        setattr(port, line, idle)
    opened = _within(port.open, opts.open_timeout_s, on_late=port.close)
    if opened is not None:
        raise RewardError(f"{where} could not be opened: {opened}; {_CHECK_PORTS}") from None
    if line is not None:
        try:
            # pyserial ignores ENOTTY when it sets the lines at open (a pty); setting them again must work.
            setattr(port, line, idle)
        except Exception as exc:
            port.close()
            raise RewardError(
                f"{where} cannot drive {line.upper()} ({type(exc).__name__}: {exc}): the device has no modem-control "
                f"lines (a pseudo-terminal, some USB CDC devices); use a USB-serial adapter with {line.upper()}, "
                f"or mode = \"command\" with a microcontroller") from None
    return port


def _within(action: Callable[[], None], timeout: float, on_late: Callable[[], None]) -> str | None:
    """Run ``action`` on a thread for at most ``timeout`` s: None if it succeeded, else what went wrong.

    If it succeeds after the timeout, ``on_late`` undoes it (closes a port that opened too late).
    """
    lock = threading.Lock()
    state: dict[str, Any] = {"done": False, "abandoned": False, "error": None}

    def attempt() -> None:
        try:
            action()
        except BaseException as exc:  # reported to the caller
            state["error"] = exc
        with lock:
            state["done"] = True
            undo = state["abandoned"] and state["error"] is None
        if undo:
            on_late()

    thread = threading.Thread(target=attempt, name="reward: open port", daemon=True)
    thread.start()
    thread.join(timeout)
    with lock:
        if not state["done"]:
            state["abandoned"] = True
            return f"it did not open within open_timeout_s = {timeout:g} s"
    error = state["error"]
    return None if error is None else f"{type(error).__name__}: {error}"
