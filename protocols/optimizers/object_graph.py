"""Save and restore a Python object graph as JSON plus arrays, without pickle.

pycma keeps a strategy's state in a graph of its own objects (the sampler, the
step-size adaptation, archives of sent solutions, ...). Pickling that graph
would make a session file able to run code when it is resumed. Instead the
graph is written as data only:

* plain values (None, bool, int, float, str) as JSON, floats exactly (JSON
  numbers are Python's shortest round-trip ``repr``; nan and inf as ``NaN`` and
  ``Infinity``);
* numpy arrays and scalars as named arrays beside the JSON;
* lists, tuples, ranges and dicts (any hashable keys) as tagged JSON nodes;
* instances of *trusted* classes as their class name and ``__dict__`` (plus the
  items of dict and list subclasses);
* functions, classes and bound methods as *names only*.

Restoring never calls a constructor, ``__setstate__`` or anything named in the
file: an object is ``cls.__new__(cls)`` for a class the caller listed, filled
with ``dict`` / ``list`` / ``__dict__`` updates that bypass overridden setters,
and a callable is looked up by name in a table the caller built from objects it
trusts. Anything else in the file is an error. Shared references and cycles are
kept (each container and array is written once and referred to by id).
"""
from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["GraphCodec", "callable_name", "trusted_parts"]

_CALLABLE_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)


def callable_name(obj: Any) -> str:
    """A stable name for a function, class or bound method (bound ones name their owner's class)."""
    if isinstance(obj, types.MethodType):
        owner = type(obj.__self__)
        return f"{owner.__module__}.{owner.__qualname__}.{obj.__func__.__name__}#bound"
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def trusted_parts(root: Any, modules: tuple[str, ...]) -> tuple[set[type], dict[str, Any]]:
    """The classes (from ``modules``) and the callables an object graph is made of.

    Walked on a graph the caller built itself, this says what a saved graph of
    the same kind may contain, for :class:`GraphCodec`.
    """
    classes: set[type] = set()
    found: dict[str, Any] = {}
    seen: set[int] = set()
    stack = [root]
    while stack:
        x = stack.pop()
        if x is None or isinstance(x, (bool, int, float, str, np.generic, np.ndarray)) or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        if type(x) in (list, tuple, dict):
            continue
        if type(x).__module__.startswith(modules) and not isinstance(x, _CALLABLE_TYPES):
            classes.add(type(x))
        elif callable(x):
            found[callable_name(x)] = x
            continue
        if hasattr(x, "__dict__"):
            stack.append(vars(x))
    return classes, found


