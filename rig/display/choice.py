"""Pick the display a session runs on: ``headless`` (in silico) or ``psychopy`` (a screen)."""
from __future__ import annotations

import os

from protocols.spec import DisplaySpec
from rig.display import Display
from rig.display.headless import HeadlessDisplay

DISPLAY_KINDS = ("headless", "psychopy")


def build_display(kind: str, spec: DisplaySpec | None = None) -> Display:
    """The display named ``kind``; ``psychopy`` is laid out by the protocol's ``[display]`` table (or its defaults).

    A window that cannot open (no screen, no OpenGL) is a ``ValueError`` saying so, raised before anything runs.
    """
    if kind == "headless":
        return HeadlessDisplay()
    if kind != "psychopy":
        raise ValueError(f"--display {kind!r} is not a display; valid: {list(DISPLAY_KINDS)}")
    from rig.display.psychopy import PsychoPyDisplay  # keeps PsychoPy out of headless sessions

    try:
        return PsychoPyDisplay(spec)
    except ValueError:
        raise
    except Exception as exc:  # pyglet/OpenGL raise their own types; the user needs to know the window failed
        screen = os.environ.get("DISPLAY", "<unset>")
        raise ValueError(
            f"--display psychopy: cannot open a PsychoPy window on DISPLAY={screen}: {type(exc).__name__}: {exc}. "
            f'Without a monitor, run under xvfb-run -a -s "-screen 0 1280x1024x24" (24-bit) with [display] pace = true'
        ) from exc
