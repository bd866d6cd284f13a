"""bounded.py: linear extraction equal to the regexes it replaces, timed patterns, depth-limited JSON,
symbolic math killed at its limit from any thread."""

from __future__ import annotations

import random
import re
import threading
import time

import pytest

from rftkit.graders.bounded import JsonTooDeep, MathTimeout, boxed_contents, loads_bounded, symbolic_compare, \
    tag_contents
from rftkit.graders.match import math_equal
from rftkit.graders.templates import SampleError, parse_output_json

from .conftest import ex, make


def _old_boxed(text: str) -> list[str]:
    """The per-box scan bounded.boxed_contents replaced (quadratic on unclosed boxes): the oracle."""
    found = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, match.end()
        for pos in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            if depth == 0:
                found.append(text[start:pos])
                break
    return found


PIECES = ["<answer>", "</answer>", "<answer", "answer>", "</", "x", " ", "\n", "\\boxed{", "\\fbox {", "{", "}",
          "\\boxed", "1", "<ans>"]


@pytest.mark.parametrize("seed", range(300))
def test_tag_and_box_scans_equal_the_regexes_they_replace(seed):
    rng = random.Random(seed)
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40)))
    assert tag_contents(text, "answer") == re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    assert boxed_contents(text) == _old_boxed(text)


def test_nested_boxes_are_both_reported_as_before():
    assert boxed_contents(r"\boxed{\boxed{1}} and \fbox{2}") == [r"\boxed{1}", "1", "2"]


@pytest.mark.parametrize("grader, text", [
    ({"type": "exact_match", "extract": "answer_tag"}, "<answer>x " * 20_000),  # was 22.6 s
    ({"type": "math_equivalence", "extract": "boxed"}, "\\boxed{1 " * 20_000),  # was over 60 s
    ({"type": "exact_match", "extract": "boxed"}, "\\boxed{" * 20_000 + "}" * 10_000)])
def test_unclosed_tags_and_boxes_are_linear(grader, text):
    g = make(grader.pop("type"), reference="1", **grader)
    start = time.monotonic()
    grade = g.grade(ex(), text)
    assert time.monotonic() - start < 2.0 and grade.score == 0.0


def test_checklist_tag_check_is_linear():
    g = make("checklist", items=[{"name": "t", "check": "tag", "value": "answer"}])
    start = time.monotonic()
    assert g.grade(ex(), "<answer>x " * 20_000).score == 0.0  # was 22.9 s
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("type_name", ["exact_match", "numeric", "threshold"])
def test_a_pathological_extraction_pattern_times_out_with_a_reason(type_name):
    params = {"extract": "regex", "pattern": "(a|aa)+b"}
    params.update({"min": 0} if type_name == "threshold" else {"reference": "1"})
    cpu = time.process_time()  # the `regex` package's limit is CPU time: load on the machine does not move it
    grade = make(type_name, **params).grade(ex(), "a" * 5_000)
    used = time.process_time() - cpu
    assert used < 2.0 and grade.score == 0.0 and not grade.error and "timed out" in grade.reason, (used, grade)


def test_stdlib_patterns_are_recompiled_with_a_timeout():
    from rftkit.graders.match import Extractor

    answer, why = Extractor("regex", pattern=re.compile("(a|aa)+b"))("a" * 5_000)
    assert answer is None and "timed out" in why


def test_json_deeper_than_the_limit_is_a_value_error_not_recursion():
    for text in ("[" * 100_000 + "]" * 100_000, '{"a": ' * 150 + "1" + "}" * 150):
        with pytest.raises(JsonTooDeep):
            loads_bounded(text)
        with pytest.raises(SampleError, match="nested deeper than"):
            parse_output_json(text)
    assert loads_bounded("[[[1]]]") == [[[1]]]


def test_json_schema_scores_deep_output_zero_with_a_reason():
    grader = make("json_schema", schema={"type": "object"})
    grade = grader.grade(ex(), '{"a": ' * 50_000 + "1" + "}" * 50_000)
    assert grade.score == 0.0 and not grade.error and "nested deeper" in grade.reason


def test_symbolic_math_is_killed_at_its_limit():
    math_equal("x + 1", "1 + x")  # the child's start-up (importing sympy) is not charged to the limit
    start = time.monotonic()
    equal, how = math_equal(r"9^{9^{9^{9}}}", "2", timeout_s=1.0)
    assert not equal and "timed out after 1 s" in how and time.monotonic() - start < 5.0
    assert math_equal("0.50", "1/2") == (True, "numeric comparison")
    assert math_equal(r"\frac{2}{4}", r"\frac{1}{2}")[0]  # the child came back after the kill


def test_symbolic_math_has_its_limit_off_the_main_thread_too():
    """math-verify's own timeout is signal.alarm: off in threads. The child's limit is not."""
    out: dict = {}

    math_equal("x + 1", "1 + x")  # started before the clock

    def run() -> None:
        start = time.monotonic()
        try:
            symbolic_compare(r"9^{9^{9^{9}}}", "2", timeout_s=1.0)
        except MathTimeout:
            out["timed_out"] = time.monotonic() - start

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert out["timed_out"] < 5.0


def test_huge_numbers_are_not_numbers_rather_than_errors():
    from rftkit.graders.match import parse_number

    assert parse_number("1/" + "7" * 5_000) is None  # past int()'s digit limit
    grade = make("numeric", reference="1").grade(ex(), "9" * 100_000)
    assert grade.score == 0.0 and not grade.error and "finite" in grade.reason
