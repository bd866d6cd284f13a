import pytest

from rftkit.graders import GRADER_TYPES
from rftkit.graders.templates import TemplateError

from .conftest import ex, make


def score(constraint, text):
    return make("instruction_following", constraints=[constraint]).grade(ex(), text).score


@pytest.mark.parametrize("constraint, text, expected", [
    ({"type": "word_count", "min": 3, "max": 5}, "one two three", 1.0),
    ({"type": "word_count", "max": 2}, "one two three", 0.0),
    ({"type": "char_count", "max": 5}, "héllo", 1.0),
    ({"type": "bullet_count", "min": 2, "max": 2}, "* a\n- b\n**bold** line\n---", 1.0),
    ({"type": "bullet_count", "min": 3}, "* a\n- b", 0.0),
    ({"type": "paragraph_count", "min": 3, "max": 3}, "p1\n\np2\n***\np3", 1.0),
    ({"type": "paragraph_count", "min": 2}, "one paragraph\nstill one", 0.0),
    ({"type": "keywords", "include": ["Paris", "France"]}, "paris is in FRANCE", 1.0),
    ({"type": "keywords", "include": ["Paris"], "case_sensitive": True}, "paris", 0.0),
    ({"type": "forbidden_words", "words": ["very"]}, "every day", 1.0),   # whole words only
    ({"type": "forbidden_words", "words": ["very"]}, "Very good", 0.0),
    ({"type": "lowercase"}, "all lower, ünïcode too", 1.0),
    ({"type": "lowercase"}, "Not lower", 0.0),
    ({"type": "uppercase"}, "ALL CAPS 123", 1.0),
    ({"type": "ends_with", "phrase": "Any other questions?"}, "Done. any other questions?  \n", 1.0),
    ({"type": "starts_with", "phrase": "Dear"}, "  Dear Sir", 1.0),
    ({"type": "valid_json"}, '```json\n{"a": 1}\n```', 1.0),
    ({"type": "valid_json"}, '{"a": NaN}', 0.0),
    ({"type": "valid_json"}, '{"a": ', 0.0),
    ({"type": "no_commas"}, "no commas here", 1.0),
    ({"type": "no_commas"}, "one，two", 0.0),   # full-width comma
    ({"type": "placeholders", "min": 2}, "Dear [name], at [address]", 1.0),
    ({"type": "placeholders", "min": 2}, "Dear [name]", 0.0)])
def test_each_constraint(constraint, text, expected):
    assert score(constraint, text) == expected


def test_fraction_satisfied_with_reasons():
    grader = make("instruction_following", constraints=[
        {"type": "lowercase"}, {"type": "no_commas"}, {"type": "word_count", "min": 10}, {"type": "ends_with",
                                                                                      "phrase": "bye"}])
    grade = grader.grade(ex(), "hello, world bye")
    assert grade.score == 0.5  # lowercase and ends_with hold; commas and word count fail
    assert "no_commas" in grade.reason and "word_count" in grade.reason


def test_empty_output_scores_zero_even_for_vacuous_constraints():
    grader = make("instruction_following", constraints=[{"type": "lowercase"}, {"type": "no_commas"}])
    assert grader.grade(ex(), "   \n").score == 0.0


def test_per_example_constraints_from_a_field():
    grader = make("instruction_following", constraints_field="constraints")
    item = ex(constraints=[{"type": "keywords", "include": ["tea"]}, {"type": "uppercase"}])
    assert grader.grade(item, "I like tea").score == 0.5
    with pytest.raises(TemplateError, match="bad constraints"):
        grader.grade(ex(constraints=[{"type": "nope"}]), "x")
    with pytest.raises(TemplateError, match="no field"):
        grader.grade(ex(), "x")


def test_huge_output():
    grader = make("instruction_following", constraints=[{"type": "word_count", "max": 1000}])
    assert grader.grade(ex(), "w " * 200_000).score == 0.0


@pytest.mark.parametrize("params, message", [
    ({}, "give 'constraints'"), ({"constraints": [{"type": "word_count"}]}, "give min, max"),
    ({"constraints": [{"type": "wordcount"}]}, "does not match"),
    ({"constraints": [{"type": "keywords", "include": []}]}, "at least 1"),
    ({"constraints": [{"type": "word_count", "min": 5, "max": 1}]}, "min 5 > max 1")])
def test_bad_params(params, message):
    with pytest.raises(ValueError, match=message):
        GRADER_TYPES["instruction_following"].params.model_validate(params)


@pytest.mark.parametrize("words, text, expected", [
    (["C++"], "I like C++ and Java", 0.0),      # \bC\+\+\b could never match here: a letter must follow '+'
    (["C++"], "I like C and Java", 1.0),
    (["node.js"], "nodeXjs", 1.0),
    ([".NET"], "We use .NET daily", 0.0),
    (["very"], "every", 1.0),
])
def test_forbidden_words_with_punctuation(words, text, expected):
    assert score({"type": "forbidden_words", "words": words}, text) == expected


def test_ifeval_instruction_ids_as_constraints():
    grader = make("instruction_following", constraints=[
        {"type": "length_constraints:number_paragraphs", "num_paragraphs": 2},
        {"type": "keywords:existence", "keywords": ["C++"]},
        {"type": "punctuation:no_comma"}])
    grade = grader.grade(ex(), "C++ is fast\n***\nand small, too")
    assert grade.score == pytest.approx(2 / 3) and "punctuation:no_comma" in grade.reason
    per_example = make("instruction_following", constraints_field="constraints")
    item = ex(constraints=[{"type": "startend:quotation"}, {"type": "lowercase"}])
    assert per_example.grade(item, '"all quiet"').score == 1.0


@pytest.mark.parametrize("constraint, message", [
    ({"type": "length_constraints:number_words", "num_words": 5}, "missing argument"),
    ({"type": "punctuation:no_comma", "num_words": 5}, "unknown argument"),
    ({"type": "keywords:nope"}, "does not match"),
])
def test_bad_ifeval_constraints(constraint, message):
    with pytest.raises(ValueError, match=message):
        GRADER_TYPES["instruction_following"].params.model_validate({"constraints": [constraint]})
