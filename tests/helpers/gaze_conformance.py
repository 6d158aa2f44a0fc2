"""What every gaze source must do, whatever delivers the eyes (STYLE practice 10).

A source's test subclasses :class:`GazeConformance`, sets ``kind`` (its
registered kind) and defines :meth:`~GazeConformance.make_source` (a source not
yet started); ``rate_hz`` is the samples per second a non-realtime source must
make (None: it makes none). ``tests/test_gaze_conformance.py`` runs the suite
for every registered kind and fails for a kind without a subclass.

The suite drives a source as the trial machine does (:func:`drive`): reads with
non-decreasing ``until``, and each scene change or reward at ``t`` told after
every read up to ``t`` and before any read past it. Tests of what only a
source that makes samples on demand can promise check ``source.realtime``.
"""
from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest

from rig.behavior.gaze.base import GazeSamples, GazeSource, GazeTask

#: The session the suite starts each source in.
TASK = GazeTask(fixation_deg=(0.0, 0.0), window_deg=1.5, clock="conformance", now=100.0, session_seed=11)


def trials(start: float, count: int, period: float = 2.0) -> list[tuple]:
    """Scene changes and rewards of ``count`` trials from ``start``: ``(time, "scene", fixation_on, stimulus_on)``
    or ``(time, "reward", pulses)``, in time order. Each shows the point, two stimuli, then a reward."""
    calls: list[tuple] = []
    for i in range(count):
        t = start + i * period
        calls += [(t + 0.10, "scene", True, False), (t + 0.60, "scene", True, True), (t + 0.70, "scene", True, False),
                  (t + 0.95, "scene", True, True), (t + 1.05, "scene", True, False),
                  (t + 1.30, "scene", False, False), (t + 1.30, "reward", 1)]
    return calls


def tell(source: GazeSource, call: tuple) -> None:
    """Tell ``source`` one scene change or reward of :func:`trials`."""
    time, what, *args = call
    if what == "scene":
        source.scene(time, *args)
    else:
        source.rewarded(time, *args)


def drive(source: GazeSource, reads: list[float], calls: list[tuple] = ()) -> list[GazeSamples]:
    """Read at each time of ``reads`` in turn, telling the source each of ``calls`` (see :func:`trials`) once
    every read up to its time is made and before any read past it; what each read returned."""
    pending = list(calls)
    parts = []
    for until in reads:
        while pending and pending[0][0] <= until:
            tell(source, pending.pop(0))
        parts.append(source.read(until))
    return parts


def frames(start: float, stop: float, rate_hz: float = 60.0) -> list[float]:
    """Read times as a trial machine at ``rate_hz`` frames per second makes them, ``start`` (excluded) to ``stop``."""
    return list(start + np.arange(1, round((stop - start) * rate_hz) + 1) / rate_hz)


def assert_same_samples(a: GazeSamples, b: GazeSamples) -> None:
    """Identical samples, NaN where NaN."""
    for name in ("times", "x", "y", "valid"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


class GazeConformance:
    """The shared suite; the suite starts what it makes with :data:`TASK` and closes it."""

    #: The registered kind the subclass tests.
    kind: ClassVar[str]
    #: Samples per second a non-realtime source makes, on a grid from ``task.now``; None: it makes none.
    rate_hz: ClassVar[float | None] = None

    def make_source(self) -> GazeSource:
        """A new source of ``kind``, not started; two calls make sources that deliver the same samples."""
        raise NotImplementedError

    @pytest.fixture
    def source(self):
        source = self.make_source()
        source.start(TASK)
        yield source
        source.close()

    def _trial_run(self, source: GazeSource, reads: list[float]) -> GazeSamples:
        """Three trials' scene changes and rewards, read at ``reads``; every sample read."""
        return GazeSamples.concat(drive(source, reads, trials(TASK.now, 3)))

    def test_is_the_registered_kind(self, source):
        assert source.kind == self.kind
        assert isinstance(source.realtime, bool) and isinstance(source.monitors_gaze, bool)

    def test_read_returns_gaze_samples(self, source):
        assert isinstance(source.read(TASK.now + 0.1), GazeSamples)

    @pytest.mark.timeout(30)
    def test_times_increase_across_reads_and_none_comes_after_until(self, source):
        reads = frames(TASK.now, TASK.now + 6.0)
        parts = drive(source, reads, trials(TASK.now, 3))
        for until, samples in zip(reads, parts):
            assert np.all(samples.times <= until)
        times = GazeSamples.concat(parts).times
        assert np.all(np.diff(times) > 0)
        assert np.all(times >= TASK.now) or source.realtime

    def test_the_same_until_again_delivers_nothing_new(self, source):
        until = TASK.now + 0.5
        source.read(until)
        assert len(source.read(until)) == 0

    @pytest.mark.timeout(30)
    def test_invalid_samples_have_nan_positions_and_valid_ones_finite(self, source):
        samples = self._trial_run(source, frames(TASK.now, TASK.now + 6.0))
        assert np.all(np.isnan(samples.x[~samples.valid])) and np.all(np.isnan(samples.y[~samples.valid]))
        assert np.all(np.isfinite(samples.x[samples.valid])) and np.all(np.isfinite(samples.y[samples.valid]))

    def test_describes_itself_for_the_session_file(self, source):
        described = source.describe()
        assert described["kind"] == self.kind
        assert described["class"].endswith(type(source).__qualname__)
        assert isinstance(described["options"], dict)
        json.dumps(described)  # the session file stores it as JSON

    def test_close_twice(self, source):
        source.close()
        source.close()

    @pytest.mark.timeout(30)
    def test_samples_do_not_depend_on_how_reads_are_split(self, source):
        if source.realtime:
            pytest.skip("a realtime source delivers what has arrived; only one made on demand can promise this")
        end = TASK.now + 6.0
        every_frame = self._trial_run(source, frames(TASK.now, end))
        for reads in ([end], [call[0] for call in trials(TASK.now, 3)] + [end], [TASK.now + 1.0, end]):
            other = self.make_source()
            other.start(TASK)
            assert_same_samples(self._trial_run(other, reads), every_frame)
            other.close()

    def test_sample_count_matches_the_rate(self, source):
        if source.realtime or self.rate_hz is None:
            pytest.skip("only a source that makes samples on demand, at a rate, promises a count")
        samples = source.read(TASK.now + 10.0)
        assert len(samples) == round(10.0 * self.rate_hz) + 1  # both ends on the grid
        assert samples.times[0] == TASK.now
        np.testing.assert_allclose(np.diff(samples.times), 1.0 / self.rate_hz, rtol=1e-6)
