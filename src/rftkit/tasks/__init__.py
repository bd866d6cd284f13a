"""Built-in tasks: seeded generators that make `Example`s (and register their graders)."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from rftkit.config import DataConfig, EnvConfig
from rftkit.data import DataError, Example, load_hf_dataset, load_jsonl, split_train_val
from rftkit.tasks import code, countdown, gsm8k, triton
from rftkit.tasks import math as math_pack

# name -> generate(n, seed, options) -> list[Example]
GENERATORS: dict[str, Callable[[int, int, dict[str, Any]], list[Example]]] = {
    "countdown": countdown.generate,
    "code": code.generate,
    "triton": triton.generate,
    "gsm8k": gsm8k.generate,   # data.options.source: a GSM8K JSONL or hf:openai/gsm8k (+ hf_config); none: generated
    "math": math_pack.generate,  # the same for MATH rows (problem, solution with \boxed{})
    "word_problems": lambda n, seed, options: _env_task("arithmetic_tools").generate(n, seed, options),
    "guess_number": lambda n, seed, options: _env_task("guess_number").generate(n, seed, options),
}


def _env_task(name: str):
    """The module of a built-in environment whose games or problems are also a data source (rftkit.envs)."""
    return importlib.import_module(f"rftkit.envs.{name}")


def _dedupe_key(example: Example) -> str:
    """Two examples are the same when the model sees the same prompt."""
    return example.prompt_text()


def load_examples(data: DataConfig, env: EnvConfig | None = None) -> tuple[list[Example], list[Example]]:
    """(train, validation) examples for a data config (the test split, if any, is left out)."""
    train, val, _ = load_splits(data, env)
    return train, val


def load_splits(data: DataConfig, env: EnvConfig | None = None) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, validation, test) examples for a data config; no split overlaps another.

    The test split (`data.test_size`, 0 by default) is taken after validation: from the generator's
    stream right after the validation prompts, or from a file's shuffled rows right after validation,
    so that validation and (with test_size 0) training are exactly what they were without one.

    Generators: the first `val_size` examples of the seeded stream are the validation set and
    the next `train_size` the training set, so the held-out set does not depend on
    `train_size` (the data-efficiency study varies it). Files: a seeded split of `source`,
    or `val_source` when given. `data.source: env`: the environment's own dataset (`env`; verifiers'
    dataset and eval_dataset).
    """
    if data.source == "env":
        train, val = _environment_examples(data, env)
        test: list[Example] = []
    elif data.source in GENERATORS:
        if data.val_source is not None:
            raise DataError("data.val_source: not used with a generated task; the generator makes the held-out set")
        train_size = data.train_size or 1000
        held = data.val_size + data.test_size
        stream = GENERATORS[data.source](held + train_size, data.seed, dict(data.options))
        val, test, train = stream[:data.val_size], stream[data.val_size:held], stream[held:]
    else:
        if data.options:
            raise DataError(f"data.options: only for generated tasks ({', '.join(GENERATORS)}), not {data.source!r}")
        examples = _load_source(data.source, data.hf_split)
        if data.val_source is not None:
            train, val = examples, _load_source(data.val_source, data.hf_split)[:data.val_size]
        else:
            train, val = split_train_val(examples, min(data.val_size, len(examples) - 1), data.seed)
        test: list[Example] = []
        if data.test_size:
            if data.test_size >= len(train):
                raise DataError(f"data.test_size: {data.test_size} leaves no training rows ({len(train)} after "
                                "validation)")
            test, train = train[:data.test_size], train[data.test_size:]  # already in shuffled order
        train = train[:data.train_size] if data.train_size else train
    held_out = {_dedupe_key(e) for e in val + test}
    train = [e for e in train if _dedupe_key(e) not in held_out]
    if not train:
        raise DataError(f"data.source {data.source!r}: no training examples left after removing held-out duplicates")
    return train, val, test


def _environment_examples(data: DataConfig, env: EnvConfig | None) -> tuple[list[Example], list[Example]]:
    if env is None or env.name is None:
        raise DataError("data.source: 'env' takes the examples from the environment; set env.name (e.g. verifiers)")
    if data.options or data.val_source is not None or data.test_size:
        raise DataError("data.options / data.val_source / data.test_size: not used with data.source: env")
    from rftkit.envs import build_environment

    environment = build_environment(env)
    if not hasattr(environment, "examples"):
        raise DataError(f"data.source: env, but environment {env.name!r} has no dataset of its own; use a task "
                        "generator or a file")
    examples, held_out = environment.examples("train"), environment.examples("eval")
    if held_out is None:
        examples, held_out = split_train_val(examples, min(data.val_size, len(examples) - 1), data.seed)
    return examples[:data.train_size] if data.train_size else examples, held_out[:data.val_size]


def _load_source(source: str, split: str) -> list[Example]:
    if source.startswith("hf:"):
        return load_hf_dataset(source[3:], split)
    return load_jsonl(source)
