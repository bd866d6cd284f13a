"""Examples and datasets: JSONL files, Hugging Face datasets, deterministic splits.

An `Example` is one prompt plus whatever fields its graders read (a target, test cases,
a reference answer). Everything downstream (rollout, graders, trainer) sees only `Example`s.

Rows in TRL's dataset formats load as they are: `prompt` is a string (standard format) or a
list of `{"role", "content"}` messages (conversational format), and every other column
(`completion`, `solution`, ...) becomes a field.

Code benchmark rows load as they ship too: HumanEval's (`task_id`, `prompt`, `test`, `entry_point`)
are rows with a string prompt, and MBPP's (`text`, `code`, `test_list`, ...) get the prompt of the
MBPP paper (the task and its tests); `task_id` is the example's id when the row has no `id`.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


class DataError(ValueError):
    """A dataset row or file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One task instance.

    Exactly one of `prompt` (plain text, wrapped as a single user turn) or `messages`
    (chat turns, `[{"role": ..., "content": ...}]`) is set. `fields` holds every other key
    of the row; graders read them (for example `fields["target"]`).
    """

    id: str
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    prompt_key: str = "messages"  # the row's key for `messages`: "prompt" in TRL's conversational rows

    def chat(self, system_prompt: str | None = None) -> list[dict[str, str]]:
        """The conversation to render for the model, with an optional system turn first."""
        turns = list(self.messages) if self.messages is not None else [{"role": "user", "content": self.prompt or ""}]
        if system_prompt and not any(t["role"] == "system" for t in turns):
            turns.insert(0, {"role": "system", "content": system_prompt})
        return turns

    def prompt_text(self) -> str:
        """A plain-text view of the prompt (for logs and graders that template it)."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(f"{t['role']}: {t['content']}" for t in self.messages or ())

    def to_row(self) -> dict[str, Any]:
        """The example as a JSON-serialisable row (the inverse of `example_from_row`)."""
        row: dict[str, Any] = {"id": self.id}
        if self.prompt is not None:
            row["prompt"] = self.prompt
        if self.messages is not None:
            row[self.prompt_key] = [dict(t) for t in self.messages]
        row.update(self.fields)
        return row


def _stable_id(row: dict[str, Any]) -> str:
    try:
        payload = json.dumps(row, sort_keys=True, default=str).encode("utf-8", "backslashreplace")
    except (RecursionError, ValueError) as exc:  # nested past the recursion limit, or a circular value
        raise DataError(f"the row cannot be serialised to give it an id ({type(exc).__name__}); give it an 'id'") \
            from None
    return hashlib.sha1(payload).hexdigest()[:12]


def _turns(value: Any, key: str, where: str) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: '{key}' must be a non-empty list of {{'role', 'content'}} objects")
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) \
                or not isinstance(turn.get("content"), str):
            raise DataError(f"{where}: {key}[{i}] must be an object with string 'role' and 'content' (text content "
                            "only; content parts and images are not supported)")
        if turn["role"] not in ("system", "user", "assistant"):
            raise DataError(f"{where}: {key}[{i}].role is {turn['role']!r}; allowed: system, user, assistant")
    return tuple({"role": t["role"], "content": t["content"]} for t in value)


def mbpp_prompt(row: dict[str, Any]) -> str | None:
    """The prompt of an MBPP row without one (`text` + `test_list`), as the MBPP paper (Austin et al.
    2021) writes it: the tests name the function; None for any other row."""
    text, tests = row.get("text"), row.get("test_list")
    if not isinstance(text, str) or not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        return None
    return f"You are an expert Python programmer, and here is your task: {text} Your code should pass these " \
           "tests:\n\n" + "\n".join(tests)


