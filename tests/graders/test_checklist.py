import pytest

from rftkit.graders import GRADER_TYPES

from .conftest import ex, make

FORMAT = [{"name": "think", "check": "tag", "value": "think", "weight": 1},
          {"name": "answer", "check": "tag", "value": "answer", "weight": 3},
          {"name": "short", "check": "max_words", "value": 50}]


@pytest.mark.parametrize("output, score", [
    ("<think>hm</think><answer>4</answer>", 1.0),
    ("<answer>4</answer>", 4 / 5),                               # think missing: 3 + 1 of 5
    ("<think>a</think><answer>4</answer><answer>5</answer>", 2 / 5),  # two answers: the tag check fails
    ("<think></think><answer> </answer>", 1 / 5),                # empty tags do not count
    ("word " * 60 + "<think>a</think><answer>4</answer>", 4 / 5),
    ("", 0.0), ("   ", 0.0)])
def test_weighted_checks(output, score):
    assert make("checklist", items=FORMAT).grade(ex(), output).score == pytest.approx(score)


def test_other_checks_and_reason():
    items = [{"name": "cites", "check": "regex", "value": r"\[\d+\]"},
             {"name": "polite", "check": "icontains", "value": "THANK YOU"},
             {"name": "no_todo", "check": "not_contains", "value": "TODO"},
             {"name": "json", "check": "json"}]
    grade = make("checklist", items=items).grade(ex(), "Thank you [1] TODO")
    assert grade.score == 0.5 and "no_todo" in grade.reason and "json" in grade.reason


@pytest.mark.parametrize("items, message", [
    ([], "at least 1"), ([{"name": "a", "check": "tag"}], "non-empty string"),
    ([{"name": "a", "check": "max_words", "value": "x"}], "integer"),
    ([{"name": "a", "check": "regex", "value": "("}], "invalid regex"),
    ([{"name": "a", "check": "json"}, {"name": "a", "check": "json"}], "unique"),
    ([{"name": "a", "check": "json", "weight": 0}], "greater than 0")])
def test_bad_params(items, message):
    with pytest.raises(ValueError, match=message):
        GRADER_TYPES["checklist"].params.model_validate({"items": items})
