import math

import pytest

from rftkit.graders.similarity import gleu, rouge_l, rouge_n

from .conftest import ex, make


def grade(metric, output, reference, **extra):
    return make("text_similarity", reference="{{item.ref}}", evaluation_metric=metric, **extra).grade(
        ex(ref=reference), output)


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_l"])
def test_identical_scores_one_and_empty_scores_zero(metric):
    assert grade(metric, "the cat sat on the mat", "the cat sat on the mat").score == pytest.approx(1.0)
    assert grade(metric, "", "the cat sat on the mat").score == 0.0


def test_hand_computed_values():
    # fuzzy: Indel similarity 2*LCS/(|a|+|b|); LCS("kitten", "sitting") = "ittn" -> 8/13
    assert grade("fuzzy_match", "kitten", "sitting").score == pytest.approx(8 / 13)
    # hypothesis "a b c d" vs reference "a b c d e": every n-gram precision is 1, brevity penalty e^(1-5/4)
    assert grade("bleu", "a b c d", "a b c d e").score == pytest.approx(math.exp(-0.25))
    # GLEU: 10 hypothesis n-grams (4+3+2+1), 14 reference n-grams, 10 shared -> min(10/10, 10/14)
    assert grade("gleu", "a b c d", "a b c d e").score == pytest.approx(10 / 14)
    # ROUGE-1: P = 4/4, R = 4/5 -> F1 = 8/9; ROUGE-2: P = 3/3, R = 3/4 -> 6/7
    assert grade("rouge_1", "a b c d", "a b c d e").score == pytest.approx(8 / 9)
    assert grade("rouge_2", "a b c d", "a b c d e").score == pytest.approx(6 / 7)
    # ROUGE-L: LCS of "a x b y c" and "a b c" is 3 -> P = 3/5, R = 1 -> F1 = 0.75
    assert grade("rouge_l", "a x b y c", "a b c").score == pytest.approx(0.75)


def test_rouge_tokens_are_unicode_words_and_case_insensitive():
    assert rouge_n("Über straße", "über STRASSE straße", 1) == pytest.approx(_f1(2, 2, 3))
    assert rouge_l("東京 は 大きい", "東京 は 大きい") == 1.0


def _f1(overlap, hyp, ref):
    p, r = overlap / hyp, overlap / ref
    return 2 * p * r / (p + r)


def test_huge_output_is_fast_and_bounded():
    big = "word " * 100_000
    assert 0.0 <= rouge_l(big, "word word other") <= 1.0
    assert 0.0 <= gleu(big, "word") <= 1.0


def test_pass_threshold_reports_and_binary_scores():
    raw = grade("fuzzy_match", "kitten", "sitting", pass_threshold=0.5)
    assert raw.score == pytest.approx(8 / 13) and raw.details["passed"] is True
    binary = grade("fuzzy_match", "kitten", "sitting", pass_threshold=0.7, binary=True)
    assert binary.score == 0.0 and "fail" in binary.reason


def test_whitespace_matters_for_fuzzy_but_not_for_rouge():
    assert grade("fuzzy_match", "  paris  ", "paris").score < 1.0
    assert grade("rouge_1", "  paris  ", "paris").score == 1.0


@pytest.mark.parametrize("params, message", [
    ({"reference": "x", "evaluation_metric": "cosine"}, "not supported"),
    ({"reference": "x", "evaluation_metric": "meteor"}, "not supported"),
    ({"reference": "x", "evaluation_metric": "rouge_9"}, "unknown metric"),
    ({"reference": "x", "binary": True}, "needs a pass_threshold"),
    ({"reference": "x", "pass_threshold": 1.5}, "pass_threshold")])
def test_bad_params(params, message):
    from rftkit.graders import GRADER_TYPES

    with pytest.raises(ValueError, match=message):
        GRADER_TYPES["text_similarity"].params.model_validate(params)
