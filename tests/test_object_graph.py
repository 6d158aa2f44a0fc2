"""The pickle-free object-graph codec, and CMA-ES states made hostile: restoring runs no code."""
from __future__ import annotations

import io
import json
import math
import pickle

import numpy as np
import pytest

from protocols.optimizers.cmaes import CMAES
from protocols.optimizers.object_graph import GraphCodec, callable_name, trusted_parts
from protocols.optimizers.state import pack_state


class Node:
    """A trusted class for the codec tests."""

    def __call__(self) -> str:  # callable instances of trusted classes are objects, not names
        return "called"


class Bag(dict):
    """A trusted dict subclass with attributes of its own."""


def helper() -> int:
    return 7


def test_graph_round_trip_keeps_values_types_sharing_and_cycles():
    shared = np.arange(6.0).reshape(2, 3)
    root = Node()
    bag = Bag({(1, 2.5): "tuple key", 3: [shared, shared]})
    bag.note = "attribute of a dict subclass"
    root.__dict__.update(
        floats=[0.1, -0.0, math.inf, math.nan, 1e-300], ints=[0, -1, 2**70], flags=(True, False, None), steps=range(1, 9, 3),
        scalar=np.float32(1.5), array=shared, bag=bag, me=root, fn=helper, kind=Node,
    )
    codec = GraphCodec({Node, Bag}, {callable_name(helper): helper, callable_name(Node): Node})
    tree, arrays = codec.encode(root)
    text = json.dumps(tree, sort_keys=True)  # all of it is JSON, whatever order a writer puts keys in
    back = codec.decode(json.loads(text), arrays)

    assert type(back) is Node and back.me is back  # the cycle
    assert back.floats[:3] == [0.1, -0.0, math.inf] and math.copysign(1, back.floats[1]) == -1
    assert math.isnan(back.floats[3]) and back.floats[4] == 1e-300
    assert back.ints == [0, -1, 2**70] and back.flags == (True, False, None) and back.steps == range(1, 9, 3)
    assert type(back.scalar) is np.float32 and back.scalar == np.float32(1.5)
    assert type(back.bag) is Bag and back.bag.note == root.bag.note
    assert back.bag[(1, 2.5)] == "tuple key"
    first, second = back.bag[3]
    assert first is second is back.array  # one array, three references, as before
    np.testing.assert_array_equal(back.array, shared)
    assert back.fn is helper and back.kind is Node and back() == "called"


def test_encoding_refuses_what_it_cannot_restore_safely():
    codec = GraphCodec({Node}, {})
    with pytest.raises(TypeError, match=r"root\[0\]: instances of .*Bag are not trusted"):
        codec.encode([Bag()])
    with pytest.raises(TypeError, match="callable .*helper is not one"):
        codec.encode({"f": helper})
    with pytest.raises(TypeError, match="object arrays"):
        codec.encode(np.array([None, 1], dtype=object))


@pytest.mark.parametrize("tree, message", [
    ({"t": "object", "class": "subprocess.Popen", "id": 0, "attrs": {}}, "class 'subprocess.Popen' is not trusted"),
    ({"t": "callable", "name": "builtins.eval"}, "callable 'builtins.eval' is not one"),
    ({"t": "array", "a": "missing", "id": 0}, "missing array"),
    ({"t": "ref", "id": 5}, "unknown id 5"),
    ({"t": "list", "id": 0, "v": [{"t": "list", "id": 0, "v": []}]}, "repeated id 0"),
    ({"t": "dict", "id": 0, "v": [[{"t": "list", "id": 1, "v": []}, 1]]}, "unhashable dict key"),
    ({"t": "pickle", "data": "gASV"}, "unknown node type 'pickle'"),
    ([1, 2], "a bare list"),
])
def test_decoding_rejects_untrusted_or_malformed_graphs(tree, message):
    with pytest.raises(ValueError, match=message):
        GraphCodec({Node}, {}).decode(tree, {})


def test_trusted_parts_finds_classes_and_callables_of_a_graph():
    root = Node()
    root.__dict__.update(items=[Bag(), {"f": helper}])
    classes, found = trusted_parts(root, ("test_object_graph", "tests.test_object_graph"))
    assert classes == {Node, Bag}
    assert found == {callable_name(helper): helper}


# -- CMA-ES states -------------------------------------------------------------------------------

def cmaes_state_parts(opt: CMAES) -> tuple[bytes, dict, dict[str, np.ndarray]]:
    """Split a saved CMAES state into the base class's prefix, its JSON meta and its arrays."""
    state = opt.get_state()
    with np.load(io.BytesIO(state[8:]), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    return state[:8], meta, arrays


def repack(prefix: bytes, meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    return prefix + pack_state(meta["kind"], meta["version"], meta["config"], meta["scalars"], arrays)


def ran_cmaes(generations: int = 3) -> CMAES:
    opt = CMAES(6, popsize=8, seed=3)
    for _ in range(generations):
        codes = opt.ask()
        opt.tell(codes, -np.sum(codes**2, axis=1))
    return opt


def find(tree, predicate, path="root"):
    """Yield (path, node) for the dict nodes of a saved tree that satisfy predicate."""
    if isinstance(tree, dict):
        if predicate(tree):
            yield path, tree
        for key, value in tree.items():
            yield from find(value, predicate, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from find(value, predicate, f"{path}[{i}]")


def test_repacking_an_untouched_cmaes_state_restores_it():
    # The tampering tests below are meaningful only if their repacking alone is harmless.
    opt = ran_cmaes()
    prefix, meta, arrays = cmaes_state_parts(opt)
    restored = CMAES(6, popsize=8, seed=0)
    restored.set_state(repack(prefix, meta, arrays))
    np.testing.assert_array_equal(restored.ask(), opt.ask())


def test_a_cmaes_state_naming_a_foreign_class_is_refused():
    prefix, meta, arrays = cmaes_state_parts(ran_cmaes())
    (_, node), *_ = find(meta["scalars"]["es"], lambda n: n.get("class", "").endswith("GaussFullSampler"))
    node["class"] = "os._wrap_close"
    with pytest.raises(ValueError, match="class 'os._wrap_close' is not trusted"):
        CMAES(6, popsize=8, seed=0).set_state(repack(prefix, meta, arrays))


def test_a_cmaes_state_naming_a_foreign_callable_is_refused():
    prefix, meta, arrays = cmaes_state_parts(ran_cmaes())
    (_, node), *_ = find(meta["scalars"]["es"], lambda n: n.get("t") == "callable")
    node["name"] = "builtins.exec"
    with pytest.raises(ValueError, match="callable 'builtins.exec' is not one"):
        CMAES(6, popsize=8, seed=0).set_state(repack(prefix, meta, arrays))


def test_a_cmaes_state_with_other_pycma_options_is_refused():
    # pycma evaluates option strings, so an altered option could run code later: refuse it.
    prefix, meta, arrays = cmaes_state_parts(ran_cmaes())
    es = meta["scalars"]["es"]
    opts = dict(es["attrs"])["opts"]
    for pair in opts["items"]:
        if pair[0] == "CMA_elitist":
            pair[1] = "__import__('os').getpid() > 0"
    with pytest.raises(ValueError, match="other pycma opts"):
        CMAES(6, popsize=8, seed=0).set_state(repack(prefix, meta, arrays))


def test_an_old_pickled_cmaes_state_is_refused_without_unpickling(monkeypatch):
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    old = (3).to_bytes(8, "little") + pickle.dumps({"version": 1}, protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(ValueError, match="is a pickle"):
        CMAES(6, popsize=8, seed=0).set_state(old)
