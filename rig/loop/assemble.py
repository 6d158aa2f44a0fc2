"""Turn a validated protocol file plus a neuron choice into the parts of a running session.

Everything that can be wrong (options, weights, unit names, devices) fails
here, before the first block is shown.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from protocols.evolution import Evolution
from protocols.generators import build_generator
from protocols.generators.base import Generator
from protocols.generators.fourier import spelled_out
from protocols.optimizers import build_optimizer, optimizer_values
from protocols.session_images import SESSIONS_SOURCE
from protocols.spec import ProtocolError, ProtocolSpec
from rig.display import Display, build_display
from rig.loop.memory import check_block_fits, estimate_block
from rig.loop.run_record import RunRecord, resolved_generator
from rig.behavior.choice import gate_display, gaze_table, reward_table
from rig.recording.choice import attach as attach_recording
from rig.recording.choice import pace_headless, recording_source
from rig.recording.timing_overlap import timing_warnings
from rig.sources import ResponseSource
from rig.sources.simulated import SimulatedResponses
from simulators.natural_images import foolbox_imagenet_dir, load_foolbox_imagenet, load_image_folder
from simulators.twin import PREFIX as TWIN_PREFIX
from simulators.twin import build_neuron  # simulated model units, or a fitted twin (twin:FILE)
from simulators.response_model import build_response_model
from simulators.runtime import default_runtime

BUNDLED_REFERENCES = "foolbox-imagenet"
# Spawn key for the response model's stream; thread seeds use SeedSequence(seed).spawn(...) keys 0, 1, ...
_RESPONSE_SPAWN_KEY = 2**31 - 1


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` picks the GPU when one is present, else the CPU; anything else is taken as asked."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"--device {requested!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {requested}: no CUDA GPU is available on this machine; use auto or cpu")
    return device


@dataclass
class NeuronChoice:
    """Which neuron a session runs against: simulated units of one model, for now."""

    units: tuple[str, ...]
    weights: str | None = None
    #: The protocol's ``[neuron.response]`` table; None scores raw activations.
    response: dict[str, Any] | None = None
    #: The protocol's ``[neuron] max_batch``; None: the device's default.
    max_batch: int | None = None
    #: The protocol's ``[neuron] precision`` and ``runtime`` (simulators/runtime.py); runtime None: the
    #: default for the neuron built (:func:`_run_as`), which is what the run record keeps.
    precision: str = "fp32"
    runtime: str | None = None


@dataclass
class Assembly:
    """The parts of a session, built and validated."""

    protocol: Evolution
    generator: Generator
    display: Display
    source: ResponseSource
    device: torch.device
    seed: int
    provenance: dict[str, Any] = field(default_factory=dict)
    #: The run as built (protocol as resolved plus every override), for the session file.
    record: RunRecord | None = None


def response_seed(seed: int) -> int:
    """The response model's seed derived from the session seed (independent of the thread seeds)."""
    return int(np.random.SeedSequence(seed, spawn_key=(_RESPONSE_SPAWN_KEY,)).generate_state(1)[0])


def resolve_neuron(spec: ProtocolSpec, units: Sequence[str] | None, weights: str | None) -> NeuronChoice:
    """The command line's neuron if given, else the protocol file's suggestion."""
    # How simulated units fire, and how many images a pass takes, stay when --neuron swaps the units.
    response = spec.neuron.response if spec.neuron is not None else None
    max_batch = spec.neuron.max_batch if spec.neuron is not None else None
    how = {"precision": spec.neuron.precision, "runtime": spec.neuron.runtime} if spec.neuron is not None else {}
    if units:
        return NeuronChoice(_anchored(units, Path.cwd()), weights, response, max_batch, **how)
    if spec.neuron is None:
        raise ProtocolError(f"{spec.path}: no [neuron] table and no --neuron given; name at least one unit")
    return NeuronChoice(_anchored(spec.neuron.units, Path(spec.path).parent),
                        weights if weights is not None else spec.neuron.weights, response, max_batch, **how)


