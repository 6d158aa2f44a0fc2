"""One in-silico dry run, in process, and what came out of it: shared by bench/fourier.py and bench/precision.py.

Not a bench itself: import it (``sys.path`` holds ``bench/`` when a bench script runs).
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.spec import ProtocolSpec, load_protocol  # noqa: E402
from rig.analysis.convergence import convergence  # noqa: E402
from rig.analysis.outputs import best_code  # noqa: E402
from rig.loop.assemble import Assembly, assemble, resolve_neuron  # noqa: E402
from rig.loop.controller import BlockReport, Controller  # noqa: E402
from rig.session import SessionWriter, read_session  # noqa: E402


@dataclass(frozen=True)
class Outcome:
    """What a dry run ended with: the best score, when its mean got half way, and its best image."""

    best_score: float
    #: First generation (0-based) whose min–max normalised mean score reached 0.5.
    first_at_half: int | None
    best_image: torch.Tensor
    seconds_per_generation: float


def spec_with(path: Path, generator: Mapping[str, Any] | None = None, **neuron: Any) -> ProtocolSpec:
    """The protocol at ``path`` with ``[generator]`` options and ``[neuron]`` fields replaced."""
    spec = load_protocol(path)
    if generator:
        spec = dataclasses.replace(spec, generator={**spec.generator, **generator})
    if neuron:
        spec = dataclasses.replace(spec, neuron=dataclasses.replace(spec.neuron, **neuron))
    return spec


def dry_run(spec: ProtocolSpec, *, generations: int, seed: int, device: torch.device,
            keep: Path | None = None, every: int = 0) -> Outcome:
    """Run ``spec`` for ``generations`` with ``seed`` through the controller; the outcome of thread 0.

    ``keep``: write the session there (readable if the run is stopped) instead of a temporary folder.
    ``every``: print the best score so far every that many generations.
    """
    parts: Assembly = assemble(spec, resolve_neuron(spec, None, None), device=device, seed=seed,
                               generations=generations)
    reports: list[BlockReport] = []

    def progress(report: BlockReport) -> None:
        reports.append(report)
        if every and (report.index + 1) % every == 0:
            best = max(s.max for stats in parts.protocol.history for s in stats)
            print(f"    generation {report.index + 1}: best so far {best:.4f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        out = (keep if keep is not None else Path(tmp)) / "dry-run.h5"
        session = SessionWriter(out, protocol_text=spec.text, protocol_sha256=spec.sha256,
                                protocol_path=str(spec.path), seed=parts.seed, provenance=parts.provenance,
                                reference_ids=parts.protocol.reference_ids, run_record=parts.record.to_json())
        started = time.perf_counter()
        Controller(parts.protocol, parts.display, parts.source, session, progress).run()
        elapsed = time.perf_counter() - started
        recorded = read_session(out)
        channel = parts.protocol.channels[0]
        code, score, _ = best_code(recorded, 0, channel)
        means = [b.thread_scores(0, channel).mean() for b in recorded.blocks]
    with torch.inference_mode():
        image = parts.generator(torch.as_tensor(np.asarray(code), device=device)[None])[0].cpu()
    return Outcome(best_score=score, first_at_half=convergence(means).reached[0.5], best_image=image,
                   seconds_per_generation=elapsed / generations)


def saturated_share(image: torch.Tensor, margin: float = 0.02) -> float:
    """Share of an image's values within ``margin`` of 0 or 1."""
    return float(((image <= margin) | (image >= 1 - margin)).float().mean())
