"""The GSM8K pack (Cobbe et al. 2021): rows as GSM8K ships them, and the `gsm8k` grader.

A row is `{"question", "answer"}` where the answer is a worked solution ending in `#### 42`. Rows
come from `data.options.source`, a JSONL file or `hf:openai/gsm8k` with `hf_config: main` (or
`socratic`), or, when no source is given, from an offline generator of arithmetic word problems
written in the same format (calculator annotations `<<3*5=15>>` included), so that tests and
examples run without the dataset.

`gsm8k` compares numbers exactly (as fractions: 0.1 + 0.2 is 0.3 here): the reference is what
follows the last `####` of the row's answer; the completion's answer is found by the first
extraction in `extract` that finds one (`hash`: after `####`, `boxed`, `answer_tag`,
`last_number`). Several different answers by that extraction score 0: hedging is not rewarded.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from rftkit.data import DataError, Example
from rftkit.graders.base import Grade, GraderParams, register
from rftkit.tasks.math.answers import boxed_contents, format_number, hash_answers, last_number, parse_number
from rftkit.tasks.rows import PackOptions, load_rows, parse_options, render, required_text, seeded_examples

DEFAULT_PROMPT = "{question}\nSolve it step by step, then write the final answer as a number after '####'."
_ANSWER_TAG_RE = re.compile(r"<answer>([^<]*)</answer>")  # no nested tags: one linear pass


class GSM8KOptions(PackOptions):
    max_steps: int = Field(3, ge=1, le=4, description="Generator only: arithmetic steps per problem (1-4).")


def row_example(row: dict[str, Any], where: str, index: int, prompt: str, id_prefix: str) -> Example:
    required_text(row, "question", where)
    answer = required_text(row, "answer", where)
    if "####" not in answer:
        raise DataError(f"{where}: 'answer' must end in '#### <number>' (GSM8K's format)")
    example_id = str(row["id"]) if "id" in row else f"{id_prefix}-{index}"
    fields = {k: v for k, v in row.items() if k != "id"}
    return Example(id=example_id, prompt=render(prompt, row, where), fields=fields)


def generate(n: int, seed: int, options: dict[str, Any] | None = None) -> list[Example]:
    """`n` GSM8K examples from `options.source` in a seeded order, or `n` generated ones."""
    opts = parse_options(GSM8KOptions, options or {}, "gsm8k")
    prompt = opts.prompt or DEFAULT_PROMPT
    if opts.source is None:
        rng = random.Random(f"gsm8k-{seed}")
        return [row_example(make_problem(rng, opts.max_steps), f"generated row {i}", i, prompt,
                            f"gsm8k-synth-{seed}") for i in range(n)]
    rows = load_rows(opts.source, opts.hf_config, opts.split)
    examples = [row_example(row, where, i, prompt, "gsm8k") for i, (row, where) in enumerate(rows)]
    return seeded_examples(examples, n, seed, "gsm8k")


# ---------------------------------------------------------------- offline generator (GSM8K's row format)

NAMES = ("Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jamal", "Keiko", "Liam")
ITEMS = (("apples", "bag"), ("pencils", "box"), ("stickers", "sheet"), ("cookies", "tray"), ("marbles", "jar"),
         ("cards", "pack"))


def _step(rng: random.Random, name: str, item: str, unit: str, have: int) -> tuple[str, str, int]:
    """One more sentence of the story and its solution line: (question part, solution line, new total)."""
    kinds = ["buy", "double"] + (["give"] if have > 1 else []) + (["share"] if have % 2 == 0 else [])
    kind = rng.choice(kinds)
    if kind == "buy":
        count, each = rng.randint(2, 6), rng.randint(2, 12)
        got = count * each
        return (f"Then {name} buys {count} {unit}s with {each} {item} in each {unit}.",
                f"{name} buys {count}*{each}=<<{count}*{each}={got}>>{got} {item}.\n"
                f"Now {name} has {have}+{got}=<<{have}+{got}={have + got}>>{have + got} {item}.", have + got)
    if kind == "give":
        gone = rng.randint(1, have - 1)
        return (f"{name} gives {gone} {item} to a friend.",
                f"After giving some away, {name} has {have}-{gone}=<<{have}-{gone}={have - gone}>>{have - gone} "
                f"{item}.", have - gone)
    if kind == "double":
        return (f"Later {name}'s {item} are doubled by a generous aunt.",
                f"Doubling gives {have}*2=<<{have}*2={have * 2}>>{have * 2} {item}.", have * 2)
    return (f"{name} keeps half of the {item} and donates the rest.",
            f"Half of them is {have}/2=<<{have}/2={have // 2}>>{have // 2} {item}.", have // 2)


def make_problem(rng: random.Random, max_steps: int = 3) -> dict[str, str]:
    """One word problem with its worked solution, in GSM8K's row format."""
    name, (item, unit) = rng.choice(NAMES), rng.choice(ITEMS)
    have = rng.randint(3, 40)
    story, lines = [f"{name} has {have} {item}."], []
    for _ in range(rng.randint(1, max_steps)):
        sentence, line, have = _step(rng, name, item, unit, have)
        story.append(sentence)
        lines.append(line)
    story.append(f"How many {item} does {name} have now?")
    return {"question": " ".join(story), "answer": "\n".join(lines) + f"\n#### {have}"}