def _anchored(units: Sequence[str], folder: Path) -> tuple[str, ...]:
    """Units with each twin file as an absolute path (a relative one is taken from ``folder``: the working
    directory for ``--neuron``, the protocol's folder for its ``[neuron]``), so the run record resumes anywhere."""
    return tuple(TWIN_PREFIX + str((folder / Path(u[len(TWIN_PREFIX):]).expanduser()).resolve())
                 if u.startswith(TWIN_PREFIX) and u[len(TWIN_PREFIX):].strip() else u for u in units)


def thread_channels(threads: int, channels: int) -> list[int]:
    """Thread t follows channel t; with one channel, every thread follows it (repeat evolutions).

    Channels beyond the threads are recorded alongside, for analysis and screening: a lab evolving on one
    channel of a 32- or 96-channel array keeps every other channel's responses too.
    """
    if channels == 1:
        return [0] * threads
    if channels >= threads:
        return list(range(threads))
    raise ValueError(f"{threads} threads need 1 neuron channel or at least {threads} (thread t follows channel t), "
                     f"got {channels}")


def _load_images(spec: ProtocolSpec, table: str, source: str, count: int,
                 image_size: int) -> tuple[torch.Tensor, list[str], Path]:
    """``count`` images (0: all) from the bundled photos or a folder relative to the protocol file."""
    if source == BUNDLED_REFERENCES:
        folder = foolbox_imagenet_dir()
        images, ids, _ = load_foolbox_imagenet(image_size)
    else:
        folder = (spec.path.parent / source).expanduser().resolve()
        if not folder.is_dir():
            raise ProtocolError(f"{spec.path}: [{table}] source: {folder} is not a folder of images")
        try:
            images, ids = load_image_folder(folder, image_size)
        except (FileNotFoundError, ValueError) as exc:
            raise ProtocolError(f"{spec.path}: [{table}] source = {source!r}: {exc}") from None
    if count > len(ids):
        raise ProtocolError(f"{spec.path}: [{table}] count = {count} but {folder} holds only {len(ids)} images")
    count = count or len(ids)
    return images[:count], ids[:count], folder


def load_references(spec: ProtocolSpec, image_size: int, device: torch.device) -> tuple[torch.Tensor, list[str]]:
    """The protocol's reference images at the generator's size, and their identities."""
    if spec.references.count == 0:
        return torch.zeros(0, 3, image_size, image_size, device=device), []
    images, ids, _ = _load_images(spec, "references", spec.references.source, spec.references.count, image_size)
    return images.to(device), ids


def _response_model(spec: ProtocolSpec, neuron: NeuronChoice, seed: int):
    """The ``[neuron.response]`` model, or None; without its own seed it follows the session seed."""
    try:
        return build_response_model(neuron.response, default_seed=response_seed(seed))
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"{spec.path}: [neuron.response]: {exc}") from None


