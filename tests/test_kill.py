"""SIGKILL at random moments, including in the middle of writes: every file opens, every block is intact,
and resuming ends exactly like a session that was never killed.

Sessions run in real child processes (a forkserver that has imported torch once, so each child starts in
milliseconds) and are killed with a real SIGKILL. Children report when they start and finish writing a
block or merging the journal, so kills can be aimed into those windows and classified afterwards.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from rig.session import read_session
from helpers.protocols import tiny_protocol

# 12 kills keep `make test` within its budget; a longer soak: RIG_KILL_SOAK=100 pytest tests/test_kill.py -s
KILLS = int(os.environ.get("RIG_KILL_SOAK", "12"))
GENERATIONS = 12
PROTOCOL = tiny_protocol(name="killed", generations=GENERATIONS, seed=21)


def _session_worker(argv: list[str], conn) -> None:
    """Run ``rig`` with ``argv``, telling the parent when each write and merge starts and ends."""
    from rig.cli import main
    from rig.session import SessionWriter

    append, merge = SessionWriter.append_block, SessionWriter._merge

    def reporting_append(self, block, *args, **kwargs):
        conn.send(("write", block.index))
        append(self, block, *args, **kwargs)
        conn.send(("written", block.index))

    def reporting_merge(self, *args, **kwargs):
        conn.send(("merge", None))
        merge(self, *args, **kwargs)
        conn.send(("merged", None))

    SessionWriter.append_block, SessionWriter._merge = reporting_append, reporting_merge
    code = main(argv)
    conn.send(("exit", code))
    raise SystemExit(code)


def _start(ctx, argv):
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_session_worker, args=(argv, send))
    process.start()
    send.close()
    return process, receive


def _drain(receive, events: list) -> None:
    while True:
        try:
            if not receive.poll(0):
                return
            events.append(receive.recv())
        except (EOFError, OSError):
            return


def _blocks(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {b.index: (b.codes, b.scores) for b in read_session(path).blocks}


def _kill_one_session(ctx, protocol: Path, out: Path, expected: dict, rng: random.Random, counts: dict) -> None:
    """Run, kill and resume one session until it completes or enough kills have landed, checking every file."""
    confirmed: set[int] = set()  # blocks a child said were written (durable)
    while counts["kills"] < KILLS:
        resuming = out.exists()
        argv = ["run", "--resume", str(out), "--quiet"] if resuming else ["run", str(protocol), "--out", str(out), "--quiet"]
        mode = rng.choice(["time", "write", "write"] + (["merge"] if resuming else []))
        process, receive = _start(ctx, argv)
        counts["runs"] += 1
        events: list = []
        skip_writes = rng.randrange(3)
        deadline = time.monotonic() + rng.uniform(0.05, 2.0)
        killed = False
        while process.is_alive():
            if not receive.poll(0.001):
                if mode == "time" and time.monotonic() >= deadline:
                    break
                continue
            try:
                event = receive.recv()
            except EOFError:
                break
            events.append(event)
            if event == ("write", GENERATIONS - 1):
                mode, skip_writes = "write", 0  # aim at the last write, so a run rarely finishes early
            if mode == "write" and event[0] == "write":
                if skip_writes == 0:
                    time.sleep(rng.uniform(0, 0.004))
                    break
                skip_writes -= 1
            if mode == "merge" and event[0] == "merge":
                time.sleep(rng.uniform(0, 0.01))
                break
            if event[0] == "exit":
                assert event[1] == 0, f"rig {' '.join(argv)} exited with {event[1]}"
                break
        if process.is_alive():
            process.kill()  # SIGKILL
            killed = True
        process.join(30)
        _drain(receive, events)
        confirmed |= {i for kind, i in events if kind == "written"}
        if not killed:
            assert events[-1] == ("exit", 0), events[-5:]
            return
        counts["kills"] += 1
        names = [kind for kind, _ in events]
        last_write = max((i for i, n in enumerate(names) if n == "write"), default=-1)
        last_written = max((i for i, n in enumerate(names) if n == "written"), default=-1)
        last_merge = max((i for i, n in enumerate(names) if n == "merge"), default=-1)
        last_merged = max((i for i, n in enumerate(names) if n == "merged"), default=-1)
        if last_write > last_written:
            counts["during_block_write"] += 1
        elif last_merge > last_merged:
            counts["during_merge"] += 1
        else:
            counts["at_random_time"] += 1

        if not out.exists():
            counts["before_file_existed"] += 1
            assert not confirmed
            continue
        with h5py.File(out, "r") as f:  # plain h5py: the file opens, whatever instant it was killed at
            assert f.attrs["schema"] == "rig.session"
        counts["files_opened"] += 1
        recorded = _blocks(out)
        assert confirmed <= set(recorded), f"lost blocks {sorted(confirmed - set(recorded))}"
        assert sorted(recorded) == list(range(len(recorded)))
        for index, (codes, scores) in recorded.items():
            np.testing.assert_array_equal(codes, expected[index][0])
            np.testing.assert_array_equal(scores, expected[index][1])
            counts["blocks_checked"] += 1
        if read_session(out).attrs["status"] == "complete":
            return  # killed while tidying up after the last merge: nothing left to resume


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigkill_at_random_moments_loses_nothing_and_resumes_identically(tmp_path):
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "rig.cli", "rig.loop.replay", "rig.loop.assemble", "rig.commands.run"])
    protocol = tmp_path / "p.toml"
    protocol.write_text(PROTOCOL)
    reference = tmp_path / "reference.h5"
    process, receive = _start(ctx, ["run", str(protocol), "--out", str(reference), "--quiet"])
    process.join(120)
    assert process.exitcode == 0
    expected = _blocks(reference)
    assert sorted(expected) == list(range(GENERATIONS))

    rng = random.Random(6)
    counts = {"kills": 0, "during_block_write": 0, "during_merge": 0, "at_random_time": 0, "files_opened": 0,
              "before_file_existed": 0, "blocks_checked": 0, "runs": 0, "sessions": 0}
    resumes = 0
    # A session can finish before enough kills have landed (a kill aimed at a write may arrive after a fast
    # write completed): then it is checked and a fresh session is killed, until KILLS kills have landed.
    while counts["kills"] < KILLS:
        out = tmp_path / f"killed-{counts['sessions']}.h5"
        counts["sessions"] += 1
        _kill_one_session(ctx, protocol, out, expected, rng, counts)
        session = read_session(out)
        if session.attrs["status"] != "complete":
            process, receive = _start(ctx, ["run", "--resume", str(out), "--quiet"])
            process.join(120)
            assert process.exitcode == 0
            session = read_session(out)
        assert session.attrs["status"] == "complete"
        final = _blocks(out)
        assert sorted(final) == list(range(GENERATIONS))
        for index, (codes, scores) in final.items():
            np.testing.assert_array_equal(codes, expected[index][0])  # identical final results, bit for bit
            np.testing.assert_array_equal(scores, expected[index][1])
        resumes += len(json.loads(session.attrs["resumes"]))
    print(f"\nkill test: {json.dumps(counts)}; resumes recorded in the files: {resumes}")
    assert counts["kills"] >= KILLS
    assert counts["during_block_write"] >= max(3, KILLS // 4)
    assert counts["files_opened"] + counts["before_file_existed"] == counts["kills"]
