"""Monitor geometry (degrees to pixels) and the protocol file's [display] table. No screen needed."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from protocols.spec import DisplaySpec, ProtocolError, parse_protocol
from rig.display.monitor import MonitorGeometry

DRY_RUN = (Path(__file__).parents[1] / "protocols" / "dry-run.toml").read_text()


def test_one_degree_is_one_centimetre_at_57_cm():
    geometry = MonitorGeometry(width_cm=48.0, distance_cm=57.0, resolution=(1920, 1080))
    assert geometry.pixels_per_cm == 40.0
    # 57 cm is the classic distance at which 1 cm on screen subtends ~1° (2 * 57 * tan(0.5°) = 0.9948 cm).
    assert geometry.size_to_pixels(1.0) == pytest.approx(0.99484 * 40, rel=1e-4)
    assert geometry.pixels_per_degree == geometry.size_to_pixels(1.0)


def test_positions_follow_the_tangent_not_a_constant_pixels_per_degree():
    geometry = MonitorGeometry(width_cm=40.0, distance_cm=50.0, resolution=(2000, 1000))  # 50 px/cm
    assert geometry.position_to_pixels(45.0, 0.0) == pytest.approx((50.0 * 50, 0.0))
    x, y = geometry.position_to_pixels(-10.0, 20.0)
    assert x == pytest.approx(-50 * 50 * math.tan(math.radians(10)))
    assert y == pytest.approx(50 * 50 * math.tan(math.radians(20)))
    # An eccentric square is wider on screen than a central one of the same angle.
    left, right, _, _ = geometry.extent_to_pixels(20.0, 0.0, 4.0)
    assert right - left > geometry.size_to_pixels(4.0)
    assert geometry.fits(*geometry.extent_to_pixels(0.0, 0.0, 4.0))
    assert not geometry.fits(*geometry.extent_to_pixels(0.0, 0.0, 30.0))  # 30° is ~1340 px, taller than 1000


@pytest.mark.parametrize("kwargs, field", [
    (dict(width_cm=0.0, distance_cm=57.0, resolution=(10, 10)), "width_cm"),
    (dict(width_cm=50.0, distance_cm=-1.0, resolution=(10, 10)), "distance_cm"),
    (dict(width_cm=50.0, distance_cm=57.0, resolution=(10,)), "resolution"),
    (dict(width_cm=50.0, distance_cm=57.0, resolution=(10.5, 10)), "resolution"),
])
def test_bad_geometry_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"monitor {field}"):
        MonitorGeometry(**kwargs)


def test_display_table_is_optional_and_read_with_defaults():
    assert parse_protocol(DRY_RUN).display is None
    spec = parse_protocol(DRY_RUN + """
[display]
width_cm = 60
resolution = [2560, 1440]
position_deg = [2, -1.5]
on_frames = 12
photodiode = "top-left"
pace = true
""").display
    assert spec == DisplaySpec(width_cm=60.0, resolution=(2560, 1440), position_deg=(2.0, -1.5), on_frames=12,
                               photodiode="top-left", pace=True)


@pytest.mark.parametrize("line, message", [
    ("distance_cm = 0", r"\[display\] distance_cm: expected a number in \(0, 1e\+06\], got 0"),
    ("resolution = [1920]", r"\[display\] resolution: expected \[width, height\] in pixels"),
    ("background = [0.5, 0.5, 2]", r"\[display\] background: expected \[r, g, b\] with each in \[0, 1\]"),
    ("off_frames = 0", r"\[display\] off_frames: expected an integer in 1\.\.100000"),
    ("on_frames = 1.5", r"\[display\] on_frames: expected an integer in 1\.\.100000, got 1.5"),
    ('photodiode = "left"', r"\[display\] photodiode: expected one of \['bottom-right'"),
    ("pace = 1", r"\[display\] pace: expected true or false, got 1"),
    ("size_deg = 200", r"\[display\] size_deg: expected a number of degrees in \(0, 180\)"),
    ("refresh = 60", r"\[display\]: unknown field\(s\) \['refresh'\] \(did you mean 'refresh_hz'\?\); "
                     r"valid fields: .*'refresh_hz'"),
])
def test_display_errors_name_the_file_and_field(line, message):
    with pytest.raises(ProtocolError, match=r"dry-run.toml: " + message):
        parse_protocol(DRY_RUN + f"\n[display]\n{line}\n", "protocols/dry-run.toml")
