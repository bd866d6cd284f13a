import pytest

from rftkit.graders import GRADER_TYPES
from rftkit.graders.judge import parse_label, parse_score

from .conftest import ex, make

RUBRIC = "Question: {{item.prompt}}\nReference answer: {{item.answer}}\nModel answer: {{sample.output_text}}"


def judge(server, model="stub", **extra):
    grader = make("llm_judge", base_url=server.base_url, model=model, rubric=RUBRIC, range=[0, 10],
                  max_retries=2, retry_backoff_s=0, timeout_s=5, **extra)
    return grader


@pytest.mark.parametrize("reply, value", [
    ('{"result": 7}', 7.0), ('```json\n{"score": 0.5}\n```', 0.5), ("Score: 8/10", 8.0), ("  3 ", 3.0),
    ("Rating = -2", -2.0), ("no idea", None), ('{"result": NaN}', None), ("", None)])
def test_parse_score(reply, value):
    assert parse_score(reply) == value


@pytest.mark.parametrize("reply, label", [
    ('{"result": "correct"}', "correct"), ("Correct.", "correct"), ("The answer is incorrect", "incorrect"),
    ("correct or incorrect?", None), ("maybe", None)])
def test_parse_label(reply, label):
    assert parse_label(reply, ["correct", "incorrect"]) == label


def test_scores_against_a_local_server(judge_server):
    grader = judge(judge_server)
    item = ex(prompt="Capital of France?", answer="Paris France")
    assert grader.grade(item, "Paris, France").score == 1.0
    half = grader.grade(item, "It is Paris")
    assert half.score == 0.5 and half.details["judge_score"] == 5.0
    sent = judge_server.requests[-1]
    assert sent["model"] == "stub" and "Model answer: It is Paris" in sent["messages"][-1]["content"]
    assert '"result"' in sent["messages"][-1]["content"]  # the reply instruction is appended


def test_cache_and_batch_deduplicate_requests(judge_server):
    grader = judge(judge_server)
    item = ex(prompt="q", answer="a b")
    grades = grader.grade_batch([item] * 4, ["a", "a", "b a", "a"])
    assert [g.score for g in grades] == [0.5, 0.5, 1.0, 0.5]
    assert len(judge_server.requests) == 2
    grader.grade(item, "a")
    assert len(judge_server.requests) == 2  # cached


def test_transient_failures_are_retried(judge_server):
    grade = judge(judge_server, model="down-then-up:2").grade(ex(answer="x"), "x")
    assert grade.score == 1.0 and not grade.masked and judge_server.failures == 2


def test_endpoint_down_after_retries_is_masked_not_zero():
    grader = make("llm_judge", base_url="http://127.0.0.1:9/v1", model="m", rubric=RUBRIC, max_retries=1,
                  retry_backoff_s=0, timeout_s=2)
    grade = grader.grade(ex(answer="x"), "x")
    assert grade.masked and not grade.error and "2 tries" in grade.reason


def test_unparseable_replies_are_masked(judge_server):
    grade = judge(judge_server, model="garbage").grade(ex(answer="x"), "x")
    assert grade.masked and "unparseable" in grade.reason and len(judge_server.requests) == 3


def test_rejected_request_is_an_error_not_a_mask(judge_server):
    grade = judge(judge_server, model="unauthorized").grade(ex(answer="x"), "x")
    assert grade.error and "401" in grade.reason


def test_label_model(judge_server):
    grader = make("label_model", base_url=judge_server.base_url, model="label", max_retries=0,
                  input=[{"role": "system", "content": "Grade strictly."},
                         {"role": "user", "content": [{"type": "input_text", "text": RUBRIC}]}],
                  labels=["correct", "incorrect"], passing_labels=["correct"])
    assert grader.grade(ex(answer="Paris"), "Paris").score == 1.0
    assert grader.grade(ex(answer="Paris"), "Rome").score == 0.0


def test_out_of_range_scores_are_clamped(judge_server):
    grader = judge(judge_server, reply_instruction=False)
    grader.params.range = (0.0, 5.0)  # the stub says 10 for a perfect answer
    grade = grader.grade(ex(answer="x"), "x")
    assert grade.score == 1.0 and "clamped" in grade.reason


def test_api_key_from_named_environment_variable(judge_server, monkeypatch):
    monkeypatch.setenv("RFTKIT_TEST_KEY", "sk-test")
    judge(judge_server, api_key_env="RFTKIT_TEST_KEY").grade(ex(answer="x"), "x")
    monkeypatch.delenv("RFTKIT_TEST_KEY")
    with pytest.raises(ValueError, match="RFTKIT_TEST_KEY"):
        judge(judge_server, api_key_env="RFTKIT_TEST_KEY")


def test_output_json_template_on_non_json_output_scores_zero_without_a_request(judge_server):
    grader = make("llm_judge", base_url=judge_server.base_url, model="stub", rubric="{{sample.output_json.a}}")
    assert grader.grade(ex(), "not json").score == 0.0 and not judge_server.requests


def test_missing_local_model_is_an_error():
    grader = make("llm_judge", backend="transformers", model="/nonexistent/judge", rubric=RUBRIC)
    grade = grader.grade(ex(answer="x"), "x")
    assert grade.error and "cannot load local judge" in grade.reason


@pytest.mark.parametrize("params, message", [
    ({"model": "m"}, "exactly one of"), ({"model": "m", "rubric": "x", "range": [1, 0]}, "min < max"),
    ({"model": "m", "rubric": "{{nope.x}}"}, "namespace"),
    ({"model": "m", "rubric": "x", "mode": "label", "labels": ["a"], "passing_labels": ["b"]}, "subset")])
def test_bad_params(params, message):
    with pytest.raises(ValueError, match=message):
        GRADER_TYPES["llm_judge"].params.model_validate(params)


def test_a_judge_that_never_answers_is_bounded_by_the_batch_deadline():
    """A server that accepts connections and never replies (the hanging judge): each request waits
    timeout_s, no retry starts after batch_timeout_s, and the batch comes back masked in bounded time."""
    import socket
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        grader = make("llm_judge", base_url=f"http://127.0.0.1:{server.getsockname()[1]}/v1", model="m",
                      rubric=RUBRIC, timeout_s=0.5, max_retries=10, retry_backoff_s=0.2, batch_timeout_s=1.5,
                      max_concurrency=2)
        started = time.monotonic()
        grades = grader.grade_batch([ex(answer=str(i)) for i in range(6)], [str(i) for i in range(6)])
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert elapsed < 1.5 + 0.5 + 1.5  # the deadline, one request's timeout, and slack for a loaded machine
    assert all(g.masked for g in grades)
    assert any("batch_timeout_s=1.5 s reached" in g.reason for g in grades)


def test_a_closed_port_with_default_settings_answers_within_seconds():
    import time

    grader = make("llm_judge", base_url="http://127.0.0.1:9/v1", model="m", rubric=RUBRIC)
    started = time.monotonic()
    grades = grader.grade_batch([ex(answer=str(i)) for i in range(4)], [str(i) for i in range(4)])
    assert time.monotonic() - started < 10 and all(g.masked for g in grades)  # 1 + 2 s of backoff, in parallel