# ---------------------------------------------------------------- grader

Extraction = Literal["hash", "boxed", "answer_tag", "last_number"]


def reference_number(example: Example, field: str):
    answer = example.fields.get(field)
    if not isinstance(answer, str) or "####" not in answer:
        raise DataError(f"example {example.id}: field {field!r} must hold a GSM8K answer ending in '#### <number>'")
    value = parse_number(hash_answers(answer)[-1])
    if value is None:
        raise DataError(f"example {example.id}: no number after the last '####' in {field!r}")
    return value


def candidates(completion: str, method: str) -> list[str]:
    if method == "hash":
        return hash_answers(completion)
    if method == "boxed":
        return boxed_contents(completion)
    if method == "answer_tag":
        return _ANSWER_TAG_RE.findall(completion)
    found = last_number(completion)
    return [] if found is None else [found]


class GSM8KParams(GraderParams):
    answer_field: str = Field("answer", description="Field with the reference solution ending in '#### N'.")
    extract: list[Extraction] = Field(default_factory=lambda: ["hash", "boxed"], min_length=1,
                                      description="Where the completion's answer is, tried in order: hash "
                                      "('#### 42'), boxed, answer_tag (<answer>42</answer>), last_number.")


@dataclass(frozen=True)
class GSM8K:
    name: str
    answer_field: str
    extract: tuple[str, ...]

    def grade(self, example: Example, completion: str) -> Grade:
        reference = reference_number(example, self.answer_field)
        for method in self.extract:
            found = candidates(completion, method)
            if found:
                break
        else:
            return Grade(0.0, f"no answer found (tried {', '.join(self.extract)})")
        values = {parse_number(text) for text in found}
        details = {"method": method, "answers": [text[:60] for text in found[:5]],
                   "reference": format_number(reference)}
        if None in values:
            return Grade(0.0, f"{method}: {found[0][:40]!r} is not a number", details)
        if len(values) > 1:
            return Grade(0.0, f"{method}: {len(values)} different answers; give one", details)
        value = values.pop()
        if value == reference:
            return Grade(1.0, f"correct: {format_number(value)} ({method})", details)
        return Grade(0.0, f"answer {format_number(value)} != {format_number(reference)} ({method})", details)


@register("gsm8k", GSM8KParams, "GSM8K: the completion's number (after '####', in \\boxed{}, ...) equals the "
          "number after the reference's '####', exactly")
def _build(name: str, p: GSM8KParams) -> GSM8K:
    return GSM8K(name, p.answer_field, tuple(p.extract))
