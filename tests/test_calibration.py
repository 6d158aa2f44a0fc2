"""Calibration of a raw eye signal: ``rig calibrate`` against a simulated monkey whose raw signal is a known map of
where it looks, the refusals, sessions run through a calibration, and drift correction.

**Tolerances.** The monkey of these tests is steady: it lands on each target exactly (``landing_error_deg = 0``),
with no fixational drift or microsaccades, so a target's raw mean errs only by the noise: per sample, the eye's
own ``noise_deg`` (σd, degrees) and the raw signal's ``raw_noise`` (σr, raw units), i.e. a covariance in degrees
of σd² I + σr² J⁻¹J⁻ᵀ, J the map's Jacobian at the target. Averaged over the N samples of the stable fixation (at
least 300 ms at 500 Hz, N >= 150) this is divided by N. The least-squares map then errs at a point p by that
covariance times the leverage h(p) = t(p)ᵀ (XᵀX)⁻¹ t(p) (t: the map's terms at p's raw signal, X: at the
targets'). A calibrated point is taken as recovered within 5 SD of that error at the worst test point (plus, for
the second-order map, the error a noiseless second-order fit makes, since the inverse of a second-order
distortion is not exactly second order). The last samples of a saccade can fall inside the stable window; they
bias a mean by well under 0.001°, which the 5 SD margin covers.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.gaze_conformance import assert_same_samples

from helpers.protocols import tiny_protocol
from protocols.spec import load_protocol
from rig.behavior.calibration import Calibration, CalibrationError, load_calibration, polynomial_terms
from rig.behavior.gaze import GazeSamples, GazeTask
from rig.behavior.gaze.raw import drift_corrections
from rig.behavior.parts import part_registry
from rig.cli import main
from rig.loop.assemble import assemble, resolve_neuron
from rig.loop.controller import Controller
from rig.session.sink import SessionSink

#: Every gaze source kind, registered (the simulated monkey among them).
GAZE_SOURCES = part_registry("gaze")
#: Degrees -> raw: u = 0.5 + 0.1 x + 0.02 y, v = -0.2 - 0.01 x + 0.12 y (an analog output with gain, offset, shear).
AFFINE = [0.5, 0.1, 0.02, -0.2, -0.01, 0.12]
#: The same with a second-order distortion (terms 1, x, y, xy, x², y² for u, then for v): an affine map of 9
#: targets 5° apart misses it by about 0.33°, a noiseless second-order fit of its inverse by 0.04°.
SECOND_ORDER = [0.5, 0.1, 0.02, 0.00075, 0.0015, -0.0005, -0.2, -0.01, 0.12, -0.0005, 0.00025, 0.00125]
NOISE_DEG, RAW_NOISE = 0.03, 0.003
#: A monkey that works without fail and holds still on what it fixates (see the module docstring).
STEADY = dict(blink_rate_hz=0.0, break_hazard_hz=0.0, rest_hazard_hz=0.0, rest_hazard_per_reward_hz=0.0,
              landing_error_deg=0.0, drift_deg_per_sqrt_s=0.0, microsaccade_rate_hz=0.0, noise_deg=NOISE_DEG)
TEST_POINTS = np.array([(x, y) for x in np.linspace(-5, 5, 5) for y in np.linspace(-5, 5, 5)])
#: A small paced window, as tests/test_end_to_end_rig.py lays one out (Xvfb has no vsync).
PSYCHOPY_LAYOUT = {"pace": True, "fullscreen": False, "resolution": [320, 240], "width_cm": 20.0, "distance_cm": 57.0}


def _toml(options: dict) -> str:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        return repr(list(v)) if isinstance(v, (list, tuple)) else repr(v)
    return "\n".join(f"{k} = {value(v)}" for k, v in options.items())


def write_protocol(folder: Path, name: str, gaze: dict, behavior: str = "stimuli_per_trial = 4", extra: str = "",
                   generations: int = 2) -> Path:
    """A tiny evolution protocol with trials, its [gaze] the simulated monkey with ``gaze`` options."""
    path = folder / f"{name}.toml"
    path.write_text(tiny_protocol(generations=generations, seed=3, popsize=6, references=2, extra=f"""
[behavior]
{behavior}

