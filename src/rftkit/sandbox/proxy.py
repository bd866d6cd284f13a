"""`python_tests` in two processes: the candidate's code runs in one, the tests run in the other (the
driver) and call it through a proxy. Only plain data crosses, both ways, so nothing the code does
can reach the verdict.

The driver is forked before it learns the tests or the run's key, and it forks the candidate's
process before that too: neither the test sources nor the key is ever in the candidate's memory. It
evaluates both sides of every assertion itself, with its own builtins; a call to the candidate's
function becomes a message (`{"call", "args", "kwargs"}`, values encoded with exact built-in types
only, see `values`), and its answer is a value, or an exception described as text, never an object.
The candidate's process holds no descriptor to the verdict channel and cannot reach the driver:
under full isolation the driver is init of their pid namespace (it ignores signals from inside) and
not dumpable; under restricted isolation the candidate is also in a Landlock domain of its own and,
as root, runs under another uid. A harness patched in the candidate's memory, gc or frame walking,
and records written to any descriptor it has therefore change nothing.

Semantics kept from running the tests in-process: the test sees the function under its own name and
as `candidate`, and every other callable the module defines (except those shadowing builtins, which
keep their built-in meaning); list, dict and set arguments that the function mutates are updated in
the driver; exceptions arrive as the built-in class of the same name where there is one (a test
with `except ValueError` works) and `SystemExit` fails the test as an exit. Not kept: functions or
objects as arguments or results (they are not plain data: the test fails), and module-level
constants other than callables.
"""

from __future__ import annotations

import builtins
import json
import os
import struct
from typing import Any, Callable, NamedTuple

from rftkit.sandbox.harness import describe, load_entry_point, restore_builtins
from rftkit.sandbox.values import decode, encode

MAX_MESSAGE = 16 << 20
MAX_NAMES = 1000
_LENGTH = struct.Struct(">I")
_BUILTIN_NAMES = frozenset(builtins.__dict__)


class CandidateGone(BaseException):
    """The candidate's process ended, or broke the protocol: every remaining test fails."""


class CandidateExit(BaseException):
    """The function raised SystemExit: the test fails and is flagged (not catchable by `except Exception`)."""


