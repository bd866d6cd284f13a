"""rftkit against TRL's GRPOTrainer: seconds per step, its split, peak memory, reward after K steps.

    flock /tmp/rftkit-cpu.lock .venv/bin/python benchmarks/vs_trl.py     # table + benchmarks/results/vs_trl.json

Both sides train the same thing: the embedded tiny Qwen2 (float32, from its directory), LoRA
r=16 / alpha=32 / all-linear / dropout 0, 8 Countdown prompts x 8 generations per step (64
completions in one micro-batch), at most 32 new tokens, temperature 1, lr 2e-4 constant, AdamW,
grad-norm clip 1, beta 0 (no reference model), one pass per batch, GRPO's per-sequence loss
(TRL `loss_type="grpo"`), group-std reward scaling, and the same reward: rftkit's Countdown
graders (format 0.1 + correct 1.0, weighted mean) through `grade_all`. The K*8 training prompts
are the same set on both sides (each shuffles them with its own sampler). TRL runs without
gradient checkpointing and in float32 (its GRPOConfig defaults to both on; neither helps on a
CPU), with `use_cpu=True`.

Each (implementation, repeat) runs in its own subprocess, interleaved (rftkit, TRL, rftkit, ...),
so peak resident memory (ru_maxrss of the process: imports, model, training) is per run, and
machine-load drift hits both. Step time excludes the first step (warm-up). Reported: medians
over repeats of each run's median step time and split, of peak RSS, and of the mean training
reward over the last 3 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GENERATIONS, PROMPTS, MAX_NEW, LR = 8, 8, 32, 2e-4


def _examples(steps: int):
    from rftkit.config import DataConfig
    from rftkit.tasks import load_examples

    train, _ = load_examples(DataConfig(source="countdown", train_size=steps * PROMPTS, val_size=8, seed=1234))
    return train


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_rftkit(steps: int, seed: int, workdir: Path) -> dict:
    from rftkit.config import load_config
    from rftkit.trainer import train

    overrides = [f"train.steps={steps}", f"data.train_size={steps * PROMPTS}", "data.val_size=8", f"train.seed={seed}",
                 "eval.eval_every=1000000", "eval.batch_size=8", "save_every=1000000", "samples_per_step=0",
                 f"train.micro_batch_size={PROMPTS * GENERATIONS}"]
    config = load_config(Path(__file__).parents[1] / "examples/countdown.yaml", overrides)
    train(config, workdir / "run", progress=False)
    records = [json.loads(line) for line in (workdir / "run/metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "time/generate" in r]
    split = {k: [r[f"time/{k}"] for r in records] for k in ("generate", "grade", "update")}
    return {"step": [sum(parts) for parts in zip(*split.values())], **split,
            "reward": [r["reward/mean"] for r in records], "length": [r["len/completion"] for r in records]}


def run_trl(steps: int, seed: int, workdir: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rftkit.config import ModelConfig
    from rftkit.graders import build_graders
    from rftkit.config import load_config
    from rftkit.graders.combine import grade_all
    from rftkit.models.loading import load_base_model, load_tokenizer

    examples = _examples(steps)
    by_id = {e.id: e for e in examples}
    graders = build_graders(load_config(Path(__file__).parents[1] / "examples/countdown.yaml").graders)

    def countdown_reward(prompts, completions, example_id, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        graded, _ = grade_all(graders, [by_id[i] for i in example_id], texts)
        return [g.reward if g.reward is not None else 0.0 for g in graded]

    dataset = Dataset.from_list([{"prompt": e.chat(None), "example_id": e.id} for e in examples])
    args = GRPOConfig(output_dir=str(workdir / "trl"), per_device_train_batch_size=PROMPTS * GENERATIONS,
                      gradient_accumulation_steps=1, steps_per_generation=1, num_generations=GENERATIONS,
                      max_completion_length=MAX_NEW, temperature=1.0, top_p=1.0, top_k=0, learning_rate=LR,
                      lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=0.0,
                      epsilon=0.2, num_iterations=1, loss_type="grpo", scale_rewards="group", max_steps=steps,
                      gradient_checkpointing=False, bf16=False, use_cpu=True, seed=seed, logging_steps=1,
                      save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0)
    timer = _TrlTimer()
    trainer = GRPOTrainer(model=load_base_model(ModelConfig()), reward_funcs=countdown_reward, args=args,
                          train_dataset=dataset, processing_class=load_tokenizer(ModelConfig()),
                          peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"), callbacks=[timer.callback(TrainerCallback)])
    timer.wrap(trainer)
    trainer.train()
    update = [s - g - r for s, g, r in zip(timer.step, timer.generate, timer.grade)]
    return {"step": timer.step, "generate": timer.generate, "grade": timer.grade, "update": update,
            "reward": timer.reward, "length": timer.length, "dtype": str(next(trainer.model.parameters()).dtype)}


class _TrlTimer:
    """Wall time of each TRL step, of its generation and of its reward calls."""

    def __init__(self):
        self.step, self.generate, self.grade, self.reward, self.length = [], [], [], [], []
        self._gen = self._grade = 0.0

    def wrap(self, trainer):
        for name, bucket in (("_generate", "_gen"), ("_calculate_rewards", "_grade")):
            original = getattr(trainer, name)

            def timed(*a, _original=original, _bucket=bucket, **k):
                start = time.perf_counter()
                try:
                    return _original(*a, **k)
                finally:
                    setattr(self, _bucket, getattr(self, _bucket) + time.perf_counter() - start)
            setattr(trainer, name, timed)

    def callback(self, base):
        timer = self

        class Callback(base):
            def on_step_begin(self, args, state, control, **kwargs):
                timer._start, timer._gen, timer._grade = time.perf_counter(), 0.0, 0.0

            def on_step_end(self, args, state, control, **kwargs):
                timer.step.append(time.perf_counter() - timer._start)
                timer.generate.append(timer._gen)
                timer.grade.append(timer._grade)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "reward" in logs:
                    timer.reward.append(logs["reward"])
                    timer.length.append(logs["completions/mean_length"])
        return Callback()


def worker(impl: str, steps: int, seed: int, out: Path) -> None:
    import torch

    from rftkit.training_setup import set_threads

    set_threads(None)
    with tempfile.TemporaryDirectory() as tmp:
        result = (run_rftkit if impl == "rftkit" else run_trl)(steps, seed, Path(tmp))
    result.update(peak_rss_mb=_peak_rss_mb(), threads=torch.get_num_threads())
    out.write_text(json.dumps(result))


def summarise(runs: list[dict]) -> dict:
    med = statistics.median
    per_run = [{k: med(r[k][1:]) for k in ("step", "generate", "grade", "update")} for r in runs]
    return {**{f"{k}_s": round(med(p[k] for p in per_run), 4) for k in ("step", "generate", "grade", "update")},
            "peak_rss_mb": round(med(r["peak_rss_mb"] for r in runs), 1),
            "reward_last3": round(med(statistics.fmean(r["reward"][-3:]) for r in runs), 4),
            # the workload: mean completion length over a run's steps (the two sample with different RNG streams)
            "completion_tokens": round(med(statistics.fmean(r["length"]) for r in runs), 2),
            "runs": [{"step_s": round(p["step"], 4), "completion_tokens": round(statistics.fmean(r["length"]), 2),
                      "peak_rss_mb": round(r["peak_rss_mb"], 1),
                      "reward_last3": round(statistics.fmean(r["reward"][-3:]), 4)} for p, r in zip(per_run, runs)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="K: training steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/vs_trl.json")
    parser.add_argument("--worker", choices=["rftkit", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.seed, Path(args.result))
    runs: dict[str, list[dict]] = {"rftkit": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = ["rftkit", "trl"] if repeat % 2 == 0 else ["trl", "rftkit"]
            for impl in order:
                result = Path(tmp) / f"{impl}-{repeat}.json"
                started = time.perf_counter()
                subprocess.run([sys.executable, __file__, "--worker", impl, "--steps", str(args.steps), "--seed",
                                str(repeat), "--result", str(result)], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if impl == "trl" else None)
                runs[impl].append(json.loads(result.read_text()))
                print(f"repeat {repeat} {impl:>6}: median step {statistics.median(runs[impl][-1]['step'][1:]):.3f} s "
                      f"(process {time.perf_counter() - started:.0f} s)", flush=True)
    summary = {impl: summarise(r) for impl, r in runs.items()}
    ours, theirs = summary["rftkit"], summary["trl"]
    speedup = theirs["step_s"] / ours["step_s"]
    memory_ratio = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
    print(f"\n| | s/step | generate | grade | update | completion tokens | peak RSS (MB) | "
          f"reward, last 3 of {args.steps} steps |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for impl, s in (("rftkit", ours), ("TRL GRPOTrainer", theirs)):
        print(f"| {impl} | {s['step_s']:.3f} | {s['generate_s']:.3f} | {s['grade_s']:.3f} | {s['update_s']:.3f} | "
              f"{s['completion_tokens']:.1f} | {s['peak_rss_mb']:.0f} | {s['reward_last3']:.3f} |")
    print(f"\nrftkit is {speedup:.2f}x faster per step (goal >= 3x) at {memory_ratio:.2f}x TRL's peak memory "
          f"(goal <= 1x).")
    import torch
    import trl

    result = {"benchmark": "vs_trl", "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "steps": args.steps, "repeats": args.repeats, "speedup_per_step": round(speedup, 2),
              "peak_memory_ratio": round(memory_ratio, 3), "goals_met": speedup >= 3 and memory_ratio <= 1,
              "rftkit": ours, "trl": theirs,
              "machine": {"cpus": len(os.sched_getaffinity(0)), "torch": torch.__version__, "trl": trl.__version__,
                          "platform": platform.platform()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
