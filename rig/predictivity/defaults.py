"""The defaults of ``rig compare``, in a module that imports nothing: the command line is built from them
before any command runs, and the modules that use them import scikit-learn (seconds of start-up)."""

#: Components kept by the PCA before the ridge readout (fewer when a fold has fewer stimuli or features).
DEFAULT_COMPONENTS = 40
#: Group-wise cross-validation folds.
DEFAULT_FOLDS = 5
#: Bootstrap resamples for the confidence intervals of the comparison.
BOOTSTRAPS = 1000
