"""The Python API: `rftkit.train(config, reward_funcs=[...], dataset=...)` in a notebook or a script.

    import rftkit

    def brevity(completions, **kwargs):                 # a TRL-style reward function, as GRPOTrainer calls it
        return [1.0 if len(c) < 40 else 0.0 for c in completions]

    result = rftkit.train("examples/countdown.yaml", reward_funcs=[brevity],
                          dataset=[{"prompt": "...", "target": 3}, ...], output_dir="runs/mine")
    result.summary["after"]["accuracy"], result.best_checkpoint

The config is a YAML path, a dict in the YAML's shape, or an `RFTConfig`. Reward functions become
`function` graders (every signature the `function` grader accepts: TRL's `f(prompts, completions, **kw)`,
sync or async, or `f(example, completion)`), named after the function and weighted 1 unless given as
`{name: (func, weight)}`. Rows (dicts, or a `datasets.Dataset`) are written to the run directory as
JSONL and become `data.source` (and `data.val_source` for `eval_dataset`), so the run directory holds
everything the run saw. Functions live only in this process: resume such a run through `rftkit.train(...,
resume=True)` with the same functions, not through `rft train --resume`.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from rftkit.config import RFTConfig, apply_override, load_config, parse_config

# Registered reward functions are attributes of this module, so the `function` grader finds them by name
# ("rftkit.api:reward_<name>") exactly as it finds a user's module function.
_PREFIX = "reward_"


@dataclass
class TrainResult:
    summary: dict[str, Any]  # before/after held-out metrics, steps, wall time (summary.json)
    run_dir: Path
    best_checkpoint: Path | None  # checkpoints/best when eval.keep_best chose one, else the last checkpoint
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, one record per step


def _as_raw(config: str | Path | Mapping[str, Any] | RFTConfig, overrides: Iterable[str]) -> dict[str, Any]:
    if isinstance(config, RFTConfig):
        raw = config.model_dump(mode="json")
    elif isinstance(config, Mapping):
        raw = copy.deepcopy(dict(config))
    else:
        raw = load_config(config, list(overrides)).model_dump(mode="json")
        overrides = ()
    for assignment in overrides:
        apply_override(raw, assignment)
    return raw


def register_reward(name: str, func: Callable[..., Any]) -> str:
    """Make `func` importable as 'rftkit.api:reward_<name>' and return that target."""
    if not callable(func):
        raise TypeError(f"reward_funcs: {name!r} is {type(func).__name__}, not a function")
    if not name.isidentifier():
        raise ValueError(f"reward_funcs: {name!r} is not a valid grader name (use letters, digits and _)")
    setattr(sys.modules[__name__], _PREFIX + name, func)
    return f"{__name__}:{_PREFIX}{name}"


def _reward_graders(reward_funcs) -> list[dict[str, Any]]:
    if reward_funcs is None:
        return []
    items = reward_funcs.items() if isinstance(reward_funcs, Mapping) else (
        (getattr(f, "__name__", f"reward{i}"), f) for i, f in enumerate(reward_funcs))
    specs = []
    for name, value in items:
        func, weight = value if isinstance(value, tuple) else (value, 1.0)
        name = name if name.isidentifier() and name != "<lambda>" else f"reward{len(specs)}"
        specs.append({"name": name, "type": "function", "function": register_reward(name, func), "weight": weight})
    return specs


def _rows(dataset) -> list[dict[str, Any]]:
    rows = [dict(row) for row in dataset]  # a list of dicts, or a datasets.Dataset (iterates as dicts)
    if not rows:
        raise ValueError("dataset: no rows")
    return rows


def _write_rows(rows: list[dict[str, Any]], path: Path) -> str:
    from rftkit.data import write_jsonl

    write_jsonl(path, rows)
    return str(path)


def train(config: str | Path | Mapping[str, Any] | RFTConfig, *, reward_funcs=None, dataset=None,
          eval_dataset=None, output_dir: str | Path | None = None, overrides: Iterable[str] = (),
          resume: bool = False, overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Run RFT and return its summary, run directory and best checkpoint (see the module docstring)."""
    from rftkit.train.checkpoint import latest_checkpoint
    from rftkit.train.loop import train as run_training

    raw = _as_raw(config, overrides)
    raw["graders"] = list(raw.get("graders") or []) + _reward_graders(reward_funcs)
    run_dir = Path(output_dir or raw.get("output_dir") or "runs/rftkit")
    raw["output_dir"] = str(run_dir)
    data = raw.setdefault("data", {})
    if dataset is not None:
        data["source"] = _write_rows(_rows(dataset), run_dir / "data" / "train.jsonl")
        data.pop("options", None)
    if eval_dataset is not None:
        eval_rows = _rows(eval_dataset)
        data["val_source"] = _write_rows(eval_rows, run_dir / "data" / "validation.jsonl")
        data["val_size"] = len(eval_rows)
    parsed = parse_config(raw, "rftkit.train(config)")
    summary = run_training(parsed, run_dir, resume=resume, progress=progress, overwrite=overwrite)
    best = run_dir / "checkpoints" / "best"
    metrics_path = run_dir / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    return TrainResult(summary, run_dir, best if best.is_dir() else latest_checkpoint(run_dir), metrics)