class CandidateError(Exception):
    """An exception raised by the candidate's function, known to the driver only by its description."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


def _mirror(name: str) -> type[CandidateError] | None:
    try:
        return type(name, (CandidateError, getattr(builtins, name)), {})
    except TypeError:  # an incompatible instance layout
        return None


_MIRRORED = {name: cls for name in ("ArithmeticError", "AssertionError", "AttributeError", "IndexError", "KeyError",
                                    "LookupError", "MemoryError", "NameError", "NotImplementedError",
                                    "OverflowError", "RecursionError", "RuntimeError", "TypeError", "ValueError",
                                    "ZeroDivisionError", "UnicodeError", "OSError")
             if (cls := _mirror(name)) is not None}


class Connection:
    """Length-prefixed JSON messages over one end of a socket pair."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, **message: Any) -> None:
        body = json.dumps(message).encode()
        data = memoryview(_LENGTH.pack(len(body)) + body)
        while data:
            data = data[os.write(self.fd, data):]

    def _read(self, n: int) -> bytes | None:
        chunks, left = [], n
        while left:
            chunk = os.read(self.fd, min(left, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> dict | None:
        """The next message; None at end of input. Raises CandidateGone on anything malformed."""
        try:
            header = self._read(_LENGTH.size)
            if header is None:
                return None
            (size,) = _LENGTH.unpack(header)
            body = self._read(size) if size <= MAX_MESSAGE else None
            message = json.loads(body) if body is not None else None
        except (OSError, ValueError, RecursionError) as exc:
            raise CandidateGone(f"unreadable message from the candidate ({type(exc).__name__})") from None
        if not isinstance(message, dict):
            raise CandidateGone("malformed message from the candidate")
        return message


# ------------------------------------------------------------------ the candidate's process (untrusted)


def serve(payload: dict, conn: Connection) -> None:
    """Load the code (reporting compiled / defined / missing as `load_code` does), then answer calls."""
    loaded = load_entry_point(payload, conn)
    if loaded is None:
        return
    namespace = loaded[0]
    names = [k for k, v in list(namespace.items()) if type(k) is str and not k.startswith("__") and callable(v)]
    conn.send(names=names[:MAX_NAMES])
    while (request := conn.recv()) is not None:
        conn.send(**_answer(namespace, request))


def _answer(namespace: dict, request: dict) -> dict:
    restore_builtins()
    try:
        args, kwargs = decode(request["args"]), decode(request["kwargs"])
        value = namespace[request["call"]](*args, **kwargs)
        reply = {"value": encode(value)}
        if any(type(a) in (list, dict, set) for a in args):
            reply["args"] = encode(args)  # mutated in place: the driver updates its copies
    except BaseException as exc:  # noqa: BLE001 - SystemExit and friends are the function's answer too
        reply = {"error": describe(exc), "type": type(exc).__name__[:100], "exit": isinstance(exc, SystemExit)}
    restore_builtins()
    return reply


# ------------------------------------------------------------------ the driver's process (trusted)


def _has_unsupported(tree: Any) -> bool:
    if not isinstance(tree, list) or len(tree) != 2:
        return False
    if tree[0] == "unsupported":
        return True
    if tree[0] in ("list", "tuple", "set", "frozenset"):
        return any(_has_unsupported(item) for item in tree[1])
    return tree[0] == "dict" and any(_has_unsupported(k) or _has_unsupported(v) for k, v in tree[1])


def _write_back(originals: tuple, after: Any) -> None:
    if type(after) is not list:
        return
    for original, new in zip(originals, after):
        if type(original) is list and type(new) is list:
            original[:] = new
        elif type(original) in (dict, set) and type(new) is type(original):
            original.clear()
            original.update(new)


class Proxy:
    """Stands for one of the candidate's functions in the driver."""

    def __init__(self, conn: Connection, name: str):
        self._conn, self.__name__ = conn, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sent_args, sent_kwargs = encode(list(args)), encode(kwargs)
        if _has_unsupported(sent_args) or _has_unsupported(sent_kwargs):
            raise TypeError(f"{self.__name__}() was given a value that is not plain data")
        try:
            self._conn.send(call=self.__name__, args=sent_args, kwargs=sent_kwargs)
        except OSError:
            raise CandidateGone("the candidate's process ended") from None
        reply = self._conn.recv()
        if reply is None:
            raise CandidateGone("the candidate's process ended")
        if "value" in reply:
            try:
                value = decode(reply["value"])
                _write_back(args, decode(reply["args"]) if "args" in reply else None)
            except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
                raise CandidateGone(f"unreadable result ({type(exc).__name__})") from None
            return value
        description = reply.get("error") if type(reply.get("error")) is str else "an exception"
        if reply.get("exit") is True:
            raise CandidateExit(description[:300])
        raise _MIRRORED.get(reply.get("type"), CandidateError)(description[:300])


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _text(value: Any) -> str:
    return value[:300] if type(value) is str else ""


def _load(conn: Connection, channel: Any, ended: Callable[[], tuple[str, bool]]) -> list[str] | None:
    """Relay the candidate's load report as records the driver builds itself; its names, or None."""
    message = conn.recv()
    if message is None or "compiled" not in message:
        channel.send(compiled=False, error=f"the code's process {ended()[0]} before compiling")
        return None
    if message["compiled"] is not True:
        channel.send(compiled=False, error=_text(message.get("error")))
        return None
    channel.send(compiled=True)
    message = conn.recv()
    if message is None or "defined" not in message:
        text, exited = ended()
        channel.send(defined=False, error=f"the code's process {text} while its module ran", exit=exited)
        return None
    if message["defined"] is not True:
        channel.send(defined=False, error=_text(message.get("error")), exit=message.get("exit") is True)
        return None
    tampered = message.get("tampered")
    channel.send(defined=True, tampered=[_text(t) for t in tampered][:20] if type(tampered) is list else [])
    message = conn.recv()
    if message is not None and "missing" in message:
        channel.send(missing=_text(message["missing"]))
        return None
    names = message.get("names") if message is not None else None
    return [n for n in names[:MAX_NAMES] if type(n) is str and n.isidentifier()] if type(names) is list else []


def _run_one(test: dict, fn: Any, scope_base: dict) -> dict:
    scope = dict(scope_base)
    if test["kind"] == "call":
        return {"value": encode(fn(*decode(test["args"])))}
    if test["kind"] == "expr":
        return {"value": encode(eval(test["expr"], scope))}  # noqa: S307 - the task's test, in the driver
    try:
        exec(test["source"], scope)  # noqa: S102
    except AssertionError as exc:
        text = exc.description if isinstance(exc, CandidateError) else describe(exc) if str(exc) else ""
        return {"passed": False, "error": text or "assertion failed"}
    return {"passed": True}


def drive(payload: dict, secret: dict, conn: Connection, channel: Any, ended: Callable[[], tuple[str, bool]]) -> None:
    """secret: tests, noop (the entry point replaced by a no-op returning None, in the driver).
    `ended()` waits for the candidate's process and says how it ended, and whether that was an exit."""
    try:
        names = _load(conn, channel, ended)
    except CandidateGone as exc:
        channel.send(defined=False, error=str(exc))
        return
    if names is None:
        return
    entry = payload["entry_point"]
    fn = _noop if secret["noop"] else Proxy(conn, entry)
    scope_base = {"__builtins__": builtins, **{n: Proxy(conn, n) for n in names if n not in _BUILTIN_NAMES},
                  entry: fn, "candidate": fn}
    gone: dict | None = None
    for test in secret["tests"]:
        outcome = gone
        if outcome is None:
            try:
                outcome = _run_one(test, fn, scope_base)
            except CandidateGone as exc:
                text, exited = ended()
                gone = outcome = {"passed": False, "error": f"not run: {exc} ({text})", "exit": exited}
            except CandidateExit as exc:
                outcome = {"passed": False, "error": str(exc), "exit": True}
            except BaseException as exc:  # noqa: BLE001 - the test's own failure, or the function's exception
                outcome = {"passed": False, "error": exc.description if isinstance(exc, CandidateError)
                           else describe(exc)}
        channel.send(test=test["id"], **outcome)
    channel.send(done=True)


class Split(NamedTuple):
    """A harness in two processes: `candidate(payload, conn)` hosts the untrusted code, `driver(payload,
    secret, conn, channel, ended)` judges it. Jobs for it carry a `secret` the candidate never sees."""

    candidate: Callable[[dict, Connection], None]
    driver: Callable[..., None]


run_tests = Split(candidate=serve, driver=drive)
