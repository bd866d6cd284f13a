"""python_tests: partial credit, per-test details, and each anti-hacking option with a completion it catches."""

from __future__ import annotations

import pytest

from rftkit.data import Example
from rftkit.graders.code import (PythonTestsGrader, PythonTestsParams, extract_code, forbidden_constructs,
                                 split_assert)
from rftkit.sandbox.values import decode, encode, typed_equal
from rftkit.tasks import GENERATORS

SQUARE = Example(id="square", prompt="square(x)", fields={
    "entry_point": "square", "tests": ["assert square(2) == 4", "assert square(-3) == 9"],
    "hidden_tests": ["assert square(0) == 0", "assert square(10) == 100"],
    "cases": [{"input": [5], "output": 25}],
    "reference": "def square(x):\n    return x * x\n",
    "random_inputs": "def generate(rng):\n    return [rng.randint(1000, 10**6)]\n", "num_random": 5})
CORRECT = "```python\ndef square(x):\n    return x * x\n```"


def grade(code: str, **params):
    options = {"timeout_s": 2.0, **params}
    return PythonTestsGrader("tests", PythonTestsParams(**options)).grade(SQUARE, code)


def test_correct_solution_scores_one_with_details():
    result = grade(CORRECT)
    assert result.score == 1.0 and result.details["total"] == 10 and result.details["compiles"]
    assert [t["name"] for t in result.details["tests"]][:5] == ["visible[0]", "visible[1]", "visible_case[0]",
                                                              "hidden[0]", "hidden[1]"]


def test_partial_credit_is_passed_over_total():
    # right for x <= 10 only: 5 static tests pass, the 5 random inputs (>= 1000) fail
    result = grade("def square(x):\n    return x * x if x <= 10 else 0\n")
    assert result.score == pytest.approx(0.5) and result.details["passed"] == 5
    failing = [t for t in result.details["tests"] if not t["passed"]]
    assert all(t["name"].startswith("random") and t["got"] == "0" for t in failing)


def test_hard_coded_visible_outputs_earn_only_their_share():
    result = grade("def square(x):\n    return {2: 4, -3: 9}[x]\n", hidden_tests=False, random_tests=False)
    assert result.score == pytest.approx(2 / 3)  # 2 visible asserts + 1 visible case
    result = grade("def square(x):\n    return {2: 4, -3: 9}[x]\n")
    assert result.score == pytest.approx(2 / 10) and "KeyError" in result.reason


def test_compile_credit_and_syntax_error():
    broken = grade("def square(x) return x")
    assert broken.score == 0.0 and "SyntaxError" in broken.reason and not broken.details["compiles"]
    wrong = grade("def square(x):\n    return -1\n", compile_credit=0.2)
    assert wrong.score == pytest.approx(0.2)
    assert grade(CORRECT, compile_credit=0.1).score == 1.0  # exactly: accuracy thresholds compare with 1.0


def test_missing_function_and_runtime_error():
    assert "no function named 'square'" in grade("def cube(x):\n    return x ** 3\n").reason
    result = grade("def square(x):\n    return x / 0\n")
    assert result.score == 0.0 and "ZeroDivisionError" in result.details["tests"][0]["error"]


@pytest.mark.parametrize("code,flag", [
    ("import sys\nsys.exit(0)\n", "exit"),
    ("import os\ndef square(x):\n    os._exit(0)\n", "exit"),
    ("def square(x):\n    raise SystemExit\n", "exit"),
    ("import unittest\ndef square(x):\n    raise unittest.SkipTest('no')\n", "exit"),
    ("import builtins\nbuiltins.abs = lambda x: 0\ndef square(x):\n    return x * x\n", "tamper"),
])
def test_exit_and_tamper_tricks_score_zero(code, flag):
    result = grade(code, ast_check=False)
    assert result.score == 0.0 and result.flags == (flag,), result.reason


def test_rigged_eq_is_caught_by_typed_comparison():
    code = "class A:\n    def __eq__(self, o):\n        return True\ndef square(x):\n    return A()\n"
    result = grade(code)
    assert result.score == 0.0 and result.details["tests"][0]["got"] == "<unsupported A>"
    assert not typed_equal(True, 1) and not typed_equal("4", 4)
    assert typed_equal((1, 2), [1, 2.0]) and not typed_equal(2.0, 2)
    assert decode(encode({"a": [1, (2, 3.5)], "b": None})) == {"a": [1, (2, 3.5)], "b": None}


