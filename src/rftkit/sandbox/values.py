"""Plain-data transport of values out of the sandbox, and the type-checked comparison done outside it.

The child encodes what the model's function returned; the parent decodes and compares it against
expected values the child never saw. Only exact built-in types are encoded (`type(x) is int`, not
`isinstance`), so an object with a rigged `__eq__`, or a subclass of int that equals everything,
cannot be carried out: it arrives as an "unsupported" marker and fails the test.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 20
MAX_ITEMS = 100_000


class Unsupported:
    """Stands for a value the child could not encode (its type name is kept for the reason)."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<unsupported {self.type_name}>"


def encode(value: Any, depth: int = 0) -> Any:
    """Child side: a JSON-safe tagged tree. Runs after untrusted code, so it relies on exact types only."""
    kind = type(value)
    if kind is Unsupported:  # passed on by the driver: keep the candidate's type name
        return ["unsupported", value.type_name]
    if depth > MAX_DEPTH:
        return ["unsupported", "nested too deeply"]
    if value is None or kind is bool or kind is str:
        return ["v", value]
    if kind is int:
        return ["int", str(value)] if abs(value) < 10 ** 4000 else ["unsupported", "huge int"]
    if kind is float:
        return ["float", repr(value)]
    if kind is bytes:
        return ["bytes", value.hex()]
    if kind in (list, tuple, set, frozenset):
        if len(value) > MAX_ITEMS:
            return ["unsupported", f"{kind.__name__} too long"]
        items = [encode(item, depth + 1) for item in value]
        if kind in (set, frozenset):
            items.sort(key=repr)
        return [kind.__name__, items]
    if kind is dict:
        if len(value) > MAX_ITEMS:
            return ["unsupported", "dict too long"]
        return ["dict", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]]
    return ["unsupported", kind.__name__[:100]]


def decode(tree: Any) -> Any:
    """Parent side; raises ValueError on anything malformed (the child may have forged it)."""
    if not isinstance(tree, list) or len(tree) != 2 or not isinstance(tree[0], str):
        raise ValueError("malformed encoded value")
    tag, payload = tree
    if tag == "v" and (payload is None or isinstance(payload, (bool, str))):
        return payload
    if tag == "int":
        return int(payload)
    if tag == "float":
        return float(payload)
    if tag == "bytes":
        return bytes.fromhex(payload)
    if tag in ("list", "tuple", "set", "frozenset"):
        items = [decode(item) for item in payload]
        return {"list": list, "tuple": tuple}[tag](items) if tag in ("list", "tuple") else _as_set(items, tag)
    if tag == "dict":
        return {_hashable(decode(k)): decode(v) for k, v in payload}
    if tag == "unsupported":
        return Unsupported(str(payload))
    raise ValueError(f"unknown tag {tag!r}")


def _as_set(items: list, tag: str) -> Any:
    hashable = [_hashable(item) for item in items]
    return set(hashable) if tag == "set" else frozenset(hashable)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Unsupported):
        raise ValueError(f"unsupported key type {value.type_name}")
    return value


def typed_equal(actual: Any, expected: Any, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Equality that also checks types: True is not 1, "1" is not 1. list and tuple are interchangeable
    (JSON has no tuples), an int may stand for an integral float, floats compare within tolerance."""
    if isinstance(actual, Unsupported) or isinstance(expected, Unsupported):
        return False
    if type(expected) is float:
        if type(actual) not in (float, int):
            return False
        if math.isnan(expected):
            return math.isnan(actual)
        return math.isclose(actual, expected, rel_tol=rel_tol, abs_tol=abs_tol)
    if type(expected) in (list, tuple):
        return (type(actual) in (list, tuple) and len(actual) == len(expected)
                and all(typed_equal(a, e, rel_tol, abs_tol) for a, e in zip(actual, expected)))
    if type(expected) is dict:
        return (type(actual) is dict and actual.keys() == expected.keys()
                and all(typed_equal(actual[k], expected[k], rel_tol, abs_tol) for k in expected))
    return type(actual) is type(expected) and actual == expected


def short_repr(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
