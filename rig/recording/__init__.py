"""Recording sources: the Open Ephys ZeroMQ stream, its wire format, and response scoring.

- :mod:`rig.recording.openephys_wire`: pure ``format_*``/``parse_*`` pairs for every
  message of the Open Ephys "ZMQ Interface" (DESIGN.md §3) and the normalised
  records (spike, ttl, watermark, discontinuity) every reader yields.
- :mod:`rig.recording.zmq_reader`: the live reader (Reader contract of STYLE
  practice 1) and the heartbeat client.
- :mod:`rig.recording.zmq_server`: the publishing side (the fake next to the client).
- :mod:`rig.recording.scoring`: onset/TTL pairing, clock mapping, windows, baselines.
- :mod:`rig.recording.zmq_source`: ``ZmqRecording``, the response source.
- :mod:`rig.recording.sidechannel`: what the display tells ``rig sim-rig``.
- :mod:`rig.recording.replay_reader`: ``SessionReplayReader``, the raw stream of a session file through the
  live parser (same Reader contract as ``ZmqReader``).
- :mod:`rig.recording.rescore`: ``rig replay --rescore``, scores again from the replayed raw spikes.
"""
