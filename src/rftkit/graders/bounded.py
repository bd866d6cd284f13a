"""Bounded building blocks for reading model output: every grader that parses what the policy wrote
uses these, so that no completion can make a grading step hang, recurse or run out of memory.

- Extraction is linear: answer tags and `\\boxed{}` are found in one left-to-right pass. The
  obvious regex `<answer>(.*?)</answer>` rescans the rest of the text from every unclosed tag,
  which is quadratic: 20,000 unclosed tags took 23 s, 20,000 unclosed boxes over a minute.
- A user's pattern runs through the `regex` package with a time limit (`REGEX_TIMEOUT_S` of CPU
  time, which is what that package measures, for the whole search); `(a|aa)+b` on a run of a's
  costs one zero score, not a stalled step.
- JSON from a completion is parsed with a nesting limit (`MAX_JSON_DEPTH`): deeper input is a
  `ValueError` with a reason, never a `RecursionError` (json and jsonschema recurse per level).
- Symbolic math (sympy via math-verify) runs in one long-lived child process with a hard
  wall-clock limit and a memory cap: a comparison that runs too long is killed, whichever
  thread asked (math-verify's own timeout is `signal.alarm`, main thread only, and cannot
  interrupt a long C call).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from typing import Any

import regex

REGEX_TIMEOUT_S = 1.0  # CPU seconds for the whole search of one pattern over one text
MAX_JSON_DEPTH = 100  # objects and arrays nested deeper than this are not graded
MATH_MEMORY_BYTES = 4 << 30  # address-space cap of the symbolic-math child
_BOXED_OR_BRACE = re.compile(r"\\(?:boxed|fbox)\s*\{|[{}]")


# ---------------------------------------------------------------- extraction


def tag_contents(text: str, tag: str) -> list[str]:
    """The contents of every `<tag>...</tag>` pair, the same list as
    `re.findall(f"<{tag}>(.*?)</{tag}>", text, re.DOTALL)`, in linear time.

    When an opening tag has no closing tag after it, no later opening tag can have one either,
    so the scan stops there instead of retrying from every later tag."""
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    found, pos = [], 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return found
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            return found
        found.append(text[start + len(open_tag):end])
        pos = end + len(close_tag)


def boxed_contents(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}` with nested braces matched, in order of the
    opening, in one pass: a running brace depth, and a stack of the boxes still open.

    Nested boxes are both reported (`\\boxed{\\boxed{1}}` gives `\\boxed{1}` and `1`), as the
    per-box scan this replaces did; an unclosed box reports nothing."""
    found: list[tuple[int, str]] = []
    open_boxes: list[tuple[int, int]] = []  # (content start, depth once its brace is open)
    depth = 0
    for match in _BOXED_OR_BRACE.finditer(text):
        token = match.group()
        if token == "}":
            if open_boxes and open_boxes[-1][1] == depth:
                start, _ = open_boxes.pop()
                found.append((start, text[start:match.start()]))
            depth -= 1
        else:
            depth += 1
            if token != "{":
                open_boxes.append((match.end(), depth))
    found.sort(key=lambda item: item[0])
    return [content for _, content in found]


# ---------------------------------------------------------------- user patterns


def compile_user_pattern(pattern: str, flags: int = 0) -> regex.Pattern:
    """Compile a pattern from the config with the `regex` package; ValueError says why it is invalid."""
    try:
        return regex.compile(pattern, flags)
    except regex.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None


def as_bounded_pattern(pattern: Any) -> regex.Pattern:
    """A stdlib `re` pattern recompiled with `regex` (same syntax, same flag values) so it takes a timeout."""
    return pattern if isinstance(pattern, regex.Pattern) else regex.compile(pattern.pattern, pattern.flags)


# ---------------------------------------------------------------- JSON


class JsonTooDeep(ValueError):
    """The JSON nests deeper than MAX_JSON_DEPTH."""


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests more than `limit` containers deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads_bounded(text: str, **kwargs: Any) -> Any:
    """`json.loads` that raises `JsonTooDeep` (a ValueError) for input nested deeper than
    MAX_JSON_DEPTH, including input deep enough to exhaust Python's recursion limit."""
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise JsonTooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    # Only text with more brackets than the limit can nest that deep; the walk is skipped otherwise.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth_exceeds(value):
        raise JsonTooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


# ---------------------------------------------------------------- symbolic math in a child process


class MathTimeout(Exception):
    """The symbolic comparison ran past its time limit and its process was killed."""


class MathWorkerError(RuntimeError):
    """The symbolic-math process could not start or died."""


