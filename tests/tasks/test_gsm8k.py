"""The GSM8K pack: rows as GSM8K ships them (file or hf: with a config name), its generator, its grader."""

from __future__ import annotations

import json
import re
import time
from fractions import Fraction

import pytest

from rftkit.config import DataConfig
from rftkit.data import DataError, Example
from rftkit.graders import GRADER_TYPES, load_builtin_graders
from rftkit.tasks import load_examples
from rftkit.tasks.gsm8k import generate, make_problem

load_builtin_graders()
ROW = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                   "How many clips did Natalia sell altogether in April and May?",
       "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                 "altogether in April and May.\n#### 72"}


def grader(**params):
    spec = GRADER_TYPES["gsm8k"]
    return spec.build("correct", spec.params.model_validate(params))


def example(answer: str = ROW["answer"]) -> Example:
    return Example(id="e", prompt="q", fields={"question": ROW["question"], "answer": answer})


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("completion, score, reason", [
    ("48/2 = 24, so 48+24 = 72.\n#### 72", 1.0, "correct: 72 (hash)"),
    ("#### 72.", 1.0, "correct"),
    ("#### $72", 1.0, "correct"),
    ("#### 72.00", 1.0, "correct"),
    ("#### 72 clips", 1.0, "correct"),
    ("The answer is \\boxed{72}.", 1.0, "(boxed)"),
    ("#### 72\n#### 72", 1.0, "correct"),                      # the same answer twice is one answer
    ("#### 71", 0.0, "answer 71 != 72"),
    ("#### 72\n#### 73", 0.0, "2 different answers"),
    ("#### seventy-two", 0.0, "not a number"),
    ("they sold 72 clips", 0.0, "no answer found"),
    ("", 0.0, "no answer found"),
    ("#### 7.2e1", 0.0, "answer 7.2 != 72"),                   # the first number; no scientific notation
    ("#### 1" + "0" * 5000, 0.0, "not a number"),             # a huge number is not an answer
])
def test_grader_edge_cases(completion, score, reason):
    grade = grader().grade(example(), completion)
    assert (grade.score, reason in grade.reason) == (score, True), grade.reason


def test_extraction_order_and_fallback_to_the_last_number():
    assert grader().grade(example(), "so 72 clips").score == 0.0
    last = grader(extract=["hash", "last_number"])
    assert last.grade(example(), "48 + 24 = 72 clips").score == 1.0
    assert grader(extract=["answer_tag"]).grade(example(), "<answer>72</answer>").score == 1.0
    with pytest.raises(ValueError):
        GRADER_TYPES["gsm8k"].params.model_validate({"extract": ["regex"]})


def test_references_with_commas_and_decimals_compare_exactly():
    assert grader().grade(example("... #### 1,000"), "#### 1000").score == 1.0
    assert grader().grade(example("... #### 0.3"), "#### .3").score == 1.0
    assert grader().grade(example("... #### 3/4"), "\\boxed{\\frac{3}{4}}").score == 1.0


def test_a_bad_row_is_an_error_for_that_row_only():
    with pytest.raises(DataError, match="must hold a GSM8K answer"):
        grader().grade(example("72"), "#### 72")


def test_hostile_completions_are_linear():
    start = time.perf_counter()
    for text in ("####" * 100_000, "\\boxed{" * 100_000, "1," * 100_000, "<answer>" * 100_000, "9" * 1_000_000):
        grader(extract=["hash", "boxed", "answer_tag", "last_number"]).grade(example(), text)
    assert time.perf_counter() - start < 5.0


def _check_calculator(solution: str) -> None:
    for a, op, b, value in re.findall(r"<<(\d+)([-+*/])(\d+)=(\d+)>>", solution):
        exact = {"+": Fraction(int(a) + int(b)), "-": Fraction(int(a) - int(b)), "*": Fraction(int(a) * int(b)),
                 "/": Fraction(int(a), int(b))}[op]
        assert exact == int(value), solution


def test_generated_rows_are_in_gsm8k_format_and_solve_themselves():
    examples = generate(200, 3)
    assert [e.id for e in examples] == [e.id for e in generate(200, 3)] and examples[0].id == "gsm8k-synth-3-0"
    for e in examples:
        assert set(e.fields) == {"question", "answer"} and e.prompt.startswith(e.fields["question"])
        _check_calculator(e.fields["answer"])
        assert grader().grade(e, e.fields["answer"]).score == 1.0  # the worked solution is a correct answer
    assert len({e.fields["question"] for e in examples}) > 190


def test_rows_from_a_jsonl_file_as_they_are(tmp_path):
    path = write_rows(tmp_path / "gsm8k.jsonl", [ROW] + [make_problem(__import__("random").Random(i))
                                                         for i in range(9)])
    train, val = load_examples(DataConfig(source="gsm8k", options={"source": str(path)}, val_size=2, seed=0))
    assert len(train) == 8 and len(val) == 2
    natalia = [e for e in train + val if e.fields == ROW]
    assert natalia and natalia[0].prompt.startswith(ROW["question"])
    custom = generate(10, 0, {"source": str(path), "prompt": "Q: {question}\nA:"})
    assert all(e.prompt.startswith("Q: ") and e.prompt.endswith("\nA:") for e in custom)


def test_rows_from_a_hub_layout_with_a_config_name(tmp_path, monkeypatch):
    """hf:NAME + hf_config, read offline from a local copy laid out as openai/gsm8k is (main/, socratic/)."""
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for config, count in (("main", 4), ("socratic", 3)):
        (tmp_path / config).mkdir()
        write_rows(tmp_path / config / "train.jsonl", [ROW] * count)
    configs = "".join(f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train.jsonl\n"
                      for c in ("main", "socratic"))
    (tmp_path / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    assert len(generate(100, 0, {"source": f"hf:{tmp_path}", "hf_config": "main"})) == 4
    assert len(generate(100, 0, {"source": f"hf:{tmp_path}", "hf_config": "socratic"})) == 3
    with pytest.raises(DataError, match=r"hf:.*\[nope/train\]: could not load"):
        generate(1, 0, {"source": f"hf:{tmp_path}", "hf_config": "nope"})


@pytest.mark.parametrize("rows, options, message", [
    ([{"question": "q"}], {}, r"rows.jsonl:1: needs a non-empty string 'answer'"),
    ([{"question": "q", "answer": "72"}], {}, "must end in '#### <number>'"),
    ([{"problem": "q", "answer": "#### 1"}], {}, "needs a non-empty string 'question'"),
    ([ROW], {"prompt": "{nope}"}, "cannot be filled"),
    ([ROW], {"hf_config": "main"}, "only for 'hf:' sources"),
    ([ROW], {"sauce": "x"}, r"data.options.sauce: unknown key \(allowed for gsm8k: source, hf_config"),
])
def test_bad_rows_and_options_name_the_line_or_key(tmp_path, rows, options, message):
    path = write_rows(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DataError, match=message):
        generate(5, 0, {"source": str(path), **options})
