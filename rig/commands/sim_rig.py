"""``rig sim-rig``: a simulated recording system speaking the Open Ephys ZMQ Interface format.

Run it in its own terminal (or process), then point ``rig run`` at it::

    rig sim-rig --protocol protocols/dry-run.toml
    rig run protocols/dry-run.toml --out s.h5 --neuron zmq://127.0.0.1:5556 --sim-link tcp://127.0.0.1:5558

or over Lab Streaming Layer (``--transport lsl --lsl-name rig1``, then ``--neuron lsl://rig1``).

With ``--gaze-adc ADC1,ADC2`` a simulated monkey watches what the display
shows (``scene`` messages on the side channel, from the trial runner) and its
eye tracker's analog X and Y go out as two more continuous channels, in volts
(``--gaze-map``, ``--gaze-noise``), for ``[gaze] source = "recording"``; over
LSL as the stream NAME-analog. ``--buffer-size`` sets the GUI's callback size.

The simulated units, their weights and response model come from the protocol
file's ``[neuron]`` table unless ``--neuron``/``--weights``/``--gain``... say
otherwise. See :mod:`rig.recording.simrig` for the stream and the faults.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from protocols.spec import load_protocol
from rig.recording.openephys.server import HEADER_STYLES
from rig.recording.simrig import (ADC_RANGE_V, CALLBACK_MS, DEFAULT_GAZE_MAP, DEFAULT_TRACKER_HZ, PHOTODIODES, SimRig,
                                  SimRigConfig, gaze_calibration, parse_fault_option)
from simulators.response_model import ResponseModel, ResponseModelConfig

HELP = "simulated recording system: a simulated neuron published in the Open Ephys ZMQ format or over LSL"

#: Without a [neuron.response] table: a rate of 10 spikes/s per unit of activation above -2 (efficientnet-scale units).
DEFAULT_GAIN, DEFAULT_OFFSET = 10.0, 20.0
#: The GUI's audio clock: its buffer size counts samples of this rate.
AUDIO_HZ = 44100.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig sim-rig``."""
    parser.add_argument("--protocol", type=Path, help="take units, weights and response model from this file's [neuron]")
    parser.add_argument("--neuron", action="append", metavar="UNIT", help="simulated unit spec; repeat for electrodes")
    parser.add_argument("--weights", help="model weights: a file, 'random' or 'default'")
    parser.add_argument("--transport", choices=("zmq", "lsl"), default="zmq",
                        help="zmq: the Open Ephys ZMQ Interface (default); lsl: Lab Streaming Layer streams "
                             "NAME-clock, NAME-spikes, NAME-ttl (rig/recording/lsl), read with --neuron lsl://NAME")
    parser.add_argument("--lsl-name", default="sim-rig", metavar="NAME", help="with --transport lsl: the streams' NAME")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--data-port", type=int, default=5556, help="PUB port (0: any free port); heartbeats on +1")
    parser.add_argument("--heartbeat-port", type=int, help="REP port for heartbeats (default data port + 1)")
    parser.add_argument("--side-port", type=int, help="PULL port for the display's side channel (default data port + 2)")
    parser.add_argument("--sample-rate", type=float, default=30000.0, help="samples per second (default 30000)")
    parser.add_argument("--block-ms", type=float,
                        help=f"processing callback length (default {CALLBACK_MS:.2f} ms: the GUI's 1024 samples "
                             "at 44.1 kHz, 696-697 samples at 30 kHz)")
    parser.add_argument("--buffer-size", type=int, metavar="SAMPLES",
                        help="the GUI's audio buffer size instead of --block-ms: callbacks of SAMPLES at 44.1 kHz "
                             "(256: 5.8 ms, 512: 11.6 ms, 1024: 23.2 ms, the default)")
    parser.add_argument("--channels", type=int, default=1, metavar="N",
                        help="selected continuous channels CH1..CHN: one DATA message each per callback (default 1)")
    parser.add_argument("--send-queue", type=int, default=1000, metavar="N",
                        help="PUB queue in messages (default 1000, the plugin's); a larger one keeps a publisher "
                             "starved of CPU from dropping, to tell its losses from the reader's")
    parser.add_argument("--lag-ms", type=float, default=20.0, help="publish each block this long after its end")
    parser.add_argument("--ttl-line", type=int, default=0, help="0-based TTL line for onsets (default 0)")
    parser.add_argument("--ttl-jitter-ms", type=float, default=0.0, help="uniform +- jitter of every onset TTL")
    parser.add_argument("--photodiode", choices=PHOTODIODES, default="toggle",
                        help="toggle: the patch flips white/black at each onset, edges alternate rising/falling "
                             "(PsychoPy's patch; default); pulse: rising at onset, falling --ttl-pulse-ms later")
    parser.add_argument("--ttl-pulse-ms", type=float, default=10.0, help="pulse length with --photodiode pulse")
    parser.add_argument("--display-latency-ms", type=float, default=20.0,
                        help="the screen (and the neuron) show an onset this long after the display reports it "
                             "(input lag plus photodiode; default 20, real monitors 10-100)")
    parser.add_argument("--sync-line", type=int, help="0-based TTL line for a periodic sync pulse (default: none)")
    parser.add_argument("--sync-hz", type=float, default=1.0, help="sync pulses per second (10 ms each; default 1)")
    parser.add_argument("--header-style", choices=HEADER_STYLES, default="juce",
                        help="juce: pretty-printed CRLF headers as the GUI writes them (default); compact: one line")
    parser.add_argument("--truth-file", type=Path,
                        help="write the ground truth here as JSON lines: onsets, spikes, TTL edges, restarts "
                             "(format: rig/recording/simrig.py)")
    parser.add_argument("--gain", type=float, help="response model gain (spikes/s per unit activation)")
    parser.add_argument("--offset", type=float, help="response model offset (spikes/s)")
    parser.add_argument("--latency-ms", type=float, help="response latency (default: the response model's, 50 ms)")
    parser.add_argument("--spontaneous-hz", type=float, default=5.0, help="spontaneous rate of each sorted unit")
    parser.add_argument("--unsorted-hz", type=float, default=20.0, help="unsorted (sorted id 0) spikes per electrode")
    parser.add_argument("--fault", action="append", default=[], metavar="KIND@ONSET[:VALUE]",
                        help="inject a fault at the N-th onset: drop, restart, missing-ttl, jitter[:ms], silent[:s]")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    gaze = parser.add_argument_group("eye signals (a simulated monkey watching the display's scenes)")
    gaze.add_argument("--gaze-adc", metavar="X,Y",
                      help="publish the monkey's gaze as two analog channels named X,Y (e.g. ADC1,ADC2), after "
                           "CH1..CHN in every callback; over LSL as the stream NAME-analog")
    gaze.add_argument("--gaze-map", metavar="a,b,c,d,e,f", default=",".join(f"{v:g}" for v in DEFAULT_GAZE_MAP),
                      help="volts from degrees: X = a*x + b*y + c, Y = d*x + e*y + f (default "
                           f"{','.join(f'{v:g}' for v in DEFAULT_GAZE_MAP)}); clipped to ±{ADC_RANGE_V:g} V")
    gaze.add_argument("--gaze-noise", type=float, default=0.0, metavar="V",
                      help="SD of Gaussian noise added to each channel's every sample (volts; default 0)")
    gaze.add_argument("--gaze-seed", type=int, default=0, help="the monkey's seed (default 0)")
    gaze.add_argument("--gaze-blink-volts", type=float, default=-ADC_RANGE_V,
                      help=f"both channels' level while the monkey blinks (default {-ADC_RANGE_V:g}, the rail)")
    gaze.add_argument("--gaze-window-deg", type=float, default=1.5,
                      help="the fixation window's radius the monkey knows (default 1.5, [behavior]'s)")
    gaze.add_argument("--gaze-fixation-deg", metavar="X,Y", default="0,0",
                      help="where the fixation point is before the first scene says (default 0,0)")
    gaze.add_argument("--gaze-monkey", metavar="JSON", default="{}",
                      help=f"the monkey's options as JSON (rig/behavior/gaze/simulated.py), e.g. "
                           f"'{{\"break_hazard_hz\": 1.0}}'; rate_hz defaults to {DEFAULT_TRACKER_HZ:g}")
    gaze.add_argument("--gaze-calibration", type=Path, metavar="FILE",
                      help="write the calibration that undoes --gaze-map here (for [gaze] calibration in a dry run)")
    gaze.add_argument("--truth-gaze", action="store_true",
                      help="also write the monkey's samples to --truth-file (one line per callback)")
    gui = parser.add_argument_group("the acquisition GUI (doubles of the Open Ephys GUI's HTTP API and of the "
                                    "NetworkEvents plugin, written from their source)")
    gui.add_argument("--gui-port", type=int, metavar="PORT",
                     help="serve the GUI's HTTP API here (the GUI's is 37497; 0: any free port): "
                          "rig run --openephys http://HOST:PORT")
    gui.add_argument("--events-port", type=int, metavar="PORT",
                     help="serve NetworkEvents here (0: any free port; its default 5556 is the data port's): "
                          "[openephys] events_port")
    gui.add_argument("--recordings", type=Path, metavar="DIR",
                     help="where the GUI double writes its recording folders (default: a temporary folder)")
    parser.add_argument("--device", default="cpu", help="torch device of the simulated neuron")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: run until stopped)")
    parser.add_argument("--ready-file", type=Path, help="write the bound endpoints here as JSON once listening")