def test_patching_the_harness_in_the_candidates_process_changes_no_verdict():
    # the tests run in a driver process that calls the candidate through a proxy: a patched copy of the
    # harness in the candidate's own process judges nothing, so the wrong function scores 0
    example = Example(id="sq2", prompt="p", fields={"entry_point": "square",
                                                    "tests": ["assert abs(square(3) - 9) < 1e-9"]})
    hack = ("import rftkit.sandbox.harness as h\nh._run_one = lambda test, fn, ns: {'passed': True}\n"
            "def square(x):\n    return 0\n")
    grader = PythonTestsGrader("t", PythonTestsParams(timeout_s=2.0, ast_check=False))
    result = grader.grade(example, hack)
    assert result.score == 0.0
    honest = grader.grade(example, CORRECT)
    assert honest.score == 1.0 and honest.flags == ()


def test_forbidden_constructs_by_ast():
    result = grade("import subprocess\ndef square(x):\n    return x * x\n")
    assert result.score == 0.0 and result.flags == ("forbidden",) and "import subprocess" in result.reason
    import ast
    tree = ast.parse("import os as o\nfrom sys import exit as quit_now\no._exit(1)\nquit_now()\nx.__globals__")
    assert forbidden_constructs(tree, [], ["os._exit", "sys.exit"], ["__globals__"]) == [
        "attribute .__globals__", "call os._exit()", "call sys.exit()"]
    assert grade("import threading\ndef square(x):\n    return x * x\n", forbidden_imports=[]).score == 1.0


def test_extraction_and_assert_splitting():
    assert extract_code("text <code>A</code> ```python\nB\n```") == "A"
    assert extract_code("```python\nB\n```\n```python\nC\n```") == "C\n"
    assert split_assert("assert f(1) == [1, 2]") == ({"kind": "expr", "expr": "f(1)"}, [1, 2], True)
    assert split_assert("assert 3 == f(2)")[0] == {"kind": "expr", "expr": "f(2)"}
    assert split_assert("assert f(1) > 0")[0]["kind"] == "assert"


def test_batch_grading_and_the_code_pack():
    examples = GENERATORS["code"](21, 0, {})
    assert len({e.id for e in examples}) == 21
    grader = PythonTestsGrader("t", PythonTestsParams(timeout_s=3.0))
    grades = grader.grade_batch(examples, ["```python\n" + e.fields["reference"] + "```" for e in examples])
    assert [g.score for g in grades] == [1.0] * 21
    wrong = grader.grade_batch(examples[:3], ["def nothing():\n    pass\n"] * 3)
    assert [g.score for g in wrong] == [0.0] * 3


def test_verdicts_with_a_fake_sandbox():
    """The grader's judgement alone, no processes: a fake runner returns hand-made results."""
    from rftkit.sandbox.config import Isolation
    from rftkit.sandbox.pool import ExecResult

    def fake(records, done=True):
        iso = Isolation("netns+seccomp", "pidns", "readonly-root+tmpfs", "per-worker-uid")
        return ExecResult(records=records, done=done, exit_code=0, signal=None, timed_out=False, wall_s=0.01,
                          stdout="", stderr="", truncated={}, isolation=iso)

    example = Example(id="one", prompt="p",
                      fields={"entry_point": "f", "tests": ["assert f(1) == 2", "assert f(2) == 4"]})
    header = [{"compiled": True}, {"defined": True, "tampered": []}]
    cases = {
        # a forged bare "passed" for a compared test is not a pass; an int 2 is, a float 4.0 for an int 4 is not
        "forged": (header + [{"test": 0, "passed": True}, {"test": 1, "value": ["int", "4"]}, {"done": True}], 0.5),
        "typed": (header + [{"test": 0, "value": ["int", "2"]}, {"test": 1, "value": ["float", "4.0"]},
                            {"done": True}], 0.5),
        "early_exit": (header + [{"test": 0, "value": ["int", "2"]}], 0.0),  # no `done`: exited mid-way
    }
    for name, (records, expected) in cases.items():
        done = any(r.get("done") for r in records)
        grader = PythonTestsGrader("t", PythonTestsParams(noop_check=False),
                                   runner=lambda jobs, r=records, d=done: [fake(r, d) for _ in jobs])
        result = grader.grade(example, "def f(x):\n    return 2 * x\n")
        assert result.score == expected, (name, result.reason)
    assert result.flags == ("exit",)
