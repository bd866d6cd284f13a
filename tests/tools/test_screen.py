"""`rft screen` and `data.screen`: a grader whose verdicts the test controls makes every count checkable by hand."""

import json

import pytest
import yaml

from rftkit.cli import main
from rftkit.config import ScreenConfig, load_config
from rftkit.data import DataError, Example
from rftkit.tasks import load_splits
from rftkit.tools.screen import FORMAT, prompt_key, screened
from tests.conftest import tiny_config_dict

# target % 3 == 0: every sample passes; == 1: none does; == 2: every other call per prompt passes (2 of 4).
VERDICTS = '''
calls = {}


def verdict(example, completion):
    calls[example.id] = calls.get(example.id, 0) + 1
    rest = example.fields["target"] % 3
    return 1.0 if rest == 0 else 0.0 if rest == 1 else float(calls[example.id] % 2)
'''


def controlled_config(tmp_path, **overrides):
    (tmp_path / "verdicts.py").write_text(VERDICTS)
    raw = tiny_config_dict(tmp_path, **overrides)
    raw["graders"] = [{"name": "verdict", "type": "function", "function": f"{tmp_path / 'verdicts.py'}:verdict"}]
    raw["accuracy_grader"] = "verdict"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_screen_counts_writes_the_kept_rows_and_training_uses_them(tmp_path, capsys):
    config = controlled_config(tmp_path)
    train_examples = load_splits(load_config(config).data)[0]
    rests = [e.fields["target"] % 3 for e in train_examples]
    always, never, informative = rests.count(0), rests.count(1), rests.count(2)
    assert always and never and informative  # the 16 prompts of the tiny config have all three

    assert main(["screen", str(config), "--k", "4", "--output", str(tmp_path / "screen")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "screen" / "screen.json").read_text())
    assert result["format"] == FORMAT and result["k"] == 4 and result["prompts"] == 16
    assert result["counts"] == {"always_solved": always, "never_solved": never, "informative": informative}
    assert result["pass_at"]["1"] == (4 * always + 2 * informative) / (16 * 4)
    assert result["pass_at"]["4"] == (always + informative) / 16
    assert result["reward_tied"] == always + never  # one grader: a group ties exactly when its verdicts do
    solved = {p["id"]: p["solved"] for p in result["per_prompt"]}
    assert solved == {e.id: {0: 4, 1: 0, 2: 2}[e.fields["target"] % 3] for e in train_examples}
    kept_rows = [json.loads(line) for line in (tmp_path / "screen" / "train.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in kept_rows) == sorted(e.id for e, r in zip(train_examples, rests) if r == 2)
    assert f"informative       1-3 of 4  {informative:>6}" in out and "screen: " in out

    # data.screen trains on the informative prompts only; validation is untouched
    run = tmp_path / "run"
    assert main(["train", str(config), "--set", f"data.screen={tmp_path / 'screen' / 'screen.json'}",
                 "--set", "train.steps=1", "--set", "samples_per_step=2"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_size"] == informative and summary["validation_size"] == 8
    trained = {json.loads(line)["example_id"] for line in (run / "samples.jsonl").read_text().splitlines()}
    assert trained <= {r["id"] for r in kept_rows}


def _result(tmp_path, examples, solved, k=4, **changes):
    per_prompt = [{"id": e.id, "key": prompt_key(e), "solved": s, "k": k, "mean_reward": s / k,
                   "reward_tied": s in (0, k)} for e, s in zip(examples, solved)]
    path = tmp_path / "screen.json"
    path.write_text(json.dumps({"format": FORMAT, "k": k, "per_prompt": per_prompt, **changes}))
    return str(path)


def test_data_screen_keeps_the_named_categories(tmp_path):
    examples = [Example(id=f"e{i}", prompt=f"p{i}", fields={"target": i}) for i in range(5)]
    path = _result(tmp_path, examples, [0, 1, 4, 3, 0])
    ids = lambda kept: [e.id for e in kept]  # noqa: E731
    assert ids(screened(ScreenConfig(result=path), examples)) == ["e1", "e3"]
    assert ids(screened(ScreenConfig(result=path, keep=["never_solved"]), examples)) == ["e0", "e4"]
    assert ids(screened(ScreenConfig(result=path, keep=["always_solved", "informative"]), examples)) == \
        ["e1", "e2", "e3"]
    assert ids(screened(ScreenConfig(result=path), examples[1:2])) == ["e1"]  # a screen may hold more prompts


def test_data_screen_refuses_prompts_it_did_not_screen(tmp_path):
    examples = [Example(id=f"e{i}", prompt=f"p{i}", fields={"target": i}) for i in range(3)]
    path = _result(tmp_path, examples[:2], [1, 2])
    with pytest.raises(DataError, match=r"1 are not in it \(e.g. 'e2'\).*rft screen"):
        screened(ScreenConfig(result=path), examples)
    changed = [examples[0], Example(id="e1", prompt="p1", fields={"target": 99})]  # same id, another answer
    with pytest.raises(DataError, match=r"1 changed since it was written \(e.g. 'e1'\)"):
        screened(ScreenConfig(result=path), changed)
    with pytest.raises(DataError, match="no training prompt is always_solved"):
        screened(ScreenConfig(result=path, keep=["always_solved"]), examples[:2])
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(DataError, match="not a screen result"):
        screened(ScreenConfig(result=str(tmp_path / "other.json")), examples)
    with pytest.raises(DataError, match="not found"):
        screened(ScreenConfig(result=str(tmp_path / "missing.json")), examples)


def test_data_screen_in_a_config_file(tmp_path):
    (tmp_path / "s.json").write_text("{}")
    raw = tiny_config_dict(tmp_path, data__screen="s.json")  # a path relative to the config file's folder
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    (tmp_path / "sub" / "s.json").write_text("{}")
    screen = load_config(path).data.screen
    assert screen.result == str(tmp_path / "sub" / "s.json") and screen.keep == ["informative"]
    long = load_config(path, ["data.screen={result: x.json, keep: [never_solved, informative]}"]).data.screen
    assert long.result == "x.json" and long.keep == ["never_solved", "informative"]


def test_the_readme_data_screen_block_is_a_valid_config(tmp_path):
    import re
    from pathlib import Path

    from rftkit.config import parse_config

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Small-data tools")[1].split("\n## ")[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    raw = tiny_config_dict(tmp_path)
    raw["data"].update(yaml.safe_load(block)["data"])
    assert parse_config(raw).data.screen.keep == ["informative"]
