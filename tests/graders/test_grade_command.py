import io
import json
from pathlib import Path

import pytest
import yaml

from rftkit.grade_command import add_grade_arguments, read_samples, run_grade, tie_fraction
from rftkit.data import DataError

ROOT = Path(__file__).resolve().parents[2]

CONFIG = {"data": {"source": "countdown"},
          "graders": [{"name": "correct", "type": "countdown"},
                      {"name": "format", "type": "countdown_format", "weight": 0.5}]}


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def test_grades_samples_prints_table_summary_and_ties(tmp_path):
    out = io.StringIO()
    output = tmp_path / "graded.jsonl"
    code = run_grade(write(tmp_path, "c.yaml", CONFIG), str(ROOT / "examples/data/countdown_samples.jsonl"),
                     str(output), 3, [], out=out)
    text = out.getvalue()
    assert code == 0
    assert text.count("completion:") == 3 and "correct:" in text and "2 answer tags" in text
    assert "tied groups: 33% of 3 prompt groups" in text  # the group of four correct answers ties
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 12 and rows[0]["grades"]["correct"]["score"] == 1.0
    assert rows[3]["reward"] == 0.0 and rows[3]["grades"]["format"]["reason"] == "no <answer>...</answer> tags"


def test_overrides_apply(tmp_path, capsys):
    samples = str(ROOT / "examples/data/countdown_samples.jsonl")
    assert run_grade(write(tmp_path, "c.yaml", CONFIG), samples, None, 0, ["accuracy_grader=nope"]) == 2
    assert "accuracy_grader" in capsys.readouterr().err
    assert run_grade(write(tmp_path, "c.yaml", CONFIG), samples, None, 0, ["accuracy_grader=format"]) == 0


def test_bad_sample_line_names_file_and_line(tmp_path, capsys):
    samples = write(tmp_path, "s.jsonl", '{"prompt": "p", "completion": "x"}\n{"prompt": "p"}\n')
    assert run_grade(write(tmp_path, "c.yaml", CONFIG), samples, None, 1, []) == 2
    assert "s.jsonl:2" in capsys.readouterr().err
    with pytest.raises(DataError, match="s2.jsonl:1: invalid JSON"):
        read_samples(write(tmp_path, "s2.jsonl", "{nope\n"))


def test_bad_config_exits_2(tmp_path, capsys):
    bad = {"graders": [{"name": "r", "type": "regex", "must_match": ["("]}]}
    assert run_grade(write(tmp_path, "c.yaml", bad), None, None, 1, []) == 2
    assert "graders[0].must_match" in capsys.readouterr().err


def test_judge_example_runs_against_the_local_server(judge_server, tmp_path):
    out = io.StringIO()
    config = (ROOT / "examples/judge.yaml").read_text().replace("http://127.0.0.1:8765/v1", judge_server.base_url)
    code = run_grade(write(tmp_path, "judge.yaml", config), str(ROOT / "examples/data/judge_samples.jsonl"), None,
                     7, [], out=out)
    text = out.getvalue()
    assert code == 0 and "judge score 10" in text and "forbidden" in text
    assert len(judge_server.requests) == 7


def test_tie_fraction():
    from rftkit.graders.combine import GradedCompletion
    from rftkit.data import Example

    examples = [Example("a", "p"), Example("a", "p"), Example("b", "p"), Example("b", "p"), Example("c", "p")]
    results = [GradedCompletion(r, {}) for r in (1.0, 1.0, 0.0, 1.0, 0.5)]
    assert tie_fraction(examples, results) == (0.5, 2)  # c has one completion: not a group


def test_arguments():
    import argparse

    parser = argparse.ArgumentParser()
    add_grade_arguments(parser)
    args = parser.parse_args(["c.yaml", "--samples", "s.jsonl", "--show", "3", "--set", "a=1", "--set", "b=2"])
    assert (args.samples, args.show, args.overrides, args.output) == ("s.jsonl", 3, ["a=1", "b=2"], None)


def test_lone_surrogates_are_printed_and_written_safely(tmp_path):
    """A completion may hold a lone surrogate (JSON allows "\\ud800"); UTF-8 cannot encode it."""
    config = {"data": {"source": "countdown"},
              "graders": [{"name": "tag", "type": "exact_match", "extract": "answer_tag", "reference": "{{item.a}}"}]}
    samples = write(tmp_path, "s.jsonl", json.dumps({"prompt": "p\ud800", "a": "\udfff", "id": "x\udc00",
                                                     "completion": "<answer>\udfff</answer> \ud83d"}) + "\n")
    output = tmp_path / "graded.jsonl"
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # a terminal: strict UTF-8
    assert run_grade(write(tmp_path, "c.yaml", config), samples, str(output), 5, [], out=out) == 0
    out.flush()
    assert "\\udfff" in out.buffer.getvalue().decode("utf-8")
    row = json.loads(output.read_text(encoding="utf-8"))  # valid JSON, the same strings back
    assert row["completion"] == "<answer>\udfff</answer> \ud83d" and row["grades"]["tag"]["score"] == 1.0


def test_invalid_utf8_in_samples_names_the_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"prompt": "p", "completion": "ok"}\n{"prompt": "p", "completion": "\xff\xfe"}\n')
    with pytest.raises(DataError, match="s.jsonl:2: not valid UTF-8 \\(byte 0xff"):
        read_samples(str(path))


def test_trl_functions_get_completion_ids_from_the_tokenizer(tmp_path):
    rewards = tmp_path / "lengths.py"
    rewards.write_text("def tokens(completion_ids, **kwargs):\n    return [float(len(i)) for i in completion_ids]\n")
    config = {"data": {"source": "countdown"},
              "graders": [{"name": "n", "type": "function", "function": f"{rewards}:tokens", "range": [0, 100]}]}
    samples = write(tmp_path, "s.jsonl", json.dumps({"prompt": "p", "completion": "one two three"}) + "\n")
    output = tmp_path / "graded.jsonl"
    assert run_grade(write(tmp_path, "c.yaml", config), samples, str(output), 0, [], out=io.StringIO()) == 0
    grade = json.loads(output.read_text())["grades"]["n"]
    assert not grade["error"] and grade["details"]["raw"] >= 3  # the embedded model's tokenizer
