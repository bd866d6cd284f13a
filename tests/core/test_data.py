import json

import pytest

from rftkit.config import DataConfig
from rftkit.data import DataError, load_jsonl, split_train_val
from rftkit.tasks import load_examples


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_prompt_and_messages_rows(tmp_path):
    path = write(tmp_path / "d.jsonl", [
        json.dumps({"prompt": "2+2?", "answer": "4"}),
        "",
        json.dumps({"id": "x", "messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "hi"}], "answer": "hello"}),
    ])
    first, second = load_jsonl(path)
    assert first.prompt == "2+2?" and first.fields == {"answer": "4"} and len(first.id) == 12
    assert second.id == "x" and second.messages[0]["role"] == "system"
    assert second.chat("ignored")[0]["content"] == "be brief"  # an existing system turn wins
    assert first.chat("sys") == [{"role": "system", "content": "sys"}, {"role": "user", "content": "2+2?"}]


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a"', "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"answer": 1}', "exactly one of 'prompt'"),
    ('{"prompt": "a", "messages": []}', "exactly one of 'prompt'"),
    ('{"prompt": ""}', "non-empty string"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "messages[0].role is 'robot'"),
    ('{"messages": [{"role": "user"}]}', "messages[0] must be an object"),
])
def test_malformed_row_names_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "bad.jsonl", [json.dumps({"prompt": "fine"}), line])
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    assert f"{path}:2" in str(info.value) and message in str(info.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="empty"):
        load_jsonl(write(tmp_path / "empty.jsonl", [""]))


def test_split_is_deterministic_and_disjoint(tmp_path):
    path = write(tmp_path / "d.jsonl", [json.dumps({"prompt": f"p{i}"}) for i in range(20)])
    examples = load_jsonl(path)
    train, val = split_train_val(examples, 5, seed=3)
    again_train, again_val = split_train_val(examples, 5, seed=3)
    assert [e.id for e in val] == [e.id for e in again_val] and len(train) == 15
    assert not {e.id for e in train} & {e.id for e in val}
    with pytest.raises(DataError, match="validation size"):
        split_train_val(examples, 20, seed=3)


def test_generated_validation_set_does_not_depend_on_train_size():
    _, val_small = load_examples(DataConfig(source="countdown", train_size=10, val_size=50))
    train_big, val_big = load_examples(DataConfig(source="countdown", train_size=1000, val_size=50))
    assert [e.prompt for e in val_small] == [e.prompt for e in val_big]
    assert not {e.prompt for e in train_big} & {e.prompt for e in val_big}  # held-out duplicates removed


def test_file_source_with_train_size_and_val_source(tmp_path):
    train_path = write(tmp_path / "t.jsonl", [json.dumps({"prompt": f"p{i}"}) for i in range(10)])
    val_path = write(tmp_path / "v.jsonl", [json.dumps({"prompt": "p3"}), json.dumps({"prompt": "q"})])
    train, val = load_examples(DataConfig(source=str(train_path), val_source=str(val_path), train_size=9, val_size=5))
    assert [e.prompt for e in val] == ["p3", "q"]
    assert "p3" not in [e.prompt for e in train] and len(train) == 8
    with pytest.raises(DataError, match="data.options"):
        load_examples(DataConfig(source=str(train_path), options={"x": 1}))
