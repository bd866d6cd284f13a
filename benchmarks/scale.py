"""Scale-out on Ray, measured side by side: rollout tokens/s of 1 and 2 workers, steps/s sync vs async.

    flock /tmp/rftkit-cpu.lock .venv/bin/python benchmarks/scale.py   # table + benchmarks/results/scale.json

One local Ray runtime (one CPU per core), one torch thread per worker and for the learner.

1. Rollout throughput. Two workers hold the embedded model and the same adapter; a request is the
   main job's batch (8 prompts x 8 generations, 32 new tokens at most), sampled and graded. Each
   round measures one worker with one batch, two workers with one batch each (the throughput of
   the pool: `rollout_tokens_per_s`), and two workers with half a batch each (what one step gets
   when its batch is split: `rollout_split`), in alternating order; tokens/s is completion tokens
   over the wall time. Medians over the rounds, after one warm-up round.
2. Steps/s. The main job's shape (examples/countdown.yaml) trains STEPS steps with one rollout
   worker, synchronously (max_staleness 0) and asynchronously (max_staleness 1), the runs
   alternating REPEATS times. A step's time is the learner's critical path, time/generate (waiting
   for its batch, shipping the adapter) + time/grade + time/update; the median over the steps
   after the first two gives steps/s.
3. Held-out accuracy. The same runs validate once at the end on the main job's 500 held-out
   prompts (sampled accuracy; greedy in the JSON); mean over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "countdown.yaml"


def _config(overrides: dict):
    from rftkit.config import load_config

    return load_config(EXAMPLE, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def rollout_throughput(rounds: int) -> dict:
    import ray
    import torch

    from rftkit.models.loading import attach_lora, load_base_model
    from rftkit.rollout.ray_workers import RolloutRequest, RolloutWorker, adapter_tensors
    from rftkit.tasks import load_examples
    from rftkit.train.pipeline import share_seed, split
    from rftkit.types import SamplingSettings

    config = _config({"train.threads": 1})
    examples = load_examples(config.data)[0]
    tensors = adapter_tensors(attach_lora(load_base_model(config.model, torch.device("cpu")), config.lora))
    actor = ray.remote(num_cpus=1)(RolloutWorker)
    workers = [actor.remote(config, i, 1) for i in range(2)]
    ray.get([w.set_adapter.remote(tensors, 0) for w in workers])
    settings = SamplingSettings(config.grpo.num_generations, config.train.max_completion_length,
                                config.train.temperature, config.train.top_p, False, config.model.chat_template,
                                config.data.system_prompt)
    batch_size = config.train.batch_size
    rates: dict[str, list[float]] = {"1": [], "2": [], "2_split": []}
    cores: dict[str, list[float]] = {"1": [], "2": [], "2_split": []}  # CPU seconds the workers got / wall

    sizes: dict[str, int] = {}

    def measure(batches: list[list]) -> tuple[float, float]:
        started = time.perf_counter()
        requests = [RolloutRequest(r, batch, settings, seed=share_seed(0, (r, 0), i))
                    for i, batch in enumerate(batches)]
        results = ray.get([workers[i].rollout.remote(request) for i, request in enumerate(requests)])
        sizes.setdefault("request_bytes", len(pickle.dumps(requests[0])))  # what crosses besides the adapter
        sizes.setdefault("result_bytes", len(pickle.dumps(results[0])))
        wall = time.perf_counter() - started
        return (sum(int(res.batch.completion_mask.sum()) for res in results) / wall,
                sum(res.times["cpu"] for res in results) / wall)

    for r in range(rounds + 1):
        first, second = (examples[((2 * r + j) * batch_size) % len(examples):][:batch_size] for j in (0, 1))
        arms = {"1": [first], "2": [first, second], "2_split": split(first, 2)}
        for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            rate, used = measure(arms[name])
            if r > 0:  # round 0 warms up both workers
                rates[name].append(rate)
                cores[name].append(used)
    for worker in workers:
        ray.kill(worker)
    medians = {k: round(statistics.median(v), 1) for k, v in rates.items()}
    return {"median": {k: medians[k] for k in ("1", "2")}, "ratio": round(medians["2"] / medians["1"], 3),
            **sizes, "cores_used": {k: round(statistics.median(v), 2) for k, v in cores.items()},
            "split_median": medians["2_split"], "split_ratio": round(medians["2_split"] / medians["1"], 3),
            "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()}, "adapter_bytes": sum(
                t.numel() * t.element_size() for t in tensors.values())}


def train_run(k: int, steps: int, seed: int, workdir: Path) -> dict:
    from rftkit.train.loop import train

    run_dir = workdir / f"k{k}-seed{seed}"
    config = _config({"train.steps": steps, "train.seed": seed, "train.threads": 1, "eval.eval_every": 10**6,
                      "save_every": 10**6, "samples_per_step": 0,
                      "distributed": {"workers": 1, "max_staleness": k, "threads_per_worker": 1}})
    started = time.perf_counter()
    summary = train(config, run_dir, progress=False)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_records = [r for r in records if "time/update" in r]
    step_s = [r["time/generate"] + r["time/grade"] + r["time/update"] for r in steps_records[2:]]
    return {"k": k, "seed": seed, "steps": steps, "median_step_s": round(statistics.median(step_s), 4),
            "steps_per_s": round(1 / statistics.median(step_s), 3), "wall_s": round(wall, 1),
            "val_accuracy": summary["after"]["accuracy"], "val_accuracy_greedy": summary["after"]["accuracy_greedy"],
            "val_accuracy_before": summary["before"]["accuracy"],
            "staleness_mean": round(statistics.fmean(r["pipeline/staleness_mean"] for r in steps_records), 3),
            "dropped_groups": sum(r["pipeline/dropped_groups"] for r in steps_records),
            "adapter_bytes_per_step": steps_records[-1]["pipeline/adapter_bytes"],
            "worker_generate_s": round(statistics.median(r["time/worker_generate"] for r in steps_records[2:]), 4),
            "update_s": round(statistics.median(r["time/update"] for r in steps_records[2:]), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="rollout rounds per worker count")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="sync/async run pairs (seeds 0, 1, ...)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/scale.json"))
    args = parser.parse_args()
    import ray

    cores = len(os.sched_getaffinity(0))
    ray.init(num_cpus=cores, include_dashboard=False, configure_logging=False, log_to_driver=False)
    started, load = time.perf_counter(), {"start": os.getloadavg()[0]}
    rollout = rollout_throughput(args.rounds)
    load["after_rollout"] = os.getloadavg()[0]
    print(f"rollout tokens/s: 1 worker {rollout['median']['1']}, 2 workers {rollout['median']['2']} "
          f"({rollout['ratio']}x)", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="rftkit-scale-") as tmp:
        for seed in range(args.repeats):
            for k in ((0, 1) if seed % 2 == 0 else (1, 0)):
                runs.append(train_run(k, args.steps, seed, Path(tmp)))
                print(json.dumps(runs[-1]), flush=True)
    ray.shutdown()
    load["end"] = os.getloadavg()[0]
    by_k = {k: [r for r in runs if r["k"] == k] for k in (0, 1)}
    steps_per_s = {name: round(1 / statistics.median([r["median_step_s"] for r in by_k[k]]), 3)
                   for name, k in (("sync", 0), ("async", 1))}
    accuracy = {name: round(statistics.fmean(r["val_accuracy"] for r in by_k[k]), 4)
                for name, k in (("sync", 0), ("async", 1))}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    result = {"rollout_tokens_per_s": rollout["median"], "rollout_ratio_2_over_1": rollout["ratio"],
              "rollout_split": {"tokens_per_s": rollout["split_median"], "ratio_over_1": rollout["split_ratio"]},
              # CPU seconds the workers' processes got per second of wall time, median per arm: a worker that
              # has a core to itself gets ~1; two that get ~1 between them were starved by other processes
              "rollout_cores_used": rollout["cores_used"],
              "steps_per_s": steps_per_s, "steps_ratio_async_over_sync": round(steps_per_s["async"] /
                                                                               steps_per_s["sync"], 3),
              "val_accuracy": accuracy,
              "val_accuracy_gap": round(abs(accuracy["async"] - accuracy["sync"]), 4),
              "adapter_bytes_per_step": rollout["adapter_bytes"],
              "batch_bytes": {"request": rollout["request_bytes"], "result": rollout["result_bytes"]},
              "goals": {"rollout_2_over_1": 1.7, "async_over_sync": 1.25, "val_accuracy_gap": 0.03},
              "rollout_rounds": rollout["rounds"], "runs": runs,
              "setup": {"steps": args.steps, "repeats": args.repeats, "rounds": args.rounds, "cores": cores,
                        "threads": "1 per worker, 1 for the learner", "workers_for_steps": 1,
                        "ray": ray.__version__, "python": platform.python_version(), "commit": commit,
                        "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - started, 1),
                        # 1-minute load averages: above ~2 on 2 cores, other processes shared the machine
                        "load_average": {k: round(v, 2) for k, v in load.items()}}}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n| measurement | sync / 1 worker | async / 2 workers | ratio | goal |\n|---|---:|---:|---:|---:|\n"
          f"| rollout tokens/s (1 vs 2 workers) | {rollout['median']['1']} | {rollout['median']['2']} | "
          f"{rollout['ratio']}x | >= 1.7x |\n"
          f"| rollout tokens/s, one batch split in two | {rollout['median']['1']} | {rollout['split_median']} | "
          f"{rollout['split_ratio']}x | |\n"
          f"| steps/s (k = 0 vs k = 1, 1 worker) | {steps_per_s['sync']} | {steps_per_s['async']} | "
          f"{result['steps_ratio_async_over_sync']}x | >= 1.25x |\n"
          f"| held-out accuracy after {args.steps} steps | {accuracy['sync']} | {accuracy['async']} | "
          f"gap {result['val_accuracy_gap']} | <= 0.03 |\nwrote {args.out}")


if __name__ == "__main__":
    main()