class GraphCodec:
    """Encode object graphs to ``(tree, arrays)`` and decode them back, trusting only what it is given.

    Args:
        classes: Classes whose instances may be written and re-created.
        callables: Name (:func:`callable_name`) → object, the only callables a
            decoded graph may refer to. Encoding any other callable is an error.
    """

    def __init__(self, classes: Iterable[type], callables: Mapping[str, Any]) -> None:
        self._classes = {_class_name(c): c for c in classes}
        self._callables = dict(callables)

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, root: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """The JSON-able tree of ``root`` and the arrays it refers to by name."""
        arrays: dict[str, np.ndarray] = {}
        memo: dict[int, int] = {}
        keep_alive: list[Any] = []  # ids stay unique only while the objects live

        def node(x: Any, path: str) -> Any:
            if x is None or isinstance(x, (bool, str)):
                return x
            if isinstance(x, np.generic):  # before int/float: np.float64 is a float
                name = f"a{len(arrays)}"
                arrays[name] = np.asarray(x)
                return {"t": "scalar", "a": name}
            if type(x) in (int, float):
                return x
            if id(x) in memo:
                return {"t": "ref", "id": memo[id(x)]}
            if isinstance(x, np.ndarray):
                if x.dtype.hasobject:
                    raise TypeError(f"{path}: object arrays cannot be saved without pickle")
                name = f"a{len(arrays)}"
                arrays[name] = x
                return {"t": "array", "a": name, "id": self._remember(x, memo, keep_alive)}
            if type(x) is range:
                return {"t": "range", "v": [x.start, x.stop, x.step]}
            if type(x) is tuple:
                return {"t": "tuple", "v": [node(v, f"{path}[{i}]") for i, v in enumerate(x)]}
            if type(x) is list:
                ref = self._remember(x, memo, keep_alive)
                return {"t": "list", "id": ref, "v": [node(v, f"{path}[{i}]") for i, v in enumerate(x)]}
            if type(x) is dict:
                ref = self._remember(x, memo, keep_alive)
                return {"t": "dict", "id": ref, "v": [[node(k, f"{path}.key"), node(v, f"{path}[{k!r}]")]
                                                      for k, v in x.items()]}
            if isinstance(x, _CALLABLE_TYPES) or (callable(x) and _class_name(type(x)) not in self._classes):
                name = callable_name(x)
                if self._callables.get(name) is not x:
                    raise TypeError(f"{path}: callable {name} is not one this codec may refer to")
                return {"t": "callable", "name": name}
            cls_name = _class_name(type(x))
            if cls_name not in self._classes:
                raise TypeError(f"{path}: instances of {cls_name} are not trusted for saving")
            out: dict[str, Any] = {"t": "object", "class": cls_name, "id": self._remember(x, memo, keep_alive)}
            if isinstance(x, dict):
                out["items"] = [[node(k, f"{path}.key"), node(v, f"{path}[{k!r}]")] for k, v in x.items()]
            if isinstance(x, list):
                out["list"] = [node(v, f"{path}[{i}]") for i, v in enumerate(x)]
            # A list of pairs, not a JSON object: JSON writers may sort object keys, and decoding must
            # meet each shared object where encoding first wrote it, before any reference to it.
            out["attrs"] = [[k, node(v, f"{path}.{k}")] for k, v in vars(x).items()] if hasattr(x, "__dict__") else []
            return out

        return node(root, "root"), arrays

    @staticmethod
    def _remember(x: Any, memo: dict[int, int], keep_alive: list[Any]) -> int:
        memo[id(x)] = len(memo)
        keep_alive.append(x)
        return memo[id(x)]

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
        """Rebuild the graph of :meth:`encode`.

        Raises:
            ValueError: a malformed node, an unknown class, callable, array or
                reference, naming where in the graph it was found.
        """
        made: dict[int, Any] = {}

        def fail(path: str, why: str) -> ValueError:
            return ValueError(f"saved object graph, at {path}: {why}")

        def register(n: dict, obj: Any, path: str) -> Any:
            ref = n.get("id")
            if type(ref) is not int or ref in made:
                raise fail(path, f"bad or repeated id {ref!r}")
            made[ref] = obj
            return obj

        def array(n: dict, path: str) -> np.ndarray:
            name = n.get("a")
            if not isinstance(name, str) or name not in arrays:
                raise fail(path, f"refers to a missing array {name!r}")
            return arrays[name]

        def pairs(v: Any, path: str) -> list[tuple[Any, Any]]:
            if not isinstance(v, list) or not all(isinstance(p, list) and len(p) == 2 for p in v):
                raise fail(path, "dict items are not a list of [key, value] pairs")
            out = []
            for k, val in v:
                key = node(k, f"{path}.key")
                try:
                    hash(key)
                except TypeError:
                    raise fail(path, f"unhashable dict key of type {type(key).__name__}") from None
                out.append((key, node(val, f"{path}[{key!r}]")))
            return out

        def items(v: Any, path: str) -> list[Any]:
            if not isinstance(v, list):
                raise fail(path, "expected a list of values")
            return [node(x, f"{path}[{i}]") for i, x in enumerate(v)]

        def node(n: Any, path: str) -> Any:
            if n is None or isinstance(n, (bool, int, float, str)):
                return n
            if isinstance(n, list):
                raise fail(path, "a bare list (lists are tagged nodes)")
            if not isinstance(n, dict):
                raise fail(path, f"unexpected {type(n).__name__}")
            tag = n.get("t")
            if tag == "scalar":
                value = array(n, path)
                if value.shape != ():
                    raise fail(path, "a scalar that is not 0-dimensional")
                return value[()]
            if tag == "array":
                return register(n, array(n, path), path)
            if tag == "ref":
                if n.get("id") not in made:
                    raise fail(path, f"reference to unknown id {n.get('id')!r}")
                return made[n["id"]]
            if tag == "tuple":
                return tuple(items(n.get("v"), path))
            if tag == "range":
                bounds = n.get("v")
                if not (isinstance(bounds, list) and len(bounds) == 3 and all(type(b) is int for b in bounds)):
                    raise fail(path, "a range needs three ints")
                return range(*bounds)
            if tag == "list":
                out: list[Any] = register(n, [], path)
                out.extend(items(n.get("v"), path))
                return out
            if tag == "dict":
                d: dict[Any, Any] = register(n, {}, path)
                d.update(pairs(n.get("v"), path))
                return d
            if tag == "callable":
                name = n.get("name")
                if name not in self._callables:
                    raise fail(path, f"callable {name!r} is not one this optimizer uses")
                return self._callables[name]
            if tag == "object":
                cls = self._classes.get(n.get("class"))
                if cls is None:
                    raise fail(path, f"class {n.get('class')!r} is not trusted")
                obj = register(n, cls.__new__(cls), path)
                if "items" in n:
                    if not isinstance(obj, dict):
                        raise fail(path, f"{n['class']} is not a dict")
                    dict.update(obj, pairs(n["items"], path))
                if "list" in n:
                    if not isinstance(obj, list):
                        raise fail(path, f"{n['class']} is not a list")
                    list.extend(obj, items(n["list"], path))
                attrs = n.get("attrs", [])
                if not isinstance(attrs, list) or not all(
                        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in attrs):
                    raise fail(path, "attrs is not a list of [name, value] pairs")
                if attrs and not hasattr(obj, "__dict__"):
                    raise fail(path, f"{n['class']} has no attributes to set")
                for name, value in attrs:
                    vars(obj)[name] = node(value, f"{path}.{name}")
                return obj
            raise fail(path, f"unknown node type {tag!r}")

        return node(tree, "root")