def assemble(spec: ProtocolSpec, neuron: NeuronChoice, *, device: torch.device | str, seed: int | None = None,
             generations: int | None = None, display_kind: str = "headless", sim_link: str | None = None,
             pace: tuple[float, float] | None = None, gaze: str | Mapping[str, Any] | None = None,
             operator: Any = None, first_trial: int = 0, clock_start: float = 0.0,
             calibration: str | None = None, reward: str | Mapping[str, Any] | None = None,
             gaze_offset: tuple[float, float] | None = None) -> Assembly:
    """Build generator, optimizers, references, display and response source for ``spec``.

    ``display_kind`` is ``headless`` or ``psychopy`` (laid out by the protocol's ``[display]`` table).
    A neuron ``zmq://HOST:PORT`` is a recording (rig/recording/choice.py): ``sim_link`` then names
    ``rig sim-rig``'s side channel, and ``pace`` (on_s, off_s) paces a headless display.
    With a ``[behavior]`` table the display runs blocks as trials (rig/behavior/choice.py): ``gaze``
    (``--gaze KIND``, or a resumed session's recorded table) replaces the ``[gaze]`` source, ``calibration``
    (``--calibration CAL.toml``) its calibration, ``reward`` (``--reward KIND``) the ``[reward]`` kind, ``operator`` takes the experimenter's requests, and
    ``first_trial`` numbers the trials on from a resumed session's, and its simulated frame clock carries on
    from ``clock_start``, its gaze source's drift correction from ``gaze_offset`` (rig/loop/rebuild.py).
    """
    device = torch.device(device)
    if spec.kind == "screening":
        return assemble_screening(spec, neuron, device=device, seed=seed, display_kind=display_kind, gaze=gaze,
                                  operator=operator, reward=reward, sim_link=sim_link, pace=pace,
                                  calibration=calibration, first_trial=first_trial, clock_start=clock_start,
                                  gaze_offset=gaze_offset)
    seed = spec.seed if seed is None else seed
    generations = spec.generations if generations is None else generations
    if generations < 1:
        raise ValueError(f"--generations must be >= 1, got {generations}")
    generator_options = spelled_out(resolved_generator(spec))  # recorded with its defaults of today
    try:
        generator = build_generator(**generator_options).to(device).eval()
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"{spec.path}: [generator]: {exc}") from None

    recorded, simulated, neuron = _neuron_or_recording(spec, neuron, device)
    check_block_fits(estimate_block(
        threads=spec.threads, popsize=_popsize(spec), code_dim=generator.code_dim, image_size=generator.image_size,
        references=spec.references.count, optimizer=spec.optimizer,
        model_input=simulated.cfg.input_size if simulated else None,
        max_batch=simulated.max_batch if simulated else None), device, str(spec.path))

    # One independent, recorded seed per thread, derived from the session seed.
    thread_seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(spec.threads)]
    try:
        optimizers = [build_optimizer(dim=generator.code_dim, seed=s, **spec.optimizer) for s in thread_seeds]
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"{spec.path}: [optimizer]: {exc}") from None
    channels = thread_channels(spec.threads, len((recorded or simulated).channel_names))
    references, reference_ids = load_references(spec, generator.image_size, device)
    protocol = Evolution(
        generator=generator,
        optimizers=optimizers,
        channels=channels,
        generations=generations,
        references=references,
        reference_ids=reference_ids,
        seed=seed,
        name=spec.name,
        repeat_fraction=spec.repeat_fraction,
    )
    path = _response_path(spec, neuron, recorded, simulated, seed=seed, display_kind=display_kind,
                          sim_link=sim_link, pace=pace, gaze=gaze, calibration=calibration, operator=operator,
                          reward=reward, first_trial=first_trial, clock_start=clock_start,
                          gaze_offset=gaze_offset)
    display, source, attached = path.display, path.source, path.attached
    provenance = {
        "neuron": source.describe(),
        "display": display.describe(),
        "generator": dict(spec.generator),
        "optimizer": dict(spec.optimizer),
        "thread_seeds": thread_seeds,
        "thread_channels": channels,
        "generations": generations,
        "device": str(device),
        "references": {"source": spec.references.source, "count": len(reference_ids)},
    }
    if attached is not None:
        provenance["recording"] = attached
    record = _record(spec, neuron, seed=seed, generations=generations, threads=spec.threads, device=device,
                     display_kind=display_kind, sim_link=sim_link, pace=pace, generator=generator_options,
                     recording=attached, gaze=path.gaze, reward=path.reward)
    return Assembly(protocol, generator, display, source, device, seed, provenance, record)


@dataclass
class ResponsePath:
    """What shows the images and where their responses come from: the same for every kind of protocol."""

    display: Display
    source: ResponseSource
    attached: dict | None  # a recording's provenance (None for a simulated neuron)
    gaze: dict | None  # the [gaze] and [reward] tables built (None without [behavior])
    reward: dict | None


