import pytest

from rftkit.graders import GRADER_TYPES
from rftkit.graders.multi import check_formula, evaluate_formula

from .conftest import ex, make

SUBS = {"format": {"type": "regex", "must_match": ["<answer>.*</answer>"]},
        "correct": {"type": "exact_match", "extract": "answer_tag", "reference": "{{item.answer}}"}}


@pytest.mark.parametrize("output, score", [
    ("<answer>4</answer>", 1.0), ("<answer>5</answer>", 0.2), ("4", 0.0)])
def test_formula(output, score):
    grader = make("multi", graders=SUBS, calculate_output="0.2 * format + 0.8 * correct")
    assert grader.grade(ex(answer="4"), output).score == pytest.approx(score)


def test_weighted_mean_and_gate():
    weighted = make("multi", graders=SUBS, weights={"format": 1, "correct": 3})
    assert weighted.grade(ex(answer="4"), "<answer>5</answer>").score == pytest.approx(0.25)
    gated = make("multi", graders=SUBS, weights={"format": 1, "correct": 3}, gate="correct")
    grade = gated.grade(ex(answer="4"), "<answer>5</answer>")
    assert grade.score == 0.0 and "gate correct" in grade.reason


def test_formula_is_clamped_and_functions_work():
    grader = make("multi", graders=SUBS, calculate_output="format + correct")
    grade = grader.grade(ex(answer="4"), "<answer>4</answer>")
    assert grade.score == 1.0 and grade.details["raw"] == 2.0 and "clamped" in grade.reason
    assert evaluate_formula(check_formula("max(a, b) ^ 2 - sqrt(4) / 4", {"a", "b"}), {"a": 0.5, "b": 0.9}) \
        == pytest.approx(0.81 - 0.5)


def test_division_by_zero_is_that_completions_error():
    grader = make("multi", graders=SUBS, calculate_output="correct / format")
    grade = grader.grade(ex(answer="4"), "4")
    assert grade.error and "ZeroDivisionError" in grade.reason


def test_sub_grader_error_and_mask_propagate():
    subs = {"ok": {"type": "regex", "must_match": ["x"]},
            "broken": {"type": "exact_match", "reference": "{{item.missing}}"}}
    grade = make("multi", graders=subs, calculate_output="ok + broken").grade(ex(), "x")
    assert grade.error and "broken" in grade.reason


@pytest.mark.parametrize("formula", [
    "__import__('os').system('true')", "format.__class__", "(lambda: 1)()", "[format][0]", "format if 1 else 0",
    "open('x')", "format and correct", "'a' * 3", "10 ** 10 ** 10 if 0 else 1"])
def test_unsafe_formulas_are_rejected(formula):
    with pytest.raises(ValueError):
        check_formula(formula, {"format", "correct"})


def test_huge_exponent_is_refused_at_run_time():
    with pytest.raises(ValueError, match="exponent"):
        evaluate_formula(check_formula("10 ** 1000000", set()), {})


@pytest.mark.parametrize("params, message", [
    ({"graders": SUBS, "calculate_output": "format + wrong"}, "unknown name 'wrong'"),
    ({"graders": SUBS, "calculate_output": "format +"}, "does not parse"),
    ({"graders": {"a b": SUBS["format"]}}, "identifier"),
    ({"graders": {"x": {"type": "nope"}}}, "unknown grader type"),
    ({"graders": {"x": {"type": "regex", "must_match": ["("]}}}, "graders.x.must_match"),
    ({"graders": SUBS, "weights": {"zzz": 1}}, "unknown"),
    ({"graders": SUBS, "gate": "zzz"}, "not a sub-grader")])
def test_bad_params(params, message):
    with pytest.raises(ValueError, match=message):
        GRADER_TYPES["multi"].params.model_validate(params)
