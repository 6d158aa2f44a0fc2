"""Protocol files: the shipped ones validate, bad ones fail naming the field."""
from pathlib import Path

import pytest

from protocols.spec import ProtocolError, load_protocol, parse_protocol

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"

GOOD = """
[protocol]
kind = "evolution"
generations = 5
seed = 3

[generator]
kind = "fourier"

[optimizer]
kind = "cmaes"
popsize = 8

[neuron]
units = ["test_cnn:features.2:unit=1"]
"""


@pytest.mark.parametrize("path", sorted(PROTOCOLS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_protocols_validate(path):
    spec = load_protocol(path)
    assert spec.generations >= 1
    assert spec.text == path.read_text()
    assert len(spec.sha256) == 64


def test_good_protocol_fields():
    spec = parse_protocol(GOOD, "good.toml")
    assert (spec.kind, spec.generations, spec.seed, spec.threads) == ("evolution", 5, 3, 1)
    assert spec.generator == {"kind": "fourier"}
    assert spec.optimizer == {"kind": "cmaes", "popsize": 8}
    assert spec.neuron.units == ("test_cnn:features.2:unit=1",)
    assert spec.references.source == "foolbox-imagenet"


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("generations = 5", 'generations = "five"', r"\[protocol\] generations: expected an integer in 1\.\.100000, got 'five'"),
        ("generations = 5", "generations = 0", r"\[protocol\] generations: expected an integer in 1\.\.100000, got 0"),
        ("generations = 5", "generations = true", r"\[protocol\] generations"),
        ("generations = 5\n", "", r"\[protocol\] generations: missing"),
        ('kind = "evolution"', 'kind = "evolutoin"', r"\[protocol\] kind: expected one of \['evolution', 'screening'\]"),
        ("seed = 3", "seed = 3\nsed = 4", r"\[protocol\]: unknown field\(s\) \['sed'\]"),
        ("[optimizer]", "[optimiser]", r"\[top level\]: unknown field\(s\) \['optimiser'\]"),
        ('units = ["test_cnn:features.2:unit=1"]', "units = []", r"\[neuron\] units: expected a non-empty list"),
        ("[neuron]", "[evolution]\nthreads = 0\n[neuron]", r"\[evolution\] threads: expected an integer in 1..256, got 0"),
        ("[neuron]", "[neuron]\nmax_batch = 0", r"\[neuron\] max_batch: expected an integer in 1\.\.4096, got 0"),
        ("[neuron]", "[neuron]\nmax_batch = 8.5", r"\[neuron\] max_batch: expected an integer in 1\.\.4096, got 8.5"),
    ],
)
def test_bad_field_is_named(old, new, expected):
    assert old in GOOD
    with pytest.raises(ProtocolError, match=expected) as info:
        parse_protocol(GOOD.replace(old, new, 1), "bad.toml")
    assert str(info.value).startswith("bad.toml: ")


def test_not_toml_names_file_and_line():
    with pytest.raises(ProtocolError, match=r"broken.toml: not valid TOML: .*line 2"):
        parse_protocol("[protocol]\nkind = = 1\n", "broken.toml")


def test_missing_file(tmp_path):
    with pytest.raises(ProtocolError, match="protocol file not found"):
        load_protocol(tmp_path / "nope.toml")