def _response_model(args: argparse.Namespace, table: dict | None) -> ResponseModel:
    base = ResponseModelConfig.from_table(table) if table else ResponseModelConfig(gain=DEFAULT_GAIN,
                                                                                  offset=DEFAULT_OFFSET)
    changes = {k: v for k, v in (("gain", args.gain), ("offset", args.offset)) if v is not None}
    if args.latency_ms is not None:
        changes["latency_s"] = args.latency_ms / 1000.0
    return ResponseModel(replace(base, seed=args.seed, noise="poisson", **changes))


def _numbers(option: str, text: str, count: int) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{option} {text!r}: expected {count} comma-separated finite numbers")
    return values


def _gaze_config(args: argparse.Namespace) -> dict:
    """SimRigConfig's gaze fields from the command line (nothing without --gaze-adc)."""
    if not args.gaze_adc:
        return {}
    names = tuple(n.strip() for n in args.gaze_adc.split(","))
    if len(names) != 2:
        raise ValueError(f"--gaze-adc {args.gaze_adc!r}: expected two channel names X,Y, e.g. ADC1,ADC2")
    try:
        monkey = json.loads(args.gaze_monkey)
    except ValueError as exc:
        raise ValueError(f"--gaze-monkey: not JSON: {exc}") from None
    if not isinstance(monkey, dict):
        raise ValueError(f"--gaze-monkey: expected a JSON object of the monkey's options, got {args.gaze_monkey!r}")
    from rig.behavior.gaze.simulated import MonkeyOptions

    # Checked before anything binds.
    MonkeyOptions.from_table({"rate_hz": DEFAULT_TRACKER_HZ, **monkey}, "--gaze-monkey")
    return {"gaze_adc": names, "gaze_map": _numbers("--gaze-map", args.gaze_map, 6), "gaze_noise_v": args.gaze_noise,
            "gaze_seed": args.gaze_seed, "gaze_blink_v": args.gaze_blink_volts,
            "gaze_window_deg": args.gaze_window_deg,
            "gaze_fixation_deg": _numbers("--gaze-fixation-deg", args.gaze_fixation_deg, 2), "gaze_monkey": monkey,
            "truth_gaze": args.truth_gaze}


