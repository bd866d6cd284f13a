"""`store_completions` and `rft regrade`: graders whose verdicts the test controls make every flip checkable."""

import json
import shutil

import yaml

from rftkit.cli import main
from tests.conftest import tiny_config_dict

VERDICTS = '''
def even(example, completion):
    return float(example.fields["target"] % 2 == 0)


def odd(example, completion):
    return float(example.fields["target"] % 2 == 1)
'''


def write_config(tmp_path, name: str, rule: str, **overrides):
    (tmp_path / "verdicts.py").write_text(VERDICTS)
    raw = tiny_config_dict(tmp_path, **overrides)
    raw["graders"] = [{"name": "verdict", "type": "function", "function": f"{tmp_path / 'verdicts.py'}:{rule}"}]
    raw["accuracy_grader"] = "verdict"
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_store_completions_then_regrade_reports_every_flip(tmp_path, capsys):
    config = write_config(tmp_path, "config.yaml", "even", store_completions=True, samples_per_step=1)
    assert main(["train", str(config)]) == 0
    run = tmp_path / "run"
    stored = records(run / "completions.jsonl")
    # batch_size 2 prompts x 4 generations x 2 steps, each with its example's fields
    assert len(stored) == 16 and [r["step"] for r in stored] == [1] * 8 + [2] * 8
    assert [r["group"] for r in stored[:8]] == [0] * 4 + [1] * 4
    assert all(set(r["example"]) >= {"id", "prompt", "target", "numbers"} for r in stored)
    assert all(r["reward"] == float(r["example"]["target"] % 2 == 0) for r in stored)
    assert len(records(run / "samples.jsonl")) == 2  # samples.jsonl keeps its own limit

    evens = sum(r["example"]["target"] % 2 == 0 for r in stored)
    capsys.readouterr()
    assert main(["regrade", str(run)]) == 0  # the run's own graders: nothing moves
    out = capsys.readouterr().out
    assert "16 completions of steps 1-2" in out and "verdicts flipped: 0 of 16" in out

    edited = write_config(tmp_path, "edited.yaml", "odd")
    assert main(["regrade", str(run), "--config", str(edited), "--show", "3",
                 "--output", str(tmp_path / "regraded.jsonl")]) == 0
    out = capsys.readouterr().out
    assert f"verdicts flipped: 16 of 16 completions (fail -> pass: {16 - evens}, pass -> fail: {evens})" in out
    assert f"accuracy      {evens / 16:.3f} (verdict >= 1.0) -> {(16 - evens) / 16:.3f} (verdict >= 1.0)" in out
    verdict_row = next(line for line in out.splitlines() if line.startswith("verdict "))
    assert f"{evens / 16:.3f}" in verdict_row and f"{(16 - evens) / 16:.3f}" in verdict_row
    assert verdict_row.split()[-1] == "16"  # every score changed
    assert out.count("    completion: ") == 3 and "... 13 more" in out
    rows = records(tmp_path / "regraded.jsonl")
    assert len(rows) == 16 and all(r["before"]["accurate"] != r["after"]["accurate"] for r in rows)

    # without completions.jsonl, samples.jsonl is regraded, its examples found again by id in the run's data
    (run / "completions.jsonl").unlink()
    assert main(["regrade", str(run), "--config", str(edited)]) == 0
    out = capsys.readouterr().out
    assert "2 completions of steps 1-2 from" in out and "samples.jsonl" in out
    assert "verdicts flipped: 2 of 2" in out


def test_completions_jsonl_is_trimmed_on_resume(tmp_path):
    config = write_config(tmp_path, "config.yaml", "even", store_completions=True, train__steps=2)
    assert main(["train", str(config)]) == 0
    run = tmp_path / "run"
    shutil.rmtree(run / "checkpoints" / "step-2")  # as if killed after step 2 was logged but before its checkpoint
    assert main(["train", "--resume", str(run), "--set", "train.steps=3"]) == 0
    steps = [r["step"] for r in records(run / "completions.jsonl")]
    assert steps == [1] * 8 + [2] * 8 + [3] * 8


def test_regrade_of_a_directory_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["regrade", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