[gaze]
source = "simulated"
{_toml(gaze)}
{extra}"""))
    return path


def to_raw(raw_map: list[float], points: np.ndarray) -> np.ndarray:
    """The noiseless raw signal at ``points`` (degrees)."""
    matrix = np.asarray(raw_map).reshape(2, -1)
    kind = "affine" if matrix.shape[1] == 3 else "poly2"
    return polynomial_terms(kind, points[:, 0], points[:, 1]) @ matrix.T


def noise_tolerance(calibration: Calibration, raw_map: list[float]) -> float:
    """5 SD of the calibrated position's error at the worst test point, from the noise (module docstring)."""
    targets = np.array([t["target_deg"] for t in calibration.targets])
    n = min(t["samples"] for t in calibration.targets)
    assert n >= 150
    step = 1e-4
    worst = 0.0
    for x, y in targets:  # J at each target, by central differences; the largest per-sample covariance's trace
        jx = (to_raw(raw_map, np.array([[x + step, y]])) - to_raw(raw_map, np.array([[x - step, y]])))[0] / (2 * step)
        jy = (to_raw(raw_map, np.array([[x, y + step]])) - to_raw(raw_map, np.array([[x, y - step]])))[0] / (2 * step)
        inverse = np.linalg.inv(np.column_stack((jx, jy)))
        worst = max(worst, 2 * NOISE_DEG ** 2 + RAW_NOISE ** 2 * float(np.trace(inverse @ inverse.T)))
    design = polynomial_terms(calibration.kind, *to_raw(raw_map, targets).T)
    tests = polynomial_terms(calibration.kind, *to_raw(raw_map, TEST_POINTS).T)
    leverage = np.einsum("ij,jk,ik->i", tests, np.linalg.inv(design.T @ design), tests).max()
    return 5.0 * math.sqrt(leverage * worst / n)


def recovered_error(calibration: Calibration, raw_map: list[float]) -> float:
    """The largest distance (degrees) between a test point and its calibrated noiseless raw signal."""
    x, y = calibration.apply(*to_raw(raw_map, TEST_POINTS).T)
    return float(np.hypot(x - TEST_POINTS[:, 0], y - TEST_POINTS[:, 1]).max())


def calibrate(protocol: Path, out: Path, *more: str) -> int:
    return main(["calibrate", str(protocol), "--out", str(out), *more])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("calibration")


@pytest.fixture(scope="module")
def affine_calibration(folder) -> Path:
    """``rig calibrate`` (5 points, affine) of the steady monkey with the AFFINE raw map."""
    protocol = write_protocol(folder, "affine", {**STEADY, "raw_map": AFFINE, "raw_noise": RAW_NOISE})
    out = folder / "affine-cal.toml"
    assert calibrate(protocol, out, "--points", "5", "--kind", "affine") == 0
    return out


# -- the raw monkey and the raw source base ------------------------------------------------------------------


def test_a_raw_monkey_without_calibration_is_refused_saying_to_run_rig_calibrate():
    with pytest.raises(CalibrationError, match=r"raw and \[gaze\] names no calibration; run `rig calibrate"):
        GAZE_SOURCES.build("simulated", {"raw_map": AFFINE})
    with pytest.raises(CalibrationError, match=r"missing\.toml: calibration file not found"):
        GAZE_SOURCES.build("simulated", {"raw_map": AFFINE, "calibration": "missing.toml"})


def test_a_bad_calibration_file_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("kind = [")
    with pytest.raises(CalibrationError, match=rf"{bad}: not a readable calibration file"):
        GAZE_SOURCES.build("simulated", {"raw_map": AFFINE, "calibration": str(bad)})
    bad.write_text('kind = "affine"\ncoefficients = [[1.0, 2.0]]\n')
    with pytest.raises(CalibrationError, match=rf"{bad}: a affine calibration needs 2 x 3"):
        GAZE_SOURCES.build("simulated", {"raw_map": AFFINE, "calibration": str(bad)})


def test_the_raw_signal_does_not_depend_on_how_reads_are_split():
    options = {"seed": 4, "raw_map": SECOND_ORDER, "raw_noise": RAW_NOISE, "raw_drift_per_s": [0.01, -0.02]}
    made = []
    for reads in ([1.0, 2.0], list(np.arange(1, 201) / 100)):
        monkey = GAZE_SOURCES.build("simulated", options, raw=True)
        monkey.start(GazeTask((0.0, 0.0), 1.5, "test", 0.0))
        monkey.scene(0.0, True, False)
        parts = [monkey.read(t) for t in reads if t <= 1.0]
        monkey.scene(1.0, False, False)
        parts += [monkey.read(t) for t in reads if t > 1.0]
        made.append((GazeSamples.concat(parts), monkey.events))
    assert_same_samples(made[0][0], made[1][0])
    assert made[0][1] == made[1][1]
    assert monkey.describe()["raw"] is True and monkey.describe()["calibration"] is None


