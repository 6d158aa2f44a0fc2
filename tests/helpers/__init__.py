"""What the tests share, imported one way (``from helpers.X import ...``, tests/ being on pytest's path).

- :mod:`helpers.protocols`: the one small protocol file (``tiny_protocol``) and a tiny session run;
- :mod:`helpers.sessions`: small session files written directly, a simulated kill, session comparison;
- :mod:`helpers.session_commands`: every command that reads a session, run in-process;
- :mod:`helpers.simrig`: ``rig sim-rig`` as a process or a thread, and sessions recorded against it;
- :mod:`helpers.browser`: headless Chromium for the dashboard's browser tests, and ``rig watch`` in its own process;
- :mod:`helpers.fidelity`: sessions against sim-rig checked against its ground-truth file;
- :mod:`helpers.display_conformance`, :mod:`helpers.reader_conformance`: the shared interface suites.
"""
