import pytest

from rftkit.graders.rank import parse_list

from .conftest import ex, make


@pytest.mark.parametrize("text, items", [
    ('["a", "b"]', ["a", "b"]), ("1. a\n2) b\n- c\n\n* d", ["a", "b", "c", "d"]), ("a, b; c", ["a", "b", "c"]),
    ("```json\n[\"x\", 3]\n```", ["x", "3"]), ("", [])])
def test_parse_list(text, items):
    assert parse_list(text, "auto") == items


@pytest.mark.parametrize("output, score", [
    ("1. Flu\n2. Cold", 1.0), ("1. Cold\n2. flu.", 0.5), ("Cold, Allergy, Flu", 1 / 3),
    ("Cold, Cold, Flu", 0.5),   # repeats do not push the reference down
    ("Cold", 0.0), ("", 0.0)])
def test_rank_reciprocal(output, score):
    assert make("rank", reference="{{item.answer}}").grade(ex(answer="Flu"), output).score == pytest.approx(score)


def test_rank_linear_and_max_items():
    grader = make("rank", reference="d", decay="linear", max_items=4)
    assert grader.grade(ex(), "a, b, c, d").score == pytest.approx(0.25)   # 1 - 3/4
    assert grader.grade(ex(), "a, b, c, e, d").score == 0.0               # beyond max_items


def test_top_n_any_weighting_and_recall():
    refs = ["Paris", "Lyon"]
    assert make("top_n", references="{{item.ok}}", n=3).grade(ex(ok=refs), "Nice, Lyon, Lille").score == 1.0
    assert make("top_n", references="{{item.ok}}", n=2).grade(ex(ok=refs), "Nice, Lille, Lyon").score == 0.0
    weighted = make("top_n", references="{{item.ok}}", n=4, weighting="linear")
    assert weighted.grade(ex(ok=refs), "Nice, Lille, Lyon").score == pytest.approx(0.5)  # 1 - 2/4
    recall = make("top_n", references=["Paris", "Lyon", "Nice"], n=2, mode="recall")
    assert recall.grade(ex(), "paris, lille").score == 0.5    # 1 of min(3, 2)


def test_top_n_only_first_n_predictions_count_against_listing_everything():
    grader = make("top_n", references="{{item.ok}}", n=3)
    assert grader.grade(ex(ok=["z"]), ", ".join("abcdefghijklmnopqrstuvwxyz")).score == 0.0


def test_top_n_unicode_and_json_reference_string():
    grader = make("top_n", references="{{item.ok}}", n=2)
    assert grader.grade(ex(ok='["Zürich", "Genève"]'), '["GENÈVE", "Bern"]').score == 1.0