def _neuron_or_recording(spec: ProtocolSpec, neuron: NeuronChoice,
                         device: torch.device) -> tuple[Any, Any, NeuronChoice]:
    """``(recording, None, choice)`` for a neuron URL (zmq://, lsl://), else ``(None, simulated neuron, choice)``;
    ``choice`` is ``neuron`` with the runtime it runs in filled in."""
    recorded = recording_source(spec, neuron.units)
    if recorded is not None:  # no forward pass: recorded as the fp32 eager every record before runtimes reads as
        return recorded, None, dataclasses.replace(neuron, runtime=neuron.runtime or "eager")
    simulated = build_neuron(neuron.units, weights=neuron.weights, device=device, max_batch=neuron.max_batch)
    return None, simulated, _run_as(spec, simulated, neuron, device)


def _response_path(spec: ProtocolSpec, neuron: NeuronChoice, recorded: Any, simulated: Any, *, seed: int,
                   display_kind: str, sim_link: str | None, pace: tuple[float, float] | None,
                   gaze: str | Mapping[str, Any] | None, calibration: str | None, operator: Any,
                   reward: str | Mapping[str, Any] | None, first_trial: int = 0,
                   clock_start: float = 0.0, gaze_offset: tuple[float, float] | None = None) -> ResponsePath:
    """The display (run as trials under ``[behavior]``) wired to the recording, or the simulated neuron.

    Evolutions and screenings share it, so a protocol shown to a recorded neuron is shown the same way
    whatever kind it is (identical protocols in silico and in vivo).
    """
    display = shown = build_display(display_kind, spec.display)
    gaze_built = reward_built = None
    if spec.behavior is not None:
        reward_built = reward_table(spec, reward)
        if recorded:
            pace_headless(display, pace)  # trials in real time in front of a recording, before frames are made
        gaze_built = gaze_table(spec, gaze, recorded is not None, calibration)
        display = gate_display(display, spec, gaze=gaze_built, seed=seed, operator=operator,
                               first_trial=first_trial, recording=recorded, clock_start=clock_start,
                               reward=reward_built, gaze_offset=gaze_offset)
    if recorded is not None:
        attached = attach_recording(recorded, display, sim_link=sim_link, pace=pace)
        # Onsets too close for the scoring windows are sometimes meant: say so once, and keep it, never refuse.
        attached["timing_warnings"] = timing_warnings(spec, shown, pace, recorded.spec)
        for warning in attached["timing_warnings"]:
            print(f"rig run: warning: {warning}", file=sys.stderr)
        return ResponsePath(display, recorded, attached, gaze_built, reward_built)
    source = SimulatedResponses(simulated, simulated.channel_names, simulated.describe(),
                                _response_model(spec, neuron, seed))
    return ResponsePath(display, source, None, gaze_built, reward_built)


def _record(spec: ProtocolSpec, neuron: NeuronChoice, **built: Any) -> RunRecord:
    """The run record of what was built: the protocol as resolved plus every override."""
    pace = built.pop("pace")
    return RunRecord(kind=spec.kind, protocol_path=str(spec.path), units=tuple(neuron.units),
                     weights=neuron.weights, max_batch=neuron.max_batch, precision=neuron.precision,
                     runtime=neuron.runtime,
                     response=dict(neuron.response) if neuron.response is not None else None,
                     seed=int(built.pop("seed")), device=str(built.pop("device")),
                     display=built.pop("display_kind"), pace_s=tuple(pace) if pace is not None else None, **built)


