"""``rig run``: run a protocol file into a new session file, with progress and figures."""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from protocols.spec import MAX_GENERATIONS, SEED_LIMIT, ProtocolSpec, load_protocol
from rig.commands._options import add_trust_generator, bounded_int
from rig.commands.watch import DEFAULT_PORT
from rig.dashboard.beside import Viewer
from rig.dashboard.channel import ControlChannel
from rig.behavior.gaze import GazeError
from rig.behavior.keyboard import TerminalKeys
from rig.behavior.operator import Operator
from rig.behavior.reward import RewardError
from rig.display import DISPLAYS
from rig.recording.openephys.session import GuiSession
from rig.loop.assemble import Assembly, assemble, pick_device, resolve_neuron
from rig.loop.controller import BlockReport, Controller, IncompleteBlockError
from rig.recording.source import RecordingError
from rig.session import RecordedSession, SessionWriter, read_session
from rig.session.writer import annotate


HELP = "run a protocol file into a new session file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig run``."""
    parser.add_argument("protocol", type=Path, nargs="?", help="protocol file (TOML), e.g. protocols/dry-run.toml")
    parser.add_argument("--out", type=Path, help="session file to create (HDF5); required unless --resume")
    parser.add_argument("--resume", type=Path, metavar="FILE.h5",
                        help="continue the killed session in FILE.h5: protocol, seeds and neuron come from the file "
                             "(optimizer checkpoints are data only: resuming a file runs no code from it; a "
                             "[generator] kind = \"module\" in it runs only with --trust-generator)")
    parser.add_argument("--neuron", action="append", metavar="UNIT",
                        help="unit spec MODEL:LAYER:unit=N[:pos=Y,X][:token=cls|mean|N]; repeat for several "
                             "channels (default: the protocol file's [neuron])")
    parser.add_argument("--weights", help="model weights: a file, 'random' (explicit only), or 'default'")
    parser.add_argument("--generations", type=bounded_int(1, MAX_GENERATIONS),
                        help="override the protocol's number of generations")
    parser.add_argument("--seed", type=bounded_int(0, SEED_LIMIT - 1), help="override the protocol's seed")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--display", default="headless", choices=DISPLAYS.kinds(),
                        help="headless (in silico, default) or psychopy (a window laid out by the protocol's [display])")
    parser.add_argument("--sim-link", metavar="tcp://HOST:PORT", type=_tcp_address,
                        help="with --neuron zmq://...: tell `rig sim-rig` what is shown (its side channel)")
    parser.add_argument("--pace-ms", metavar="ON,OFF", type=_pace,
                        help="headless display in real time: ON ms per stimulus, OFF ms blank "
                             "(default 100,150 with a recording)")
    parser.add_argument("--openephys", metavar="http://HOST:37497",
                        help="drive the Open Ephys GUI over its HTTP API: name and start its recording before the "
                             "first stimulus, a message per block, trial markers through NetworkEvents "
                             "([openephys] table), stop at the end")
    parser.add_argument("--gaze", metavar="SOURCE",
                        help="with a [behavior] table: the gaze source to use instead of [gaze] source "
                             "(e.g. simulated, for a dry run of a rig protocol)")
    parser.add_argument("--reward", metavar="KIND",
                        help="with a [behavior] table: the reward output instead of [reward] kind (e.g. log, for a "
                             "dry run of a rig protocol)")
    parser.add_argument("--calibration", metavar="CAL.toml", type=Path,
                        help="with a raw gaze source (analog eye signals): the calibration written by rig calibrate, "
                             "instead of [gaze] calibration")
    parser.add_argument("--quiet", action="store_true", help="no per-generation progress lines")
    parser.add_argument("--dashboard", nargs="?", const=DEFAULT_PORT, type=bounded_int(0, 65535), metavar="PORT",
                        help=f"start `rig watch` on the session beside the run, on 127.0.0.1:PORT (default "
                             f"{DEFAULT_PORT}; 0: any free port), ended with the run; put it after the protocol file")
    add_trust_generator(parser)
    parser.add_argument("--allow-remote-stream", action="store_true",
                        help="with --resume: connect to the recording stream the file names even when it is on "
                             "another machine (not loopback)")


#: The longest stimulus or blank ``--pace-ms`` takes, in ms.
MAX_PACE_MS = 60_000.0
_TCP = re.compile(r"^tcp://(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]|\*):(?P<port>\d{1,5})$")


