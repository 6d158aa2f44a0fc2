"""Behaviour at a monkey rig: trials gated by fixation, gaze sources, reward outputs.

- :mod:`rig.behavior.gaze`: where the eyes are (a simulated monkey, none; eye trackers later);
- :mod:`rig.behavior.reward`: juice (log only, a serial line, a lab's own module);
- :mod:`rig.behavior.machine`: the one trial state machine (fixation → hold → stimuli → reward → interval);
- :mod:`rig.behavior.frames`: the frame clocks it runs on (simulated in silico, a screen's flips in vivo);
- :mod:`rig.behavior.gated`: the display that runs a block as trials.
"""
