"""Every selected unit is recorded as a channel, whatever the number of threads (issue: one thread, three units)."""
from __future__ import annotations

import numpy as np
import pytest

from rig.loop.assemble import thread_channels
from rig.cli import main
from rig.session import read_session

UNITS = ("test_cnn:features.7:unit=5", "test_cnn:features.7:unit=6", "test_cnn:features.7:unit=7")


def test_threads_follow_their_channels_and_the_rest_are_recorded():
    assert thread_channels(1, 3) == [0]
    assert thread_channels(2, 3) == [0, 1]
    assert thread_channels(4, 1) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="3 threads need 1 neuron channel or at least 3"):
        thread_channels(3, 2)


def test_one_thread_with_three_units_records_all_three(write_protocol, tmp_path):
    protocol = write_protocol(generations=2, popsize=6, references=1, units=UNITS)
    out = tmp_path / "three.h5"
    assert main(["run", str(protocol), "--out", str(out), "--quiet"]) == 0
    session = read_session(out)
    block = session.blocks[-1]
    assert list(block.channel_names) == list(UNITS)
    assert block.scores.shape[1] == 3 and np.isfinite(block.scores).all()
    assert session.provenance["thread_channels"] == [0]
    # Different units respond differently: the other channels are really recorded, not copies of the first.
    assert not np.allclose(block.scores[:, 0], block.scores[:, 1])
