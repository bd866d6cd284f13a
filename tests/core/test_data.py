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


def test_trl_conversational_prompt_rows_load_as_they_are(tmp_path):
    row = {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}],
           "completion": [{"role": "assistant", "content": "4"}], "solution": "4"}
    (example,) = load_jsonl(write(tmp_path / "trl.jsonl", [json.dumps(row)]))
    assert example.prompt is None and example.chat() == row["prompt"]
    assert example.fields == {"completion": row["completion"], "solution": "4"}
    assert example.to_row() == {"id": example.id, **row}  # written back under 'prompt', as it came


@pytest.mark.parametrize("prompt, message", [
    ([], "'prompt' must be a non-empty list"),
    ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "prompt\\[0\\] must be an object.*text content"),
    ([{"role": "tool", "content": "x"}], "prompt\\[0\\].role is 'tool'"),
    (3, "'prompt' must be a non-empty string or a list of messages")])
def test_malformed_trl_prompt_names_the_message(tmp_path, prompt, message):
    with pytest.raises(DataError, match=message):
        load_jsonl(write(tmp_path / "bad.jsonl", [json.dumps({"prompt": prompt})]))


def test_lines_that_cannot_be_read_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match="d.jsonl:2: not valid UTF-8"):
        load_jsonl(path)
    path.write_bytes(b'{"prompt": "a"}\n' + b'{"x": ' * 100_000 + b"1" + b"}" * 100_000 + b"\n")
    with pytest.raises(DataError, match="d.jsonl:2: JSON nested too deeply"):
        load_jsonl(path)


def test_a_line_separator_inside_a_string_does_not_split_the_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "one\u2028two\x1cthree"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_jsonl(path)[0].prompt == "one\u2028two\x1cthree"


def test_written_jsonl_survives_lone_surrogates(tmp_path):
    from rftkit.data import read_jsonl_rows, write_jsonl

    rows = [{"completion": "ok \ud800 \udfff", "nested": {"k\udc80": ["\ud83d"]}}, {"plain": "été"}]
    write_jsonl(tmp_path / "out.jsonl", rows)
    assert [row for row, _ in read_jsonl_rows(tmp_path / "out.jsonl")] == rows
    assert "été" in (tmp_path / "out.jsonl").read_text(encoding="utf-8")  # other text stays readable
