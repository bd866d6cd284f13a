"""The Python API: rftkit.train with a Python reward function and rows given in memory."""

import json

import pytest

import rftkit
from tests.conftest import tiny_config_dict


def brevity(completions, **kwargs):
    """A TRL-style reward: 1 for a short completion, else 0 (TRL calls it by keyword with the batch)."""
    brevity.calls += 1
    return [1.0 if len(c) < 24 else 0.0 for c in completions]


brevity.calls = 0


def test_train_with_a_callable_reward_and_rows_in_memory(tmp_path):
    raw = tiny_config_dict(tmp_path)
    raw["graders"] = []  # the reward comes from Python
    raw.pop("accuracy_grader")
    rows = [{"prompt": f"Using the numbers [{i}, 1], make {i + 1}.", "numbers": [i, 1], "target": i + 1}
            for i in range(1, 13)]
    result = rftkit.train(raw, reward_funcs=[brevity], dataset=rows, output_dir=tmp_path / "api-run",
                          overrides=["data.val_size=4"], progress=False)
    assert brevity.calls >= 2  # two training steps at least, plus validation
    assert result.run_dir == tmp_path / "api-run" and result.summary["steps"] == 2
    assert result.best_checkpoint == tmp_path / "api-run" / "checkpoints" / "step-2"
    assert (result.best_checkpoint / "adapter_model.safetensors").is_file()
    assert [m["step"] for m in result.metrics] == [0, 1, 2] and "reward/brevity" in result.metrics[1]
    saved = [json.loads(line) for line in (tmp_path / "api-run" / "data" / "train.jsonl").read_text().splitlines()]
    assert saved == rows  # the run directory holds the data it trained on


def test_a_config_path_with_an_extra_reward_and_a_bad_reward(tmp_path):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path)))
    result = rftkit.train(path, reward_funcs={"short": (brevity, 0.5)}, output_dir=tmp_path / "r2", progress=False)
    assert {"reward/format", "reward/correct", "reward/short"} <= result.metrics[1].keys()
    with pytest.raises(TypeError, match="reward_funcs: 'oops' is int"):
        rftkit.train(path, reward_funcs={"oops": 3}, output_dir=tmp_path / "r3", progress=False)
