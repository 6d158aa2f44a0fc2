"""The Open Ephys GUI's "ZMQ Interface" transport: wire format, reader, publisher (DESIGN.md §3).

- :mod:`rig.recording.openephys.wire`: pure ``format_*``/``parse_*`` pairs for every message, and
  :func:`~rig.recording.openephys.wire.normalise` into :mod:`rig.recording.records`;
- :mod:`rig.recording.openephys.juce_json`: headers as the GUI's JUCE ``JSON::toString`` writes them;
- :mod:`rig.recording.openephys.reader`: ``StreamParser`` (parsing, counters, the compact log; shared with the
  file replay) and ``ZmqReader``, whose thread drains the socket all the time;
- :mod:`rig.recording.openephys.server`: the publishing side (the fake next to the client).
"""
