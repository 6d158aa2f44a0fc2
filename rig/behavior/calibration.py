"""Calibration of a raw eye signal (volts, tracker units) to degrees of visual angle, by least squares.

A calibration maps raw (u, v) to degrees (x, y) with an affine map (6
coefficients) or a second-order polynomial (12): each of x and y is a linear
combination of the terms ``[1, u, v]`` or ``[1, u, v, u*v, u*u, v*v]``. It is
fitted from samples collected while the monkey fixated targets at known
positions (``rig calibrate``), and stored as TOML with each target's residual.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CALIBRATION_KINDS", "Calibration", "CalibrationError", "load_calibration"]

#: Map kinds and their least number of distinct targets (one more than the map has terms per axis... at least).
CALIBRATION_KINDS = {"affine": 3, "poly2": 6}


class CalibrationError(ValueError):
    """A calibration that cannot be fitted or trusted, or a calibration file that cannot be read."""


def _terms(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    ones = np.ones_like(u)
    if kind == "affine":
        return np.stack([ones, u, v], axis=-1)
    return np.stack([ones, u, v, u * v, u * u, v * v], axis=-1)


@dataclass(frozen=True)
class Calibration:
    """Raw (u, v) → degrees (x, y): ``coefficients`` is (2, terms) for ``kind`` (see the module docstring)."""

    kind: str
    coefficients: np.ndarray
    #: Per target: its position (deg), the raw mean, and the residual (deg) of the fitted map there.
    targets: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in CALIBRATION_KINDS:
            raise CalibrationError(f"calibration kind {self.kind!r}; valid: {list(CALIBRATION_KINDS)}")
        coefficients = np.asarray(self.coefficients, dtype=np.float64)
        terms = 3 if self.kind == "affine" else 6
        if coefficients.shape != (2, terms) or not np.all(np.isfinite(coefficients)):
            raise CalibrationError(f"a {self.kind} calibration needs 2 x {terms} finite coefficients, got shape "
                                   f"{coefficients.shape}")
        object.__setattr__(self, "coefficients", coefficients)

    def apply(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Degrees for raw ``u``, ``v`` (NaN stays NaN)."""
        degrees = _terms(self.kind, u, v) @ self.coefficients.T
        return degrees[..., 0], degrees[..., 1]

    @property
    def max_residual_deg(self) -> float:
        """The largest residual over the targets (NaN without targets)."""
        return max((float(t["residual_deg"]) for t in self.targets), default=math.nan)

    @classmethod
    def fit(cls, raw: np.ndarray, degrees: np.ndarray, kind: str = "affine",
            max_residual_deg: float | None = None) -> "Calibration":
        """Least-squares fit from per-target raw means ``raw`` (n, 2) to target positions ``degrees`` (n, 2).

        Refused with a :class:`CalibrationError` saying why: too few targets for the kind, targets that do
        not span the plane (collinear; for ``poly2``, a conic), non-finite values, or a residual above
        ``max_residual_deg``.
        """
        raw, degrees = np.asarray(raw, dtype=np.float64), np.asarray(degrees, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != 2 or degrees.shape != raw.shape:
            raise CalibrationError(f"calibration: raw {raw.shape} and degrees {degrees.shape} must both be (n, 2)")
        if kind not in CALIBRATION_KINDS:
            raise CalibrationError(f"calibration kind {kind!r}; valid: {list(CALIBRATION_KINDS)}")
        if not (np.all(np.isfinite(raw)) and np.all(np.isfinite(degrees))):
            raise CalibrationError("calibration: a target has no finite raw mean (no stable fixation was found)")
        need = CALIBRATION_KINDS[kind]
        if len(raw) < need:
            raise CalibrationError(f"calibration: {len(raw)} targets are too few for a {kind} map (at least "
                                   f"{need}; use a 5- or 9-point grid)")
        design = _terms(kind, raw[:, 0], raw[:, 1])
        rank = np.linalg.matrix_rank(design, tol=1e-9 * max(1.0, float(np.abs(design).max())))
        if rank < design.shape[1]:
            raise CalibrationError(
                f"calibration: the targets' raw signals do not span the plane for a {kind} map (rank {rank} of "
                f"{design.shape[1]}): the targets are collinear, or the eye signal did not move with them")
        solution, *_ = np.linalg.lstsq(design, degrees, rcond=None)
        calibration = cls(kind, solution.T)
        x, y = calibration.apply(raw[:, 0], raw[:, 1])
        residuals = np.hypot(x - degrees[:, 0], y - degrees[:, 1])
        targets = [{"target_deg": [float(a), float(b)], "raw": [float(u), float(v)], "residual_deg": float(r)}
                   for (a, b), (u, v), r in zip(degrees, raw, residuals)]
        calibration = cls(kind, solution.T, targets)
        if max_residual_deg is not None and residuals.max() > max_residual_deg:
            worst = int(np.argmax(residuals))
            raise CalibrationError(
                f"calibration: the residual at target {list(degrees[worst])}° is {residuals[worst]:.2f}°, above "
                f"the limit of {max_residual_deg:g}°; recalibrate (was the monkey fixating?)")
        return calibration

    def to_toml(self) -> str:
        """The calibration as TOML (read back by :func:`load_calibration`)."""
        rows = ",\n  ".join("[" + ", ".join(repr(float(c)) for c in row) + "]" for row in self.coefficients)
        lines = ["# rig calibration: raw eye signal -> degrees from the screen centre (+x right, +y up)",
                 f'kind = "{self.kind}"', f"coefficients = [\n  {rows},\n]", ""]
        for target in self.targets:
            lines += ["[[targets]]", f"target_deg = {target['target_deg']!r}", f"raw = {target['raw']!r}",
                      f"residual_deg = {target['residual_deg']!r}", ""]
        return "\n".join(lines)

    def describe(self) -> dict[str, Any]:
        """Provenance for a session file."""
        return {"kind": self.kind, "coefficients": self.coefficients.tolist(), "targets": self.targets}


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration written by ``rig calibrate``; errors name the file and what is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration file not found (run rig calibrate first)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CalibrationError(f"{path}: not a readable calibration file: {exc}") from None
    try:
        return Calibration(str(data["kind"]), np.asarray(data["coefficients"], dtype=np.float64),
                           list(data.get("targets", [])))
    except KeyError as exc:
        raise CalibrationError(f"{path}: calibration file has no {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: {exc}") from None
