"""Tools the model calls from its turns, the tool-call format, and two tools: a calculator and sandboxed Python.

The call format is the one Qwen2.5's and Hermes' chat templates define, and the documented form for
every other template:

    <tool_call>{"name": "calculator", "arguments": {"expression": "(3 + 4) * 12"}}</tool_call>

(whitespace and newlines around the JSON are allowed; "parameters" is read as "arguments", as Llama
3.1 writes it; several calls in one turn run in order, at most MAX_CALLS_PER_TURN). Each call is
answered by one tool message. A malformed call (unclosed tag, invalid JSON, an unknown tool,
arguments that do not match the tool's JSON schema) is answered by a tool message that starts with
"error:" and says what was wrong: the episode goes on, and the model can correct itself.

Where the tokenizer's chat template takes `tools` (rftkit.envs.render), the tools' JSON schemas go
through `apply_chat_template(..., tools=...)`; for other templates the first prompt gets a system
message (`tool_instructions`) that lists them and shows the format above.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jsonschema

from rftkit.envs.base import Message

MAX_CALLS_PER_TURN = 4
MAX_CALL_CHARS = 4_000  # a call longer than this is refused unparsed (bounded work on hostile text)
MAX_RESULT_CHARS = 1_000  # tool output shown to the model is cut here (the episode's token budget is small)
_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    run: Callable[[dict[str, Any]], str]  # arguments (already validated) -> result text

    def schema(self) -> dict[str, Any]:
        """The OpenAI/transformers function schema `apply_chat_template(tools=...)` takes."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class MalformedCall:
    error: str  # what was wrong, shown to the model


def parse_tool_calls(text: str) -> list[ToolCall | MalformedCall]:
    """Every `<tool_call>` in a model turn, parsed (or the reason it cannot be); [] when there is none."""
    calls: list[ToolCall | MalformedCall] = []
    for body in _CALL_RE.findall(text):
        calls.append(_parse_call(body))
    closed = len(calls)
    if text.count("<tool_call>") > closed:  # an opening tag without its closing one
        calls.append(MalformedCall("a <tool_call> tag is not closed with </tool_call>"))
    if len(calls) > MAX_CALLS_PER_TURN:
        calls = calls[:MAX_CALLS_PER_TURN] + [MalformedCall(f"more than {MAX_CALLS_PER_TURN} tool calls in one "
                                                            "turn; the rest were not run")]
    return calls


def _parse_call(body: str) -> ToolCall | MalformedCall:
    if len(body) > MAX_CALL_CHARS:
        return MalformedCall(f"tool call longer than {MAX_CALL_CHARS} characters")
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return MalformedCall(f"tool call is not valid JSON ({exc.msg} at column {exc.colno}); expected "
                             '{"name": ..., "arguments": {...}}')
    except RecursionError:
        return MalformedCall("tool call JSON is nested too deeply")
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return MalformedCall('tool call must be a JSON object with a string "name" and an "arguments" object')
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some templates emit the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            return MalformedCall(f"arguments of {value['name']!r} are a string that is not a JSON object")
    if not isinstance(arguments, dict):
        return MalformedCall(f'"arguments" of {value["name"]!r} must be a JSON object')
    return ToolCall(value["name"], arguments)


def run_tool_calls(tools: Sequence[Tool], calls: Sequence[ToolCall | MalformedCall]) -> tuple[Message, ...]:
    """One tool message per call: the result, or 'error: ...' for a malformed call or a failing tool."""
    by_name = {tool.name: tool for tool in tools}
    return tuple({"role": "tool", "content": _run_one(by_name, call)} for call in calls)


def _run_one(by_name: dict[str, Tool], call: ToolCall | MalformedCall) -> str:
    if isinstance(call, MalformedCall):
        return f"error: {call.error}"
    tool = by_name.get(call.name)
    if tool is None:
        return f"error: unknown tool {call.name[:80]!r}; available: {', '.join(sorted(by_name)) or 'none'}"
    try:
        jsonschema.validate(call.arguments, tool.parameters)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path)
        return f"error: bad arguments for {tool.name}{' (' + where + ')' if where else ''}: {exc.message[:200]}"
    try:
        result = tool.run(call.arguments)
    except ToolError as exc:  # the tool's own verdict on its input (a bad expression, a crashing program)
        return f"error: {exc}"[:MAX_RESULT_CHARS]
    return result if len(result) <= MAX_RESULT_CHARS else result[:MAX_RESULT_CHARS] + " [cut]"


class ToolError(ValueError):
    """A tool's input was wrong (shown to the model as 'error: ...'); any other exception is a bug in
    the tool and stops the run (rftkit.envs.base.EnvironmentFailure)."""


def tool_instructions(tools: Sequence[Tool]) -> str:
    """The system message listing the tools, for chat templates that take no `tools=`."""
    listed = "\n".join(json.dumps(tool.schema()["function"], sort_keys=True) for tool in tools)
    return ("You can call these tools:\n" + listed + "\nTo call one, write <tool_call>{\"name\": NAME, "
            "\"arguments\": {...}}</tool_call> and stop; its result comes back in the next message.")


# ---------------------------------------------------------------- built-in tools


def calculator() -> Tool:
    """Exact arithmetic on + - * / and parentheses (rationals, no float rounding; no code runs)."""
    from rftkit.tasks.countdown import ExpressionError, evaluate_expression

    def run(arguments: dict[str, Any]) -> str:
        try:
            value, _ = evaluate_expression(arguments["expression"])
        except ExpressionError as exc:
            raise ToolError(f"calculator: {exc}") from None
        except RecursionError:
            raise ToolError("calculator: expression nested too deeply") from None
        return str(value)

    return Tool("calculator", "Evaluate an arithmetic expression with + - * / and parentheses, exactly.",
                {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 200}},
                 "required": ["expression"], "additionalProperties": False}, run)


def python_tool(sandbox=None, timeout_s: float = 5.0) -> Tool:
    """Run a Python program in rftkit's sandbox (rftkit.sandbox: its limits, never less isolation) and
    return what it printed; an exception, a timeout or a kill comes back as 'error: ...'."""
    from rftkit.sandbox.config import SandboxConfig

    config = sandbox or SandboxConfig(workers=1)

    def run(arguments: dict[str, Any]) -> str:
        from rftkit.sandbox import Job, get_pool

        result = get_pool(config).run(Job("rftkit.sandbox.harness:run_script", {"code": arguments["code"]}, timeout_s))
        failure = next((r["error"] for r in result.records if "error" in r), None)
        output = result.stdout.strip()
        if result.error:  # the sandbox itself failed: no verdict on the program
            raise RuntimeError(f"python tool: {result.status_text()}")
        if failure or not result.done:
            detail = failure or result.status_text()
            raise ToolError(f"python: {detail}" + (f"\nstdout: {output[:300]}" if output else ""))
        return output if output else "(no output; print() the result)"

    return Tool("python", "Run a Python program and return what it prints (print the answer).",
                {"type": "object", "properties": {"code": {"type": "string", "maxLength": 4000}},
                 "required": ["code"], "additionalProperties": False}, run)


TOOLS: dict[str, Callable[..., Tool]] = {"calculator": calculator, "python": python_tool}
