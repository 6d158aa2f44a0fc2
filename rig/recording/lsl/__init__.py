"""Lab Streaming Layer (LSL) as a live recording transport: ``--neuron lsl://NAME``.

**The streams a lab sets up** (one acquisition computer publishing, e.g. an
Open Ephys LSL-outlet plugin, a Blackrock/Plexon/SpikeGLX bridge or ``rig
sim-rig --transport lsl --lsl-name NAME``); each is found by its LSL ``name``:

======================  ===========================  =============================================
stream name             rate, format, channels       what rig reads
======================  ===========================  =============================================
``NAME-clock``          regular (any nominal rate),  only the timestamps: "everything acquired up
                        any numeric format, >= 1     to here has been sent" (the watermark, as an
                        channel (e.g. a continuous   Open Ephys DATA message's end); required
                        channel, or a counter)
``NAME-spikes``         irregular, int32, 2          ``[electrode, sorted unit]`` per spike, the
                                                     sample's timestamp is the spike's time;
                                                     electrode K becomes ``"Electrode K"`` (as
                                                     Open Ephys names spike channels, so one
                                                     ``[recording] units`` serves both transports);
                                                     unit 0 = unsorted
``NAME-ttl``            irregular, int32, 2          ``[line, state]`` per TTL edge (line 0-based,
                                                     state 1 = high), e.g. the photodiode
``NAME-analog``         regular, float32, >= 2       optional: analog inputs in volts, channels
                        (channel labels in desc)     labelled (e.g. ``ADC1``, ``ADC2``): an eye
                                                     tracker's analog X and Y, read only by
                                                     ``[gaze] source = "recording"``
                                                     (rig/behavior/gaze/recording.py)
======================  ===========================  =============================================

All three must come from one acquisition computer (one sender clock).

**Clock.** rig's records count samples; an LSL timestamp ``t`` (seconds on
the sender's ``local_clock``) becomes sample ``round((t + c) * rate)`` with
``rate`` = :data:`~rig.recording.lsl.wire.NOMINAL_RATE` (30 kHz of LSL
seconds; the scorer's windows and pairing need only a fine, steady count) and
``c`` the sender-to-receiver clock offset of ``inlet.time_correction()``.
One offset serves every stream of a host (the first measured), and a newer
estimate replaces it only when it differs by more than
:data:`~rig.recording.lsl.wire.CORRECTION_STEP_S`: re-measurement noise (tens
of microseconds, about one sample) must not shift a spike against its TTL.
Every measured value is kept in the session's log all the same. On this
receiver, ``pylsl.local_clock()`` is ``CLOCK_MONOTONIC`` on Linux, the same
clock as ``time.monotonic()`` that stamps onsets and arrivals (checked in
tests/test_lsl_recording.py); the scorer relies only on arrival stamps, never
on LSL time and monotonic time being one clock.

**Order across streams.** LSL streams travel on separate connections, so a
clock chunk can arrive before the spikes that were sent ahead of it. The
reader holds each clock chunk's watermark for
:data:`~rig.recording.lsl.reader.HOLD_S` of arrival time, then pulls the
spike and TTL streams once more before releasing it (the watermark keeps
its own arrival time, which bounds the clock offset).

**Discontinuities.** LSL has no message numbers. What the clock stream's
timestamps say is the record: a jump forward beyond one sample period plus
:data:`~rig.recording.lsl.wire.GAP_TOLERANCE_S` is a ``gap`` (samples lost,
e.g. the stream was lost and re-resolved, or the sender dropped them;
``lost_messages`` counts the missing clock samples); a step backward is a
``restart`` (the sender's clock began again). Spikes and TTLs have no
counters: their losses show only through the clock's.

**Log and replay.** Each pulled chunk is logged as one raw message in its
own envelope (:mod:`rig.recording.lsl.wire`): ``b"LSL\\x00"``, a JSON header,
and a binary payload, so ``rig replay --rescore`` re-feeds the same
:class:`~rig.recording.lsl.wire.LslParser` the live reader used.

Modules: :mod:`~rig.recording.lsl.wire` (envelope, parser), :mod:`~rig.recording.lsl.reader`
(the live reader), :mod:`~rig.recording.lsl.outlets` (the publishing side, for ``rig sim-rig``),
:mod:`~rig.recording.lsl.transport` (``lsl://`` registration).
"""
