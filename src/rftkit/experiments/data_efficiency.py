"""`rft experiment countdown-data-efficiency`: base vs SFT vs RFT vs SFT-then-RFT for N training puzzles.

The seed reports, on Countdown, RFT beating the base model with 10 and 100 examples while SFT on
the same examples degraded it. This puts our numbers beside it, on the embedded model:
for each N, every arm gets the same training wall-clock budget and is scored on the same
held-out puzzles (the first `val_size` of the seeded stream, which do not depend on N).

  base      the embedded model, no training (its numbers are the RFT arm's step-0 validation)
  sft       LoRA SFT on the N puzzles' correct solutions (`<answer>{solution}</answer>` + EOS)
  rft       GRPO on the same N prompts, no labels beyond the verifier
  sft_rft   SFT for `warmup_fraction` of the budget, then GRPO for the rest
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rftkit.experiments.common import ArmResult, cell, run_rl_arm, run_sft_arm, run_tasks, write_json

BIG = 10**6  # "no step limit": the wall-clock budget ends every arm


@dataclass(frozen=True)
class StudyPlan:
    sizes: tuple[int, ...]  # training puzzles N
    budget_seconds: float  # training wall-clock per arm (evaluation not counted)
    warmup_fraction: float  # share of the sft_rft budget spent on SFT
    sft_learning_rate: float
    val_size: int = 500


PLANS = {"full": StudyPlan((10, 100, 1000), 450.0, 0.25, 2e-4),
         "quick": StudyPlan((10,), 90.0, 0.25, 2e-4)}


def _sft_block(plan: StudyPlan, seconds: float) -> dict[str, Any]:
    return {"steps": BIG, "max_seconds": seconds, "learning_rate": plan.sft_learning_rate, "batch_size": 16,
            "eval_every": BIG}


# arm -> (runner, overrides for (plan, N, seed))
ARMS: dict[str, tuple[Callable[[str, dict, Path], ArmResult], Callable[[StudyPlan], dict[str, Any]]]] = {
    "sft": (run_sft_arm, lambda p: {"sft": _sft_block(p, p.budget_seconds)}),
    "rft": (run_rl_arm, lambda p: {"train.max_seconds": p.budget_seconds}),
    "sft_rft": (run_rl_arm, lambda p: {"sft_warmup": _sft_block(p, p.budget_seconds * p.warmup_fraction),
                                       "train.max_seconds": p.budget_seconds * (1 - p.warmup_fraction)}),
}
LABELS = {"base": "base", "sft": "SFT", "rft": "RFT (GRPO)", "sft_rft": "SFT → RFT"}


def run_cell(plan: StudyPlan, n: int, seed: int, output: Path) -> list[ArmResult]:
    """Every arm for one (N, seed), one after another."""
    results = []
    for arm, (runner, overrides) in ARMS.items():
        settings = {"data.train_size": n, "data.val_size": plan.val_size, "train.seed": seed} | overrides(plan)
        result = runner(arm, settings, output / "runs" / f"n{n}-seed{seed}-{arm}")
        result.requested_size = n
        results.append(result)
        print(f"N={n} seed={seed} {arm:8s} accuracy {result.accuracy:.3f} (greedy {result.accuracy_greedy:.3f})"
              f"  start {result.start_accuracy:.3f}  rl steps {result.steps}  sft steps {result.sft_steps}"
              f"  {result.wall_seconds:.0f} s", flush=True)
    return results


def run_study(plan: StudyPlan, seeds: list[int], output: Path, jobs: int = 1) -> list[ArmResult]:
    cells = run_tasks([(run_cell, (plan, n, seed, output)) for n in plan.sizes for seed in seeds], jobs)
    return [result for cell_results in cells for result in cell_results]


def _values(results: list[ArmResult], n: int, arm: str, key: str) -> list[float]:
    if arm == "base":  # the RFT arm's step-0 validation is the untouched base model
        return [getattr(r, "start_" + key) for r in results if r.requested_size == n and r.arm == "rft"]
    return [getattr(r, key) for r in results if r.requested_size == n and r.arm == arm]


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
    for ax, key, title in zip(axes, ("accuracy", "accuracy_greedy"), ("sampled (T=1)", "greedy")):
        width = 0.8 / len(arms)
        for i, arm in enumerate(arms):
            stats = [mean_std(_values(results, n, arm, key)) for n in sizes]
            ax.bar([x + i * width for x in range(len(sizes))], [m for m, _ in stats], width,
                   yerr=[s for _, s in stats], label=LABELS[arm], capsize=3)
        ax.set_xticks([x + width * (len(arms) - 1) / 2 for x in range(len(sizes))], [f"N={n}" for n in sizes])
        ax.set_title(f"held-out accuracy, {title}")
    axes[0].set_ylabel("accuracy on held-out Countdown puzzles")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(quick: bool, seeds: list[int], output: str | None, budget: float | None, jobs: int = 1) -> dict:
    plan = PLANS["quick" if quick else "full"]
    if budget is not None:
        plan = StudyPlan(plan.sizes, budget, plan.warmup_fraction, plan.sft_learning_rate, plan.val_size)
    out = Path(output or f"runs/experiments/countdown-data-efficiency{'-quick' if quick else ''}")
    started = time.perf_counter()
    results = run_study(plan, seeds, out, jobs)
    wall = round(time.perf_counter() - started, 1)
    text = (f"Held-out accuracy on {plan.val_size} Countdown puzzles, sampled at T=1 (relative change vs base):\n\n"
            f"{table(results, plan.sizes, 'accuracy')}\n\nGreedy:\n\n"
            f"{table(results, plan.sizes, 'accuracy_greedy')}\n\n"
            f"Budget {plan.budget_seconds:.0f} s of training per arm (SFT→RFT: {plan.warmup_fraction:.0%} SFT), "
            f"seeds {seeds}, {jobs} at a time, total wall time {wall:.0f} s.")
    meta = {"plan": plan.__dict__, "seeds": seeds, "jobs": jobs, "wall_seconds": wall, "quick": quick}
    write_json(out / "results.json", results, meta)
    (out / "table.md").write_text(text + "\n")
    plot(results, plan.sizes, out / "plot.png")
    print(text)
    print(f"written: {out / 'results.json'}, {out / 'table.md'}, {out / 'plot.png'}")
    return meta
