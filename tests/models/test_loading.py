"""Models by local path (the hub-model path) and Hugging Face datasets load through the same code."""

import json
import shutil

import pytest

from rftkit.config import DataConfig, ModelConfig, parse_config
from rftkit.models.embedded import EMBEDDED_DIR
from rftkit.models.loading import ModelLoadError, load_base_model, load_tokenizer
from rftkit.tasks import load_examples
from rftkit.train.loop import train
from tests.conftest import tiny_config_dict


def test_a_local_model_directory_trains_like_the_embedded_one(tmp_path):
    local = tmp_path / "my-model"
    shutil.copytree(EMBEDDED_DIR, local)
    raw = tiny_config_dict(tmp_path, train__steps=1)
    raw["model"] = {"name": str(local)}
    summary = train(parse_config(raw), tmp_path / "run", progress=False)
    assert summary["steps"] == 1
    assert json.loads((tmp_path / "run" / "checkpoints" / "step-1" / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == str(local)


def test_a_model_that_is_not_on_disk_is_a_clear_error_and_nothing_is_downloaded(tmp_path):
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):
        load_tokenizer(ModelConfig(name="nobody/no-such-model-xyz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="lacks config.json"):
        load_base_model(ModelConfig(name=str(tmp_path / "empty")))


def test_hf_dataset_source_from_a_local_directory(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = [{"prompt": f"question {i}", "answer": str(i)} for i in range(12)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_set, val = load_examples(DataConfig(source=f"hf:{folder}", val_size=3, seed=0))
    assert len(val) == 3 and len(train_set) == 9
    assert {e.fields["answer"] for e in train_set + val} == {str(i) for i in range(12)}
