"""The `python` grader (OpenAI's): grade(sample, item) -> float, inline or from a file, sandboxed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rftkit.data import Example
from rftkit.graders import GRADER_TYPES, load_builtin_graders

load_builtin_graders()
ITEM = Example(id="q1", prompt="What is 6*7?", fields={"reference_answer": "42"})
EXACT = ("def grade(sample, item):\n"
         "    return 1.0 if sample['output_text'].strip() == item['reference_answer'] else 0.0\n")


def build(**params):
    grader_type = GRADER_TYPES["python"]
    return grader_type.build("py", grader_type.params.model_validate({"timeout_s": 2.0, **params}))


def test_inline_source_scores_each_completion():
    grades = build(source=EXACT).grade_batch([ITEM] * 2, ["42", "41"])
    assert [g.score for g in grades] == [1.0, 0.0] and not any(g.error for g in grades)


def test_file_source_and_json_sample(tmp_path):
    path = tmp_path / "grader.py"
    path.write_text("def grade(sample, item):\n    return sample['output_json']['n'] / 100\n")
    result = build(path=str(path)).grade(ITEM, '{"n": 25}')
    assert result.score == 0.25


def test_out_of_range_is_clamped_and_nan_is_zero():
    over = build(source="def grade(sample, item):\n    return 3\n").grade(ITEM, "x")
    nan = build(source="def grade(sample, item):\n    return float('nan')\n").grade(ITEM, "x")
    assert over.score == 1.0 and "clamped from 3" in over.reason and nan.score == 0.0


@pytest.mark.parametrize("source,message", [
    ("def grade(sample, item):\n    return 1 / 0\n", "ZeroDivisionError"),
    ("def grade(sample, item):\n    return 'high'\n", "returned str"),
    ("def score(sample, item):\n    return 1.0\n", "defines no function grade"),
    ("def grade(sample, item):\n    while True:\n        pass\n", "time limit"),
])
def test_failures_are_grader_errors(source, message):
    result = build(source=source, timeout_s=1.0).grade(ITEM, "42")
    assert result.error and result.score == 0.0 and message in result.reason


def test_the_grader_runs_sandboxed():
    source = ("import socket, os\ndef grade(sample, item):\n    try:\n"
              "        socket.create_connection(('1.1.1.1', 53), 0.5)\n"
              "        return 1.0\n    except OSError:\n"
              "        return 0.5 if 'HOME' not in os.environ or os.getcwd() == os.environ['HOME'] else 0.0\n")
    assert build(source=source).grade(ITEM, "x").score == 0.5


def test_config_errors_name_the_problem():
    with pytest.raises(ValidationError, match="exactly one of 'source'"):
        GRADER_TYPES["python"].params.model_validate({})
    with pytest.raises(ValidationError, match="not valid Python"):
        GRADER_TYPES["python"].params.model_validate({"source": "def grade(:"})
    with pytest.raises(ValidationError, match="not found"):
        GRADER_TYPES["python"].params.model_validate({"path": "/no/such/file.py"})
