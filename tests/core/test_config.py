from pathlib import Path

import pytest
import yaml

from rftkit.config import ConfigError, apply_override, load_config, parse_config
from tests.conftest import tiny_config_dict


def test_example_configs_validate():
    config = load_config("examples/countdown.yaml")
    assert config.model.name == "embedded"
    assert [g.name for g in config.graders] == ["format", "correct"]
    assert config.accuracy_grader == "correct"


def test_unknown_key_names_the_key_and_what_is_allowed(tmp_path):
    raw = tiny_config_dict(tmp_path)
    raw["train"]["stepz"] = 3
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "my.yaml")
    message = str(info.value)
    assert "my.yaml" in message and "train.stepz: unknown key" in message and "steps" in message


def test_invalid_value_names_the_key(tmp_path):
    raw = tiny_config_dict(tmp_path)
    raw["grpo"]["num_generations"] = 1
    with pytest.raises(ConfigError, match=r"grpo.num_generations: Input should be greater than or equal to 2"):
        parse_config(raw)


def test_unknown_grader_type_and_param_name_the_grader(tmp_path):
    raw = tiny_config_dict(tmp_path)
    raw["graders"][1]["type"] = "countdwn"
    with pytest.raises(ConfigError, match=r"graders\[1\].type: unknown grader type 'countdwn'; allowed: .*countdown"):
        parse_config(raw)
    raw = tiny_config_dict(tmp_path)
    raw["graders"][0]["colour"] = "red"
    with pytest.raises(ConfigError, match=r"graders\[0\].colour: unknown key"):
        parse_config(raw)


def test_accuracy_grader_must_exist(tmp_path):
    raw = tiny_config_dict(tmp_path)
    raw["accuracy_grader"] = "nope"
    with pytest.raises(ConfigError, match="accuracy_grader: 'nope' is not a grader name"):
        parse_config(raw)


def test_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path)))
    config = load_config(path, ["train.steps=7", "train.learning_rate=1e-3", "grpo.scale_rewards=false"])
    assert config.train.steps == 7 and config.train.learning_rate == 1e-3 and config.grpo.scale_rewards is False
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override({}, "train.steps")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_output_dir_from_the_file_name_and_paths_relative_to_the_config_folder(tmp_path, monkeypatch):
    import yaml

    from rftkit.config import load_config
    from tests.conftest import tiny_config_dict

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "rows.jsonl").write_text('{"prompt": "p", "target": 1}\n')
    (folder / "rewards.py").write_text("def reward(example, completion):\n    return 1.0\n")
    raw = tiny_config_dict(tmp_path)
    del raw["output_dir"]
    raw["data"] = {"source": "rows.jsonl", "val_size": 1}
    raw["graders"].append({"name": "mine", "type": "function", "function": "rewards.py:reward"})
    (folder / "my-task.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)  # run from elsewhere: the files are found next to the config
    config = load_config(folder / "my-task.yaml")
    assert config.output_dir == str(Path("runs") / "my-task")
    assert config.data.source == str(folder / "rows.jsonl")
    assert config.graders[-1].params()["function"] == f"{folder / 'rewards.py'}:reward"
    assert load_config(folder / "my-task.yaml", ["output_dir=elsewhere"]).output_dir == "elsewhere"
