"""What an experiment is: protocols, generators (image spaces) and optimizers.

Nothing in this package knows whether the neuron is simulated or real; it never
imports ``rig`` or ``simulators``.
"""
