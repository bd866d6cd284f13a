"""`rft experiment algorithm-comparison`: every registered algorithm, plus full-weight GRPO and PPO with a
separate value model, after the same wall-clock budget.

Every arm starts from the same embedded model and LoRA init (same seed), trains on the same 1000
Countdown puzzles with the same batch (8 prompts x 8 completions) and learning rate, stops after
`budget` seconds of training (validation not counted), and is scored on the same held-out puzzles.
Each algorithm runs with its defaults (README: Algorithms). The full-weight arm trains every weight
of the model (lora: null) at FULL_WEIGHT_LR, the rate a 60 s probe picked for it (docs/benchmarks.md).
"""

from __future__ import annotations

import time
from pathlib import Path

from rftkit.atomic import write_text_atomic
from rftkit.experiments.common import ArmResult, cell, run_rl_arm, run_tasks, write_json
from rftkit.algorithms.registry import ALGORITHMS

FULL_WEIGHT_LR = 1e-4
LABELS = {"grpo": "GRPO", "dr_grpo": "Dr. GRPO", "dapo": "DAPO", "rloo": "RLOO", "ppo": "PPO (value head, GAE)",
          "gspo": "GSPO", "cispo": "CISPO", "online_dpo": "online DPO (best vs worst)",
          "grpo_full_weight": "GRPO, full-weight", "ppo_separate_value": "PPO, separate value adapter"}
# arm -> its settings beyond the shared ones: one arm per registered algorithm, and two variants
ARMS: dict[str, dict] = {name: {"algorithm": name} for name in ALGORITHMS} | {
    "grpo_full_weight": {"algorithm": "grpo", "lora": None, "train.learning_rate": FULL_WEIGHT_LR},
    "ppo_separate_value": {"algorithm": "ppo", "ppo.value_model": "separate"},
}


def table(results: list[ArmResult], algorithms: list[str]) -> str:
    # Every run of one seed starts from the same base model and evaluation stream: one base value per seed.
    per_seed = {r.seed: r for r in results}
    base = [r.start_accuracy for r in per_seed.values()]
    base_greedy = [r.start_accuracy_greedy for r in per_seed.values()]
    lines = ["| algorithm | held-out accuracy (T=1) | greedy | RL steps in budget (per seed) |", "|---|---|---|---|",
             f"| base model | {cell(base)} | {cell(base_greedy)} | 0 |"]
    mean_base = sum(base) / len(base)
    mean_base_greedy = sum(base_greedy) / len(base_greedy)
    for name in algorithms:
        rows = [r for r in results if r.arm == name]
        lines.append(f"| {LABELS[name]} | {cell([r.accuracy for r in rows], mean_base)} | "
                     f"{cell([r.accuracy_greedy for r in rows], mean_base_greedy)} | "
                     f"{' / '.join(str(r.steps) for r in rows)} |")
    return "\n".join(lines)


def run_arm(name: str, seed: int, budget: float, train_size: int, val_size: int, out: Path) -> ArmResult:
    settings = ARMS[name] | {"train.seed": seed, "train.max_seconds": budget, "data.train_size": train_size,
                             "data.val_size": val_size}
    result = run_rl_arm(name, settings, out / "runs" / f"{name}-seed{seed}")
    print(f"{name:18s} seed={seed} accuracy {result.start_accuracy:.3f} -> {result.accuracy:.3f} "
          f"(greedy {result.start_accuracy_greedy:.3f} -> {result.accuracy_greedy:.3f}), "
          f"{result.steps} steps, {result.wall_seconds:.0f} s", flush=True)
    return result


def main(seeds: list[int], budget: float, output: str | None, algorithms: list[str] | None = None,
         train_size: int = 1000, val_size: int = 500, jobs: int = 1) -> dict:
    algorithms = algorithms or list(ARMS)
    unknown = sorted(set(algorithms) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arms {unknown}; have {', '.join(ARMS)}")
    out = Path(output or "runs/experiments/algorithm-comparison")
    started = time.perf_counter()
    tasks = [(run_arm, (name, seed, budget, train_size, val_size, out)) for seed in seeds for name in algorithms]
    results = run_tasks(tasks, jobs)
    wall = round(time.perf_counter() - started, 1)
    text = (f"Held-out accuracy on {val_size} Countdown puzzles after {budget:.0f} s of training each "
            f"(relative change vs base), seeds {seeds}, {jobs} at a time, total wall time {wall:.0f} s:\n\n"
            f"{table(results, algorithms)}")
    meta = {"budget_seconds": budget, "seeds": seeds, "train_size": train_size, "val_size": val_size,
            "jobs": jobs, "wall_seconds": wall}
    write_json(out / "results.json", results, meta)
    write_text_atomic(out / "table.md", text + "\n")
    print(text)
    return meta