def _block_ms(args: argparse.Namespace) -> float:
    if args.buffer_size is not None:
        if args.block_ms is not None:
            raise ValueError("rig sim-rig: give --block-ms or --buffer-size, not both")
        if not 1 <= args.buffer_size <= 1 << 16:
            raise ValueError(f"--buffer-size {args.buffer_size}: expected 1..65536 samples at 44.1 kHz")
        return 1000.0 * args.buffer_size / AUDIO_HZ
    return CALLBACK_MS if args.block_ms is None else args.block_ms


def _gui_doubles(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """With ``--gui-port``/``--events-port``: the GUI's HTTP API and NetworkEvents, served from threads of this
    process, sharing one GUI state; the doubles and their endpoints (for the ready file)."""
    if args.gui_port is None and args.events_port is None:
        return [], {}
    import tempfile

    from rig.recording.openephys.gui_double import GuiDouble, GuiState, NetworkEventsDouble

    folder = args.recordings if args.recordings is not None else Path(tempfile.mkdtemp(prefix="sim-rig-gui-"))
    folder.mkdir(parents=True, exist_ok=True)
    state = GuiState(folder)
    doubles: list[Any] = []
    found: dict[str, Any] = {}
    if args.gui_port is not None:
        http = GuiDouble(state, host=args.host, port=args.gui_port)
        doubles.append(http)
        found["gui"] = http.url
        print(f"sim-rig: Open Ephys GUI HTTP API at {http.url} (recordings in {folder})", flush=True)
    if args.events_port is not None:
        events = NetworkEventsDouble(state, host=args.host, port=args.events_port)
        doubles.append(events)
        found["events_port"] = events.port
        print(f"sim-rig: NetworkEvents at {events.endpoint}", flush=True)
    return doubles, found


def _truth_of_gui(path: Path, doubles: list[Any]) -> None:
    """What the GUI doubles were asked, appended to the truth file as one ``gui`` record: the modes it went
    through, the base text, the text messages, and every TTL command NetworkEvents handled (time.monotonic)."""
    state = doubles[0].state
    events = [d for d in doubles if hasattr(d, "ttl")]
    record = {"type": "gui", "transitions": [[t, mode] for t, mode in state.transitions],
              "base_text": state.base_text, "messages": [[t, text, mode] for t, text, mode in state.messages],
              "ttl": [[c.time, c.line, c.state, c.recorded] for d in events for c in d.ttl]}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def run(args: argparse.Namespace) -> int:
    """Build the neuron, bind the sockets, publish until stopped."""
    import torch  # the models load only when sim-rig runs (its options parse without them)

    from simulators.neuron import SimulatedNeuron

    units, weights, table = args.neuron, args.weights, None
    if args.protocol is not None:
        spec = load_protocol(args.protocol)
        if spec.neuron is not None:
            units = units or list(spec.neuron.units)
            weights = weights if weights is not None else spec.neuron.weights
            table = spec.neuron.response
    if not units:
        raise ValueError("rig sim-rig: name the simulated units with --neuron UNIT or --protocol FILE with [neuron]")
    neuron = SimulatedNeuron(units, weights=weights, device=args.device)
    neuron(torch.zeros(1, 3, neuron.cfg.input_size, neuron.cfg.input_size))  # warm up before the first onset
    model = _response_model(args, table)
    config = SimRigConfig(host=args.host, data_port=args.data_port, heartbeat_port=args.heartbeat_port,
                          side_port=args.side_port, sample_rate=args.sample_rate, block_ms=_block_ms(args),
                          lag_ms=args.lag_ms, ttl_line=args.ttl_line, ttl_jitter_ms=args.ttl_jitter_ms,
                          spontaneous_hz=args.spontaneous_hz, unsorted_hz=args.unsorted_hz, seed=args.seed,
                          faults=[parse_fault_option(f) for f in args.fault], data_channels=args.channels,
                          send_queue=args.send_queue,
                          photodiode=args.photodiode, ttl_pulse_ms=args.ttl_pulse_ms,
                          display_latency_ms=args.display_latency_ms, sync_line=args.sync_line,
                          sync_hz=args.sync_hz, header_style=args.header_style,
                          truth_file=str(args.truth_file) if args.truth_file is not None else None,
                          transport=args.transport, lsl_name=args.lsl_name, **_gaze_config(args))
    rig = SimRig(neuron, len(neuron.channel_names), model, config)
    endpoints = rig.describe()
    print(f"sim-rig: {', '.join(neuron.channel_names)} -> electrodes "
          f"{', '.join(f'Electrode {i + 1}' for i in range(len(neuron.channel_names)))} (sorted id 1)", flush=True)
    print(f"sim-rig: data {endpoints['data']}, heartbeats {endpoints.get('heartbeat', 'none')}, "
          f"side channel {endpoints['side']}", flush=True)
    print(f"sim-rig: response model {model.describe()['kwargs']}", flush=True)
    print(f"sim-rig: {config.data_channels} continuous channel(s), callbacks of {rig.samples_per_callback:.2f} "
          f"samples, photodiode {config.photodiode} on line {config.ttl_line}, display latency "
          f"{config.display_latency_ms:g} ms"
          + (f", sync {config.sync_hz:g} Hz on line {config.sync_line}" if config.sync_line is not None else ""),
          flush=True)
    if config.faults:
        print(f"sim-rig: faults {[asdict(f) for f in config.faults]}", flush=True)
    if rig.eyes is not None and args.gaze_calibration is not None:
        args.gaze_calibration.write_text(gaze_calibration(config.gaze_map).to_toml())
        print(f"sim-rig: wrote the calibration undoing the map to {args.gaze_calibration}", flush=True)
    if rig.eyes is not None:
        where = f"stream {config.lsl_name}-analog" if config.transport == "lsl" else "continuous channels"
        print(f"sim-rig: eye signals X,Y on {where} {','.join(config.gaze_adc)}: volts = map "
              f"{list(config.gaze_map)} of degrees + noise {config.gaze_noise_v:g} V, blinks at "
              f"{config.gaze_blink_v:g} V; monkey {rig.eyes.monkey.describe()['options']}", flush=True)
    neuron_url = endpoints["data"] if config.transport == "lsl" else f"zmq://{args.host}:{rig.data_port}"
    print(f"sim-rig: connect with: rig run PROTOCOL --out SESSION.h5 --neuron {neuron_url} "
          f"--sim-link {endpoints['side']}", flush=True)
    doubles, gui = _gui_doubles(args)
    if args.ready_file is not None:
        args.ready_file.write_text(json.dumps({**endpoints, "neuron": neuron_url, "data_port": rig.data_port,
                                               "heartbeat_port": rig.heartbeat_port, "side_port": rig.side_port,
                                               **gui}))
    signal.signal(signal.SIGTERM, lambda *_: rig.stop())
    try:
        rig.run(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        rig.close()
        for double in doubles:
            double.close()
        if doubles and args.truth_file is not None:
            _truth_of_gui(args.truth_file, doubles)
    print(f"sim-rig: {rig.onsets_seen} onsets, {rig.publisher.sent} messages sent, "
          f"faults applied {rig.faults_applied}, late onsets {rig.late_onsets}, "
          f"bad side-channel messages {rig.bad_messages}"
          + (f", scenes {rig.eyes.scenes} ({rig.eyes.late_scenes} late)" if rig.eyes is not None else ""), flush=True)
    sys.stdout.flush()
    return 0