_CHILD_CODE = "from rftkit.graders.bounded import _math_child_main; _math_child_main()"
_STARTUP_TIMEOUT_S = 120.0  # importing sympy on a loaded machine; not charged to any comparison


class _MathWorker:
    """One child process answering `{"answer", "reference"}` lines with `{"equal", "how"}` lines.

    After a kill the next child is started at once, so that its start-up (importing sympy, a
    second or more) overlaps whatever the caller does next instead of delaying the next call."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._buffer = b""
        self._lock = threading.Lock()
        self._owner = os.getpid()

    def compare(self, answer: str, reference: str, timeout_s: float) -> dict[str, Any]:
        with self._lock:  # one comparison at a time; callers on other threads wait their turn
            proc = self._started()
            request = json.dumps({"answer": answer, "reference": reference}) + "\n"  # ASCII: surrogates escaped
            try:
                proc.stdin.write(request.encode())
                proc.stdin.flush()
                line = self._read_line(time.monotonic() + timeout_s)
            except MathTimeout:
                self.stop()
                self._spawn()
                raise
            except (OSError, MathWorkerError) as exc:
                self.stop()
                raise MathWorkerError(f"symbolic-math process failed: {exc}") from None
            return json.loads(line)

    def _spawn(self) -> None:
        # The package this module came from, first: the child must import this very rftkit.
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", _CHILD_CODE], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        except OSError as exc:
            self._proc = None
            raise MathWorkerError(f"cannot start the symbolic-math process: {exc}") from None
        self._ready, self._buffer = False, b""

    def _started(self) -> subprocess.Popen:
        if self._owner != os.getpid():  # a forked copy of a process that had a child: that child is not ours
            self._proc, self._ready, self._buffer, self._owner = None, False, b"", os.getpid()
        if self._proc is None or self._proc.poll() is not None:
            self.stop()
            self._spawn()
        if not self._ready:
            try:
                ready = json.loads(self._read_line(time.monotonic() + _STARTUP_TIMEOUT_S))
            except (MathTimeout, MathWorkerError, ValueError) as exc:
                self.stop()
                raise MathWorkerError(f"the symbolic-math process did not start: {exc}") from None
            if not ready.get("ready"):
                self.stop()
                raise MathWorkerError(f"the symbolic-math process did not start: {ready.get('error')}")
            self._ready = True
        assert self._proc is not None
        return self._proc

    def _read_line(self, deadline: float) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise MathTimeout()
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise MathWorkerError(f"it exited with status {self._proc.wait()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def stop(self) -> None:
        if self._proc is not None and self._owner == os.getpid():
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
            self._proc, self._ready = None, False


_MATH_WORKER = _MathWorker()
atexit.register(_MATH_WORKER.stop)


def symbolic_compare(answer: str, reference: str, timeout_s: float) -> dict[str, Any]:
    """math-verify's verdict on answer vs reference, computed in the child within `timeout_s`.

    Returns {"equal": bool, "how": str} or {"reference_error": str}; raises MathTimeout when the
    limit passed (the child is killed and restarted on the next call) and MathWorkerError when
    the child cannot run."""
    return _MATH_WORKER.compare(answer, reference, timeout_s)


def _math_parse(text: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    wrapped = text if ("$" in text or "\\(" in text or "\\[" in text) else f"${text}$"
    return parse(wrapped, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                 fallback_mode="no_fallback", parsing_timeout=None)


def _math_child_main() -> None:
    """The child's loop: a hard memory cap, math-verify imported once, then one verdict per line.

    Its own timeouts are off (the parent kills it instead), so it needs no signals."""
    import logging
    import resource

    protocol = os.fdopen(os.dup(1), "w", encoding="ascii")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = MATH_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(MATH_MEMORY_BYTES, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        logging.disable(logging.WARNING)  # math-verify logs a warning for every unparseable input
        from math_verify import verify
    except Exception as exc:  # a missing dependency: say so instead of answering nothing
        protocol.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        protocol.flush()
        return
    protocol.write(json.dumps({"ready": True}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            gold = _math_parse(request["reference"])
            if not gold:
                reply: dict[str, Any] = {"reference_error": "does not parse as math"}
            else:
                pred = _math_parse(request["answer"])
                reply = {"equal": bool(verify(gold, pred, timeout_seconds=None)) if pred else False,
                         "how": "symbolic comparison" if pred else "answer does not parse as math"}
        except MemoryError:
            reply = {"equal": False, "how": f"symbolic comparison ran out of memory ({MATH_MEMORY_BYTES >> 30} GiB)"}
        except Exception as exc:  # sympy raises many types on odd input; the verdict is "not equal"
            reply = {"equal": False, "how": f"symbolic comparison failed: {type(exc).__name__}"}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()
