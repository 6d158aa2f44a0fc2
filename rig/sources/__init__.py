"""Response sources: the interface (:mod:`rig.sources.base`) and its implementations.

- :mod:`rig.sources.simulated`: a simulated neuron scores the images;
- :mod:`rig.sources.replay`: the responses a session recorded (replay and resume);
- :mod:`rig.recording.source`: spikes from a live recording stream.

Importing this package imports no implementation (the simulated one needs torch models).
"""
from rig.sources.base import ResponseSource

__all__ = ["ResponseSource"]
