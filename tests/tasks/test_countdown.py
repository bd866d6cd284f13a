"""The Countdown verifier: the edge cases a model will hit, each with its expected verdict."""

import pytest

from rftkit.tasks.countdown import (CountdownOptions, evaluate_expression, format_grade, generate, make_puzzle,
                                    verify)

NUMS = [3, 5, 7, 25]


@pytest.mark.parametrize("completion, target, score, reason", [
    ("<answer>(3+5)*7</answer>", 56, 1.0, "correct"),
    ("<answer>25-7</answer>", 18, 1.0, "correct"),                       # a subset of the numbers is allowed
    ("<answer> 25 / 5 + 3 </answer>", 8, 1.0, "correct"),               # whitespace inside the tags
    ("I think... <answer>3*5</answer> done", 15, 1.0, "correct"),        # text around the tags
    ("<answer>25/(7-5)</answer>", 12, 0.0, "25/2"),                      # rational, not rounded to 12
    ("<answer>7/5*25</answer>", 35, 1.0, "correct"),                     # exact rationals: 7/5 is not 1
    ("<answer>3+4</answer>", 7, 0.0, "not among the given numbers"),     # 4 was not given
    ("<answer>5*5</answer>", 25, 0.0, "more often than given"),          # 5 reused
    ("<answer>7/(5-5)</answer>", 1, 0.0, "division by zero"),
    ("<answer>(3+5*7</answer>", 38, 0.0, "unbalanced parentheses"),
    ("<answer>3+5)*7</answer>", 38, 0.0, "unbalanced parentheses"),
    ("<answer>3*5</answer><answer>25</answer>", 15, 0.0, "2 answer tags"),
    ("<answer>5**3</answer>", 125, 0.0, "'**' is not allowed"),
    ("<answer>25//7</answer>", 3, 0.0, "'//' is not allowed"),
    ("<answer>25%7</answer>", 4, 0.0, "'%' is not allowed"),
    ("<answer>3^5</answer>", 6, 0.0, "'^' is not allowed"),
    ("<answer>-3+5</answer>", 2, 0.0, "unary"),
    ("<answer>__import__('os')</answer>", 1, 0.0, "not allowed"),
    ("<answer>3.0*5</answer>", 15, 0.0, "'.' is not allowed"),
    ("<answer>99999999999999999999*3</answer>", 3, 0.0, "not among the given numbers"),  # huge literal
    ("<answer></answer>", 3, 0.0, "empty expression"),
    ("no tags at all: 3*5", 15, 0.0, "no <answer>"),
    ("<answer>3*5", 15, 0.0, "no <answer>"),                             # unterminated tag
    ("<answer>03+5</answer>", 8, 0.0, "leading zero"),
    ("<answer>3+5</answer>", 9, 0.0, "evaluates to 8, not 9"),
    ("<answer>" + "(" * 40 + "3" + ")" * 40 + "</answer>", 3, 0.0, "nested deeper"),
])
def test_verifier_edge_cases(completion, target, score, reason):
    grade = verify(completion, NUMS, target)
    assert grade.score == score
    assert reason in grade.reason


def test_reused_number_reported_even_when_division_by_zero_would_follow():
    # 25/(5-5) uses 5 twice: the parser finishes (5-5 = 0 raises first)
    grade = verify("<answer>25/(5-5)</answer>", NUMS, 5)
    assert grade.score == 0.0


def test_very_long_expression_is_refused_before_parsing():
    grade = verify("<answer>" + "+".join(["3"] * 500) + "</answer>", NUMS, 1500)
    assert grade.score == 0.0 and "longer than" in grade.reason


def test_exact_rational_evaluation():
    value, used = evaluate_expression("(7 - 5) / 3 * 25")
    assert value.numerator == 50 and value.denominator == 3
    assert used == [7, 5, 3, 25]


def test_format_credit():
    assert format_grade("<answer>3+5</answer>").score == 1.0
    assert format_grade("<answer>3+</answer>").score == 0.5
    assert format_grade("3+5").score == 0.0
    assert format_grade("<answer>1</answer><answer>2</answer>").score == 0.0


def test_generator_is_seeded_and_solutions_verify():
    first, again, other = generate(50, seed=7), generate(50, seed=7), generate(50, seed=8)
    assert [e.prompt for e in first] == [e.prompt for e in again]
    assert [e.prompt for e in first] != [e.prompt for e in other]
    for example in first:
        f = example.fields
        assert 3 <= len(f["numbers"]) <= 4 and 1 <= f["target"] <= 100
        assert verify(f"<answer>{f['solution']}</answer>", f["numbers"], f["target"]).score == 1.0
        assert str(f["target"]) in example.prompt


def test_generator_options_are_validated():
    with pytest.raises(ValueError, match="unknown key"):
        CountdownOptions.from_dict({"max_nums": 5})
    with pytest.raises(ValueError, match="min_numbers"):
        CountdownOptions.from_dict({"min_numbers": 5, "max_numbers": 3})


def test_make_puzzle_respects_options():
    import random

    opts = CountdownOptions(min_numbers=2, max_numbers=2, max_number=5, max_target=10)
    rng = random.Random(0)
    for _ in range(50):
        p = make_puzzle(rng, opts)
        assert len(p["numbers"]) == 2 and max(p["numbers"]) <= 5 and 1 <= p["target"] <= 10
