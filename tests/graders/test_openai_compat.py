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
    ({**MULTI, "graders": {"name": {**STRING_CHECK, "reference": "{{nope.x}}"}}}, "graders.name.reference: template variable")])
def test_config_errors_name_the_key(grader, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"graders": [{"name": "g", "type": "openai", "grader": grader}]})


def test_in_a_full_config(tmp_path):
    path = tmp_path / "multi.json"
    path.write_text(json.dumps(MULTI))
    config = parse_config({"graders": [{"name": "fields", "type": "openai", "grader_json": str(path)}]})
    (weighted,) = build_graders(config.graders)
    assert weighted.grader.name == "fields"
