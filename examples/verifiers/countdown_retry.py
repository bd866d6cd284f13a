"""Countdown with retries, written for verifiers 0.4 as its users write environments (nothing here imports rftkit).

A Taskset of puzzles (countdown_puzzles.jsonl beside this file), a Task whose reward checks the last reply, and
an Env that relays feedback after a wrong answer (what the expression evaluates to) for up to `max_tries` answers.
Train it with `rft train examples/verifiers_countdown.yaml`; `vf-eval countdown_retry` runs the same file.
"""

import ast
import json
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import verifiers.v1 as vf

PUZZLES = Path(__file__).with_name("countdown_puzzles.jsonl")
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
             ast.Div: lambda a, b: a / b}


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of + - * / over integers, and the integers used; ValueError for anything else."""
    if len(expression) > 200:
        raise ValueError("too long")

    def walk(node, used):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            left, right = walk(node.left, used), walk(node.right, used)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError("division by zero")
            return OPERATORS[type(node.op)](left, right)
        raise ValueError(f"not allowed: {type(node).__name__}")

    used: list[int] = []
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise ValueError("does not parse") from exc
    return walk(tree.body, used), used


def judge(reply: str, numbers: list[int], target: int) -> tuple[bool, str]:
    """(solved, feedback for a wrong answer)."""
    answers = ANSWER.findall(reply)
    if len(answers) != 1:
        return False, "Give exactly one answer in <answer> </answer> tags."
    answer = answers[0].strip()
    try:
        value, used = evaluate(answer)
    except (ValueError, RecursionError) as exc:
        return False, f"{answer}: {exc}."
    if Counter(used) - Counter(numbers):
        return False, f"{answer} uses numbers that are not given, or more often than given: {numbers}."
    if value != target:
        return False, f"{answer} = {value}, not {target}."
    return True, ""


class PuzzleData(vf.TaskData):
    numbers: list[int]
    target: int


class PuzzleTask(vf.Task[PuzzleData]):
    @vf.reward(weight=1.0)
    async def solved(self, trace: vf.Trace) -> float:
        return float(judge(trace.last_reply, self.data.numbers, self.data.target)[0])

    @vf.metric
    async def answers(self, trace: vf.Trace) -> float:
        return float(trace.num_turns)


class PuzzleConfig(vf.TasksetConfig):
    num_tasks: int | None = None


class PuzzleTaskset(vf.Taskset[PuzzleTask, PuzzleConfig]):
    def load(self):
        with PUZZLES.open() as rows:
            for i, line in enumerate(rows):
                if self.config.num_tasks is not None and i >= self.config.num_tasks:
                    break
                row = json.loads(line)
                listed = ", ".join(str(n) for n in row["numbers"])
                prompt = (f"Using the numbers [{listed}], make {row['target']}. Use + - * / and each number at most "
                          "once. Answer in <answer> </answer> tags.")
                yield PuzzleTask(PuzzleData(prompt=prompt, numbers=row["numbers"], target=row["target"]),
                                 self.config.task)


class RetryEnvConfig(vf.EnvConfig):
    agent: vf.AgentConfig = vf.AgentConfig()
    max_tries: int = 3


class RetryEnv(vf.Env[RetryEnvConfig]):
    async def run(self, task, agents):
        async with agents.agent.interaction(task) as chat:
            segment = await chat.turn()
            for _ in range(self.config.max_tries - 1):
                if segment.terminated:
                    break
                solved, feedback = judge(segment.last_reply, task.data.numbers, task.data.target)
                if solved:
                    break
                segment = await chat.turn(feedback)


__all__ = ["PuzzleTaskset", "RetryEnv"]