def test_scene_moves_the_point_the_monkey_looks_for():
    monkey = GAZE_SOURCES.build("simulated", {"seed": 2, **STEADY})
    monkey.start(GazeTask((0.0, 0.0), 1.5, "test", 0.0))
    for t, point in ((1.0, (5.0, 0.0)), (3.0, (-4.0, 3.0))):  # the second moves while the point is on
        monkey.read(t)
        monkey.scene(t, True, False, point)
        samples = monkey.read(t + 1.5)
        late = samples.times > t + 1.0
        assert np.all(np.hypot(samples.x[late] - point[0], samples.y[late] - point[1]) < 0.2), point
    assert [k for _, k in monkey.events].count("fixate") == 2


# -- fitting ---------------------------------------------------------------------------------------------------


def test_fit_refuses_too_few_and_collinear_targets_saying_why():
    grid = np.array([(0.0, 0.0), (5.0, 0.0), (0.0, 5.0), (-5.0, 0.0), (0.0, -5.0)])
    raw = to_raw(AFFINE, grid)
    with pytest.raises(CalibrationError, match="2 targets are too few for a affine map") as refused:
        Calibration.fit(raw[:2], grid[:2])
    assert refused.value.reason == "targets"
    with pytest.raises(CalibrationError, match="too few for a poly2 map"):
        Calibration.fit(raw, grid, "poly2")
    line = np.array([(x, 0.5 * x) for x in (-5.0, -2.0, 0.0, 3.0, 5.0)])
    with pytest.raises(CalibrationError, match=r"the targets are collinear \(they lie on one line\)"):
        Calibration.fit(to_raw(AFFINE, line), line)
    flat = raw.copy()
    flat[:, 1] = -0.2 + np.array([1e-5, -2e-5, 0.0, 1.5e-5, -1e-5])  # v did not follow the targets: noise only
    with pytest.raises(CalibrationError, match="raw signals are collinear.*within 10 standard errors") as refused:
        Calibration.fit(flat, grid, raw_sem=np.full((5, 2), 3e-4))
    assert refused.value.reason == "collinear"
    fitted = Calibration.fit(raw, grid)  # exact data: the inverse map, residuals 0, and back through TOML
    again = load_toml(fitted.to_toml())
    np.testing.assert_allclose(again.coefficients, fitted.coefficients, rtol=0, atol=0)
    assert fitted.max_residual_deg < 1e-9


def load_toml(text: str) -> Calibration:
    import tempfile

    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "c.toml"
        path.write_text(text)
        return load_calibration(path)


# -- rig calibrate ---------------------------------------------------------------------------------------------


def test_rig_calibrate_recovers_the_inverse_of_an_affine_raw_signal(affine_calibration):
    calibration = load_calibration(affine_calibration)
    assert calibration.kind == "affine" and len(calibration.targets) == 5
    assert calibration.info["stability"]["stable_ms"] == 300.0
    tolerance = noise_tolerance(calibration, AFFINE)
    assert tolerance < 0.05  # the test is a sharp one: a few hundredths of a degree
    assert recovered_error(calibration, AFFINE) < tolerance
    assert all(t["residual_deg"] < tolerance for t in calibration.targets)


def test_rig_calibrate_poly2_recovers_a_second_order_distortion(folder):
    protocol = write_protocol(folder, "poly2", {**STEADY, "raw_map": SECOND_ORDER, "raw_noise": RAW_NOISE})
    out = folder / "poly2-cal.toml"
    assert calibrate(protocol, out, "--points", "9", "--kind", "poly2", "--order", "fixed") == 0
    calibration = load_calibration(out)
    assert calibration.kind == "poly2" and len(calibration.targets) == 9
    targets = np.array([t["target_deg"] for t in calibration.targets])
    noiseless = Calibration.fit(to_raw(SECOND_ORDER, targets), targets, "poly2")
    model_error = recovered_error(noiseless, SECOND_ORDER)  # the inverse is second order only approximately
    tolerance = model_error + noise_tolerance(calibration, SECOND_ORDER)
    assert recovered_error(calibration, SECOND_ORDER) < tolerance < 0.1
    # The distortion is real: an affine map of the same fixations misses by far more.
    raw = np.array([t["raw"] for t in calibration.targets])
    assert recovered_error(Calibration.fit(raw, targets, "affine"), SECOND_ORDER) > 3 * tolerance


