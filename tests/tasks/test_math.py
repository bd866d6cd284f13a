"""The MATH pack: rows as MATH ships them, its generator, `math_boxed`, and linear-time boxes."""

from __future__ import annotations

import json
import time

import pytest

from rftkit.config import DataConfig
from rftkit.data import DataError, Example
from rftkit.graders import GRADER_TYPES, load_builtin_graders
from rftkit.tasks import load_examples
from rftkit.tasks.math import generate
from rftkit.tasks.math.answers import boxed_contents, normalize_latex

load_builtin_graders()
ROW = {"problem": "If $x^2 = 4$ and $x > 0$, what is $\\frac{x}{4}$?", "level": "Level 1", "type": "Algebra",
       "solution": "Since $x = 2$, we get $\\frac{x}{4} = \\boxed{\\frac{1}{2}}$."}


def grader(**params):
    spec = GRADER_TYPES["math_boxed"]
    return spec.build("correct", spec.params.model_validate(params))


def example(solution: str = ROW["solution"], **fields) -> Example:
    return Example(id="e", prompt="q", fields={**ROW, "solution": solution, **fields})


@pytest.mark.parametrize("text, boxes", [
    ("\\boxed{1}", ["1"]),
    ("\\boxed{\\frac{1}{2}} then \\fbox{3}", ["\\frac{1}{2}", "3"]),
    ("\\boxed {x}", ["x"]),
    ("\\boxed{a{b}c}", ["a{b}c"]),
    ("\\boxed{unclosed", []),
    ("\\boxed{a} \\boxed{b", ["a"]),
    ("}}} \\boxed{a}", ["a"]),
    ("\\boxed{\\{1, 2\\}}", ["\\{1, 2\\}"]),
    ("no box", []),
])
def test_boxed_contents(text, boxes):
    assert boxed_contents(text) == boxes


def test_thousands_of_unclosed_boxes_cost_one_pass():
    start = time.process_time()  # CPU time: one pass, whatever else loads the machine
    assert boxed_contents("\\boxed{" * 200_000) == []
    assert len(boxed_contents("\\boxed{1}" * 100_000)) == 100_000
    grader().grade(example(), "\\boxed{" * 100_000 + "}")
    assert time.process_time() - start < 5.0


@pytest.mark.parametrize("a, b", [
    ("\\dfrac{1}{2}", "\\frac12"), ("0.5", "\\frac{1}{2}"), ("x = 5", "5"), ("10\\%", "10"),
    ("\\left( 1, 2 \\right)", "(1,2)"), ("5\\text{ cm}", "5"), ("90^\\circ", "90"), ("\\sqrt2", "\\sqrt{2}"),
    (".5", "0.5"), ("3/4", "\\frac{3}{4}"), ("\\$10", "10"),
])
def test_maths_normalisation(a, b):
    assert normalize_latex(a) == normalize_latex(b)


@pytest.mark.parametrize("completion, score, how", [
    ("so $\\boxed{\\frac{1}{2}}$", 1.0, "normalisation"),
    ("\\boxed{\\dfrac12}", 1.0, "normalisation"),
    ("\\boxed{0.5}", 1.0, "normalisation"),
    ("\\boxed{\\frac{2}{4}}", 1.0, "symbolic"),
    ("\\boxed{1/2}", 1.0, "normalisation"),
    ("\\boxed{3} no wait \\boxed{\\frac{1}{2}}", 1.0, ""),      # MATH's convention: the last box counts
    ("\\boxed{\\frac{1}{2}} or \\boxed{3}", 0.0, ""),
    ("\\boxed{2}", 0.0, ""),
    ("the answer is 1/2", 0.0, "no \\boxed{}"),
    ("\\boxed{" + "x" * 5000 + "}", 0.0, "different"),           # too long to compare symbolically
])
def test_grader(completion, score, how):
    grade = grader().grade(example(), completion)
    assert grade.score == score and how in grade.reason, grade.reason


def test_symbolic_equivalence_and_word_answers():
    assert grader().grade(example("$\\boxed{2\\sqrt{2}}$"), "\\boxed{\\sqrt{8}}").score == 1.0
    assert grader(symbolic=False).grade(example("$\\boxed{2\\sqrt{2}}$"), "\\boxed{\\sqrt{8}}").score == 0.0
    words = example("The answer is $\\boxed{\\text{(C)}}$.")
    assert grader().grade(words, "\\boxed{\\text{(C)}}").score == 1.0
    assert grader().grade(words, "\\boxed{\\text{(D)}}").score == 0.0


def test_a_bare_answer_field_as_math_500_has_it():
    item = example("no box in this solution", answer="\\frac{1}{2}")
    assert grader(answer_field="answer").grade(item, "\\boxed{0.5}").score == 1.0
    with pytest.raises(DataError, match="has no \\\\boxed"):
        grader().grade(item, "\\boxed{0.5}")


def test_generated_rows_are_in_maths_format_and_solve_themselves():
    examples = generate(100, 5)
    assert [e.fields for e in examples] == [e.fields for e in generate(100, 5)]
    for e in examples:
        assert set(e.fields) == {"problem", "solution", "level", "type"} and "\\boxed{}" in e.prompt
        assert grader().grade(e, e.fields["solution"]).score == 1.0
    assert len({e.fields["type"] for e in examples}) == 3


def test_rows_from_a_file_as_they_are(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps({**ROW, "problem": f"{ROW['problem']} ({i})"}) + "\n" for i in range(6)))
    train, val = load_examples(DataConfig(source="math", options={"source": str(path)}, val_size=2, seed=0))
    assert len(train) == 4 and len(val) == 2 and all(e.fields["level"] == "Level 1" for e in train)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"problem": "p"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: needs a non-empty string 'solution'"):
        generate(1, 0, {"source": str(tmp_path / "bad.jsonl")})
