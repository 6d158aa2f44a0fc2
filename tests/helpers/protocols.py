"""One small evolution protocol file for tests, with the few fields tests vary."""
from __future__ import annotations

from pathlib import Path


def tiny_protocol(*, name: str = "small", generations: int = 4, seed: int = 0, threads: int = 1,
                  units: tuple[str, ...] = ("test_cnn:features.7:unit=5",), weights: str = "random",
                  popsize: int = 6, references: int = 1, max_frequency: int = 3, image_size: int = 32,
                  extra: str = "") -> str:
    """Protocol TOML for a Fourier-space CMA-ES evolution of a tiny test model; ``extra`` is appended."""
    units_toml = "[" + ", ".join(f'"{u}"' for u in units) + "]"
    return f"""
[protocol]
kind = "evolution"
name = "{name}"
generations = {generations}
seed = {seed}

[evolution]
threads = {threads}

[generator]
kind = "fourier"
max_frequency = {max_frequency}
image_size = {image_size}

[optimizer]
kind = "cmaes"
popsize = {popsize}
sigma0 = 3.0

[references]
count = {references}

[neuron]
units = {units_toml}
weights = "{weights}"
{extra}"""


def run_tiny_session(folder: Path, **protocol: object) -> Path:
    """Write ``tiny_protocol(**protocol)`` to ``folder/p.toml``, run it with ``rig run``; the session file."""
    from rig.cli import main  # here, not at the top: conftest imports this module before rig is needed

    (folder / "p.toml").write_text(tiny_protocol(**protocol))
    out = folder / "s.h5"
    assert main(["run", str(folder / "p.toml"), "--out", str(out), "--quiet"]) == 0
    return out
