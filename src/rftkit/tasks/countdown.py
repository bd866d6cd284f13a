"""Countdown: combine the given numbers with + - * / to reach a target (the seed's data-efficiency task).

The verifier never evaluates model text with `eval`: the answer is tokenised and parsed by a
small recursive-descent parser over exact rationals (`fractions.Fraction`), so `1/3*3 == 1`
holds and `7/2` is never rounded to an integer.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, register
from rftkit.graders.bounded import tag_contents

SYSTEM_PROMPT = None  # the embedded model is trained without one; hub models can get one via data.system_prompt
MAX_EXPRESSION_CHARS = 200
MAX_DEPTH = 32
_TOKEN_RE = re.compile(r"\s*(?:(\d+)|(\*\*|//|[-+*/()])|(\S))")


def render_prompt(numbers: list[int], target: int) -> str:
    listed = ", ".join(str(n) for n in numbers)
    return (f"Using the numbers [{listed}], make {target}. Use + - * / and each number at most once. "
            "Answer in <answer> </answer> tags.")


# ---------------------------------------------------------------- generator


@dataclass(frozen=True)
class CountdownOptions:
    min_numbers: int = 3
    max_numbers: int = 4
    max_number: int = 20
    max_target: int = 100

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> "CountdownOptions":
        allowed = set(cls.__dataclass_fields__)
        unknown = set(options) - allowed
        if unknown:
            raise ValueError(f"data.options: unknown key(s) {sorted(unknown)} for countdown; "
                             f"allowed: {sorted(allowed)}")
        opts = cls(**options)
        if not 2 <= opts.min_numbers <= opts.max_numbers <= 6:
            raise ValueError("data.options: need 2 <= min_numbers <= max_numbers <= 6")
        if opts.max_number < 2 or opts.max_target < 1:
            raise ValueError("data.options: max_number must be >= 2 and max_target >= 1")
        return opts


def _random_expression(rng: random.Random, numbers: list[int]) -> tuple[str, Fraction]:
    """Combine all `numbers` (in a random order) with random operators into one expression."""
    items: list[tuple[str, Fraction, bool]] = [(str(n), Fraction(n), True) for n in numbers]  # (text, value, atomic)
    rng.shuffle(items)
    while len(items) > 1:
        i = rng.randrange(len(items) - 1)
        (left, lv, latomic), (right, rv, ratomic) = items[i], items[i + 1]
        op = rng.choice("+-*/")
        if op == "/" and rv == 0:
            op = "+"
        value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else lv}[op]
        # Parenthesise compound operands so the text parses back to the same tree.
        left_text = left if latomic else f"({left})"
        right_text = right if ratomic else f"({right})"
        items[i:i + 2] = [(f"{left_text}{op}{right_text}", value, False)]
    return items[0][0], items[0][1]


def make_puzzle(rng: random.Random, opts: CountdownOptions) -> dict[str, Any]:
    while True:
        count = rng.randint(opts.min_numbers, opts.max_numbers)
        numbers = [rng.randint(1, opts.max_number) for _ in range(count)]
        expression, value = _random_expression(rng, numbers)
        if value.denominator == 1 and 1 <= value <= opts.max_target:
            return {"numbers": numbers, "target": int(value), "solution": expression}


def generate(n: int, seed: int, options: dict[str, Any] | None = None) -> list[Example]:
    """`n` seeded puzzles; the same (n, seed, options) always gives the same puzzles."""
    opts = CountdownOptions.from_dict(options or {})
    rng = random.Random(f"countdown-{seed}")
    examples = []
    for i in range(n):
        puzzle = make_puzzle(rng, opts)
        examples.append(Example(id=f"countdown-{seed}-{i}", prompt=render_prompt(puzzle["numbers"], puzzle["target"]),
                                fields=puzzle))
    return examples


# ---------------------------------------------------------------- safe parser


class ExpressionError(ValueError):
    pass


def _tokenize(text: str) -> list[str]:
    tokens = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:  # only trailing whitespace left
            break
        number, op, other = match.groups()
        if other is not None:
            raise ExpressionError(f"character {other!r} is not allowed (only digits, + - * / and parentheses)")
        if op in ("**", "//"):
            raise ExpressionError(f"operator {op!r} is not allowed (only + - * /)")
        tokens.append(number if number is not None else op)
        pos = match.end()
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := atom (('*'|'/') atom)* ; atom := NUMBER | '(' expr ')'"""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.depth = tokens, 0, 0
        self.numbers: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError("expression ends too early")
        self.pos += 1
        return token

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term()
            value = value + right if op == "+" else value - right
        return value

    def term(self) -> Fraction:
        value = self.atom()
        while self.peek() in ("*", "/"):
            op = self.take()
            right = self.atom()
            if op == "/" and right == 0:
                raise ExpressionError("division by zero")
            value = value * right if op == "*" else value / right
        return value

    def atom(self) -> Fraction:
        token = self.take()
        if token == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExpressionError(f"parentheses nested deeper than {MAX_DEPTH}")
            value = self.expr()
            if self.peek() != ")":
                raise ExpressionError("unbalanced parentheses")
            self.pos += 1
            self.depth -= 1
            return value
        if token.isdigit():
            if len(token) > 1 and token.startswith("0"):
                raise ExpressionError(f"number {token!r} has a leading zero")
            self.numbers.append(int(token))
            return Fraction(int(token))
        if token in ("+", "-"):
            raise ExpressionError(f"unary {token!r} is not allowed; combine the given numbers with binary operators")
        raise ExpressionError(f"unexpected {token!r}")


