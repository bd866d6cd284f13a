"""Benchmark rows as their datasets ship them, from a local JSONL file or `hf:NAME` with a config name.

The packs (gsm8k, math) read rows that have no `prompt` field (GSM8K's `question`, MATH's
`problem`), so they read raw rows here and make their own `Example`s. `hf:` datasets need the
`datasets` package and a local copy (a directory, or the Hugging Face cache): nothing is downloaded
when the machine is offline.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rftkit.data import DataError, Example, read_jsonl_rows


class PackOptions(BaseModel):
    """`data.options` shared by the benchmark packs; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(None, description="Rows in the benchmark's own format: a JSONL path or 'hf:NAME' "
                               "(e.g. hf:openai/gsm8k). null: rows from the offline generator.")
    hf_config: str | None = Field(None, description="Dataset config name for 'hf:' sources (gsm8k: 'main' or "
                                  "'socratic').")
    split: str = Field("train", description="Split to read for 'hf:' sources.")
    prompt: str | None = Field(None, description="Prompt template; the row's fields fill {question}/{problem}.")


def parse_options(model: type[PackOptions], options: dict[str, Any], task: str) -> PackOptions:
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        allowed = ", ".join(model.model_fields)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise DataError(f"data.options.{key}: {msg} (allowed for {task}: {allowed})") from None


def load_rows(source: str, hf_config: str | None, split: str) -> list[tuple[dict[str, Any], str]]:
    """(row, where) pairs; `where` ("file.jsonl:12", "hf:openai/gsm8k[main/train] row 3") names each row."""
    if not source.startswith("hf:"):
        if hf_config is not None:
            raise DataError(f"data.options.hf_config: only for 'hf:' sources, not {source!r}")
        rows = list(read_jsonl_rows(source))
    else:
        rows = _hf_rows(source[3:], hf_config, split)
    if not rows:
        raise DataError(f"{source}: no rows")
    for row, where in rows:
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return rows


def _hf_rows(name: str, config: str | None, split: str) -> list[tuple[dict[str, Any], str]]:
    try:
        import datasets  # optional: pip install 'rftkit[datasets]'
    except ImportError as exc:
        raise DataError("loading 'hf:' datasets needs the 'datasets' package: pip install 'rftkit[datasets]'") from exc
    label = f"hf:{name}[{config + '/' if config else ''}{split}]"
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # the library raises many types; the user needs the name and the cause
        raise DataError(f"{label}: could not load: {exc}") from exc
    return [(dict(row), f"{label} row {i}") for i, row in enumerate(dataset)]


def seeded_examples(rows: list[Example], n: int, seed: int, task: str) -> list[Example]:
    """`n` of the rows in a seeded order (all of them when fewer): the first ones become validation."""
    order = list(rows)
    random.Random(f"{task}-{seed}").shuffle(order)
    return order[:n]


def required_text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: needs a non-empty string {key!r}; found keys {sorted(row)}")
    return value


def render(template: str, row: dict[str, Any], where: str) -> str:
    try:
        return template.format_map(row)
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"{where}: prompt template {template!r} cannot be filled from the row: {exc!r}") from None

