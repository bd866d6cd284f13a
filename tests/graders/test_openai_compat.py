"""Our own equivalents of the examples in OpenAI's graders guide, loaded verbatim."""

import json

import pytest

from rftkit.config import ConfigError, parse_config
from rftkit.graders import build_graders

from .conftest import ex, make

STRING_CHECK = {"type": "string_check", "name": "Example string check grader",
                "input": "{{sample.output_text}}", "reference": "{{item.label}}", "operation": "eq"}
TEXT_SIMILARITY = {"type": "text_similarity", "name": "Example text similarity grader",
                   "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}",
                   "pass_threshold": 0.8, "evaluation_metric": "fuzzy_match"}
SCORE_MODEL = {"type": "score_model", "name": "Example score model grader",
               "input": [{"role": "user", "content": [{"type": "input_text", "text":
                          "Score how close the reference answer is to the model answer on a 0-10 scale.\n"
                          "Reference answer: {{item.reference_answer}}\nModel answer: {{sample.output_text}}"}]}],
               "model": "o4-mini-2025-04-16", "range": [0, 10], "sampling_params": {"temperature": 1, "seed": 42}}
LABEL_MODEL = {"type": "label_model", "name": "Example label grader", "model": "gpt-4o-2024-08-06",
               "input": [{"role": "developer", "content": "Label the answer as correct or incorrect."},
                         {"role": "user", "content": "Reference answer: {{item.reference_answer}}\n"
                                                     "Model answer: {{sample.output_text}}"}],
               "labels": ["correct", "incorrect"], "passing_labels": ["correct"]}
MULTI = {"type": "multi", "name": "example multi grader",
         "graders": {"name": {"type": "string_check", "name": "name", "operation": "eq",
                              "input": "{{sample.output_json.name}}", "reference": "{{item.name}}"},
                     "email": {"type": "string_check", "name": "email", "operation": "eq",
                               "input": "{{sample.output_json.email}}", "reference": "{{item.email}}"}},
         "calculate_output": "(name + email) / 2"}


def test_string_check_example(tmp_path):
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(STRING_CHECK))
    grader = make("openai", grader_json=str(path))
    assert grader.grade(ex(label="Positive"), "Positive").score == 1.0
    assert grader.grade(ex(label="Positive"), "positive").score == 0.0  # eq is exact, as in OpenAI


def test_text_similarity_example_gives_the_raw_metric():
    grader = make("openai", grader=TEXT_SIMILARITY)
    grade = grader.grade(ex(reference_answer="fuzzy wuzzy was a bear"), "fuzzy wuzzy was a bare")
    # Indel: one substitution = 2 edits over 44 characters -> 1 - 2/44
    assert grade.score == pytest.approx(1 - 2 / 44) and grade.details["passed"] is True


def test_multi_example_with_output_json():
    grader = make("openai", grader=MULTI)
    item = ex(name="Ada Lovelace", email="ada@example.com")
    assert grader.grade(item, '{"name": "Ada Lovelace", "email": "ada@example.com"}').score == 1.0
    assert grader.grade(item, '{"name": "Ada Lovelace", "email": "ada@example.org"}').score == 0.5
    assert grader.grade(item, "Ada Lovelace, ada@example.com").score == 0.0  # not JSON: no credit, no error


def test_score_model_example_against_the_local_server(judge_server):
    grader = make("openai", grader=SCORE_MODEL, judge={"base_url": judge_server.base_url, "retry_backoff_s": 0})
    grade = grader.grade(ex(reference_answer="fuzzy wuzzy was a bear"), "fuzzy wuzzy was a bear")
    assert grade.score == 1.0
    sent = judge_server.requests[-1]
    assert sent["model"] == "o4-mini-2025-04-16" and sent["temperature"] == 1 and sent["seed"] == 42


def test_label_model_example_against_the_local_server(judge_server):
    grader = make("openai", grader={**LABEL_MODEL, "model": "label"}, judge={"base_url": judge_server.base_url})
    assert grader.grade(ex(reference_answer="Paris"), "Paris").score == 1.0
    assert judge_server.requests[-1]["messages"][0]["role"] == "system"  # developer -> system for local servers


def test_default_endpoint_needs_the_openai_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        make("openai", grader=SCORE_MODEL)


def test_python_grader_maps_or_explains():
    from rftkit.graders import GRADER_TYPES
    from rftkit.graders.openai_compat import _python_type_available

    source = "def grade(sample, item):\n    return float(sample['output_text'] == item['answer'])"
    spec = {"graders": [{"name": "py", "type": "openai",
                         "grader": {"type": "python", "image_tag": "2025-05-08", "source": source}}]}
    if _python_type_available():
        assert "python" in GRADER_TYPES
        (weighted,) = build_graders(parse_config(spec).graders)
        assert weighted.grader.grade(ex(answer="4"), "4").score == 1.0
        assert weighted.grader.grade(ex(answer="4"), "5").score == 0.0
    else:
        with pytest.raises(ConfigError, match="sandboxed 'python' grader"):
            parse_config(spec)


@pytest.mark.parametrize("grader, message", [
    ({**STRING_CHECK, "operation": "contains"}, "graders\\[0\\].grader: .*operation"),
    ({**SCORE_MODEL, "temperature": 0}, "unknown key\\(s\\) \\['temperature'\\]"),
    ({"type": "cosine_magic"}, "not supported"),
    ({**MULTI, "calculate_output": "name + phone"}, "unknown name 'phone'"),
    ({**MULTI, "graders": {"name": {**STRING_CHECK, "reference": "{{nope.x}}"}}},
     "graders.name.reference: template variable")])
