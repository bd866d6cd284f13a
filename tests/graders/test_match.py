import math

import pytest

from rftkit.graders.match import Extractor, parse_number
from rftkit.graders.templates import TemplateError

from .conftest import ex, make


# ---------------------------------------------------------------- string_check (OpenAI semantics)

@pytest.mark.parametrize("operation, output, expected", [
    ("eq", "Paris", 1.0), ("eq", "paris", 0.0), ("eq", " Paris", 0.0),
    ("ne", "Lyon", 1.0), ("ne", "Paris", 0.0),
    ("like", "It is Paris.", 1.0), ("like", "It is PARIS.", 0.0),
    ("ilike", "It is PARIS.", 1.0), ("ilike", "Lyon", 0.0)])
def test_string_check_operations(operation, output, expected):
    grader = make("string_check", reference="{{item.answer}}", operation=operation)
    assert grader.grade(ex(answer="Paris"), output).score == expected


def test_string_check_normalisation_options():
    grader = make("string_check", reference="{{item.answer}}", operation="eq",
                  normalize=["nfkc", "lower", "collapse_whitespace", "remove_punctuation"])
    assert grader.grade(ex(answer="New York"), "  new   YORK!\n").score == 1.0
    assert grader.grade(ex(answer="Ｐａｒｉｓ"), "paris").score == 1.0  # full-width letters under NFKC


def test_string_check_empty_reference_with_like_is_an_error_not_a_free_pass():
    grader = make("string_check", reference="{{item.answer}}", operation="like")
    with pytest.raises(TemplateError, match="empty"):
        grader.grade(ex(answer=""), "anything")


def test_string_check_empty_and_huge_outputs():
    grader = make("string_check", reference="{{item.answer}}", operation="ilike")
    assert grader.grade(ex(answer="needle"), "").score == 0.0
    assert grader.grade(ex(answer="needle"), "hay " * 250_000 + "NEEDLE").score == 1.0


# ---------------------------------------------------------------- extraction