def evaluate_expression(text: str) -> tuple[Fraction, list[int]]:
    """Parse and evaluate exactly; returns (value, numbers used in order). Raises ExpressionError."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    tokens = _tokenize(text)
    if not tokens:
        raise ExpressionError("empty expression")
    parser = _Parser(tokens)
    value = parser.expr()
    if parser.peek() is not None:
        raise ExpressionError("unbalanced parentheses" if parser.peek() == ")" else f"unexpected {parser.peek()!r}")
    return value, parser.numbers


def extract_answer(completion: str) -> tuple[str | None, str]:
    """The text inside the single <answer> tag pair, or (None, reason)."""
    matches = tag_contents(completion, "answer")  # re.findall(r"<answer>(.*?)</answer>", DOTALL), in linear time
    if not matches:
        return None, "no <answer>...</answer> tags"
    if len(matches) > 1:
        return None, f"{len(matches)} answer tags; give exactly one"
    return matches[0].strip(), "ok"


def verify(completion: str, numbers: list[int], target: int) -> Grade:
    """Correctness: one answer, parses, uses only given numbers (each at most once), equals target."""
    answer, why = extract_answer(completion)
    if answer is None:
        return Grade(0.0, why)
    try:
        value, used = evaluate_expression(answer)
    except ExpressionError as exc:
        return Grade(0.0, f"invalid expression: {exc}", {"answer": answer})
    except RecursionError:
        return Grade(0.0, "invalid expression: nested too deeply", {"answer": answer})
    available = Counter(numbers)
    over = Counter(used) - available
    details = {"answer": answer, "value": str(value), "used": used}
    if over:
        bad = sorted(over)
        missing = [n for n in bad if n not in available]
        if missing:
            return Grade(0.0, f"uses {missing[0]}, which is not among the given numbers {numbers}", details)
        return Grade(0.0, f"uses {bad[0]} more often than given", details)
    if value != target:
        return Grade(0.0, f"evaluates to {value}, not {target}", details)
    return Grade(1.0, f"correct: {answer} = {target}", details)


def format_grade(completion: str) -> Grade:
    """Format credit: half for exactly one answer tag pair, half more if its content parses."""
    answer, why = extract_answer(completion)
    if answer is None:
        return Grade(0.0, why)
    try:
        evaluate_expression(answer)
    except (ExpressionError, RecursionError) as exc:
        return Grade(0.5, f"tags ok, but the expression does not parse: {exc}", {"answer": answer})
    return Grade(1.0, "well-formed answer", {"answer": answer})


# ---------------------------------------------------------------- graders


def _puzzle_fields(example: Example) -> tuple[list[int], int]:
    try:
        numbers = [int(n) for n in example.fields["numbers"]]
        target = int(example.fields["target"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"example {example.id}: countdown graders need integer fields 'numbers' (list) and "
                         f"'target'; {exc}") from None
    return numbers, target


class CountdownParams(GraderParams):
    pass


class CountdownFormatParams(GraderParams):
    pass


@dataclass(frozen=True)
class CountdownCorrect:
    name: str

    def grade(self, example: Example, completion: str) -> Grade:
        numbers, target = _puzzle_fields(example)
        return verify(completion, numbers, target)


@dataclass(frozen=True)
class CountdownFormat:
    name: str

    def grade(self, example: Example, completion: str) -> Grade:
        return format_grade(completion)


@register("countdown", CountdownParams, "Countdown correctness: 1 if the <answer> expression uses only the given "
          "numbers (each at most once) and equals the target exactly, else 0")
def _build_correct(name: str, params: CountdownParams) -> CountdownCorrect:
    return CountdownCorrect(name)


@register("countdown_format", CountdownFormatParams, "Countdown format: 0.5 for one <answer> tag pair, 1 if its "
          "content also parses as arithmetic")
def _build_format(name: str, params: CountdownFormatParams) -> CountdownFormat:
    return CountdownFormat(name)

