"""arithmetic_tools: arithmetic word problems with a calculator and/or a sandboxed Python tool.

Each model turn either calls tools (rftkit.envs.tools: `<tool_call>{json}</tool_call>`, or the chat
template's own format) and gets their results back as tool messages, or answers: a turn without a
tool call ends the episode, and its `<answer>N</answer>` is compared with the problem's exact answer.
A malformed call (bad JSON, unknown tool, wrong arguments, an expression that does not parse, a
program that raises) gets an `error: ...` tool message, never a crash.

Data: `data.source: word_problems` (seeded templates; each row's `answer` is an integer). Options:
`tools` (calculator, python), `timeout_s` and `sandbox` for the Python tool (the sandbox's limits,
as under a code grader).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from pydantic import Field

from rftkit.data import Example
from rftkit.envs import EnvParams, register_environment
from rftkit.envs.base import EnvReply, EpisodeStart, score_each
from rftkit.envs.tools import Tool, calculator, parse_tool_calls, python_tool, run_tool_calls
from rftkit.graders.base import Grade
from rftkit.sandbox.config import SandboxConfig
from rftkit.tasks.countdown import ExpressionError, evaluate_expression, extract_answer

_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana")
_ITEMS = ("apples", "pens", "stamps", "shells", "cards", "marbles")


def _problem(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b, c = rng.randint(2, 40), rng.randint(2, 12), rng.randint(2, 12)
    kind = rng.randrange(5)
    if kind == 0:
        return f"{name} has {a} {item} and buys {b} packs of {c} {item}. How many {item} does {name} have?", a + b * c
    if kind == 1:
        return f"A shop sells {a} {item} a day for {b} days, then {c} more. How many {item} did it sell?", a * b + c
    if kind == 2:
        return (f"{b} boxes hold {a} {item} each, and {c} {item} are taken out. How many {item} are left?",
                a * b - c)
    if kind == 3:
        total = b * c * rng.randint(1, 6)
        return (f"{name} shares {total} {item} equally among {b} friends and keeps none. How many {item} does each "
                f"friend get?", total // b)
    return (f"{name} had {a + c} {item}, gave away {c}, then doubled what was left {b % 3 + 1} time(s). How many "
            f"{item} does {name} have?", a * 2 ** (b % 3 + 1))


def generate(n: int, seed: int, options: dict[str, Any] | None = None) -> list[Example]:
    """`n` seeded word problems (the task generator of `data.source: word_problems`)."""
    if options:
        raise ValueError(f"data.options: unknown key(s) {sorted(options)} for word_problems; it takes none")
    rng = random.Random(f"word-problems-{seed}")
    examples = []
    for i in range(n):
        text, answer = _problem(rng)
        examples.append(Example(id=f"word-{seed}-{i}", prompt=f"{text} Use a tool to compute it, then answer in "
                                "<answer> </answer> tags.", fields={"answer": answer}))
    return examples


@dataclass
class ToolTaskState:
    answer: int
    tool_calls: int = 0
    tool_errors: int = 0
    final: str | None = None  # the turn without a tool call
    results: list[str] = field(default_factory=list)


def check_answer(reply: str, answer: int) -> Grade:
    text, why = extract_answer(reply)
    if text is None:
        return Grade(0.0, why)
    try:
        value, _ = evaluate_expression(text)
    except (ExpressionError, RecursionError) as exc:
        return Grade(0.0, f"answer {text[:60]!r} is not a number ({exc})", {"answer": text})
    if value != answer:
        return Grade(0.0, f"answer {value} != {answer}", {"answer": str(value)})
    return Grade(1.0, f"correct: {answer}", {"answer": str(value)})


@dataclass
class ArithmeticTools:
    tools: Sequence[Tool]
    name: str = "arithmetic_tools"

    def reset(self, example: Example) -> EpisodeStart:
        try:
            answer = int(example.fields["answer"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"example {example.id}: arithmetic_tools needs an integer field 'answer'") from None
        return EpisodeStart(ToolTaskState(answer))

    def step(self, state: ToolTaskState, reply: str) -> EnvReply:
        calls = parse_tool_calls(reply)
        if not calls:
            state.final = reply
            return EnvReply(done=True)
        results = run_tool_calls(self.tools, calls)
        state.tool_calls += len(calls)
        state.tool_errors += sum(m["content"].startswith("error:") for m in results)
        state.results += [m["content"] for m in results]
        return EnvReply(results)

    def close(self, state: ToolTaskState, reason: str) -> None:
        return None

    def outcome(self, state: ToolTaskState) -> Grade:
        details = {"tool_calls": state.tool_calls, "tool_errors": state.tool_errors}
        if state.final is None:
            return Grade(0.0, f"no final answer ({state.tool_calls} tool calls)", details)
        grade = check_answer(state.final, state.answer)
        return Grade(grade.score, grade.reason, {**grade.details, **details})

    def score(self, states) -> list[Grade | None]:
        return score_each(self, states)


class ArithmeticToolsParams(EnvParams):
    tools: list[Literal["calculator", "python"]] = Field(["calculator"], min_length=1,
                                                         description="Tools the model may call.")
    timeout_s: float = Field(5.0, gt=0, description="Wall-clock limit of one Python tool run.")
    sandbox: SandboxConfig = Field(default_factory=lambda: SandboxConfig(workers=1),
                                   description="Limits and isolation of the Python tool (rftkit.sandbox).")


@register_environment("arithmetic_tools", ArithmeticToolsParams, "Arithmetic word problems with a calculator and/or "
                      "sandboxed Python tool; outcome 1 for the exact answer")
def _build(params: ArithmeticToolsParams) -> ArithmeticTools:
    made = {"calculator": calculator, "python": lambda: python_tool(params.sandbox, params.timeout_s)}
    return ArithmeticTools(tuple(made[name]() for name in dict.fromkeys(params.tools)))
