"""Every YAML example in the README validates as a config (drifted docs fail here)."""

import json
import re
from pathlib import Path

import pytest
import yaml

from rftkit.config import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def grader_reference() -> str:
    """The README's grader section: from '## Graders' to the next top-level section."""
    text = README.read_text()
    start = text.index("\n## Graders")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]
NEEDS_FILES = ("schemas/person.json", "my_rewards.py", "graders/", "type: python")


def examples():
    for block in re.findall(r"```yaml\n(.*?)```", grader_reference(), re.DOTALL):
        if not any(marker in block for marker in NEEDS_FILES):
            yield block


@pytest.mark.parametrize("block", list(examples()))
def test_doc_example_validates(block):
    entries = yaml.safe_load(block)
    entries = entries["graders"] if isinstance(entries, dict) else entries
    parse_config({"graders": entries})


LIBRARY_TYPES = ("string_check", "exact_match", "numeric", "math_equivalence", "text_similarity", "checklist",
                 "instruction_following", "regex", "json_schema", "threshold", "rank", "top_n", "llm_judge",
                 "score_model", "label_model", "multi", "function", "openai")


def test_every_library_type_is_registered_and_documented():
    from rftkit.graders import GRADER_TYPES, load_builtin_graders

    load_builtin_graders()
    text = grader_reference()
    assert [t for t in LIBRARY_TYPES if t not in GRADER_TYPES or f"### {t}" not in text and f"/ {t}" not in text] == []


def own_data_section() -> str:
    """The README's "Bringing your own data and rewards" section."""
    text = README.read_text()
    start = text.index("\n## Bringing your own data and rewards")
    return text[start:text.find("\n## ", start + 1)]


def test_own_data_examples_load_and_validate():
    from rftkit.data import example_from_row

    section = own_data_section()
    rows = [json.loads(line) for block in re.findall(r"```jsonl\n(.*?)```", section, re.DOTALL)
            for line in block.splitlines() if line.strip()]
    examples = [example_from_row(row, "README") for row in rows]
    assert examples[0].prompt and examples[1].messages and examples[2].fields["completion"]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 4
    for block in blocks:
        entries = yaml.safe_load(block)
        config = entries if isinstance(entries, dict) else {"graders": entries}
        if "grader_json" in block:  # the file is the JSON block above it: inline it
            (grader_json,) = re.findall(r"```json\n(.*?)```", section, re.DOTALL)
            config["graders"][0] = {**config["graders"][0], "grader": json.loads(grader_json)}
            del config["graders"][0]["grader_json"]
        parse_config(config)
