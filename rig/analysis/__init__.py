"""Analyses of evolution and screening sessions, as pure functions on arrays plus loaders.

- :mod:`.trajectory`: mean and max per generation, with the reference images;
- :mod:`.convergence`: min–max-normalised mean and first generation at 50% / 80%;
- :mod:`.prototype`: a prototype against natural images (percent over mean, ratio to best, percentile);
- :mod:`.nearest`: nearest natural images in a separate network's feature space;
- :mod:`.tables` and :mod:`.sources`: CSV score tables and session files in.
"""
from rig.analysis.convergence import Convergence, convergence, min_max_normalise
from rig.analysis.nearest import FeatureExtractor, Neighbours, cosine_nearest, nearest_natural_images
from rig.analysis.prototype import PrototypeComparison, prototype_vs_natural
from rig.analysis.sources import (load_prototype_scores, load_scores, load_trajectory, natural_scores,
                                  session_threads, session_trajectory)
from rig.analysis.tables import ScoreTable, ScoreTableError, read_score_table
from rig.analysis.trajectory import Trajectory, score_trajectory

__all__ = [
    "Convergence", "FeatureExtractor", "Neighbours", "PrototypeComparison", "ScoreTable", "ScoreTableError",
    "Trajectory", "convergence", "cosine_nearest", "load_prototype_scores", "load_scores", "load_trajectory",
    "min_max_normalise", "natural_scores", "nearest_natural_images", "prototype_vs_natural", "read_score_table",
    "score_trajectory", "session_threads", "session_trajectory",
]
