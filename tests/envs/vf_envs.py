"""Environments written for the verifiers package (v0 API), as a verifiers user writes them: nothing rftkit.

`load_environment(kind)` is what `env.options.load: tests/envs/vf_envs.py:load_environment` calls.
"""

import verifiers as vf
from datasets import Dataset

QUESTIONS = [{"question": f"What is {a} + {b}? Answer with the number only.", "answer": str(a + b)}
             for a, b in [(2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (1, 1), (3, 3), (5, 5), (7, 7),
                          (20, 1), (30, 2), (40, 3)]]


def _text(message) -> str:
    return (message.get("content") if isinstance(message, dict) else message.content) or ""


def exact(parser, completion, answer) -> float:
    return 1.0 if (parser.parse_answer(completion) or "").strip() == answer else 0.0


def digits(parser, completion) -> float:
    """Partial credit: the share of the last answer's characters that are digits (so rewards differ)."""
    text = (parser.parse_answer(completion) or "").strip()
    return sum(c.isdigit() for c in text) / len(text) if text else 0.0


def turns_used(state) -> float:
    return float(len(state["trajectory"]))


class RetryEnv(vf.MultiTurnEnv):
    """Says 'Wrong, try again.' until the answer is right; a stop condition ends the rollout on success."""

    @vf.stop
    async def solved(self, state) -> bool:
        if not state["trajectory"]:
            return False
        return _text(state["trajectory"][-1]["completion"][-1]).strip() == state["answer"]

    async def env_response(self, messages, state, **kwargs):
        state["retries"] = state.get("retries", 0) + 1
        return [{"role": "user", "content": "Wrong, try again."}]


class BrokenEnv(vf.MultiTurnEnv):
    async def env_response(self, messages, state, **kwargs):
        raise ZeroDivisionError("the world divided by zero")


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


def load_environment(kind: str = "single", max_turns: int = 3, size: int = 10):
    dataset = Dataset.from_list(QUESTIONS[:size])  # the last three questions are the eval_dataset
    parser = vf.Parser()
    if kind == "single":
        return vf.SingleTurnEnv(dataset=dataset, parser=parser, rubric=vf.Rubric(funcs=[exact], parser=parser))
    if kind in ("retry", "retry_graded"):
        rubric = vf.Rubric(funcs=[exact, digits] if kind == "retry_graded" else [exact], parser=parser,
                           weights=[1.0, 0.5] if kind == "retry_graded" else None)
        rubric.add_metric(turns_used)
        return RetryEnv(dataset=dataset, eval_dataset=Dataset.from_list(QUESTIONS[10:]), parser=parser,
                        rubric=rubric, max_turns=max_turns)
    if kind == "tool":
        return vf.ToolEnv(dataset=dataset, tools=[add], parser=parser, rubric=vf.Rubric(funcs=[exact], parser=parser),
                          max_turns=max_turns)
    if kind == "broken":
        return BrokenEnv(dataset=dataset, parser=parser, rubric=vf.Rubric(funcs=[exact], parser=parser),
                         max_turns=max_turns)
    raise ValueError(kind)
