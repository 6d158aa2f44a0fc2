"""Small session files written directly (no protocol, no loop), a simulated kill, and session comparison."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from helpers.protocols import tiny_protocol
from protocols.base import Block, Responses
from protocols.optimizers import build_optimizer
from rig.cli import main
from rig.display import Presentations
from rig.loop.controller import Showing
from rig.session import SessionWriter, read_session


def make_block(index: int, rng: np.random.Generator, threads: int = 2, popsize: int = 5, dim: int = 7,
               refs: int = 2) -> tuple[Block, Presentations, Responses]:
    """A block of random codes and scores with a shuffled presentation order, as Evolution makes them."""
    n = threads * popsize + refs
    order = rng.permutation(n)
    ids = [f"g{index:04d}/t{t}/c{i:03d}" for t in range(threads) for i in range(popsize)] + [f"ref/r{r}" for r in range(refs)]
    kinds = ["generated"] * (threads * popsize) + ["reference"] * refs
    thread_of = np.concatenate([np.repeat(np.arange(threads), popsize), np.full(refs, -1)])
    code_of = np.concatenate([np.tile(np.arange(popsize), threads), np.full(refs, -1)])
    block = Block(index=index, stimulus_ids=[ids[i] for i in order], kinds=[kinds[i] for i in order],
                  threads=thread_of[order], code_index=code_of[order], images=torch.zeros(n, 3, 1, 1),
                  codes=rng.standard_normal((threads, popsize, dim)))
    onsets = np.sort(rng.uniform(0, 10, n))
    presentations = Presentations(onsets, onsets + 0.1, rng.integers(0, 2, n), np.ones(n, bool), "test.clock")
    responses = Responses(rng.standard_normal((n, 2)), np.ones(n, bool), ["ch0", "ch1"])
    return block, presentations, responses


def new_writer(path: Path, provenance: dict | None = None) -> SessionWriter:
    return SessionWriter(path, protocol_text="[protocol]\nkind = 'evolution'\n", protocol_sha256="x",
                         protocol_path="p.toml", seed=5, provenance=provenance or {"thread_seeds": [1, 2]},
                         reference_ids=["r0", "r1"])


def write_blocks(writer: SessionWriter, count: int, seed: int = 0, checkpoint_at: tuple[int, ...] = ()) -> list:
    rng = np.random.default_rng(seed)
    written = []
    for index in range(count):
        block, presentations, responses = make_block(index, rng)
        checkpoint = {"thread0": bytes([index]) * 100} if index in checkpoint_at else {}
        showings = [Showing(np.arange(len(block)), presentations, responses)]
        writer.append_block(block, presentations, responses, checkpoint, {"propose": 0.5}, showings)
        written.append((block, presentations, responses))
    return written


def master_with(tmp_path: Path, edit) -> Path:
    path = tmp_path / "s.h5"
    writer = new_writer(path)
    write_blocks(writer, 2)
    writer.finish()
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


RESUME_PROTOCOL = tiny_protocol(name="resumed", generations=12, seed=4, threads=2, references=2,
                         units=("test_cnn:features.7:unit=5", "test_cnn:features.7:unit=9"),
                         extra='[neuron.response]\ngain = 20.0\noffset = 10.0\nnoise = "poisson"\n')


class Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing after it runs (tests/test_kill.py sends the real signal)."""


def kill_after_blocks(blocks: int, monkeypatch, run) -> None:
    """Call ``run()`` and stop it dead after ``blocks`` blocks are written: no finish, no merge."""
    append = SessionWriter.append_block

    def append_then_die(self, block, *args, **kwargs):
        if blocks > 0:  # 0: killed as the first block was about to land (the file holds none)
            append(self, block, *args, **kwargs)
        if block.index + 1 >= blocks:
            self.abandon()  # the kernel drops a killed process's lock
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(SessionWriter, "append_block", append_then_die)
        patch.setattr(SessionWriter, "finish", lambda self, status="complete": None)
        with pytest.raises(Killed):
            run()


def run_until_killed(folder: Path, name: str, blocks: int, monkeypatch) -> Path:
    """Run the protocol and stop dead after ``blocks`` blocks are written: no finish, no merge."""
    out = folder / name
    kill_after_blocks(blocks, monkeypatch, lambda: main(["run", str(folder / "p.toml"), "--out", str(out), "--quiet"]))
    return out


def assert_same_session(a: Path, b: Path) -> None:
    x, y = read_session(a), read_session(b)
    assert [blk.index for blk in x.blocks] == [blk.index for blk in y.blocks] == list(range(12))
    for bx, by in zip(x.blocks, y.blocks):
        np.testing.assert_array_equal(bx.codes, by.codes)  # bit for bit
        np.testing.assert_array_equal(bx.scores, by.scores)
        assert bx.stimulus_ids == by.stimulus_ids
    assert sorted(x.checkpoints) == sorted(y.checkpoints) == [9, 11]
    # The optimizers end in the same state: restored, they propose the same next generation.
    # (State bytes may differ in pycma's bookkeeping, e.g. its timer; what they propose may not.)
    dim = x.blocks[0].codes.shape[-1]
    for thread in ("thread0", "thread1"):
        proposals = []
        for session in (x, y):
            opt = build_optimizer(dim=dim, seed=0, **session.provenance["optimizer"])
            opt.set_state(session.checkpoint(11)[thread])
            proposals.append(opt.ask())
        np.testing.assert_array_equal(*proposals)
