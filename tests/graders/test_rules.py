import json

import pytest

from rftkit.graders import GRADER_TYPES
from rftkit.graders.templates import TemplateError

from .conftest import ex, make

PERSON = {"type": "object", "required": ["name", "age", "email"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                         "email": {"type": "string", "pattern": "@"}}}


# ---------------------------------------------------------------- regex

def test_regex_all_or_nothing_and_fraction():
    rules = dict(must_match=[r"<answer>.*</answer>", r"^Step 1"], must_not_match=[r"(?i)as an ai"],
                 multiline=True)
    strict, partial = make("regex", **rules), make("regex", **rules, scoring="fraction")
    good = "Step 1: think\n<answer>4</answer>"
    assert strict.grade(ex(), good).score == 1.0
    bad = "As an AI, <answer>4</answer>"
    assert strict.grade(ex(), bad).score == 0.0
    assert partial.grade(ex(), bad).score == pytest.approx(1 / 3)  # only the answer rule holds
    assert "forbidden" in partial.grade(ex(), bad).reason


def test_regex_flags():
    assert make("regex", must_match=["PARIS"], ignore_case=True).grade(ex(), "paris").score == 1.0
    assert make("regex", must_match=["a.b"]).grade(ex(), "a\nb").score == 0.0
    assert make("regex", must_match=["a.b"], dotall=True).grade(ex(), "a\nb").score == 1.0


def test_regex_catastrophic_backtracking_times_out_as_zero():
    grade = make("regex", must_match=[r"^(a+)+$"]).grade(ex(), "a" * 40 + "!")
    assert grade.score == 0.0


def test_regex_on_empty_and_unicode():
    assert make("regex", must_not_match=["x"]).grade(ex(), "").score == 1.0
    assert make("regex", must_match=[r"\p{Han}+"]).grade(ex(), "答案是 东京").score == 1.0


@pytest.mark.parametrize("params, message", [
    ({"must_match": ["("]}, "invalid regex"), ({}, "at least one pattern"), ({"must_match": ["a"], "flags": 1},
                                                                              "Extra inputs")])
def test_regex_bad_params(params, message):
    with pytest.raises(ValueError, match=message):
        GRADER_TYPES["regex"].params.model_validate(params)


# ---------------------------------------------------------------- json_schema

def test_json_schema_all_or_nothing():
    grader = make("json_schema", schema=PERSON)
    assert grader.grade(ex(), '{"name": "Ada", "age": 36, "email": "a@b"}').score == 1.0
    wrong = grader.grade(ex(), '{"name": "Ada", "age": -1, "email": "a@b"}')
    assert wrong.score == 0.0 and "age" in wrong.reason


@pytest.mark.parametrize("output, score", [
    ('{"name": "Ada", "age": 36, "email": "a@b"}', 1.0),
    ('{"name": "Ada", "age": "36", "email": "a@b"}', 2 / 3),   # age has the wrong type
    ('{"name": "Ada"}', 1 / 3),
    ('```json\n{"name": "Ada", "email": "ab"}\n```', 1 / 3),  # fenced; email fails its pattern
    ('[1, 2]', 0.0), ('{"name": "Ada", "age": NaN}', 0.0), ('{"name": ', 0.0), ('', 0.0),
    ('{"name": "Ada", "age": Infinity, "email": "a@b"}', 0.0)])
def test_json_schema_partial_credit_per_required_field(output, score):
    grader = make("json_schema", schema=PERSON, credit="required_fields")
    assert grader.grade(ex(), output).score == pytest.approx(score)


def test_json_schema_credit_per_reference_field():
    grader = make("json_schema", credit="reference_fields", reference="{{item.expected}}")
    expected = {"city": "Paris", "population": 2100000, "capital": True}
    item = ex(expected=expected)
    assert grader.grade(item, json.dumps(expected)).score == 1.0
    assert grader.grade(item, '{"city": "Paris", "population": 2100000.0, "capital": 1}').score == pytest.approx(2 / 3)
    assert grader.grade(item, '{"city": "paris"}').score == 0.0
    assert grader.grade(item, "not json at all").score == 0.0
    with pytest.raises(TemplateError):
        grader.grade(ex(expected="oops"), "{}")


def test_json_schema_from_file(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(PERSON))
    assert make("json_schema", schema=str(path)).grade(ex(), '{"name": "A", "age": 1, "email": "@"}').score == 1.0


@pytest.mark.parametrize("params, message", [
    ({"schema": {"type": "objectt"}}, "invalid JSON schema"), ({"schema": "missing.json"}, "not found"),
    ({}, "needs a 'schema'"), ({"schema": {"type": "object"}, "credit": "required_fields"}, "required"),
    ({"credit": "reference_fields"}, "needs a 'reference'")])
def test_json_schema_bad_params(params, message):
    with pytest.raises(ValueError, match=message):
        GRADER_TYPES["json_schema"].params.model_validate(params)


# ---------------------------------------------------------------- threshold

@pytest.mark.parametrize("output, score", [
    ("latency 120 ms", 1.0), ("latency 99 ms", 0.0), ("latency 200", 1.0), ("201", 0.0),
    ("inf", 0.0), ("NaN", 0.0), ("", 0.0), ("no number", 0.0)])
def test_threshold_pass(output, score):
    assert make("threshold", min=100, max=200).grade(ex(), output).score == score


def test_threshold_linear_partial_credit():
    grader = make("threshold", min=0, max=10, mode="linear")
    assert grader.grade(ex(), "score: 2.5").score == 0.25
    assert grader.grade(ex(), "score: 12").score == 1.0
    assert grader.grade(ex(), "score: -3").score == 0.0


@pytest.mark.parametrize("params, message", [
    ({}, "give 'min', 'max'"), ({"min": 5, "max": 1}, "greater than"), ({"min": 1, "mode": "linear"}, "linear")])
def test_threshold_bad_params(params, message):
    with pytest.raises(ValueError, match=message):
        GRADER_TYPES["threshold"].params.model_validate(params)