def test_rig_calibrate_refuses_too_few_fixated_targets_and_writes_nothing(folder, capsys):
    # It rests at once and stares at one place: no fixation follows a target (one that looks around instead
    # lands stable fixations elsewhere; the fit refuses those, see the residual test).
    resting = {"seed": 1, "rest_hazard_hz": 10.0, "rest_mean_s": 86_400.0, "look_interval_s": [3000.0, 3600.0],
               "raw_map": AFFINE}
    protocol = write_protocol(folder, "resting", resting)
    out = folder / "resting-cal.toml"
    assert calibrate(protocol, out, "--points", "5", "--timeout-s", "1", "--attempts", "1") == 1
    err = capsys.readouterr().err
    assert "0 of 5 targets had a stable fixation, too few for a affine map (at least 3)" in err
    assert "no stable fixation on the target at" in err and "nothing was written" in err
    assert not out.exists()
    assert calibrate(protocol, out, "--points", "5", "--kind", "poly2") == 2  # asked for the impossible: usage
    assert "--kind poly2 needs at least 6 targets; --points 5" in capsys.readouterr().err
    assert not out.exists()


def test_rig_calibrate_refuses_a_signal_that_does_not_follow_the_targets(folder, capsys):
    dead_v = [0.5, 0.1, 0.02, -0.2, 0.0, 0.0]  # v's channel carries noise only
    protocol = write_protocol(folder, "dead", {**STEADY, "raw_map": dead_v, "raw_noise": RAW_NOISE})
    out = folder / "dead-cal.toml"
    assert calibrate(protocol, out, "--points", "5") == 1
    assert "raw signals are collinear" in capsys.readouterr().err
    assert not out.exists()


def test_rig_calibrate_refuses_residuals_above_the_limit(folder, capsys):
    sloppy = {"seed": 5, "raw_map": AFFINE, "raw_noise": RAW_NOISE, "landing_error_deg": 0.5,
              "break_hazard_hz": 0.0}
    protocol = write_protocol(folder, "sloppy", sloppy)
    out = folder / "sloppy-cal.toml"
    assert calibrate(protocol, out, "--points", "9", "--max-residual-deg", "0.05", "--refits", "1") == 1
    err = capsys.readouterr().err
    assert "showing the least trusted target" in err  # one refit first
    assert "above the limit of 0.05° (--max-residual-deg)" in err
    assert not out.exists()


def test_a_source_without_a_raw_signal_cannot_be_calibrated(folder, capsys):
    protocol = write_protocol(folder, "plain", {})
    assert calibrate(protocol, folder / "x.toml", "--gaze", "none") == 2
    assert "gaze source 'none' has no raw eye signal to calibrate" in capsys.readouterr().err


# -- sessions through a calibration ----------------------------------------------------------------------------


class _Kept(SessionSink):
    """Keeps every showing's behaviour log in memory."""

    def __init__(self) -> None:
        self.logs, self.blocks, self.status = [], 0, ""

    def append_block(self, block, presentations, responses, checkpoint, timings, showings=()) -> None:
        self.blocks += 1
        self.logs += [showing.presentations.behavior for showing in showings]

    def finish(self, status: str = "complete") -> None:
        self.status = status


def run_session(protocol: Path):
    """Run ``protocol`` as ``rig run`` assembles it; the kept logs and the gaze source at the end."""
    spec = load_protocol(protocol)
    parts = assemble(spec, resolve_neuron(spec, None, None), device="cpu")
    kept = _Kept()
    try:
        Controller(parts.protocol, parts.display, parts.source, kept).run()
    finally:
        parts.display.close()
        parts.source.close()
    assert kept.status == "complete" and kept.blocks == spec.generations
    return kept, parts.display


def holds(kept: _Kept) -> tuple[list[tuple[float, float]], np.ndarray, GazeSamples]:
    """Each trial's baseline hold (acquired, first onset or break), its outcomes, and every gaze sample."""
    spans = []
    outcomes = []
    for log in kept.logs:
        t = log.trials
        outcomes += t["outcome"]
        for acquired, onset, broke in zip(t["acquired"], t["first_onset"], t["break_time"]):
            end = onset if math.isfinite(onset) else broke
            if math.isfinite(acquired) and math.isfinite(end) and end > acquired:
                spans.append((acquired, end))
    return spans, np.array(outcomes), GazeSamples.concat([s for log in kept.logs for s in log.gaze])


def hold_errors(spans, samples: GazeSamples) -> np.ndarray:
    """Distance of the median gaze from the fixation point (the centre) in each hold."""
    errors = []
    for start, stop in spans:
        use = samples.valid & (samples.times >= start) & (samples.times <= stop)
        errors.append(math.hypot(np.median(samples.x[use]), np.median(samples.y[use])))
    return np.array(errors)


