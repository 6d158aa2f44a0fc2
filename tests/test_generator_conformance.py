"""One contract for every registered generator kind: the suite is parametrized from the registry.

Registering a generator puts it under this suite. A kind that builds from its
defaults needs nothing here; a kind that needs a resource (weights, a user
module) gets small stand-ins in :data:`TEST_OPTIONS`, and a new kind that does
neither fails here, saying so.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from protocols.generators import DEEPSIM_VARIANTS, GENERATORS, Generator, build_generator
from protocols.registry import OptionError


def _deepsim_weights(variant: str, folder: Path) -> str:
    """A tiny file (one number per tensor, expanded) that loads as DeePSiM ``variant``: output is clamped, so in range."""
    from protocols.generators.deepsim import _expected_shapes

    path = folder / f"upconvGAN_{variant}.pt"
    state = {k: torch.full((1,), 1e-3 * (i % 7 - 3)).expand(*shape)
             for i, (k, shape) in enumerate(_expected_shapes(variant).items())}
    torch.save(state, path)
    return str(path)


_USER_MODULE = '''
import torch
from torch import nn
class Tiny(nn.Module):
    code_dim, image_size = 6, 8
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3 * 8 * 8)
    def forward(self, z):
        return torch.sigmoid(self.fc(z)).view(-1, 3, 8, 8)
'''


@pytest.fixture(scope="module")
def resources(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("generator-resources")
    (folder / "conformance_gans.py").write_text(_USER_MODULE)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("conformance_gans", None)


#: Options for kinds that cannot be built from their defaults here (folder -> options).
TEST_OPTIONS = {
    "fourier": lambda folder: {"max_frequency": 2, "image_size": 16},
    **{f"deepsim-{v}": (lambda folder, v=v: {"weights": _deepsim_weights(v, folder)}) for v in DEEPSIM_VARIANTS},
    "module": lambda folder: {"factory": "conformance_gans:Tiny"},
}


@pytest.fixture(params=GENERATORS.kinds())
def built(request, resources) -> tuple[str, dict, Generator]:
    kind = request.param
    options = TEST_OPTIONS.get(kind, lambda folder: {})(resources)
    try:
        generator = build_generator(kind, **options).eval()
    except (ValueError, OSError) as exc:
        pytest.fail(f"generator {kind!r} does not build from its defaults ({exc}); add test options to TEST_OPTIONS")
    return kind, options, generator


def codes_for(generator: Generator, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator.code_dim, generator=torch.Generator().manual_seed(seed))


def test_images_have_the_declared_shape_and_lie_in_0_1(built):
    kind, _, generator = built
    with torch.inference_mode():
        images = generator(codes_for(generator, 3) * 3)
    size = generator.image_size
    assert images.shape == (3, 3, size, size) and images.is_floating_point(), kind
    assert images.min() >= 0 and images.max() <= 1, kind


def test_same_codes_same_images_and_batches_do_not_mix(built):
    kind, _, generator = built
    codes = codes_for(generator, 3, seed=1)
    with torch.inference_mode():
        batch = generator(codes)
        assert torch.equal(batch, generator(codes)), kind
        alone = generator(codes[1:2])
    assert torch.allclose(batch[1:2], alone, atol=1e-5), kind


def test_codes_of_the_wrong_length_are_refused(built):
    kind, _, generator = built
    with pytest.raises(ValueError, match=rf"expects codes of shape \(N, {generator.code_dim}\)"):
        generator(torch.zeros(2, generator.code_dim + 1))


def test_describe_is_class_kind_version_and_options(built):
    kind, options, generator = built
    entry = GENERATORS.entry(kind)
    described = generator.describe()
    assert described["kind"] == kind and described["version"] == entry.version
    assert described["class"] == f"{type(generator).__module__}.{type(generator).__qualname__}"
    assert described["options"] == dataclasses.asdict(entry.options(**options))


def test_an_unknown_option_is_refused_naming_the_valid_ones(built):
    kind, options, _ = built
    with pytest.raises(OptionError, match=rf"unknown option\(s\) 'no_such_option' for generator '{kind}'; "
                                          rf"valid options: "):
        build_generator(kind, **options, no_such_option=1)


@pytest.mark.parametrize("kind", GENERATORS.kinds())
def test_every_option_has_a_type_a_protocol_file_can_write(kind):
    options = GENERATORS.entry(kind).options
    for name, default in options.defaults().items():
        assert default is None or isinstance(default, (bool, int, float, str, dict)), (kind, name, default)


class _Broken(Generator):
    """Returns what it is told to: the base class, not the implementation, checks it."""

    code_dim, image_size = 2, 4

    def __init__(self, output) -> None:
        super().__init__()
        self.output = output

    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        return self.output


@pytest.mark.parametrize("output, match", [
    (torch.full((1, 3, 4, 4), 2.0), r"images of generator '_Broken' must be in \[0,1\], got values in \[2, 2\]"),
    (torch.full((1, 3, 4, 4), -1.0), r"\(x \+ 1\) / 2"),
    (torch.zeros(1, 3, 5, 5), r"must be a tensor of shape \(1, 3, 4, 4\), got \(1, 3, 5, 5\)"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "dtype torch.uint8"),
    ("an image", r"got str"),
])
def test_the_base_class_checks_every_output_once(output, match):
    with pytest.raises(ValueError, match=match):
        _Broken(output)(torch.zeros(1, 2))


def test_the_base_class_clamps_a_rounding_overshoot():
    images = _Broken(torch.full((1, 3, 4, 4), 1.0005))(torch.zeros(1, 2))
    assert images.max() == 1.0
