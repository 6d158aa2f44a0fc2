"""Fitting the digital twin: the best layer's readout on every stimulus, saved for ``--neuron twin:FILE``."""
from __future__ import annotations

from pathlib import Path

from rig.predictivity.compare import Comparison
from rig.predictivity.features import Readout
from rig.predictivity.readout import fit_readout
from rig.predictivity.stimuli import Stimuli
from simulators.models import resolve_weights
from simulators.twin import save_twin


def save_best_twin(comparison: Comparison, stimuli: Stimuli, readout: Readout, path: Path, folds: int,
                   components: int) -> Path:
    """The twin of the best layer of the best model (highest cross-validated r), written to ``path``."""
    best = max(comparison.best().values(), key=lambda s: s.r.value)
    y = stimuli.responses
    fitted = fit_readout(comparison.best_features[best.model], y, stimuli.groups, folds, components)
    provenance = {"sessions": stimuli.provenance(), "channel": stimuli.sessions[0].channel,
                  "cv_r": best.r.value, "cv_r2": best.r2.value,
                  "cv_r_normalised": best.r_normalised.value if best.r_normalised else None,
                  "ceiling": comparison.ceiling.reliability, "stimuli": len(y)}
    return save_twin(path, model=best.model, layer=best.layer, pool=readout.pool, token=readout.token,
                     readout=fitted, weights_source=resolve_weights(best.model), responses=y, provenance=provenance)
