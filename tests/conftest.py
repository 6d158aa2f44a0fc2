"""Shared fixtures: small protocol files that run in seconds on a CPU."""
from __future__ import annotations

from pathlib import Path

import pytest

SMALL_PROTOCOL = """
[protocol]
kind = "evolution"
name = "small"
generations = {generations}
seed = {seed}

[evolution]
threads = {threads}

[generator]
kind = "fourier"
max_frequency = 4
image_size = 64

[optimizer]
kind = "cmaes"
popsize = {popsize}
sigma0 = 3.0

[references]
count = {references}

[neuron]
units = {units}
weights = "{weights}"
"""


@pytest.fixture
def write_protocol(tmp_path: Path):
    """Write a small evolution protocol file and return its path."""

    def write(generations: int = 4, seed: int = 0, threads: int = 1, popsize: int = 12, references: int = 3,
              units: tuple[str, ...] = ("test_cnn:features.7:unit=5",), weights: str = "random") -> Path:
        path = tmp_path / "small.toml"
        units_toml = "[" + ", ".join(f'"{u}"' for u in units) + "]"
        path.write_text(SMALL_PROTOCOL.format(generations=generations, seed=seed, threads=threads, popsize=popsize,
                                              references=references, units=units_toml, weights=weights))
        return path

    return write
