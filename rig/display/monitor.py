"""Monitor geometry: degrees of visual angle to screen pixels.

Sizes and positions in a protocol are in degrees because that is what a
receptive field is measured in; the screen only knows pixels. The conversion
uses the exact tangent formula (not the small-angle "pixels per degree"),
so an eccentric stimulus lands where the eye sees it, and assumes square
pixels and an eye facing the screen centre.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MonitorGeometry:
    """A flat screen ``width_cm`` wide, ``distance_cm`` from the eye, ``resolution`` = (width, height) pixels."""

    width_cm: float
    distance_cm: float
    resolution: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("width_cm", "distance_cm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"monitor {name} must be a number > 0, got {value!r}")
        res = self.resolution
        if (not isinstance(res, (tuple, list)) or len(res) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in res)):
            raise ValueError(f"monitor resolution must be two integers > 0 (width, height), got {res!r}")
        object.__setattr__(self, "resolution", (int(res[0]), int(res[1])))

    @property
    def pixels_per_cm(self) -> float:
        """Horizontal pixel density; pixels are taken as square."""
        return self.resolution[0] / self.width_cm

    @property
    def pixels_per_degree(self) -> float:
        """Pixels spanned by one degree at the screen centre (for reporting; conversions use the tangent)."""
        return self.size_to_pixels(1.0)

    def size_to_pixels(self, size_deg: float) -> float:
        """Width in pixels of something centred on the line of sight that subtends ``size_deg`` degrees."""
        if not 0 <= size_deg < 180:
            raise ValueError(f"a size in degrees must be in [0, 180), got {size_deg!r}")
        return 2 * self.distance_cm * math.tan(math.radians(size_deg) / 2) * self.pixels_per_cm

    def position_to_pixels(self, x_deg: float, y_deg: float) -> tuple[float, float]:
        """Pixels from the screen centre (x right, y up) of a point ``x_deg``, ``y_deg`` from the line of sight."""
        for name, value in (("x", x_deg), ("y", y_deg)):
            if not -90 < value < 90:
                raise ValueError(f"a position in degrees must be in (-90, 90), got {name} = {value!r}")
        to_px = self.distance_cm * self.pixels_per_cm
        return to_px * math.tan(math.radians(x_deg)), to_px * math.tan(math.radians(y_deg))

    def extent_to_pixels(self, x_deg: float, y_deg: float, size_deg: float) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) edges in pixels from the centre of a square of ``size_deg`` at ``x_deg, y_deg``.

        Edges are the angles x ± size/2, so an eccentric square is slightly wider on screen than a central one.
        """
        half = size_deg / 2
        left, bottom = self.position_to_pixels(x_deg - half, y_deg - half)
        right, top = self.position_to_pixels(x_deg + half, y_deg + half)
        return left, right, bottom, top

    def fits(self, left: float, right: float, bottom: float, top: float) -> bool:
        """Whether a box, in pixels from the centre, lies on the screen."""
        half_w, half_h = self.resolution[0] / 2, self.resolution[1] / 2
        return -half_w <= left and right <= half_w and -half_h <= bottom and top <= half_h
