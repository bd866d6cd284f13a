"""How rftkit's step time grows as num_generations, batch_size and max_completion_length each double.

    flock /tmp/rftkit-cpu.lock .venv/bin/python benchmarks/scaling.py   # table + benchmarks/results/scaling.json

From examples/countdown.yaml (8 prompts x 8 generations, 32 new tokens at most), one knob at a
time takes 1/2x, 1x and 2x its value; each point trains STEPS steps and reports the median
step time (generate + grade + update) without the first step. The fitted exponent is the
least-squares slope of log(step time) on log(knob): 1 is linear, below 1 is better than linear.
Completion length is capped, not forced: the embedded model's Countdown answers end after about
15 tokens, so the cap changes little, and the table also gives the tokens actually generated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

BASE = {"grpo.num_generations": 8, "train.batch_size": 8, "train.max_completion_length": 32}


def step_time(overrides: dict, steps: int, workdir: Path) -> dict:
    from rftkit.config import load_config
    from rftkit.train.loop import train

    completions = overrides["grpo.num_generations"] * overrides["train.batch_size"]
    settings = {**overrides, "train.steps": steps, "data.train_size": 1000, "data.val_size": 8,
                "eval.eval_every": 10**6, "eval.batch_size": 8, "save_every": 10**6, "samples_per_step": 0,
                "train.micro_batch_size": completions}
    config = load_config(Path(__file__).parents[1] / "examples/countdown.yaml",
                         [f"{k}={v}" for k, v in settings.items()])
    train(config, workdir, progress=False)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "time/generate" in r][1:]
    return {"step_s": round(statistics.median(r["time/generate"] + r["time/grade"] + r["time/update"]
                                              for r in records), 4),
            "tokens_per_step": round(statistics.median(r["len/completion"] * completions for r in records), 1)}


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/scaling.json")
    args = parser.parse_args()
    from rftkit.train.process import set_threads

    threads = set_threads(None)
    cache: dict[tuple, dict] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for knob, base in BASE.items():
            points = []
            for value in (base // 2, base, base * 2):
                settings = {**BASE, knob: value}
                key = tuple(sorted(settings.items()))
                if key not in cache:
                    cache[key] = step_time(settings, args.steps, Path(tmp) / f"run{len(cache)}")
                points.append({"value": value, **cache[key]})
                print(f"{knob}={value}: {cache[key]['step_s']:.3f} s/step, {cache[key]['tokens_per_step']} tokens",
                      flush=True)
            rows.append({"knob": knob, "points": points,
                         "exponent": round(slope([p["value"] for p in points], [p["step_s"] for p in points]), 2)})
    print("\n| doubled | 1/2x: s/step | 1x: s/step | 2x: s/step | fitted exponent |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        cells = " | ".join(f"{p['step_s']:.3f} ({p['value']})" for p in row["points"])
        print(f"| {row['knob']} | {cells} | {row['exponent']:.2f} |")
    import torch

    result = {"benchmark": "scaling", "command": " ".join([Path(sys.executable).name, *sys.argv]), "steps": args.steps,
              "rows": rows, "machine": {"cpus": len(os.sched_getaffinity(0)), "threads": threads,
                                        "torch": torch.__version__, "platform": platform.platform()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
