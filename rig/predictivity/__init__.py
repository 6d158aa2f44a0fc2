"""Model–neuron predictivity from recorded sessions (``rig compare``) and the neuron's digital twin.

- :mod:`~rig.predictivity.stimuli`: images and per-stimulus responses from session files;
- :mod:`~rig.predictivity.ceiling`: the noise ceiling from repeated stimuli;
- :mod:`~rig.predictivity.features`: one forward pass per model, every layer read, cached on disk;
- :mod:`~rig.predictivity.readout`: cross-validated PCA + ridge readouts, folds split by generation;
- :mod:`~rig.predictivity.compare`: scores per model and layer, confidence intervals, the paired test;
- :mod:`~rig.predictivity.outputs`: the CSV table, the figure and the report section.
"""
