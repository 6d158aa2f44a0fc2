"""Which model sees like this neuron: cross-validated predictivity per model and layer.

For each model, every requested layer's features come from one forward pass
(:mod:`~rig.predictivity.features`); each layer gets a cross-validated readout
(:mod:`~rig.predictivity.readout`), scored by Pearson r and R² on held-out
stimuli, raw and divided by the noise ceiling (:mod:`~rig.predictivity.ceiling`).
Confidence intervals come from one set of bootstrap resamples of the stimuli,
shared by every layer, so differences between layers and models are paired.
Each model's best layer is the one of highest r; the paired test asks whether
one model's best layer beats another's (the best layers are picked on the same
data, which favours models with more layers a little).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rig.predictivity.ceiling import Ceiling, noise_ceiling
from rig.predictivity.features import LayerFeatures, Readout, session_features
from rig.predictivity.defaults import BOOTSTRAPS, DEFAULT_COMPONENTS, DEFAULT_FOLDS
from rig.predictivity.readout import check_folds, cross_validated_predictions
from rig.predictivity.stimuli import Stimuli

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def scaled(self, factor: float) -> "Interval":
        return Interval(self.value * factor, self.low * factor, self.high * factor)


@dataclass
class LayerScore:
    """One layer of one model: cross-validated r and R², raw and ceiling-normalised."""

    model: str
    layer: str
    depth: float
    features: int
    r: Interval
    r2: Interval
    r_normalised: Interval | None
    r2_normalised: Interval | None
    predictions: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class PairedTest:
    """Whether model ``a``'s best layer predicts better than model ``b``'s: r(a) - r(b) over shared resamples."""

    a: str
    b: str
    difference: Interval
    p_value: float

    @property
    def verdict(self) -> str:
        if self.difference.low > 0:
            return f"{self.a} predicts better than {self.b}"
        if self.difference.high < 0:
            return f"{self.b} predicts better than {self.a}"
        return f"no clear difference between {self.a} and {self.b}"


@dataclass
class Comparison:
    """Everything ``rig compare`` found."""

    scores: list[LayerScore]
    ceiling: Ceiling
    tests: list[PairedTest]
    stimuli: int
    sessions: list[dict]
    settings: dict
    seconds: dict[str, float]
    #: Features of every model's best layer (for the twin).
    best_features: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def best(self) -> dict[str, LayerScore]:
        """Each model's layer of highest cross-validated r."""
        out: dict[str, LayerScore] = {}
        for score in self.scores:
            if score.model not in out or score.r.value > out[score.model].r.value:
                out[score.model] = score
        return out


def pearson_rows(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``pred`` against the same row of ``y`` (both (B, N))."""
    p = pred - pred.mean(axis=1, keepdims=True)
    t = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((p * p).sum(axis=1) * (t * t).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (p * t).sum(axis=1) / denominator


def r_squared_rows(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 - SSE/SST per row: held-out R², negative when the readout predicts worse than the mean."""
    sst = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - ((y - pred) ** 2).sum(axis=1) / sst


def _interval(value: float, samples: np.ndarray) -> Interval:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high))


def score_predictions(model: str, layer: str, depth: float, n_features: int, predictions: np.ndarray,
                      y: np.ndarray, resamples: np.ndarray, ceiling: Ceiling) -> LayerScore:
    """r and R² of held-out ``predictions``, with intervals over ``resamples`` (B, N) of stimulus indices."""
    r = float(pearson_rows(predictions[None], y[None])[0])
    r2 = float(r_squared_rows(predictions[None], y[None])[0])
    r_i = _interval(r, pearson_rows(predictions[resamples], y[resamples]))
    r2_i = _interval(r2, r_squared_rows(predictions[resamples], y[resamples]))
    usable = np.isfinite(ceiling.reliability) and ceiling.reliability > 0
    return LayerScore(model, layer, depth, n_features, r_i, r2_i,
                      r_i.scaled(1 / ceiling.max_r) if usable else None,
                      r2_i.scaled(1 / ceiling.reliability) if usable else None, predictions)


def paired_tests(best: dict[str, LayerScore], y: np.ndarray, resamples: np.ndarray) -> list[PairedTest]:
    """Every pair of models, best layer against best layer, on the same resamples."""
    tests = []
    for a, b in itertools.combinations(sorted(best), 2):
        ra = pearson_rows(best[a].predictions[resamples], y[resamples])
        rb = pearson_rows(best[b].predictions[resamples], y[resamples])
        d = ra - rb
        p = float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))
        tests.append(PairedTest(a, b, _interval(best[a].r.value - best[b].r.value, d), p))
    return tests


def compare(stimuli: Stimuli, models: Sequence[str], layers: dict[str, list[str]] | None = None,
            readout: Readout = Readout(), folds: int = DEFAULT_FOLDS, components: int = DEFAULT_COMPONENTS,
            cache: Path | None = None, device: str = "cpu", seed: int = 0,
            bootstraps: int = BOOTSTRAPS) -> Comparison:
    """Score every layer of every model against the stimuli's responses (see the module docstring)."""
    if not models:
        raise ValueError("name at least one model with --model")
    y, groups = stimuli.responses, stimuli.groups
    check_folds(groups, folds)
    ceiling = noise_ceiling(stimuli.showings, seed=seed)
    resamples = np.random.default_rng(seed).integers(0, len(y), size=(bootstraps, len(y)))
    scores: list[LayerScore] = []
    best_features: dict[str, np.ndarray] = {}
    seconds = {"features": 0.0, "fit": 0.0}
    for name in models:
        started = time.perf_counter()
        reader = LayerFeatures(name, (layers or {}).get(name), readout, device=device)
        values = _features(reader, stimuli, cache)
        seconds["features"] += time.perf_counter() - started
        started = time.perf_counter()
        per_model = []
        for layer in reader.layers:
            predictions = cross_validated_predictions(values[layer], y, groups, folds, components)
            per_model.append(score_predictions(name, layer, reader.relative_depth(layer), values[layer].shape[1],
                                               predictions, y, resamples, ceiling))
        seconds["fit"] += time.perf_counter() - started
        scores += per_model
        top = max(per_model, key=lambda s: s.r.value)
        best_features[name] = values[top.layer]
    comparison = Comparison(scores, ceiling, [], len(y), stimuli.provenance(),
                            {"models": list(models), "pool": readout.pool, "token": readout.token, "folds": folds,
                             "components": components, "bootstraps": bootstraps, "seed": seed},
                            seconds, best_features)
    comparison.tests = paired_tests(comparison.best(), y, resamples)
    return comparison


def _features(reader: LayerFeatures, stimuli: Stimuli, cache: Path | None) -> dict[str, np.ndarray]:
    """Every layer's features for every session's stimuli, concatenated in stimulus order."""
    parts = [session_features(reader, s.chunks(64), s.keys, s.sha256, cache)[0] for s in stimuli.sessions]
    return {layer: np.concatenate([p[layer] for p in parts]) for layer in reader.layers}