def test_a_session_through_the_calibration_runs_trials_like_one_in_degrees(folder, affine_calibration):
    working = {"seed": 8, "break_hazard_hz": 0.3}
    plain, _ = run_session(write_protocol(folder, "degrees", working))
    raw = {**working, "raw_map": AFFINE, "raw_noise": RAW_NOISE, "calibration": str(affine_calibration)}
    calibrated, display = run_session(write_protocol(folder, "calibrated", raw))
    gaze = display.describe()["behavior"]["gaze"]
    assert gaze["calibration"]["path"] == str(affine_calibration) and len(gaze["calibration"]["sha256"]) == 64
    assert gaze["drift_corrections"] == []  # off by default
    for kept in (plain, calibrated):
        spans, outcomes, samples = holds(kept)
        assert (outcomes == 0).mean() >= 0.5  # most trials complete, as with this monkey in degrees
        assert np.median(hold_errors(spans, samples)) < 0.5  # the holds are on the point, in degrees
    n_plain, n_calibrated = len(holds(plain)[1]), len(holds(calibrated)[1])
    assert 0.5 <= n_calibrated / n_plain <= 2.0


def test_drift_correction_keeps_gaze_on_the_point_and_every_correction_is_in_the_provenance(
        folder, affine_calibration):
    # 0.01 raw units/s on u is 0.1°/s to the right: about 2° over the session's 20 s of short trials. A 4° window
    # keeps the trials going without the correction, so the wander can be seen.
    drifting = {"seed": 9, "break_hazard_hz": 0.0, "blink_rate_hz": 0.0, "landing_error_deg": 0.1,
                "raw_map": AFFINE, "raw_noise": RAW_NOISE, "raw_drift_per_s": [0.01, 0.0],
                "calibration": str(affine_calibration)}
    late = {}
    for fraction in (0.5, 0.0):
        protocol = write_protocol(folder, f"drift-{fraction}", {**drifting, "drift_correction": fraction},
                                  behavior="stimuli_per_trial = 2\nwindow_deg = 4.0\niti_ms = 200.0", generations=3)
        kept, display = run_session(protocol)
        spans, _, samples = holds(kept)
        errors = hold_errors(spans, samples)
        late[fraction] = float(np.median(errors[len(errors) // 2:]))
        corrections = display.describe()["behavior"]["gaze"]["drift_corrections"]
        if fraction == 0.0:
            assert corrections == []
            continue
        # One per trial with a baseline hold, each exactly what the recorded gaze and trial table give.
        assert len(corrections) == len(spans) > 10
        again = drift_corrections(samples, spans, (0.0, 0.0), fraction)
        assert [(c["dx"], c["dy"]) for c in corrections] == again
        assert [(c["start"], c["time"]) for c in corrections] == spans
        offsets = np.cumsum(np.array(again), axis=0)
        np.testing.assert_allclose([c["offset"] for c in corrections], offsets, rtol=0, atol=1e-12)
        assert offsets[-1, 0] < -1.0  # it took most of the drift out
        # The session file keeps them too, as events of the showings' trials, and a replay takes them up again.
        logged = [(t, kind, v) for log in kept.logs for t, kind, v, _ in log.events if kind.startswith("drift")]
        assert [v for _, kind, v in logged if kind == "drift_correction_x"] == [dx for dx, _ in again]
        assert [v for _, kind, v in logged if kind == "drift_correction_y"] == [dy for _, dy in again]
    # Corrected, the holds stay within a few tenths of a degree of the point; uncorrected, they follow the drift.
    assert late[0.5] < 0.5 < 1.0 < late[0.0]


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a screen: run under xvfb-run")
def test_rig_calibrate_on_the_psychopy_window(folder, capsys):
    pytest.importorskip("psychopy")
    quick = {**STEADY, "acquire_latency_ms": 120.0, "raw_map": AFFINE, "raw_noise": RAW_NOISE}  # real time: be brief
    protocol = write_protocol(folder, "window", quick, extra=f"[display]\n{_toml(PSYCHOPY_LAYOUT)}")
    out = folder / "window-cal.toml"
    assert calibrate(protocol, out, "--points", "5", "--display", "psychopy", "--order", "fixed",
                     "--blank-ms", "200") == 0, capsys.readouterr().err
    calibration = load_calibration(out)
    assert calibration.info["display"] == "psychopy" and len(calibration.targets) == 5
    assert recovered_error(calibration, AFFINE) < noise_tolerance(calibration, AFFINE)
