"""Harnesses: trusted code that runs inside the sandboxed child, around the untrusted code.

A harness reports through `Channel` (a dedicated pipe, not stdout, each record tagged with the run's
nonce) and finishes with a `done` record, so an exit before the end (`sys.exit`, `os._exit`, a kill)
can only lose results, never fake a pass. Expected values are never sent into the child for `call` and
`expr` tests: the child reports what the function returned, encoded as plain data, and the grader
compares outside (see `rftkit.sandbox.values`). Only `assert` tests are judged in here, with pristine
builtins restored before each one.
"""

from __future__ import annotations

import builtins
import json
import os
import random
from typing import Any, Callable

from rftkit.sandbox.values import decode, encode

_PRISTINE_BUILTINS = dict(builtins.__dict__)  # captured in the zygote, before any untrusted code
_dumps, _write, _isinstance, _BaseException = json.dumps, os.write, isinstance, BaseException


class Channel:
    def __init__(self, fd: int, nonce: str):
        self._fd, self._nonce = fd, nonce

    def send(self, **record: Any) -> None:
        data = (_dumps({"nonce": self._nonce, **record}) + "\n").encode()
        while data:
            data = data[_write(self._fd, data):]


def describe(exc: BaseException) -> str:
    """One line about an exception, robust to a hostile `__str__`."""
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001
        text = "<unprintable>"
    return f"{type(exc).__name__}: {text}"[:300]


def restore_builtins() -> list[str]:
    """Undo monkey-patched builtins; returns the names that had been changed."""
    current = builtins.__dict__
    changed = [k for k in set(current) | set(_PRISTINE_BUILTINS) if current.get(k) is not _PRISTINE_BUILTINS.get(k)]
    for name in changed:
        if name in _PRISTINE_BUILTINS:
            current[name] = _PRISTINE_BUILTINS[name]
        else:
            del current[name]
    return sorted(changed)


def load_code(code: str, channel: Channel, filename: str = "<completion>") -> dict | None:
    """Compile and execute the module-level code; reports `compiled` and `defined`. None on failure."""
    try:
        compiled = compile(code, filename, "exec")
    except BaseException as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError
        channel.send(compiled=False, error=describe(exc))
        return None
    channel.send(compiled=True)
    namespace: dict[str, Any] = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        exec(compiled, namespace)
    except _BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt count as failures too
        restore_builtins()
        channel.send(defined=False, error=describe(exc), exit=_isinstance(exc, SystemExit))
        return None
    tampered = restore_builtins()
    channel.send(defined=True, tampered=[n for n in tampered if not n.startswith("__")][:20])
    return namespace


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _run_one(test: dict, fn: Callable, namespace: dict) -> dict:
    scope = {**namespace, "__builtins__": dict(_PRISTINE_BUILTINS), "candidate": fn}
    if test["kind"] == "call":
        return {"value": encode(fn(*decode(test["args"])))}
    if test["kind"] == "expr":
        return {"value": encode(eval(test["expr"], scope))}  # noqa: S307 - trusted test text, sandboxed
    try:
        exec(test["source"], scope)  # noqa: S102
    except AssertionError as exc:
        return {"passed": False, "error": describe(exc) if str(exc) else "assertion failed"}
    return {"passed": True}


def load_entry_point(payload: dict, channel: Channel, filename: str = "<completion>") -> tuple[dict, Any] | None:
    """Run the model's module and find `payload["entry_point"]` in it; reports and returns None if either fails."""
    namespace = load_code(payload["code"], channel, filename=filename)
    if namespace is None:
        return None
    fn = namespace.get(payload["entry_point"])
    if not callable(fn):
        channel.send(missing=f"no function named {payload['entry_point']!r}")
        return None
    return namespace, fn


def run_tests(payload: dict, channel: Channel) -> None:
    """payload: code, entry_point, noop (replace the function by one that returns None), tests."""
    loaded = load_entry_point(payload, channel)
    if loaded is None:
        return
    namespace, fn = loaded
    if payload.get("noop"):
        fn = namespace[payload["entry_point"]] = _noop
    for test in payload["tests"]:
        restore_builtins()
        try:
            outcome = _run_one(test, fn, namespace)
        except _BaseException as exc:  # noqa: BLE001 - SystemExit/SkipTest inside the function fail the test
            outcome = {"passed": False, "error": describe(exc), "exit": _isinstance(exc, SystemExit)}
        restore_builtins()
        channel.send(test=test["id"], **outcome)
    channel.send(done=True)


def run_reference(payload: dict, channel: Channel) -> None:
    """Make `count` random argument lists with the task's `generate(rng)` and run the reference on them."""
    namespace: dict[str, Any] = {"__name__": "__reference__"}
    exec(payload["generator"], namespace)  # noqa: S102 - task-author code
    exec(payload["reference"], namespace)  # noqa: S102
    rng = random.Random(payload["seed"])
    reference = namespace[payload["entry_point"]]
    for i in range(payload["count"]):
        args = list(namespace["generate"](rng))
        encoded_args = encode(args)
        channel.send(case=i, args=encoded_args, value=encode(reference(*decode(encoded_args))))
    channel.send(done=True)


def run_script(payload: dict, channel: Channel) -> None:
    """Just execute code (the self-test, and the benchmark's baseline)."""
    if load_code(payload["code"], channel) is not None:
        channel.send(done=True)


def run_grader(payload: dict, channel: Channel) -> None:
    """OpenAI-style python grader: `grade(sample, item) -> float` from the config's source."""
    namespace = load_code(payload["code"], channel, filename="<grader>")
    if namespace is None:
        return
    grade = namespace.get("grade")
    if not callable(grade):
        channel.send(missing="the grader source defines no function grade(sample, item)")
        return
    try:
        score = grade(payload["sample"], payload["item"])
    except BaseException as exc:  # noqa: BLE001
        channel.send(error=describe(exc))
        return
    if type(score) is bool or type(score) not in (int, float):
        channel.send(error=f"grade() returned {type(score).__name__}, expected a float")
        return
    channel.send(score=repr(float(score)), done=True)
