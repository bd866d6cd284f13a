"""Every algorithm (GRPO, Dr. GRPO, DAPO, RLOO, PPO, GSPO, CISPO, online DPO), full-weight GRPO and PPO with a
separate value adapter on Countdown: held-out accuracy after the same wall-clock budget.

    flock /tmp/rftkit-cpu.lock .venv/bin/python benchmarks/algorithms.py [--budget 120] [--seeds 0] [--jobs 1]
                                                                           [--arms grpo gspo ...]

Same as `rft experiment algorithm-comparison`; prints the table and writes
benchmarks/results/algorithms.json (plus table.md and the run directories under
runs/experiments/algorithm-comparison). Each algorithm: embedded model, LoRA r=16, 1000
training puzzles, 8 prompts x 8 completions per step, lr 2e-4 (full-weight: FULL_WEIGHT_LR), one
torch thread, its own defaults otherwise; training stops after `--budget` seconds (validation not counted) and the
adapter is scored on the same 500 held-out puzzles (sampled at T=1 and greedy).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

from rftkit.experiments.algorithms import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per algorithm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output", default="runs/experiments/algorithm-comparison")
    parser.add_argument("--jobs", type=int, default=1, help="trainings side by side, one thread each (<= cores)")
    parser.add_argument("--arms", nargs="+", help="a subset of the arms (default: all of ARMS)")
    args = parser.parse_args()
    meta = main(args.seeds, args.budget, args.output, algorithms=args.arms, jobs=args.jobs)
    results = Path(__file__).parent / "results" / "algorithms.json"
    shutil.copy(Path(args.output) / "results.json", results)
    data = json.loads(results.read_text())
    data["meta"]["machine"] = {"python": platform.python_version(),
                               "processor": platform.processor() or platform.machine()}
    results.write_text(json.dumps(data, indent=2))
    print(f"written: {results}")
