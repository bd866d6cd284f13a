"""`rft experiment countdown-data-efficiency`: base vs SFT vs RFT vs SFT-then-RFT for N training puzzles.

The seed reports, on Countdown, RFT beating the base model with 10 and 100 examples while SFT on
the same examples degraded it. This puts our numbers beside it, on the embedded model:
for each N, every arm gets the same training wall-clock budget; each arm's checkpoint is chosen on
validation (`eval.keep_best`: the validation during training with the best sampled accuracy) and that
checkpoint is scored once on a test split that chose nothing. Validation is the first `val_size`
puzzles of the seeded stream, the test split the next `test_size`; neither depends on N.

  base      the embedded model, no training, scored on the same validation and test puzzles
  sft       LoRA SFT on the N puzzles' correct solutions (`<answer>{solution}</answer>` + EOS)
  rft       GRPO on the same N prompts, no labels beyond the verifier
  sft_rft   SFT for `warmup_fraction` of the budget, then GRPO for the rest
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from rftkit.atomic import atomic_path, write_text_atomic
from rftkit.experiments.common import (ArmResult, cell, run_base_arm, run_rl_arm, run_sft_arm, run_tasks,
                                       write_json)

BIG = 10**6  # "no step limit": the wall-clock budget ends every arm


@dataclass(frozen=True)
class StudyPlan:
    sizes: tuple[int, ...]  # training puzzles N
    budget_seconds: float  # training wall-clock per arm (evaluation not counted)
    warmup_fraction: float  # share of the sft_rft budget spent on SFT
    sft_learning_rate: float
    val_size: int = 300  # chooses: every arm keeps its checkpoint with the best validation `keep_best`
    test_size: int = 500  # reports: scored once, with the chosen checkpoint
    rl_eval_every: int = 150  # RL steps between validations (about 3 RL steps/s on one thread)
    sft_eval_every: int = 400  # SFT steps between validations (about 7 SFT steps/s)
    keep_best: str = "accuracy"  # validation sampled accuracy, the study's headline metric


PLANS = {"full": StudyPlan((10, 100, 1000), 450.0, 0.25, 2e-4),
         "quick": StudyPlan((10,), 90.0, 0.25, 2e-4, rl_eval_every=50, sft_eval_every=100)}


def _sft_block(plan: StudyPlan, seconds: float, eval_every: int) -> dict[str, Any]:
    return {"steps": BIG, "max_seconds": seconds, "learning_rate": plan.sft_learning_rate, "batch_size": 16,
            "eval_every": eval_every}


# arm -> (runner, overrides for (plan, N, seed)); the SFT warm-up of sft_rft is not validated: validation
# chooses among its RL steps
ARMS: dict[str, tuple[Callable[[str, dict, Path], ArmResult], Callable[[StudyPlan], dict[str, Any]]]] = {
    "sft": (run_sft_arm, lambda p: {"sft": _sft_block(p, p.budget_seconds, p.sft_eval_every)}),
    "rft": (run_rl_arm, lambda p: {"train.max_seconds": p.budget_seconds}),
    "sft_rft": (run_rl_arm, lambda p: {"sft_warmup": _sft_block(p, p.budget_seconds * p.warmup_fraction, BIG),
                                       "train.max_seconds": p.budget_seconds * (1 - p.warmup_fraction)}),
}
LABELS = {"base": "base", "sft": "SFT", "rft": "RFT (GRPO)", "sft_rft": "SFT → RFT"}


def _settings(plan: StudyPlan, n: int, seed: int) -> dict[str, Any]:
    return {"data.train_size": n, "data.val_size": plan.val_size, "data.test_size": plan.test_size,
            "train.seed": seed, "eval.keep_best": plan.keep_best, "eval.eval_every": plan.rl_eval_every}


def _report(result: ArmResult, n: int | None) -> None:
    chosen = "final" if result.chosen_step is None else f"step {result.chosen_step}"
    print(f"N={n} seed={result.seed} {result.arm:8s} test accuracy {result.test_accuracy:.3f} "
          f"(greedy {result.test_accuracy_greedy:.3f}) at the {chosen} checkpoint; last validation "
          f"{result.accuracy:.3f}  rl steps {result.steps}  sft steps {result.sft_steps}  {result.wall_seconds:.0f} s",
          flush=True)


def run_base(plan: StudyPlan, seed: int, output: Path) -> list[ArmResult]:
    """The base model once per seed: validation and test do not depend on N, the evaluation stream on the seed."""
    result = run_base_arm("base", _settings(plan, min(plan.sizes), seed), output / "runs" / f"seed{seed}-base")
    _report(result, None)
    return [result]


def run_cell(plan: StudyPlan, n: int, seed: int, output: Path) -> list[ArmResult]:
    """Every trained arm for one (N, seed), one after another."""
    results = []
    for arm, (runner, overrides) in ARMS.items():
        result = runner(arm, _settings(plan, n, seed) | overrides(plan), output / "runs" / f"n{n}-seed{seed}-{arm}")
        result.requested_size = n
        results.append(result)
        _report(result, n)
    return results


def run_study(plan: StudyPlan, seeds: list[int], output: Path, jobs: int = 1) -> list[ArmResult]:
    tasks = [(run_base, (plan, seed, output)) for seed in seeds]
    tasks += [(run_cell, (plan, n, seed, output)) for n in plan.sizes for seed in seeds]
    return [result for cell_results in run_tasks(tasks, jobs) for result in cell_results]


def _values(results: list[ArmResult], n: int, arm: str, key: str) -> list[float]:
    if arm == "base":  # one per seed, whatever N
        return [getattr(r, key) for r in results if r.arm == "base"]
    return [getattr(r, key) for r in results if r.requested_size == n and r.arm == arm]


def chosen_steps(results: list[ArmResult], sizes: tuple[int, ...]) -> str:
    """Which checkpoint validation chose, per arm and seed: `chosen step / steps trained` (RL steps; SFT steps
    for the SFT arm)."""
    lines = ["| N | " + " | ".join(LABELS[a] for a in ARMS) + " |", "|---" * (len(ARMS) + 1) + "|"]
    for n in sizes:
        cells = []
        for arm in ARMS:
            runs = [r for r in results if r.requested_size == n and r.arm == arm]
            cells.append(", ".join(f"{r.chosen_step if r.chosen_step is not None else 'final'} / "
                                   f"{r.sft_steps if arm == 'sft' else r.steps}" for r in runs))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: list[ArmResult], sizes: tuple[int, ...], key: str) -> str:
    arms = ["base", *ARMS]
    lines = ["| N | " + " | ".join(LABELS[a] for a in arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for n in sizes:
        base = sum(_values(results, n, "base", key)) / max(1, len(_values(results, n, "base", key)))
        cells = [cell(_values(results, n, a, key), None if a == "base" else base) for a in arms]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[ArmResult], sizes: tuple[int, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rftkit.experiments.common import mean_std

    arms = ["base", *ARMS]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in zip(axes, ("test_accuracy", "test_accuracy_greedy"), ("sampled (T=1)", "greedy")):
        width = 0.8 / len(arms)
        for i, arm in enumerate(arms):
            stats = [mean_std(_values(results, n, arm, key)) for n in sizes]
            ax.bar([x + i * width for x in range(len(sizes))], [m for m, _ in stats], width,
                   yerr=[s for _, s in stats], label=LABELS[arm], capsize=3)
        ax.set_xticks([x + width * (len(arms) - 1) / 2 for x in range(len(sizes))], [f"N={n}" for n in sizes])
        ax.set_title(f"test-split accuracy, {title}")
    axes[0].set_ylabel("accuracy on test Countdown puzzles")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main(quick: bool, seeds: list[int], output: str | None, budget: float | None, jobs: int = 1) -> dict:
    plan = PLANS["quick" if quick else "full"]
    if budget is not None:
        plan = replace(plan, budget_seconds=budget)
    out = Path(output or f"runs/experiments/countdown-data-efficiency{'-quick' if quick else ''}")
    started = time.perf_counter()
    results = run_study(plan, seeds, out, jobs)
    wall = round(time.perf_counter() - started, 1)
    text = (f"Test-split accuracy on {plan.test_size} Countdown puzzles, each arm's checkpoint chosen on "
            f"{plan.val_size} validation puzzles (best validation {plan.keep_best}); sampled at T=1 "
            f"(relative change vs base):\n\n"
            f"{table(results, plan.sizes, 'test_accuracy')}\n\nGreedy:\n\n"
            f"{table(results, plan.sizes, 'test_accuracy_greedy')}\n\n"
            f"Chosen checkpoint (step chosen / steps trained, per seed):\n\n{chosen_steps(results, plan.sizes)}\n\n"
            f"Budget {plan.budget_seconds:.0f} s of training per arm (SFT→RFT: {plan.warmup_fraction:.0%} SFT), "
            f"validation every {plan.rl_eval_every} RL / {plan.sft_eval_every} SFT steps, seeds {seeds}, "
            f"{jobs} at a time, total wall time {wall:.0f} s.")
    meta = {"plan": plan.__dict__, "seeds": seeds, "jobs": jobs, "wall_seconds": wall, "quick": quick}
    write_json(out / "results.json", results, meta)
    write_text_atomic(out / "table.md", text + "\n")
    plot(results, plan.sizes, out / "plot.png")
    print(text)
    print(f"written: {out / 'results.json'}, {out / 'table.md'}, {out / 'plot.png'}")
    return meta