def test_config_errors_name_the_key(grader, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"graders": [{"name": "g", "type": "openai", "grader": grader}]})


def test_in_a_full_config(tmp_path):
    path = tmp_path / "multi.json"
    path.write_text(json.dumps(MULTI))
    config = parse_config({"graders": [{"name": "fields", "type": "openai", "grader_json": str(path)}]})
    (weighted,) = build_graders(config.graders)
    assert weighted.grader.name == "fields"


# The label_model object of OpenAI's API reference (Graders > Label Model Grader), verbatim except
# the model name the local server answers to: each `content` is one content object.
API_REFERENCE_LABEL_MODEL = {
    "name": "First label grader",
    "type": "label_model",
    "model": "gpt-4o-2024-08-06",
    "input": [
        {
            "type": "message",
            "role": "system",
            "content": {
                "type": "input_text",
                "text": "Classify the sentiment of the following statement as one of positive, neutral, or negative"
            }
        },
        {
            "type": "message",
            "role": "user",
            "content": {
                "type": "input_text",
                "text": "Statement: {{item.response}}"
            }
        }
    ],
    "passing_labels": [
        "positive"
    ],
    "labels": [
        "positive",
        "neutral",
        "negative"
    ]
}


def test_content_as_one_object_as_in_the_api_reference(judge_server):
    grader = make("openai", grader=API_REFERENCE_LABEL_MODEL, judge={"base_url": judge_server.base_url,
                                                                     "model": "garbage", "max_retries": 0})
    grader.grade(ex(response="I love it"), "ignored")
    sent = judge_server.requests[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "Classify the sentiment of the following statement as one of "
                       "positive, neutral, or negative"}
    assert sent[1]["content"].startswith("Statement: I love it")


@pytest.mark.parametrize("content", [
    "Reference answer: {{item.reference_answer}}\nModel answer: {{sample.output_text}}",
    {"type": "input_text", "text": "Reference answer: {{item.reference_answer}}\nModel answer: {{sample.output_text}}"},
    [{"type": "input_text", "text": "Reference answer: {{item.reference_answer}}"},
     {"type": "input_text", "text": "Model answer: {{sample.output_text}}"}]], ids=["string", "object", "list"])
def test_content_string_object_or_list_of_parts_grade_alike(judge_server, content):
    grader = make("openai", grader={**SCORE_MODEL, "input": [{"role": "user", "content": content}]},
                  judge={"base_url": judge_server.base_url})
    assert grader.grade(ex(reference_answer="blue sky"), "the sky is blue").score == 1.0


def test_image_content_is_refused_at_config_time():
    image = {"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/x.png"}]}
    with pytest.raises(ConfigError, match="input_image.*text parts only"):
        parse_config({"graders": [{"name": "s", "type": "openai", "grader": {**SCORE_MODEL, "input": [image]}}]})


def test_multi_graders_given_as_a_list_with_names():
    listed = {**MULTI, "graders": [{**MULTI["graders"]["name"]}, {**MULTI["graders"]["email"]}]}
    grader = make("openai", grader=listed)
    item = ex(name="Ada Lovelace", email="ada@example.com")
    assert grader.grade(item, '{"name": "Ada Lovelace", "email": "ada@example.org"}').score == 0.5


def test_a_listed_grader_needs_an_identifier_name():
    # OpenAI's API reference example names its graders "example text similarity grader" and then
    # uses `text_similarity_score` in the formula: the formula cannot refer to such names.
    listed = {**MULTI, "graders": [{**STRING_CHECK, "name": "Example string check grader"}]}
    with pytest.raises(ConfigError, match=r"graders\[0\].*identifier.*'Example string check grader'"):
        parse_config({"graders": [{"name": "m", "type": "openai", "grader": listed}]})


def test_the_formula_sees_each_graders_output_as_openai_computes_it(judge_server):
    """OpenAI: a score_model's output is its number on `range` ("truncated to the given range"), and
    calculate_output computes with the graders' outputs; the local judge replies 10 x word overlap."""
    multi = {"type": "multi", "name": "m", "calculate_output": "judge / 10 * exact",
             "graders": {"judge": {**SCORE_MODEL, "name": "judge"},
                         "exact": {**STRING_CHECK, "name": "exact", "reference": "{{item.label}}",
                                   "operation": "like"}}}
    grader = make("openai", grader=multi, judge={"base_url": judge_server.base_url})
    grade = grader.grade(ex(reference_answer="blue sky", label="blue"), "blue water")  # overlap 1/2 -> judge 5
    assert grade.score == pytest.approx(0.5) and grade.details["sub"]["judge"]["output"] == 5.0


def test_native_multi_formula_sees_scores_unless_told(judge_server):
    subs = {"judge": {"type": "score_model", "rubric": "Reference answer: {{item.reference_answer}}\n"
                      "Model answer: {{sample.output_text}}", "model": "m", "range": [0, 10],
                      "base_url": judge_server.base_url}}
    item = ex(reference_answer="blue sky")
    scores = make("multi", graders=subs, calculate_output="judge / 10")
    outputs = make("multi", graders=subs, calculate_output="judge / 10", formula_sees="outputs")
    assert scores.grade(item, "blue water").score == pytest.approx(0.05)
    assert outputs.grade(item, "blue water").score == pytest.approx(0.5)
