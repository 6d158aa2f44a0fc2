"""Cross-validated linear readouts: PCA to a bounded size, then ridge regression (scikit-learn).

Folds split by group (one generation of an evolution is one group), so
near-identical images of one generation never sit on both sides of a split.
Inside each training fold, the PCA is fitted and the ridge penalty chosen by
an inner group-wise cross-validation; the held-out fold is predicted once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from rig.predictivity.defaults import DEFAULT_COMPONENTS, DEFAULT_FOLDS

#: BLAS threads for the readouts: their matrices are small, and on a busy machine more threads than one
#: spin against each other (5-fold readouts of 200 stimuli took 5 s with the default threads, 0.2 s with one).
BLAS_THREADS = 1
#: Ridge penalties tried inside each training fold, relative to the components' mean sum of squares
#: (so one grid fits layers of any scale).
RELATIVE_ALPHAS = tuple(float(a) for a in np.logspace(-5, 2, 15))


@dataclass(frozen=True)
class FittedReadout:
    """PCA + ridge fitted to every stimulus: what a twin stores to predict new images."""

    mean: np.ndarray           # (D,) feature mean removed before the PCA
    components: np.ndarray     # (k, D) principal axes
    coef: np.ndarray           # (k,) ridge weights on the components
    intercept: float
    alpha: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted responses to (N, D) features."""
        z = (np.asarray(features, np.float64) - self.mean) @ self.components.T
        return z @ self.coef + self.intercept


def check_folds(groups: np.ndarray, folds: int) -> None:
    """Enough groups (generations, natural images) for ``folds`` folds, else a clear error."""
    n_groups = len(np.unique(groups))
    if folds < 2:
        raise ValueError(f"--folds must be >= 2, got {folds}")
    if n_groups < folds:
        raise ValueError(f"too few images for {folds} folds: the stimuli fall into {n_groups} groups "
                         f"(generations and natural images); record more generations or lower --folds")


def _pipeline(n_samples: int, n_features: int, components: int) -> Pipeline:
    k = max(1, min(components, n_samples - 1, n_features))
    return Pipeline([("pca", PCA(n_components=k, svd_solver="full", random_state=0)),
                     ("ridge", Ridge())])


def inner_penalty(z: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int) -> float:
    """The ridge penalty of least squared error over group-wise inner folds of one training fold.

    Every penalty of :data:`RELATIVE_ALPHAS` is scored from one SVD per inner fold (the ridge
    solution is a function of the singular values), the same objective
    :class:`sklearn.linear_model.Ridge` minimises, at a fraction of refitting it per penalty.
    """
    alphas = np.asarray(RELATIVE_ALPHAS) * float(((z - z.mean(axis=0)) ** 2).sum(axis=0).mean())
    n_inner = min(folds, len(np.unique(groups)))
    if n_inner < 2:
        return float(np.median(alphas))
    errors = np.zeros(len(alphas))
    for train, test in GroupKFold(n_splits=n_inner).split(z, y, groups):
        z_mean, y_mean = z[train].mean(axis=0), y[train].mean()
        u, s, vt = np.linalg.svd(z[train] - z_mean, full_matrices=False)
        uty = u.T @ (y[train] - y_mean)
        shrink = s[None, :] / (s[None, :] ** 2 + alphas[:, None])  # (alphas, k)
        coefs = (shrink * uty[None, :]) @ vt                      # (alphas, features)
        predictions = (z[test] - z_mean) @ coefs.T + y_mean        # (test, alphas)
        errors += ((predictions - y[test][:, None]) ** 2).sum(axis=0)
    return float(alphas[int(np.argmin(errors))])


def _fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, components: int, inner_folds: int) -> Pipeline:
    """PCA fitted on ``x``, the ridge penalty picked by group-wise CV on it, the ridge refitted on all of ``x``."""
    pipe = _pipeline(len(x), x.shape[1], components)
    z = pipe.named_steps["pca"].fit_transform(x)
    alpha = inner_penalty(z, y, groups, inner_folds)
    pipe.named_steps["ridge"].set_params(alpha=alpha).fit(z, y)
    return pipe


def cross_validated_predictions(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = DEFAULT_FOLDS,
                                components: int = DEFAULT_COMPONENTS) -> np.ndarray:
    """Each stimulus's response predicted by a readout fitted without its group (N,)."""
    x, y, groups = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(groups)
    check_folds(groups, folds)
    predictions = np.full(len(y), np.nan)
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
            pipe = _fit(x[train], y[train], groups[train], components, folds)
            predictions[test] = pipe.predict(x[test])
    return predictions


def fit_readout(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = DEFAULT_FOLDS,
                components: int = DEFAULT_COMPONENTS) -> FittedReadout:
    """The readout fitted to every stimulus (the penalty chosen by group-wise CV), for a twin."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        pipe = _fit(x, y, np.asarray(groups), components, folds)
    pca, ridge = pipe.named_steps["pca"], pipe.named_steps["ridge"]
    return FittedReadout(mean=pca.mean_.copy(), components=pca.components_.copy(), coef=ridge.coef_.copy(),
                         intercept=float(ridge.intercept_), alpha=float(ridge.alpha))
