"""One contract for every protocol kind (``[protocol] kind``: evolution, screening), STYLE practice 10.

Parametrized from :data:`protocols.spec.PROTOCOL_KINDS`: a new kind without a
maker in :data:`MAKERS` fails here, saying so. The contract: ``propose`` gives
blocks numbered 0, 1, ... of images in [0, 1] until ``finished``; ``observe``
takes all-valid responses to the block just proposed; misuse (a block out of
turn, invalid stimuli, a propose after the end) is refused with the numbers.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from protocols.base import Block, Protocol, Responses
from protocols.evolution import Evolution
from protocols.generators import build_generator
from protocols.images import check_images
from protocols.optimizers import build_optimizer
from protocols.screening import Screening
from protocols.spec import PROTOCOL_KINDS

CHANNELS = 2


def _evolution(seed: int) -> Evolution:
    generator = build_generator("fourier", max_frequency=2, image_size=16)
    optimizers = [build_optimizer("simple-es", generator.code_dim, seed=seed + t, popsize=4) for t in range(2)]
    references = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    return Evolution(generator=generator, optimizers=optimizers, channels=[0, 1], generations=3,
                     references=references, reference_ids=["r0", "r1"], seed=seed)


def _screening(seed: int) -> Screening:
    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return Screening(images=images, image_ids=[f"img{i}" for i in range(5)], seed=seed, block_size=3, repeats=2)


MAKERS = {"evolution": _evolution, "screening": _screening}


def test_every_protocol_kind_has_a_maker():
    assert set(PROTOCOL_KINDS) == set(MAKERS)


def answer(block: Block, valid: np.ndarray | None = None) -> Responses:
    """Finite responses on ``CHANNELS`` channels (NaN where ``valid`` is False), a fixed function of the block."""
    scores = np.random.default_rng(block.index).normal(size=(len(block), CHANNELS))
    valid = np.ones(len(block), dtype=bool) if valid is None else valid
    scores[~valid] = np.nan
    return Responses(scores, valid, [f"ch{c}" for c in range(CHANNELS)])


@pytest.fixture(params=PROTOCOL_KINDS)
def kind(request) -> str:
    if request.param not in MAKERS:
        pytest.fail(f"protocol kind {request.param!r} has no maker in tests/test_protocol_conformance.py")
    return request.param


def test_propose_observe_until_finished(kind):
    protocol: Protocol = MAKERS[kind](3)
    blocks = 0
    while not protocol.finished:
        block = protocol.propose()
        assert block.index == blocks
        assert len(block) > 0 and len(set(block.stimulus_ids)) == len(block)
        assert block.images.shape[0] == len(block) == len(block.kinds) == len(block.threads)
        check_images(block.images)
        protocol.observe(block, answer(block))
        blocks += 1
    assert blocks == protocol.generations
    with pytest.raises(RuntimeError, match=f"all {blocks} "):
        protocol.propose()


def test_the_same_seed_proposes_the_same_blocks(kind):
    first, second = MAKERS[kind](5), MAKERS[kind](5)
    for _ in range(2):
        a, b = first.propose(), second.propose()
        assert a.stimulus_ids == b.stimulus_ids
        torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)
        first.observe(a, answer(a))
        second.observe(b, answer(b))


def test_responses_to_another_block_are_refused_with_both_numbers(kind):
    protocol = MAKERS[kind](3)
    block = protocol.propose()
    block.index = 4
    with pytest.raises(ValueError, match="got responses for block 4, expected 0"):
        protocol.observe(block, answer(block))


def test_invalid_stimuli_are_refused_by_id(kind):
    protocol = MAKERS[kind](3)
    block = protocol.propose()
    valid = np.ones(len(block), dtype=bool)
    valid[1] = False
    with pytest.raises(ValueError, match=rf"block 0 has stimuli without valid responses: \['{block.stimulus_ids[1]}'\]"):
        protocol.observe(block, answer(block, valid))


def test_evolution_refuses_responses_with_too_few_channels():
    protocol = _evolution(3)
    block = protocol.propose()
    one = Responses(np.zeros((len(block), 1)), np.ones(len(block), dtype=bool), ["ch0"])
    with pytest.raises(ValueError, match=r"thread channels \[0, 1\] but responses have 1 channels \['ch0'\]"):
        protocol.observe(block, one)


def test_responses_of_another_length_are_refused_with_both_numbers(kind):
    protocol = MAKERS[kind](3)
    block = protocol.propose()
    short = Responses(np.zeros((len(block) - 1, CHANNELS)), np.ones(len(block) - 1, dtype=bool), ["ch0", "ch1"])
    with pytest.raises(ValueError, match=f"{len(block) - 1}.*{len(block)}|{len(block)}.*{len(block) - 1}"):
        protocol.observe(block, short)