def _pace(text: str) -> tuple[float, float]:
    try:
        on, off = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ON,OFF in ms, e.g. 100,150; got {text!r}") from None
    if not all(math.isfinite(v) and 0 < v <= MAX_PACE_MS for v in (on, off)):
        raise argparse.ArgumentTypeError(f"ON and OFF must be finite numbers of ms in (0, {MAX_PACE_MS:g}], "
                                         f"got {text!r}")
    return on / 1000.0, off / 1000.0


def _tcp_address(text: str) -> str:
    """``tcp://HOST:PORT`` with a port in 1..65535 (what ZeroMQ connects to), for argparse."""
    match = _TCP.match(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise argparse.ArgumentTypeError(f"expected tcp://HOST:PORT with a port in 1..65535, "
                                         f"e.g. tcp://127.0.0.1:5558; got {text!r}")
    return text


def check_out(path: Path) -> None:
    """``--out`` must name a new file under a folder this process can write to (missing folders are created)."""
    if path.is_dir():
        raise ValueError(f"--out {path}: is a folder; name the session file to create, e.g. {path / 'session.h5'}")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the writer creates the folders below it
    if not existing.is_dir():
        raise ValueError(f"--out {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path}: cannot create files in {existing} (read-only or no permission)")


def run(args: argparse.Namespace) -> int:
    """Validate everything, run the loop, then write the best image(s) and trajectory plot."""
    if args.resume is not None:
        return _resume(args)
    if args.protocol is None or args.out is None:
        raise ValueError("rig run needs a protocol file and --out FILE.h5, or --resume FILE.h5")
    if args.trust_generator is not None or args.allow_remote_stream:
        raise ValueError("--trust-generator and --allow-remote-stream go with --resume (a protocol file given "
                         "directly is your own configuration: its generator factory and stream are used as written)")
    check_out(args.out)
    spec = load_protocol(args.protocol)
    neuron = resolve_neuron(spec, args.neuron, args.weights)
    device = pick_device(args.device)
    gui = _start_gui(args, spec)
    try:
        parts = assemble(spec, neuron, device=device, seed=args.seed, generations=args.generations,
                         display_kind=args.display, sim_link=args.sim_link, pace=args.pace_ms, gaze=args.gaze,
                         operator=Operator() if spec.behavior is not None else None,
                         calibration=str(args.calibration) if args.calibration is not None else None,
                         reward=args.reward)
    except BaseException:
        if gui is not None:
            gui.close()
        raise
    if gui is not None:
        gui.listen_to(parts.display)
        parts.provenance["openephys"] = gui.describe()
        args.gui = gui
    protocol = parts.protocol
    if spec.kind == "screening":
        return _run_screening(args, spec, parts)  # a fixed image set: no generator, optimizer or best image

    print(f"rig run: {spec.path} ({spec.name}), {protocol.generations} generations, "
          f"{protocol.threads} thread(s) x {protocol.optimizers[0].popsize} images "
          f"+ {len(protocol.reference_ids)} reference images, seed {parts.seed}, device {device}")
    runs = getattr(parts.source, "neuron", None)  # a simulated neuron says how its passes run
    runs_as = f"; {runs.precision} {runs.runtime}" if hasattr(runs, "runtime") else ""
    print(f"  neuron:    {', '.join(neuron.units)} (weights: {neuron.weights or 'model default'}{runs_as})")
    print(f"  generator: {type(parts.generator).__name__} {spec.generator}")
    if spec.generator["kind"] == "fourier":
        print("             (a weightless Fourier image space, used where no DeePSiM GAN weights are installed)")
    print(f"  optimizer: {spec.optimizer}")
    if spec.behavior is not None:
        b = spec.behavior
        print(f"  behavior:  trials of {b.stimuli_per_trial} stimuli, fixation window {b.window_deg:g}° at "
              f"{list(b.fixation_point_deg)}°, gaze {parts.record.gaze}, reward {parts.record.reward}")
    print(f"  session:   {args.out}")

    session = SessionWriter(
        args.out,
        protocol_text=spec.text,
        protocol_sha256=spec.sha256,
        protocol_path=str(spec.path),
        seed=parts.seed,
        provenance=parts.provenance,
        reference_ids=protocol.reference_ids,
        run_record=parts.record.to_json(),  # what `rig run --resume` needs to rebuild the same parts
    )
    return _loop_and_outputs(args, parts, session)


def _start_gui(args: argparse.Namespace, spec: ProtocolSpec) -> GuiSession | None:
    """With ``--openephys``: check the GUI and start its recording, named after the session, before anything is
    built (starting acquisition restarts the stream the recording then connects to)."""
    if getattr(args, "openephys", None) is None:
        return None
    gui = GuiSession(args.openephys, spec.openephys)
    name = (args.out or args.resume).with_suffix("").name
    try:
        gui.start(name)
    except BaseException:
        gui.close()
        raise
    print(f"rig run: Open Ephys GUI at {gui.control.url} recording as {gui.control.base_text!r}")
    return gui


def _resume(args: argparse.Namespace) -> int:
    """``--resume``: rebuild the session's parts from its file, catch up on its recorded blocks, carry on."""
    from rig.loop.replay import recorded_spec, resume_session

    if args.protocol is not None or args.out is not None or args.seed is not None or args.generations is not None \
            or args.weights or args.gaze or args.reward or args.calibration is not None:
        raise ValueError("--resume takes everything from the session file: give no protocol, --out, --seed, "
                         "--generations, --weights, --gaze, --reward or --calibration with it (--neuron only to confirm the recorded one)")
    device = pick_device(args.device)
    gui = _start_gui(args, recorded_spec(read_session(args.resume))) if getattr(args, "openephys", None) else None
    try:
        resumed = resume_session(args.resume, device, trust_generator=args.trust_generator,
                                 confirmed_neuron=args.neuron, allow_remote_stream=args.allow_remote_stream)
    except BaseException:
        if gui is not None:
            gui.close()
        raise
    if gui is not None:
        gui.listen_to(resumed.parts.display)
        args.gui = gui
    args.out = args.resume
    # The operator's extensions, kept in the file's controls, were added by resume_session.
    args.taken_controls = {c.get("request_id") for c in read_session(args.resume).controls}  # not taken twice
    screening = resumed.spec.kind == "screening"
    restored = "the start" if resumed.restored_after is None else f"the checkpoint after block {resumed.restored_after}"
    caught_up = (f"{resumed.replayed} recorded block(s) replayed in their seeded order (a screening has no "
                 f"checkpoints)" if screening else
                 f"optimizer restored from {restored} and {resumed.replayed} recorded block(s) replayed bit for bit")
    print(f"rig run: resuming {args.resume} ({resumed.spec.name}): {resumed.blocks_done} of "
          f"{resumed.parts.protocol.generations} blocks recorded; {caught_up}; device {device}")
    if screening:  # a fixed image set: its summary, not an evolution's best images and trajectory
        return _screening_loop(args, resumed.parts, resumed.session)
    return _loop_and_outputs(args, resumed.parts, resumed.session)


def _loop_and_outputs(args: argparse.Namespace, parts, session: SessionWriter) -> int:
    """Run the controller until the protocol is finished, then write the best image(s) and the plot."""
    protocol = parts.protocol

    def progress(report: BlockReport) -> None:
        if args.quiet:
            return
        stats = protocol.history[-1]
        best = max(s.max for s in stats)
        mean = float(np.mean([s.mean for s in stats]))
        print(f"gen {report.index + 1:4d}/{report.total}  best {best:10.4g}  mean {mean:10.4g}  "
              f"{report.seconds:6.2f} s/gen{report.trials}", flush=True)

    started = time.perf_counter()
    failed = _drive(args, parts, session, progress)
    if failed is not None:
        return failed
    elapsed = time.perf_counter() - started

    recorded = read_session(args.out)
    _say_if_stopped(recorded)
    stem = args.out.with_suffix("")
    from rig.analysis.outputs import write_session_outputs  # matplotlib: here, not in every command's start-up

    written = write_session_outputs(recorded, parts.generator, stem)
    for thread in range(protocol.threads):  # from the file: a resumed run's history starts mid-session
        channel = protocol.channels[thread]
        means = [b.thread_scores(thread, channel).mean() for b in recorded.blocks]
        print(f"thread {thread}: mean score {means[0]:.4g} -> {means[-1]:.4g}, "
              f"best {max(b.thread_scores(thread, channel).max() for b in recorded.blocks):.4g}")
    print(f"done: {len(recorded.blocks)} blocks in {elapsed:.1f} s; wrote {args.out}")
    for path in written:
        print(f"      {path}")
    sys.stdout.flush()
    return 0


def _say_if_stopped(recorded: RecordedSession) -> None:
    """After the loop: an operator's stop is said, with how to carry on (evolutions and screenings alike)."""
    if recorded.attrs.get("status") != "stopped":
        return
    by_viewer = bool(recorded.controls) and recorded.controls[-1]["kind"] == "stop"  # after a whole block
    kept = "" if by_viewer else "; the unfinished block's trials are kept"
    print(f"rig run: stopped by the operator after {len(recorded.blocks)} whole block(s){kept}. "
          f"Continue with: rig run --resume {recorded.path}")


def _drive(args: argparse.Namespace, parts, session: SessionWriter,
           progress: Callable[[BlockReport], None]) -> int | None:
    """Run the controller with the operator's keys, the viewer's requests and the GUI, then close every part.

    Returns None when the loop ended (finished or stopped), 1 when a rig part failed (the blocks before it
    are kept and the message says how to resume).
    """
    gui = getattr(args, "gui", None)

    def block_done(report: BlockReport) -> None:
        if gui is not None:
            gui.block(report.index, report.total)
        progress(report)

    runner = getattr(parts.display, "runner", None)
    keys = TerminalKeys(runner.operator).start() if runner is not None else None
    # Any viewer's requests (rig watch, here or started later) reach the loop through the file beside the session.
    controls = ControlChannel(args.out, session.session_id, operator=runner.operator if runner is not None else None,
                              say=None if args.quiet else print, taken=getattr(args, "taken_controls", set()))
    viewer = None
    if getattr(args, "dashboard", None) is not None:
        sys.stdout.flush()
        viewer = Viewer(args.out, args.dashboard)
        print(f"rig run: dashboard viewer in process {viewer.process.pid} (it prints its address when it is up)",
              flush=True)
    try:
        Controller(parts.protocol, parts.display, parts.source, session, block_done, controls=controls).run()
    except (RecordingError, IncompleteBlockError, RewardError, GazeError) as exc:
        # e.g. the stream fell silent, the reward line was unplugged; earlier blocks are kept
        print(f"rig run: error: {exc}", file=sys.stderr)
        print(f"rig run: every block before it is in {args.out}; continue with rig run --resume {args.out}",
              file=sys.stderr)
        return 1
    finally:
        controls.close()
        if viewer is not None:
            viewer.close()
        if keys is not None:
            keys.close()
        parts.display.close()
        parts.source.close()
        if gui is not None:
            gui.close()
            annotate(args.out, "openephys", gui.describe())  # the GUI's recording as it ended, to join them
    return None


def _run_screening(args: argparse.Namespace, spec: ProtocolSpec, parts: Assembly) -> int:
    """Show the natural image set, write every block, print each channel's score distribution."""
    protocol = parts.protocol
    print(f"rig run: {spec.path} ({spec.name}), screening {len(protocol.image_ids)} natural images "
          f"x {protocol.repeats} repeat(s) in {protocol.generations} block(s), seed {parts.seed}, device {parts.device}")
    print(f"  images:  {parts.provenance['screening']['folder']}")
    print(f"  neuron:  {', '.join(parts.source.channel_names)}")
    print(f"  session: {args.out}")
    session = SessionWriter(args.out, protocol_text=spec.text, protocol_sha256=spec.sha256,
                            protocol_path=str(spec.path), seed=parts.seed, provenance=parts.provenance,
                            reference_ids=list(protocol.image_ids), run_record=parts.record.to_json())
    return _screening_loop(args, parts, session)


def _screening_loop(args: argparse.Namespace, parts: Assembly, session: SessionWriter) -> int:
    """Show a screening's remaining blocks, then print each channel's score distribution over every block
    (a resumed screening's protocol has observed the recorded blocks again, so they count too)."""
    protocol = parts.protocol

    def progress(report: BlockReport) -> None:
        if not args.quiet:
            print(f"block {report.index + 1:4d}/{report.total}  {report.seconds:6.2f} s", flush=True)

    started = time.perf_counter()
    failed = _drive(args, parts, session, progress)
    if failed is not None:
        return failed
    _say_if_stopped(read_session(args.out))
    _, means = protocol.mean_responses()
    for channel, name in enumerate(parts.source.channel_names):
        scores = means[:, channel]
        print(f"{name}: natural-image responses mean {np.nanmean(scores):.4g}, "
              f"median {np.nanmedian(scores):.4g}, max {np.nanmax(scores):.4g} over {len(scores)} images")
    print(f"done: {protocol.blocks_done} blocks in {time.perf_counter() - started:.1f} s; wrote {args.out}")
    return 0