def _run_as(spec: ProtocolSpec, simulated: Any, neuron: NeuronChoice, device: torch.device) -> NeuronChoice:
    """Run the neuron's forward passes in the chosen precision and runtime; ``neuron`` with the runtime it runs.

    With no ``[neuron] runtime`` a model's units take :func:`~simulators.runtime.default_runtime`; a neuron
    that is not a model's units (a twin) runs eager, as it always has.
    """
    runs_as = hasattr(simulated, "run_as")
    runtime = neuron.runtime or (default_runtime(neuron.precision, device) if runs_as else "eager")
    if (neuron.precision, runtime) == ("fp32", "eager"):  # how every neuron is built
        return dataclasses.replace(neuron, runtime=runtime)
    if not runs_as:
        raise ProtocolError(f"{spec.path}: [neuron] precision = {neuron.precision!r}, runtime = {runtime!r}: "
                            f"only model units run in another precision or runtime, not {type(simulated).__name__}")
    try:
        simulated.run_as(neuron.precision, runtime)
    except ValueError as exc:  # check_choice names the [neuron] field
        raise ProtocolError(f"{spec.path}: {exc}") from None
    return dataclasses.replace(neuron, runtime=runtime)


def _popsize(spec: ProtocolSpec) -> int:
    """The ``[optimizer]`` popsize, checked with the other options before anything is built."""
    try:
        return optimizer_values(**spec.optimizer)["popsize"]
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"{spec.path}: [optimizer]: {exc}") from None


def load_natural_set(spec: ProtocolSpec, device: torch.device) -> tuple[torch.Tensor, list[str], str]:
    """A screening protocol's images, their ids and the folder they came from."""
    screening = spec.screening
    images, ids, folder = _load_images(spec, "screening", screening.source, screening.count, screening.image_size)
    return images.to(device), ids, str(folder)


def assemble_screening(spec: ProtocolSpec, neuron: NeuronChoice, *, device: torch.device,
                       seed: int | None = None, display_kind: str = "headless",
                       gaze: str | Mapping[str, Any] | None = None, operator: Any = None,
                       reward: str | Mapping[str, Any] | None = None, sim_link: str | None = None,
                       pace: tuple[float, float] | None = None, calibration: str | None = None,
                       first_trial: int = 0, clock_start: float = 0.0,
                       gaze_offset: tuple[float, float] | None = None) -> Assembly:
    """Build a Screening protocol (no generator: ``Assembly.generator`` is None) and its response source:
    a simulated neuron, or a recording (``zmq://``, ``lsl://``) exactly as an evolution's (see :func:`assemble`)."""
    from protocols.screening import Screening  # here, not at the top: only screening files need it

    seed = spec.seed if seed is None else seed
    taken = None
    if spec.screening.source == SESSIONS_SOURCE:  # images taken from earlier sessions (rig/loop/session_images.py)
        from rig.loop.session_images import take_images

        taken = take_images(spec)
        images, ids, folder = taken.images.to(device), taken.ids, SESSIONS_SOURCE
    else:
        images, ids, folder = load_natural_set(spec, device)
    protocol = Screening(images=images, image_ids=ids, seed=seed, block_size=spec.screening.block_size,
                         repeats=spec.screening.repeats, name=spec.name)
    recorded, simulated, neuron = _neuron_or_recording(spec, neuron, device)
    # The same trials as an evolution's: screening data is gated (and recorded) the same way.
    path = _response_path(spec, neuron, recorded, simulated, seed=seed, display_kind=display_kind,
                          sim_link=sim_link, pace=pace, gaze=gaze, calibration=calibration, operator=operator,
                          reward=reward, first_trial=first_trial, clock_start=clock_start,
                          gaze_offset=gaze_offset)
    display, source = path.display, path.source
    provenance = {
        "kind": "screening",
        "neuron": source.describe(),
        "display": display.describe(),
        "screening": {**dataclasses.asdict(spec.screening), "folder": folder, "count": len(ids),
                      **({"taken": taken.origins} if taken is not None else {})},
        "generations": protocol.generations,
        "device": str(device),
    }
    if path.attached is not None:
        provenance["recording"] = path.attached
    record = _record(spec, neuron, seed=seed, generations=protocol.generations, threads=0, device=device,
                     display_kind=display_kind, sim_link=sim_link, pace=pace, generator={},
                     recording=path.attached, gaze=path.gaze, reward=path.reward)
    return Assembly(protocol, None, display, source, device, seed, provenance, record)
