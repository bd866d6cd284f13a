"""Fuzz: every registered grader type, hostile completions and hostile rows, a verdict in bounded time.

For each grader type in the registry (a type without an entry in CONFIGS fails the test: new
graders get fuzzed too) and each hostile input (size, nesting, unclosed tags, a pathological
regex, non-finite numbers, surrogates, control characters), grading through `grade_all` must
give a verdict: a score in [0, 1] with a reason, or an error counted in `grader/errors`; within
BOUND_S seconds of this process's CPU time per call, and WALL_S seconds of wall clock (the CPU
bound catches super-linear work whatever else loads the machine; the wall bound catches waits on
children: the sandbox, the symbolic-math process, the judge). Before the fixes 20,000 unclosed
`<answer>` tags took 23 s and 20,000 unclosed `\\boxed{` over a minute. The result must also be
writable as JSONL. A hostile row (a null field, a field nested deeper than
the recursion limit) in a batch must not change the grades of its neighbours.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rftkit.data import Example, write_jsonl
from rftkit.graders import GRADER_TYPES, WeightedGrader, load_builtin_graders
from rftkit.graders.combine import grade_all

from .conftest import make

load_builtin_graders()
BOUND_S = 5.0  # CPU seconds of this process per call; a user pattern may use 1 s of it
WALL_S = 30.0
FUZZ_FUNCTIONS = Path(__file__).with_name("fuzz_functions.py")
SANDBOX = {"timeout_s": 2.0}

# One configuration per grader type, pointed at the places hostile text can hurt: extraction,
# user patterns, JSON, symbolic math. `item.answer` is "42" in every example.
CONFIGS: dict[str, dict] = {
    "environment": {},  # on plain text (no episode) it masks: the verdict is still bounded and reasoned
    "countdown": {},
    "countdown_format": {},
    "python_tests": SANDBOX,
    "triton_format": SANDBOX,
    "triton_compiles": SANDBOX,
    "triton_correct": SANDBOX,
    "triton_runtime": SANDBOX,
    "string_check": {"reference": "{{item.answer}}", "operation": "ilike", "normalize": ["nfkc", "lower"]},
    "exact_match": {"extract": "answer_tag", "reference": "{{item.answer}}"},
    "numeric": {"extract": "last_number", "reference": "{{item.answer}}"},
    "math_equivalence": {"extract": "boxed", "reference": "{{item.answer}}", "timeout_s": 2},
    "text_similarity": {"reference": "{{item.answer}} is the answer", "evaluation_metric": "rouge_l"},
    "regex": {"must_match": ["(a|aa)+b", "(a+)+b", "^(\\w+\\s?)*$"], "must_not_match": ["\\d{3}"],
              "scoring": "fraction"},
    "json_schema": {"schema": {"type": "object", "required": ["answer"], "properties": {"answer": {}}},
                    "credit": "required_fields"},
    "threshold": {"extract": "regex", "pattern": "(x+x+)+y|(\\d+)", "min": 0, "max": 100},
    "instruction_following": {"constraints": [{"type": "word_count", "min": 1, "max": 1000},
                                              {"type": "valid_json"}, {"type": "paragraph_count", "min": 1}]},
    "ifeval": {},
    "gsm8k": {"answer_field": "gsm8k_answer", "extract": ["hash", "boxed", "answer_tag", "last_number"]},
    "math_boxed": {"solution_field": "math_solution", "timeout_s": 2},
    "checklist": {"items": [{"name": "tag", "check": "tag", "value": "answer"},
                            {"name": "json", "check": "json"},
                            {"name": "re", "check": "regex", "value": "(a|aa)+$"}]},
    "rank": {"reference": "{{item.answer}}", "list_format": "auto"},
    "top_n": {"references": "{{item.answers}}", "n": 3},
    "llm_judge": {"rubric": "Reference answer: {{item.answer}}\nModel answer: {{sample.output_text}}",
                  "model": "judge", "range": [0, 10], "max_retries": 0, "timeout_s": 3},
    "score_model": {"input": [{"role": "user", "content": {"type": "input_text", "text":
                    "Reference answer: {{item.answer}}\nModel answer: {{sample.output_text}}"}}],
                    "model": "judge", "range": [0, 10], "max_retries": 0, "timeout_s": 3},
    "label_model": {"input": [{"role": "user", "content": "Reference answer: {{item.answer}}\n"
                               "Model answer: {{sample.output_text}}"}], "model": "label",
                    "labels": ["correct", "incorrect"], "passing_labels": ["correct"], "max_retries": 0,
                    "timeout_s": 3},
    "multi": {"graders": [{"name": "tag", "type": "exact_match", "extract": "answer_tag",
                           "reference": "{{item.answer}}"},
                          {"name": "box", "type": "math_equivalence", "reference": "{{item.answer}}", "timeout_s": 2}],
              "calculate_output": "max(tag, box)"},
    "function": {"function": f"{FUZZ_FUNCTIONS}:bounded_reward"},
    "openai": {"grader": {"type": "multi", "graders": {
        "sim": {"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
                "evaluation_metric": "fuzzy_match"},
        "check": {"type": "string_check", "input": "{{sample.output_json.answer}}", "reference": "{{item.answer}}",
                  "operation": "eq"}}, "calculate_output": "0.5 * sim + 0.5 * check"}},
    "python": {"source": "def grade(sample, item):\n    return float(item['answer'] in sample['output_text'])\n",
               **SANDBOX},
}
JUDGED = ("llm_judge", "score_model", "label_model")


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


HOSTILE: dict[str, str] = {
    "empty": "",
    "huge_plain": "the answer is 42. " * 30_000,  # 540k characters: under the cap, graded for real
    "over_the_cap": "x" * 1_000_001,  # scored 0 without reaching the graders
    "unclosed_answer_tags": "<answer>x " * 20_000,
    "unclosed_boxes": "\\boxed{1 " * 20_000,
    "unclosed_think": "<think>" * 20_000,
    "unclosed_fences": "```json\n" * 20_000,
    "unclosed_code_tags": "<code>def f(): " * 5_000 + "<triton_code>" * 5_000,
    "nested_json_arrays": "[" * 100_000 + "]" * 100_000,
    "nested_json_objects": _nested(50_000),
    "json_just_too_deep": _nested(150),
    "nested_latex": "\\boxed{" + "\\frac{1}{" * 3_000 + "2" + "}" * 3_001,
    "nested_parens": "<answer>" + "(" * 20_000 + "1" + ")" * 20_000 + "</answer>",
    "backtracking_bait": "a" * 5_000 + "!",
    "backtracking_bait_x": "x" * 5_000,
    "spaces_then_no_score": "score" + " " * 50_000 + "x",
    "non_finite": "NaN inf -Infinity 1e999 <answer>nan</answer> \\boxed{\\infty}",
    "json_non_finite": '{"answer": NaN, "score": Infinity}',
    "huge_number": "9" * 100_000,
    "huge_fraction": "<answer>1/" + "7" * 5_000 + "</answer> \\boxed{1/" + "3" * 5_000 + "}",
    "huge_power": "\\boxed{9^{9^{9^{9}}}}",
    "lone_surrogates": "\ud800 answer \udfff <answer>\ud83d</answer> \\boxed{\udc00}",
    "control_characters": "\x00\x01\x1b[31m\x7f" * 2_000,
    "many_answers": "<answer>42</answer>" * 20_000,
    "many_numbers": "1 " * 200_000,
    "bullets_and_lines": "- item\n" * 50_000 + "\n\n" * 20_000,
}


def example(**fields) -> Example:
    base = {"answer": "42", "answers": ["42", "41"], "numbers": [1, 2, 3], "target": 6, "entry_point": "f",
            "tests": ["assert f(1) == 1"], "reference": "def f(x):\n    return x\n", "solution": "42",
            "instruction_id_list": ["punctuation:no_comma", "detectable_format:json_format"],
            "kwargs": [{}, {}], "name": "relu", "gsm8k_answer": "6 * 7 = 42\n#### 42",
            "math_solution": "So it is $\\boxed{42}$."}
    base.update(fields)
    return Example(id=str(fields.get("id", "e1")), prompt="What is the answer?", fields=base)


@pytest.fixture(scope="module")
def graders():
    from .judge_server import JudgeServer

    server = JudgeServer().start()
    built = {}
    for type_name, params in CONFIGS.items():
        if type_name in JUDGED:
            params = {**params, "base_url": f"http://127.0.0.1:{server.server_address[1]}/v1"}
        if type_name == "openai":
            params = {**params, "judge": {}}
        built[type_name] = make(type_name, **params)
    yield built
    server.shutdown()
    server.server_close()


def test_every_registered_type_is_fuzzed():
    # types that other test modules register for themselves (in the same worker process) are not rftkit's
    builtin = [name for name, kind in GRADER_TYPES.items() if kind.build.__module__.startswith("rftkit")]
    assert sorted(builtin) == sorted(CONFIGS)


def assert_verdict(grade, name: str) -> None:
    assert 0.0 <= grade.score <= 1.0 and isinstance(grade.reason, str) and grade.reason, (name, grade)
    if grade.error:
        assert grade.score == 0.0


# Graders outside graders/ that still scan quadratically; not run (each takes a minute). Their fix
# is `rftkit.graders.bounded.tag_contents` in place of `re.findall(r"<tag>(.*?)</tag>", ...)`.
KNOWN_QUADRATIC: dict[tuple[str, str], str] = {}


def hostile_cases():
    for type_name in CONFIGS:
        for case in HOSTILE:
            known = KNOWN_QUADRATIC.get((type_name, case))
            marks = [pytest.mark.xfail(run=False, reason=f"quadratic: {known}")] if known else []
            yield pytest.param(type_name, case, marks=marks, id=f"{type_name}-{case}")


@pytest.mark.parametrize("type_name, case", list(hostile_cases()))
def test_hostile_completion_gets_a_verdict_in_time(graders, type_name, case, tmp_path):
    text = HOSTILE[case]
    start, cpu = time.monotonic(), time.process_time()
    results, stats = grade_all([WeightedGrader(graders[type_name], 1.0)], [example()], [text])
    elapsed, used = time.monotonic() - start, time.process_time() - cpu
    assert used < BOUND_S and elapsed < WALL_S, f"{type_name} took {used:.1f} s CPU, {elapsed:.1f} s on {case}"
    grade = results[0].grades["g"]
    assert_verdict(grade, f"{type_name}/{case}")
    assert stats.errors["g"] == int(grade.error) and stats.masked["g"] == int(grade.masked)  # errors are counted
    if case == "over_the_cap":
        assert "not graded" in grade.reason
    write_jsonl(tmp_path / "out.jsonl", [{"completion": text[:1000], "reason": grade.reason,
                                          "details": grade.details}])
    json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))  # valid JSON, even with surrogates


def _deep_list(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_ROWS = {
    "null_fields": {"answer": None, "answers": None, "numbers": None, "target": None, "tests": None,
                    "instruction_id_list": None, "kwargs": None, "solution": None},
    "nested_field": {"answer": _deep_list(5_000), "solution": _deep_list(5_000)},
    "wrong_types": {"answer": {"x": 1}, "answers": 7, "numbers": "abc", "target": [1], "kwargs": "no",
                    "instruction_id_list": [3], "tests": [None]},
}


@pytest.mark.parametrize("row", list(HOSTILE_ROWS))
@pytest.mark.parametrize("type_name", list(CONFIGS))
def test_one_hostile_row_never_changes_its_neighbours(graders, type_name, row):
    good = [example(id="a"), example(id="c")]
    completions = ["<answer>42</answer> \\boxed{42} 42", "<answer>41</answer>"]
    alone, _ = grade_all([WeightedGrader(graders[type_name], 1.0)], good, completions)
    batch = [good[0], example(id="bad", **HOSTILE_ROWS[row]), good[1]]
    start, cpu = time.monotonic(), time.process_time()
    results, stats = grade_all([WeightedGrader(graders[type_name], 1.0)], batch,
                               [completions[0], "<answer>42</answer>", completions[1]])
    assert time.process_time() - cpu < 2 * BOUND_S and time.monotonic() - start < WALL_S
    assert_verdict(results[1].grades["g"], f"{type_name}/{row}")
    assert stats.errors["g"] == sum(r.grades["g"].error for r in results)
    for before, after in zip(alone, (results[0], results[2])):
        b, a = before.grades["g"], after.grades["g"]
        assert (a.score, a.error, a.masked) == (b.score, b.error, b.masked), (type_name, row, b.reason, a.reason)
