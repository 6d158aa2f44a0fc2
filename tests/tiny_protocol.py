"""One small evolution protocol file for tests, with the few fields tests vary."""
from __future__ import annotations


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
