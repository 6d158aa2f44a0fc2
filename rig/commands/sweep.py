"""``rig sweep PROTOCOL --unit SPEC ... --seeds N --out DIR``: models × units × seeds as one command.

Units of one model evolve together as threads (one batched forward pass per
generation); each (model, seed) is one session file under DIR/sessions. Results
go to DIR/units.csv (one row per model × unit × seed), DIR/generations.csv,
DIR/models.csv (models and layers compared: how many units evolved, and
generations to 50% / 80% over those only; see rig/analysis/convergence.py)
and figures.
``--engine dask`` runs the jobs on a Dask distributed cluster: a local one with
--workers processes, or --scheduler ADDRESS.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rig.analysis.convergence import DEFAULT_MIN_GAIN
from rig.loop.sweep import (compare_models, format_comparison, plan_sweep, run_dask, run_local, write_comparison,
                            write_figures, write_tables)

HELP = "run models x units x seeds evolutions (locally or on Dask) into tidy tables and figures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig sweep``."""
    parser.add_argument("protocol", type=Path, help="evolution protocol file: generator, optimizer, references")
    parser.add_argument("--unit", action="append", required=True, metavar="SPEC",
                        help="unit spec; unit=A..B expands to a range, e.g. efficientnet_lite0:blocks.5.0:unit=0..9; "
                             "repeat for several models or layers")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per unit: the protocol's seed, +1, ... (default 3)")
    parser.add_argument("--generations", type=int, help="override the protocol's number of generations")
    parser.add_argument("--weights", help="model weights for every unit (default: each model's registered weights)")
    parser.add_argument("--out", type=Path, required=True, help="folder for sessions, tables and figures")
    parser.add_argument("--engine", choices=("local", "dask"), default="local")
    parser.add_argument("--workers", type=int, default=2, help="dask: worker processes of the local cluster")
    parser.add_argument("--scheduler", help="dask: address of a running scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--torch-threads", type=int, help="torch threads per job (default: torch's own choice)")
    parser.add_argument("--min-gain", type=float, default=DEFAULT_MIN_GAIN, metavar="K",
                        help="a unit evolved when its last generation's mean beats the first by more than K SDs of "
                             f"the reference images' responses; only those get a convergence (default {DEFAULT_MIN_GAIN:g})")


def run(args: argparse.Namespace) -> int:
    """Plan, run and summarise the sweep."""
    from protocols.spec import load_protocol

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    base_seed = load_protocol(args.protocol).seed
    if args.out.exists() and any(args.out.iterdir()):
        raise ValueError(f"--out {args.out} is not empty; choose a new folder (nothing was overwritten)")
    jobs = plan_sweep(args.protocol, args.unit, [base_seed + i for i in range(args.seeds)], args.out,
                      args.generations, args.weights, args.torch_threads, args.min_gain)
    where = "this process" if args.engine == "local" else (args.scheduler or f"a local Dask cluster of {args.workers} workers")
    n_units = sum(len(j.units) for j in jobs)
    print(f"rig sweep: {len(jobs)} sessions ({n_units} evolutions: "
          f"{', '.join(sorted({f'{j.model} x {len(j.units)} units' for j in jobs}))}, {args.seeds} seeds) on {where}")

    def progress(job, result) -> None:
        print(f"  {job.model} seed {job.seed}: {len(job.units)} units in {result['seconds']:.1f} s", flush=True)

    started = time.perf_counter()
    if args.engine == "local":
        results = run_local(jobs, progress)
    else:
        results = run_dask(jobs, args.scheduler, args.workers, progress)
    elapsed = time.perf_counter() - started
    units_csv, gens_csv = write_tables(results, args.out)
    written = write_figures(results, args.out)
    models = compare_models(results)
    written.append(write_comparison(models, args.out))
    print(format_comparison(models))
    print(f"done: {len(jobs)} sessions in {elapsed:.1f} s wall ({sum(r['seconds'] for r in results):.1f} s in jobs)")
    for path in (units_csv, gens_csv, *written):
        print(f"      {path}")
    return 0