@pytest.mark.parametrize("method, text, expected", [
    ("answer_tag", "think... <answer> 42 </answer>", "42"),
    ("boxed", r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    ("boxed", r"\boxed{ {a}+{b} }", "{a}+{b}"),
    ("hash", "work\n#### 1,234\n", "1,234"),
    ("last_number", "first 3 then -7.5 and 2-9", "9"),
    ("last_number", "x = -7.5.", "-7.5"),
    ("none", "  whole  ", "whole")])
def test_extractors(method, text, expected):
    assert Extractor(method)(text) == (expected, "ok")


def test_regex_extractor_prefers_the_answer_group():
    import re
    assert Extractor("regex", pattern=re.compile(r"(Final): (?P<answer>\w+)"))("Final: yes") == ("yes", "ok")


def test_several_answers_are_rejected_by_default_and_first_last_on_request():
    text = "<answer>3</answer> or maybe <answer>4</answer>"
    answer, why = Extractor("answer_tag")(text)
    assert answer is None and "2 answers" in why
    assert Extractor("answer_tag", on_multiple="first")(text)[0] == "3"
    assert Extractor("answer_tag", on_multiple="last")(text)[0] == "4"


def test_unclosed_box_and_missing_tag_give_reasons():
    assert Extractor("boxed")(r"\boxed{1") == (None, "no answer found (\\boxed{...})")
    assert Extractor("answer_tag")("")[0] is None


@pytest.mark.parametrize("text, value", [("1,234.5", 1234.5), ("-3", -3.0), ("3/4", 0.75), ("1e-3", 0.001),
                                         ("$5", 5.0), ("50%", 50.0), (" 7 ", 7.0), ("abc", None), ("1/0", None)])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_parse_number_non_finite():
    assert math.isnan(parse_number("NaN")) and parse_number("-Infinity") == -math.inf


# ---------------------------------------------------------------- exact_match

def test_exact_match_with_answer_tags():
    grader = make("exact_match", extract="answer_tag", reference="{{item.answer}}")
    assert grader.grade(ex(answer="Paris"), "<answer>\n Paris \n</answer>").score == 1.0
    wrong = grader.grade(ex(answer="Paris"), "<answer>Lyon</answer>")
    assert wrong.score == 0.0 and "'Lyon' != 'Paris'" in wrong.reason
    assert grader.grade(ex(answer="Paris"), "<answer>Paris</answer><answer>Lyon</answer>").score == 0.0


def test_exact_match_gsm8k_hash_and_unicode():
    grader = make("exact_match", extract="hash", reference="{{item.answer}}")
    assert grader.grade(ex(answer="18"), "Janet sells 16 - 3 - 4 = 9 eggs... 9 * 2 = 18\n#### 18").score == 1.0
    uni = make("exact_match", reference="{{item.answer}}", normalize=["strip", "lower"])
    assert uni.grade(ex(answer="Ünïcödé ✓"), "  ünïcödé ✓\n").score == 1.0


def test_exact_match_regex_group():
    grader = make("exact_match", extract="regex", pattern=r"Answer:\s*(\w+)", reference="B")
    assert grader.grade(ex(), "Reasoning...\nAnswer: B").score == 1.0
    assert grader.grade(ex(), "Answer: C").score == 0.0


# ---------------------------------------------------------------- numeric

@pytest.mark.parametrize("output, score", [
    ("The answer is 3.14159", 1.0), ("about 3.1", 0.0), ("3.1416", 1.0), ("NaN", 0.0), ("inf", 0.0),
    ("", 0.0), ("pi", 0.0), ("3,14", 0.0)])
def test_numeric_tolerance_and_bad_numbers(output, score):
    grader = make("numeric", reference="{{item.answer}}", abs_tol=1e-4)
    assert grader.grade(ex(answer="3.14159"), output).score == score


def test_numeric_relative_tolerance_and_thousands():
    grader = make("numeric", reference="{{item.answer}}", rel_tol=0.01, abs_tol=0)
    assert grader.grade(ex(answer=1000), "It costs $1,009").score == 1.0
    assert grader.grade(ex(answer=1000), "It costs $1,011").score == 0.0


def test_numeric_non_numeric_reference_is_an_error():
    with pytest.raises(TemplateError):
        make("numeric", reference="{{item.answer}}").grade(ex(answer="n/a"), "3")


# ---------------------------------------------------------------- math_equivalence

@pytest.mark.parametrize("output, reference, score", [
    (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
    (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
    (r"\boxed{1/2}", r"\frac12", 1.0),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),
    (r"\boxed{x + 1}", "1 + x", 1.0),
    (r"\boxed{\frac{1}{3}}", "0.5", 0.0),
    (r"\boxed{NaN}", "0.5", 0.0),
    ("no box at all: 0.5", "0.5", 0.0),
    (r"\boxed{}", "0.5", 0.0)])
def test_math_equivalence(output, reference, score):
    grader = make("math_equivalence", reference="{{item.answer}}")
    assert grader.grade(ex(answer=reference), output).score == score


def test_math_equivalence_refuses_huge_answers_quickly():
    grade = make("math_equivalence", reference="1").grade(ex(), r"\boxed{" + "1+" * 5000 + "1}")
    assert grade.score == 0.0 and "characters" in grade.reason


def test_math_equivalence_bad_reference_is_an_error():
    with pytest.raises(TemplateError):
        make("math_equivalence", reference="{{item.answer}}").grade(ex(answer="}{"), r"\boxed{x^2}")


# ---------------------------------------------------------------- config errors

@pytest.mark.parametrize("type_name, params, message", [
    ("exact_match", {"reference": "x", "extract": "regex"}, "needs a 'pattern'"),
    ("exact_match", {"reference": "x", "extract": "regex", "pattern": "(("}, "invalid regex"),
    ("string_check", {"reference": "x", "operation": "contains"}, "operation"),
    ("numeric", {"reference": "1", "abs_tol": -1}, "abs_tol"),
    ("exact_match", {"reference": "{{bad.ns}}"}, "namespace")])
def test_bad_params_fail_validation(type_name, params, message):
    from rftkit.graders import GRADER_TYPES

    with pytest.raises(ValueError, match=message):
        GRADER_TYPES[type_name].params.model_validate(params)
