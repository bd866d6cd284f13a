"""Shared pieces of the experiments: the Countdown base config, running one arm, tables and spreads."""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from rftkit.atomic import write_json_atomic
from rftkit.config import parse_config

# examples/countdown.yaml as data, so the experiments do not depend on the working directory.
COUNTDOWN: dict[str, Any] = {
    "model": {"name": "embedded"},
    "lora": {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"},
    "data": {"source": "countdown", "train_size": 1000, "val_size": 500, "seed": 1234},
    "graders": [{"name": "format", "type": "countdown_format", "weight": 0.1},
                {"name": "correct", "type": "countdown", "weight": 1.0}],
    "accuracy_grader": "correct",
    "algorithm": "grpo",
    "train": {"steps": 100000, "batch_size": 8, "learning_rate": 2.0e-4, "max_completion_length": 32,
              "temperature": 1.0, "seed": 0, "threads": 1},  # 1 thread: wall-clock budgets stay fair on a shared CPU
    "eval": {"eval_every": 100000},  # validate only before and after: the budget is training time
    "save_every": 100000,
    "samples_per_step": 0,
}


@dataclass
class ArmResult:
    arm: str
    train_size: int
    seed: int
    accuracy: float  # held-out sampled accuracy (temperature 1) after training
    accuracy_greedy: float
    start_accuracy: float  # before this arm's RL (the base model, or the model after its SFT warm-up)
    start_accuracy_greedy: float
    steps: int  # RL steps (0 for SFT only)
    sft_steps: int
    wall_seconds: float  # the arm's whole wall time, evaluation included
    requested_size: int | None = None  # the study's N (train_size can be a few less: held-out duplicates are dropped)
    # With a test split (data.test_size) and eval.keep_best: the checkpoint validation chose, scored on the test
    # split once; `accuracy` above stays the last validation.
    test_accuracy: float | None = None
    test_accuracy_greedy: float | None = None
    chosen_step: int | None = None  # the step of checkpoints/best (None: the final policy was scored)


def config_for(overrides: dict[str, Any]):
    raw = copy.deepcopy(COUNTDOWN)
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(raw, "experiment config")


def run_rl_arm(arm: str, overrides: dict[str, Any], run_dir: Path) -> ArmResult:
    from rftkit.train.loop import train

    config = config_for(overrides)
    started = time.perf_counter()
    summary = train(config, run_dir, progress=False)
    warm = run_dir / "sft_warmup.json"
    sft_steps = json.loads(warm.read_text())["sft_steps"] if warm.is_file() else 0
    return _result(arm, config, summary, summary["steps"], sft_steps, started)


def run_sft_arm(arm: str, overrides: dict[str, Any], run_dir: Path) -> ArmResult:
    from rftkit.train.sft import sft

    config = config_for(overrides)
    started = time.perf_counter()
    summary = sft(config, run_dir, progress=False)
    return _result(arm, config, summary, 0, summary["sft_steps"], started)


def run_base_arm(arm: str, overrides: dict[str, Any], run_dir: Path) -> ArmResult:
    """The untrained model scored like a trained arm: validation and (with data.test_size) the test split."""
    from rftkit.eval.validate import EvalSettings, evaluate, load_policy
    from rftkit.graders import build_graders
    from rftkit.tasks import load_splits
    from rftkit.train.process import seed_everything, set_threads

    config = config_for(overrides)
    started = time.perf_counter()
    set_threads(config.train.threads)
    seed_everything(config.train.seed)
    train_examples, val_examples, test_examples = load_splits(config.data)
    policy, tokenizer = load_policy(config, None)
    graders, settings = build_graders(config.graders), EvalSettings.of(config)
    val = evaluate(policy, tokenizer, val_examples, graders, settings, None).metrics
    summary = {"train_size": len(train_examples), "before": val, "after": val}
    if test_examples:
        summary["test"] = evaluate(policy, tokenizer, test_examples, graders, settings, None).metrics
    write_json_atomic(run_dir / "summary.json", summary)  # creates run_dir
    return _result(arm, config, summary, 0, 0, started)


def _result(arm: str, config, summary: dict, steps: int, sft_steps: int, started: float) -> ArmResult:
    test = summary.get("test") or {}
    return ArmResult(arm, summary["train_size"], config.train.seed, summary["after"]["accuracy"],
                     summary["after"]["accuracy_greedy"], summary["before"]["accuracy"],
                     summary["before"]["accuracy_greedy"], steps, sft_steps, round(time.perf_counter() - started, 1),
                     test_accuracy=test.get("accuracy"), test_accuracy_greedy=test.get("accuracy_greedy"),
                     chosen_step=(summary.get("best") or {}).get("step"))


def run_tasks(tasks: list[tuple[Callable[..., Any], tuple]], jobs: int = 1) -> list[Any]:
    """`fn(*args)` for each task, results in task order; with jobs > 1, that many at a time in fresh processes.

    Every arm trains with one thread, so up to one job per core keeps wall-clock budgets fair:
    the seeds of a study run side by side instead of one after another.
    """
    if jobs <= 1:
        return [fn(*args) for fn, args in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *args) for fn, args in tasks]
        return [future.result() for future in futures]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(values: list[float], base: float | None = None) -> str:
    """'0.212 ± 0.010 (+46%)': mean, spread over seeds (when several), relative change against base."""
    mean, std = mean_std(values)
    text = f"{mean:.3f}" + (f" ± {std:.3f}" if len(values) > 1 else "")
    if base is not None and base > 0:
        text += f" ({(mean - base) / base:+.0%})"
    return text


def write_json(path: Path, results: list[ArmResult], meta: dict[str, Any]) -> None:
    write_json_atomic(path, {"meta": meta, "results": [asdict(r) for r in results]})
