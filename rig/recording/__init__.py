"""Recording sources: the Open Ephys ZeroMQ stream, its wire format, and response scoring.

- :mod:`rig.recording.openephys.wire`: pure ``format_*``/``parse_*`` pairs for every
  message of the Open Ephys "ZMQ Interface" (DESIGN.md §3) and the normalised
  records (spike, ttl, watermark, discontinuity) every reader yields.
- :mod:`rig.recording.openephys.juce_json`: headers written as the GUI's JUCE ``JSON::toString`` writes them.
- :mod:`rig.recording.openephys.reader`: ``StreamParser`` (parsing, counters, the compact log; shared with the
  file replay) and ``ZmqReader``, the live reader whose thread drains the socket all the time (Reader
  contract of STYLE practice 1), with the heartbeat client.
- :mod:`rig.recording.stream_log`: what a showing keeps of the stream (events and spikes raw, continuous
  data as watermark runs, malformed messages bounded).
- :mod:`rig.recording.openephys.server`: the publishing side (the fake next to the client).
- :mod:`rig.recording.units`: ``[recording] units`` selectors.
- :mod:`rig.recording.pairing`: onsets paired with TTL edges as a whole sequence; shifted trains refused.
- :mod:`rig.recording.scorer`: ``StreamScorer``, the one scorer fed live or from a file: epochs, the clock
  offset's arrival bound, validity, windows and baselines.
- :mod:`rig.recording.scoring`: pure window, rate and clock-fit functions.
- :mod:`rig.recording.source`: ``StreamRecording``, the response source (any transport's live reader + scorer).
- :mod:`rig.recording.transports`: transports by URL scheme (``zmq://HOST:PORT``, ``lsl://NAME``), each
  registered beside its code (:mod:`rig.recording.openephys.transport`, :mod:`rig.recording.lsl.transport`).
- :mod:`rig.recording.live`: the caller's side every live reader shares (``read_next``/``wait``/``take``).
- :mod:`rig.recording.lsl`: Lab Streaming Layer streams (layout, envelope, parser, reader, outlets).
- :mod:`rig.recording.sidechannel`: what the display tells ``rig sim-rig``.
- :mod:`rig.recording.replay_reader`: ``SessionReplayReader``, the raw stream of a session file through the
  live parser (same Reader contract as ``ZmqReader``).
- :mod:`rig.recording.rescore`: ``rig replay --rescore``, scores again from the replayed raw spikes.
- :mod:`rig.recording.spike_decoding`: every spike of a session on the display clock (for the NWB export).
"""
