"""The loop and what builds and re-runs it.

- :mod:`rig.loop.controller`: generate → display → record → optimize, one block at a time;
- :mod:`rig.loop.assemble`: building every part of a session from a protocol file and the command line;
- :mod:`rig.loop.memory`: a block's memory estimated before the first one;
- :mod:`rig.loop.replay`: replay and resume (the same controller over a recorded session);
- :mod:`rig.loop.sweep`: many sessions over models, units and seeds.
"""
