"""Shared fixtures: small protocol files that run in seconds on a CPU."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.protocols import tiny_protocol


@pytest.fixture
def write_protocol(tmp_path: Path):
    """Write a small evolution protocol file and return its path."""

    def write(generations: int = 4, seed: int = 0, threads: int = 1, popsize: int = 12, references: int = 3,
              units: tuple[str, ...] = ("test_cnn:features.7:unit=5",), weights: str = "random") -> Path:
        path = tmp_path / "small.toml"
        path.write_text(tiny_protocol(generations=generations, seed=seed, threads=threads, popsize=popsize,
                                      references=references, units=units, weights=weights,
                                      max_frequency=4, image_size=64))
        return path

    return write
