"""Sweeps: the study's design (models × units × seeds) as one command.

One job is one model at one seed: all of that model's units evolve together as
threads of one Evolution, so every generation is one batched forward pass.
Jobs run one after another on this machine (``run_local``) or on a Dask
distributed cluster (``run_dask``): a local cluster of worker processes, or a
lab's cluster by scheduler address. Dask does the scheduling; this module only
describes jobs and collects results into tidy tables and figures.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from rig.analysis.convergence import DEFAULT_MIN_GAIN, check_min_gain

#: ``unit=A..B`` in a unit spec stands for units A, A+1, ..., B.
_RANGE = re.compile(r"unit=(\d+)\.\.(\d+)")


@dataclass(frozen=True)
class SweepJob:
    """One evolution session of a sweep: ``units`` of one model, one seed. Picklable, for workers."""

    model: str
    units: tuple[str, ...]
    seed: int
    protocol_text: str
    protocol_path: str
    session: str
    generations: int | None = None
    weights: str | None = None
    torch_threads: int | None = None
    #: The gain, in SDs of the reference images' responses, a unit needs to count as evolved.
    min_gain: float = DEFAULT_MIN_GAIN


def expand_units(specs: Iterable[str]) -> list[str]:
    """Unit specs with ``unit=A..B`` ranges expanded, in order, without duplicates."""
    units: list[str] = []
    for spec in specs:
        match = _RANGE.search(spec)
        if match is None:
            expanded = [spec]
        else:
            low, high = int(match.group(1)), int(match.group(2))
            if high < low:
                raise ValueError(f"unit spec {spec!r}: range {low}..{high} is empty")
            expanded = [spec[:match.start()] + f"unit={u}" + spec[match.end():] for u in range(low, high + 1)]
        units += [u for u in expanded if u not in units]
    return units


def plan_sweep(protocol: str | Path, units: Sequence[str], seeds: Sequence[int], out: str | Path,
               generations: int | None = None, weights: str | None = None,
               torch_threads: int | None = None, min_gain: float = DEFAULT_MIN_GAIN) -> list[SweepJob]:
    """One job per (model, seed); every unit spec is parsed and checked here, before anything runs.

    ``min_gain`` is the gain (in SDs of the reference images' responses) a unit needs to count as evolved.
    """
    from protocols.spec import load_protocol
    from simulators.units import parse_unit

    spec = load_protocol(protocol)
    if spec.kind != "evolution":
        raise ValueError(f"{protocol}: a sweep runs evolution protocols, not kind = {spec.kind!r}")
    units = expand_units(units)
    if not units:
        raise ValueError("a sweep needs at least one --unit")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    min_gain = check_min_gain(min_gain, "--min-gain")  # the reference photos are the natural images here
    if spec.references.count < 2:
        raise ValueError(f"{protocol}: [references] count = {spec.references.count}; a sweep judges whether a unit "
                         f"evolved against the spread of the reference images' responses, so it needs at least 2")
    by_model: dict[str, list[str]] = {}
    for unit in units:
        by_model.setdefault(parse_unit(unit).model, []).append(unit)
    sessions = Path(out) / "sessions"
    return [SweepJob(model, tuple(model_units), seed, spec.text, str(spec.path),
                     str(sessions / f"{model}_seed{seed}.h5"), generations, weights, torch_threads, min_gain)
            for model, model_units in by_model.items() for seed in seeds]


def run_job(job: SweepJob) -> dict:
    """Run one job's evolution into its session file; return its tidy rows. Runs in any worker process."""
    import torch

    from protocols.spec import parse_protocol
    from rig.loop.assemble import assemble, resolve_neuron
    from rig.loop.controller import Controller
    from rig.session import SessionWriter, read_session

    if job.torch_threads:
        torch.set_num_threads(job.torch_threads)  # several jobs per machine must not oversubscribe its cores
    started = time.perf_counter()
    spec = dataclasses.replace(parse_protocol(job.protocol_text, job.protocol_path), threads=len(job.units))
    parts = assemble(spec, resolve_neuron(spec, job.units, job.weights), device=torch.device("cpu"),
                     seed=job.seed, generations=job.generations)
    session = SessionWriter(job.session, protocol_text=spec.text, protocol_sha256=spec.sha256,
                            protocol_path=str(spec.path), seed=parts.seed,
                            provenance={**parts.provenance, "sweep": dataclasses.asdict(job)},
                            reference_ids=parts.protocol.reference_ids,
                            run_record=dataclasses.replace(parts.record, sweep={
                                "model": job.model, "torch_threads": job.torch_threads}).to_json())
    Controller(parts.protocol, parts.display, parts.source, session).run()
    seconds = time.perf_counter() - started
    return {**summarise_session(read_session(job.session), job, seconds), "pid": os.getpid()}


def summarise_session(session, job: SweepJob, seconds: float) -> dict:
    """Per-unit result rows and per-generation rows of a finished sweep session.

    A unit's convergence (``gen_50``, ``gen_80``) is given only if it evolved (rig/analysis/convergence.py:
    its last generation's mean beat the first by ``job.min_gain`` SDs of the reference images' responses);
    ``evolved`` says which.
    """
    from rig.analysis.convergence import evolution_gain, judged_convergence, natural_spread
    from rig.analysis.prototype import prototype_vs_natural
    from rig.analysis.sources import best_prototype_score, natural_scores, session_threads, session_trajectory
    from simulators.models import get_cfg
    from simulators.units import parse_unit

    family = get_cfg(job.model).family
    units, generations = [], []
    for t in session_threads(session):
        trajectory = session_trajectory(session, t.thread)
        best, best_generation = best_prototype_score(session, t.thread)
        natural = natural_scores(session, t.channel)[1]
        gain = evolution_gain(trajectory.mean, natural_spread(natural), "natural_sd", job.min_gain)
        try:
            judged = judged_convergence(trajectory.mean, gain, trajectory.generations)
        except ValueError:  # a flat trajectory never converges
            judged = None
        reached = judged.reached if judged is not None else {0.5: None, 0.8: None}
        comparison = prototype_vs_natural(best, natural)
        units.append({
            "model": job.model, "family": family, "layer": parse_unit(t.name).layer, "unit": t.name,
            "seed": job.seed, "generations": len(trajectory.mean), "first_mean": trajectory.mean[0], "final_mean": trajectory.mean[-1],
            "gain_in_natural_sd": gain.in_scale, "evolved": gain.evolved,
            "best_score": best, "best_generation": best_generation,
            "gen_50": reached[0.5], "gen_80": reached[0.8],
            "natural_mean": comparison.natural_mean, "natural_best": comparison.natural_best,
            "natural_sd": comparison.natural_sd, "z_over_natural": comparison.z_over_natural,
            "percent_over_natural_mean": comparison.percent_over_mean, "ratio_to_best_natural": comparison.ratio_to_best,
            "natural_percentile": comparison.percentile, "session": job.session, "job_seconds": seconds,
        })
        for g, mean, maximum in zip(trajectory.generations, trajectory.mean, trajectory.max):
            generations.append({"model": job.model, "family": family, "layer": parse_unit(t.name).layer,
                                "unit": t.name, "seed": job.seed,
                                "generation": int(g), "mean": mean, "max": maximum})
    return {"units": units, "generations": generations, "seconds": seconds}


def run_local(jobs: Sequence[SweepJob], progress: Callable[[SweepJob, dict], None] | None = None) -> list[dict]:
    """Run the jobs one after another in this process."""
    results = []
    for job in jobs:
        results.append(run_job(job))
        if progress:
            progress(job, results[-1])
    return results


def run_dask(jobs: Sequence[SweepJob], address: str | None = None, workers: int = 2,
             progress: Callable[[SweepJob, dict], None] | None = None) -> list[dict]:
    """Run the jobs on a Dask cluster: ``address`` of a running scheduler, else a local cluster of
    ``workers`` single-threaded worker processes. Results come back in job order."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if address is None:
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with Client(cluster if cluster is not None else address) as client:
            futures = client.map(run_job, list(jobs), pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            results: list[dict | None] = [None] * len(jobs)
            for future in as_completed(futures):
                i = index[future.key]
                results[i] = future.result()  # re-raises a job's exception here, with its traceback
                if progress:
                    progress(jobs[i], results[i])
            return results
    finally:
        if cluster is not None:
            cluster.close()


def write_tables(results: Sequence[dict], out: str | Path) -> tuple[Path, Path]:
    """``units.csv`` (one row per model × unit × seed) and ``generations.csv`` (one row per generation too)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, name in (("units", "units.csv"), ("generations", "generations.csv")):
        rows = [row for r in results for row in r[key]]
        path = out / name
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        paths.append(path)
    return paths[0], paths[1]


def compare_models(results: Sequence[dict]) -> list[dict]:
    """One row per model and layer: evolutions, how many evolved and did not, the medians over those that
    evolved of generations to 50% / 80%, and the scale-free prototype measures over all of them."""
    units = [row for r in results for row in r["units"]]
    rows = []
    for model, layer in dict.fromkeys((row["model"], row["layer"]) for row in units):
        mine = [row for row in units if (row["model"], row["layer"]) == (model, layer)]
        evolved = [row for row in mine if row["evolved"]]

        def median(key: str, rows: list[dict]) -> float:
            values = [row[key] for row in rows if row[key] is not None and np.isfinite(row[key])]
            return float(np.median(values)) if values else float("nan")

        rows.append({"model": model, "layer": layer, "family": mine[0]["family"], "evolutions": len(mine),
                     "evolved": len(evolved), "did_not_evolve": len(mine) - len(evolved),
                     "median_gen_50_evolved": median("gen_50", evolved),
                     "median_gen_80_evolved": median("gen_80", evolved),
                     "median_gain_in_natural_sd": median("gain_in_natural_sd", mine),
                     "median_z_over_natural": median("z_over_natural", mine),
                     "median_natural_percentile": median("natural_percentile", mine)})
    return rows


def write_comparison(rows: Sequence[dict], out: str | Path) -> Path:
    """``models.csv``: :func:`compare_models`' rows."""
    path = Path(out) / "models.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_comparison(rows: Sequence[dict]) -> str:
    """The model comparison as aligned text, for the terminal."""
    width = max(len(f"{r['model']} {r['layer']}") for r in rows)
    lines = [f"{'model and layer':<{width}} {'evolved':>9} {'gen 50% (median)':>17} {'gen 80%':>8} "
             f"{'z over natural':>15} {'percentile':>11}"]
    for r in rows:
        lines.append(f"{r['model'] + ' ' + r['layer']:<{width}} {r['evolved']:>4} of {r['evolutions']:<2} "
                     f"{r['median_gen_50_evolved']:>17.1f} {r['median_gen_80_evolved']:>8.1f} "
                     f"{r['median_z_over_natural']:>15.2f} {r['median_natural_percentile']:>11.0f}")
    lines.append("generations to 50% / 80% over the units that evolved only (gain > min_gain SDs of the reference "
                 "images' responses); z = (prototype - natural mean) / natural SD")
    return "\n".join(lines)


def write_figures(results: Sequence[dict], out: str | Path) -> list[Path]:
    """Convergence curves per model and layer (mean ± sd of the normalised mean, evolved units only, the rest
    counted as "did not evolve"), and per model and layer the distributions of generations to 50% / 80%
    (evolved units) and of the prototype against natural images (all units)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rig.analysis.convergence import min_max_normalise

    out = Path(out)
    units = [row for r in results for row in r["units"]]
    gens = [row for r in results for row in r["generations"]]

    def group(row: dict) -> str:  # one curve and one box per model and layer
        return f"{row['model']} {row['layer']}"

    models = list(dict.fromkeys(group(row) for row in units))
    evolved = {(row["model"], row["unit"], row["seed"]) for row in units if row["evolved"]}
    flat = {m: sum(1 for row in units if group(row) == m and not row["evolved"]) for m in models}

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for model in models:
        curves = {}
        for row in gens:
            if group(row) == model and (row["model"], row["unit"], row["seed"]) in evolved:
                curves.setdefault((row["unit"], row["seed"]), []).append(row["mean"])
        if not curves:
            ax.plot([], [], " ", label=f"{model}: none of {flat[model]} evolved")
            continue
        curves_array = np.array([min_max_normalise(c) for c in curves.values()])
        mean, sd = curves_array.mean(0), curves_array.std(0)
        x = np.arange(curves_array.shape[1])
        ax.plot(x, mean, label=f"{model} ({len(curves)} evolved; {flat[model]} did not evolve)")
        ax.fill_between(x, mean - sd, mean + sd, alpha=0.2)
    for threshold in (0.5, 0.8):
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("generation")
    ax.set_ylabel("normalised mean score (mean ± sd)")
    ax.set_title("convergence by model and layer (units that evolved)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    conv = out / "convergence.png"
    fig.savefig(conv)
    plt.close(fig)

    panels = [("gen_50", "first generation at 50%\n(evolved units)"), ("gen_80", "first generation at 80%\n(evolved units)"),
              ("z_over_natural", "(prototype - natural mean)\n/ natural SD"),
              ("natural_percentile", "prototype percentile\namong natural images")]
    fig, axes = plt.subplots(1, len(panels), figsize=((1.0 + 0.75 * len(models)) * len(panels), 4.0), dpi=110)
    rng = np.random.default_rng(0)  # jitter only
    for ax, (key, label) in zip(axes, panels):
        data = [[row[key] for row in units if group(row) == m and row[key] is not None
                 and np.isfinite(row[key])] for m in models]
        ax.boxplot([d if d else [np.nan] for d in data], showfliers=False)
        for i, d in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=10, alpha=0.6)
        names = [m.replace(" ", "\n") + (f"\n({flat[m]} did not evolve)" if key.startswith("gen_") else "")
                 for m in models]
        ax.set_xticks(range(1, len(models) + 1), names, fontsize=6)
        ax.set_title(label, fontsize=8)
        if key == "z_over_natural":
            ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
    fig.tight_layout()
    comparison = out / "comparison.png"
    fig.savefig(comparison)
    plt.close(fig)
    return [conv, comparison]
