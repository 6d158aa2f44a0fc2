"""Whether the stimulus timing puts another stimulus's response inside a stimulus's scoring windows.

A stimulus is scored as the spike rate in ``[recording] response_window_ms``
after its onset, minus a baseline (``baseline_window_ms``; DESIGN.md §4).
Onsets follow each other every ``on + off``; when that spacing is short the
windows of neighbouring stimuli overlap:

- (a) a stimulus's response window runs past the next onset plus the window's
  start, so it holds the next stimulus's response;
- (b) a stimulus's baseline window (early or pre) falls in an earlier
  stimulus's response window, so the better the previous image, the more is
  subtracted.

Rapid series with overlapping windows are sometimes meant, so nothing here
refuses: :func:`window_overlaps` says what overlaps in sentences naming the
fields, and the session prints them once and keeps them in its provenance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocols.spec import DisplaySpec, ProtocolSpec, RecordingSpec
from rig.display.base import Display
from rig.display.headless import HeadlessDisplay

__all__ = ["OnsetSpacing", "UnknownSpacingError", "onset_spacing", "spacing_of_frames", "timing_warnings",
           "window_overlaps"]


class UnknownSpacingError(ValueError):
    """A display whose onset spacing this module cannot tell (a kind it does not know)."""


@dataclass(frozen=True)
class OnsetSpacing:
    """Time from one stimulus onset to the next, and where that time comes from (fields and values)."""

    ms: float
    how: str


def spacing_of_frames(layout: DisplaySpec) -> OnsetSpacing:
    """Onsets ``on_frames + off_frames`` frames apart at ``[display] refresh_hz``."""
    ms = (layout.on_frames + layout.off_frames) * 1000.0 / layout.refresh_hz
    return OnsetSpacing(ms, f"[display] on_frames {layout.on_frames} + off_frames {layout.off_frames} "
                            f"at {layout.refresh_hz:.1f} Hz")


def onset_spacing(spec: ProtocolSpec, display: Display, pace: tuple[float, float] | None) -> OnsetSpacing | None:
    """The spacing of back-to-back onsets as ``display`` will show ``spec``'s stimuli; None when none follow
    each other closely (trials of one stimulus each).

    ``display`` is the one built for the session, before any trials wrap it (a headless one already paced);
    ``pace`` is ``--pace-ms`` as (on_s, off_s), None when the headless display runs at its default.
    """
    if spec.behavior is not None:
        # Trials flash their stimuli on the frame clock, whatever the display (a paced headless one included);
        # a trial's first stimulus follows the previous trial's last window, the interval and the hold.
        count = spec.behavior.stimuli_per_trial
        if count < 2:
            return None
        frames = spacing_of_frames(spec.display or DisplaySpec())
        return OnsetSpacing(frames.ms, f"{frames.how}, {count} stimuli a trial ([behavior] stimuli_per_trial)")
    if isinstance(display, HeadlessDisplay):
        if display.pace is None:
            raise ValueError("an unpaced headless display shows every onset at once: pace it (--pace-ms ON,OFF) "
                             "before asking how far apart its onsets are")
        on, off = (1000.0 * v for v in display.pace)
        given = "--pace-ms" if pace is not None else "the headless display's default pace"
        return OnsetSpacing(on + off, f"{given} {_num(on)},{_num(off)}: {_num(on)} ms on + {_num(off)} ms off")
    if display.kind != "psychopy":
        raise UnknownSpacingError(f"cannot tell how far apart the {type(display).__name__}'s onsets are "
                                  f"(kind {display.kind!r}); only headless and psychopy displays are known")
    return spacing_of_frames(spec.display or DisplaySpec())


def window_overlaps(spacing_ms: float, recording: RecordingSpec, how: str = "") -> list[str]:
    """The scoring windows that hold another stimulus's response when onsets are ``spacing_ms`` apart.

    Each overlap is one sentence naming the ``[recording]`` fields and values (``how`` says where the
    spacing comes from, e.g. ``[display] on_frames 3 + off_frames 6 at 60.0 Hz``); an empty list: none.
    """
    if not spacing_ms > 0:
        raise ValueError(f"onset spacing must be > 0 ms, got {spacing_ms!r}")
    r0, r1 = recording.response_window_ms
    response = f"response window ({_span(r0, r1)}, [recording] response_window_ms)"
    lead = f"onsets {_num(spacing_ms)} ms apart" + (f" ({how})" if how else "")
    found = []
    if spacing_ms + r0 < r1:  # (a) the next stimulus's response starts (at spacing + r0) before this window ends
        found.append(f"{lead}: each stimulus's {response} reaches into the next stimulus's, "
                     f"{_span(spacing_ms + r0, r1)} after its onset ({_span(r0, r1 - spacing_ms)} after the next "
                     f"onset); the score will hold the next stimulus's response")
    if recording.baseline == "none":
        return found
    b0, b1 = recording.baseline_window_ms
    # (b) this stimulus's baseline window is [k * spacing + b0, k * spacing + b1] after the onset k stimuli back;
    # the nearest k whose response window it overlaps is the one named.
    back = 1
    while back * spacing_ms + b0 < r1:
        start, stop = back * spacing_ms + b0, back * spacing_ms + b1
        if stop > r0:
            kind = "early" if recording.baseline == "early" else "pre-onset"
            which = "the previous stimulus's " + response if back == 1 else \
                f"the {response} of the stimulus {back} before it"
            found.append(f"{lead}: each stimulus's {kind} baseline window ({_span(b0, b1)}, [recording] "
                         f"baseline_window_ms) overlaps {which}, {_span(max(start, r0), min(stop, r1))} after "
                         f"that onset; the baseline will hold the {'previous' if back == 1 else 'earlier'} "
                         f"response")
            break
        back += 1
    return found


def timing_warnings(spec: ProtocolSpec, display: Display, pace: tuple[float, float] | None,
                    recording: RecordingSpec) -> list[str]:
    """:func:`window_overlaps` for the session ``spec`` shows on ``display`` (see :func:`onset_spacing`).

    A display kind whose spacing is unknown (one a lab registered) is not stopped for a check that only warns:
    the warning says the windows went unchecked, and why.
    """
    try:
        spacing = onset_spacing(spec, display, pace)
    except UnknownSpacingError as exc:
        return [f"the scoring windows were not checked against the onset spacing: {exc}"]
    return [] if spacing is None else window_overlaps(spacing.ms, recording, spacing.how)


def _num(value: Any) -> str:
    """A number of ms as a person writes it: 150, 62.5 (a tenth of a ms is the display's precision at best)."""
    return f"{round(float(value), 1):g}"


def _span(start: float, stop: float) -> str:
    """A window in ms: ``50-200 ms``, or ``-50 to 0 ms`` when it starts before the onset."""
    return f"{_num(start)} to {_num(stop)} ms" if start < 0 else f"{_num(start)}-{_num(stop)} ms"