def example_from_row(row: Any, where: str) -> Example:
    """Validate one dataset row. `where` ("data.jsonl:12") goes into every error message.

    `prompt` may be a string or, as in TRL's conversational format, a list of messages; an MBPP row
    (`text`, `test_list`) gets `mbpp_prompt`."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "prompt" not in row and "messages" not in row and (prompt := mbpp_prompt(row)) is not None:
        row = {"prompt": prompt, **row}
    has_prompt, has_messages = "prompt" in row, "messages" in row
    if has_prompt == has_messages:
        raise DataError(f"{where}: a row needs exactly one of 'prompt' (a string, or a list of messages as in TRL) "
                        f"or 'messages' (list of turns); found keys {sorted(row)}")
    fields = {k: v for k, v in row.items() if k not in ("prompt", "messages", "id")}
    try:
        example_id = str(row["id"]) if "id" in row else str(row["task_id"]) if isinstance(row.get("task_id"), (
            str, int)) and str(row["task_id"]) else _stable_id(row)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    if has_prompt and isinstance(row["prompt"], list):  # TRL's conversational format
        return Example(id=example_id, messages=_turns(row["prompt"], "prompt", where), fields=fields,
                       prompt_key="prompt")
    if has_prompt:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise DataError(f"{where}: 'prompt' must be a non-empty string or a list of messages")
        return Example(id=example_id, prompt=row["prompt"], fields=fields)
    return Example(id=example_id, messages=_turns(row["messages"], "messages", where), fields=fields)


def read_jsonl_rows(path: str | Path, what: str = "dataset",
                    torn_last_line_ok: bool = False) -> Iterator[tuple[Any, str]]:
    """(parsed row, "file:line") for each non-blank line; invalid JSON raises `DataError` naming the line.

    With `torn_last_line_ok`, invalid JSON on the last line ends the rows instead: a file that a
    running job is appending to (metrics.jsonl) may end in a half-written line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    lines = path.read_bytes().split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{line_no}"
        last = line_no == len(lines)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if torn_last_line_ok and last:
                return
            raise DataError(f"{where}: not valid UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start})") from None
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if torn_last_line_ok and last:
                return
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise DataError(f"{where}: JSON nested too deeply to read") from None
        yield row, where


def load_jsonl(path: str | Path) -> list[Example]:
    """Read a JSONL dataset; a malformed line raises `DataError` naming file and line."""
    examples = [example_from_row(row, where) for row, where in read_jsonl_rows(path)]
    if not examples:
        raise DataError(f"{path}: dataset is empty")
    return examples


def load_hf_dataset(name: str, split: str, subset: str | None = None) -> list[Example]:
    """Load a Hugging Face dataset (local path or cached hub name) into examples."""
    try:
        import datasets  # optional: `pip install rftkit[datasets]`
    except ImportError as exc:
        raise DataError("loading 'hf:' datasets needs the 'datasets' package: pip install 'rftkit[datasets]'") from exc
    try:
        dataset = datasets.load_dataset(name, subset, split=split)
    except Exception as exc:  # the library raises many types; the user needs the name and the cause
        raise DataError(f"hf:{name} (split {split!r}): could not load: {exc}") from exc
    return [example_from_row(dict(row), f"hf:{name}[{split}] row {i}") for i, row in enumerate(dataset)]


def open_jsonl(path: str | Path, mode: str = "w"):
    """A text handle for JSONL that cannot fail on a lone surrogate (a completion may hold one).

    UTF-8 cannot encode U+D800..U+DFFF; `backslashreplace` writes such a character as `\\udXXX`,
    and since json.dumps only emits them inside strings, that is the JSON escape of the very same
    character: the line stays valid JSON and reads back to the same string."""
    return Path(path).open(mode, encoding="utf-8", errors="backslashreplace")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Complete or absent (temporary file + rename): a killed `--output` never leaves a short file."""
    from rftkit.atomic import write_jsonl_atomic

    write_jsonl_atomic(path, rows)


def split_train_val(examples: Sequence[Example], val_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Deterministic shuffle then split; the same seed always yields the same held-out set."""
    if val_size < 0 or val_size >= len(examples):
        raise DataError(f"validation size {val_size} must be in [0, {len(examples) - 1}] for {len(examples)} examples")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    val = [examples[i] for i in order[:val_size]]
    train = [examples[i] for i in order[val_size:]]
    return train, val
