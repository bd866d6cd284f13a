"""Harnesses: trusted code that runs inside the sandbox, around the untrusted code.

`python_tests` runs in two processes (see `proxy`); the harnesses here run in one: `run_reference`
(the task's reference solution), `run_grader` (a configured grader), `run_script` (the self-test and
the benchmark's baseline), and the Triton task's (`rftkit.tasks.triton_harness`). They report through
`Channel` (file descriptor 3, each record authenticated with the run's key, see `protocol`) and
finish with a `done` record, so an exit before the end can only lose results. Code that runs in the
same process as such a harness can read that key; that is why model code under test is judged by
the two-process harness, where it cannot.
"""

from __future__ import annotations

import builtins
import random
from typing import Any

from rftkit.sandbox.protocol import Channel
from rftkit.sandbox.values import decode, encode

__all__ = ["Channel", "describe", "load_code", "load_entry_point", "restore_builtins", "run_grader",
           "run_reference", "run_script"]

_PRISTINE_BUILTINS = dict(builtins.__dict__)  # captured in the zygote, before any untrusted code
_isinstance, _BaseException = isinstance, BaseException


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


def load_code(code: str, channel: Any, filename: str = "<completion>") -> dict | None:
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


def load_entry_point(payload: dict, channel: Any, filename: str = "<completion>") -> tuple[dict, Any] | None:
    """Run the model's module and find `payload["entry_point"]` in it; reports and returns None if either fails."""
    namespace = load_code(payload["code"], channel, filename=filename)
    if namespace is None:
        return None
    fn = namespace.get(payload["entry_point"])
    if not callable(fn):
        channel.send(missing=f"no function named {payload['entry_point']!r}")
        return None
    return namespace, fn


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
