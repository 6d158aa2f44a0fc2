"""Session writing overhead per block: the crash-safe journal against the in-place append it replaced.

Measures, in one run on this machine:
- ``in-place``: the schema-1 scheme (open the master in "a" mode, write the block group, close);
  the baseline, which a SIGKILL mid-write can leave unreadable;
- ``journal``: :meth:`SessionWriter.append_block`, one small HDF5 file per block, fsync'ed and
  renamed into place (what rig writes now);
- the same with an optimizer checkpoint of ``--checkpoint-mb`` in the block (every 10th block);
- ``merge``: :meth:`SessionWriter.finish`, copying the master and the journal into a new master.

Blocks are lab-sized by default: 40 codes of 4096 per thread plus 10 reference images.

    .venv/bin/python bench/session_write.py [--blocks 30] [--threads 1] [--dim 4096] [--checkpoint-mb 64]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from protocols.base import Block, Responses  # noqa: E402
from rig.loop.controller import Showing  # noqa: E402
from rig.display import Presentations  # noqa: E402
from rig.session import SessionWriter  # noqa: E402
from rig.session.writer import _write_block  # noqa: E402


def make_block(index: int, threads: int, popsize: int, dim: int, refs: int, rng: np.random.Generator):
    n = threads * popsize + refs
    block = Block(index=index, stimulus_ids=[f"s{i}" for i in range(n)],
                  kinds=["generated"] * (threads * popsize) + ["reference"] * refs,
                  threads=np.concatenate([np.repeat(np.arange(threads), popsize), np.full(refs, -1)]),
                  code_index=np.concatenate([np.tile(np.arange(popsize), threads), np.full(refs, -1)]),
                  images=torch.zeros(n, 3, 1, 1), codes=rng.standard_normal((threads, popsize, dim)))
    onsets = np.cumsum(rng.uniform(0.2, 0.25, n))
    presentations = Presentations(onsets, onsets + 0.1, np.zeros(n, np.int64), np.ones(n, bool), "bench")
    responses = Responses(rng.standard_normal((n, threads)), np.ones(n, bool), [f"ch{t}" for t in range(threads)])
    return block, presentations, responses


def writer(path: Path) -> SessionWriter:
    return SessionWriter(path, protocol_text="", protocol_sha256="", protocol_path="", seed=0,
                         provenance={}, reference_ids=[f"r{i}" for i in range(10)])


def in_place_append(path: Path, block, presentations, responses, checkpoint: dict[str, bytes]) -> None:
    """The schema-1 scheme: the master opened for writing, one group per block."""
    with h5py.File(path, "a") as f:
        g = f.require_group("blocks").create_group(f".partial-{block.index:06d}")
        _write_block(g, block, presentations, responses, {}, [Showing(np.arange(len(block)), presentations, responses)])
        for key, state in checkpoint.items():
            f.require_group("checkpoints").create_dataset(f"{block.index:06d}/{key}", data=np.frombuffer(state, np.uint8))
        f["blocks"].move(f".partial-{block.index:06d}", f"{block.index:06d}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--popsize", type=int, default=40)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--checkpoint-mb", type=float, default=64.0,
                        help="size of the checkpoint blob every 10th block (a full CMA-ES at n=4096 is ~270 MB)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    blocks = [make_block(i, args.threads, args.popsize, args.dim, 10, rng) for i in range(args.blocks)]
    blob = os.urandom(int(args.checkpoint_mb * 2**20))

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        folder = Path(folder)
        times: dict[str, list[float]] = {"in-place": [], "journal": [], "in-place+ckpt": [], "journal+ckpt": []}
        base, journal = folder / "inplace.h5", folder / "journal.h5"
        writer(base).finish()  # the same header, then appended in place
        session = writer(journal)
        for block, presentations, responses in blocks:
            due = (block.index + 1) % 10 == 0
            checkpoint = {"thread0": blob} if due else {}
            suffix = "+ckpt" if due else ""
            started = time.perf_counter()
            in_place_append(base, block, presentations, responses, checkpoint)
            times["in-place" + suffix].append(time.perf_counter() - started)
            started = time.perf_counter()
            session.append_block(block, presentations, responses, checkpoint, {},
                                 [Showing(np.arange(len(block)), presentations, responses)])
            times["journal" + suffix].append(time.perf_counter() - started)
        started = time.perf_counter()
        session.finish()
        merge = time.perf_counter() - started
        size_mb = journal.stat().st_size / 2**20

    print(f"session writing, {args.blocks} blocks of {args.threads} x {args.popsize} codes of {args.dim} "
          f"+ 10 references; checkpoint {args.checkpoint_mb:g} MB every 10th block; final file {size_mb:.1f} MB")
    median = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
    for kind, value in median.items():
        print(f"  {kind:14s} median {value * 1e3:9.2f} ms/block  (n={len(times[kind])})")
    print(f"  merge at finish     {merge * 1e3:9.2f} ms once")
    ratio = median["journal"] / median["in-place"]
    per_block = (sum(times["journal"]) + sum(times["journal+ckpt"]) + merge) / args.blocks
    print(f"  journal / in-place (plain blocks): {ratio:.2f}x")
    print(f"  journal total incl. checkpoints and merge: {per_block * 1e3:.1f} ms per block = "
          f"{per_block / 60 * 100:.3f}% of a 60 s in-vivo generation (DESIGN §4)")
    print(json.dumps({"median_ms": {k: round(v * 1e3, 3) for k, v in median.items()}, "merge_ms": round(merge * 1e3, 1),
                      "journal_over_inplace": round(ratio, 3), "per_block_ms": round(per_block * 1e3, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
