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

Each repeat runs rftkit and TRL in two subprocesses side by side that take turns step by step
(rftkit step 1, TRL step 1, rftkit step 2, ...: a worker waits for a token on its own pipe before
a step and hands it to the other after), so only one trains at a time and drift in the shared
machine's speed, which over a minute is larger than the difference being measured, hits both
sides alike. Which side goes first alternates by repeat. Peak resident memory (ru_maxrss of each
process: imports, model, training) is per process. Step time excludes the first step (warm-up,
which may overlap the other process's start-up). Reported: medians over repeats of each run's
median step time and split, of peak RSS, of the mean completion length, and of the mean
training reward over the last 3 steps.
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


class Turns:
    """Step-by-step turn taking between the two workers over two FIFOs (each opened read-write, so no
    open or write ever blocks): wait for a token on our own FIFO before a step, hand one to the other
    after it; a finished worker floods the other's FIFO so that it runs its remaining steps freely."""

    def __init__(self, mine: str | None, theirs: str | None):
        self.mine = os.open(mine, os.O_RDWR) if mine else None
        self.theirs = os.open(theirs, os.O_RDWR) if theirs else None

    def wait(self) -> None:
        if self.mine is not None:
            os.read(self.mine, 1)

    def hand_over(self, tokens: int = 1) -> None:
        if self.theirs is not None:
            os.write(self.theirs, b"t" * tokens)

    def finish(self) -> None:
        self.hand_over(4096)


def run_rftkit(steps: int, seed: int, workdir: Path, turns: Turns, device: str = "cpu") -> dict:
    import rftkit.train.loop as trainer
    from rftkit.config import load_config
    from rftkit.train.loop import train

    collect_step, update_policy, validate = trainer.collect_step, trainer.update_policy, trainer.validate

    def turn_then_collect(*a, **k):  # the trainer's timers start inside: the wait is not counted
        turns.wait()
        return collect_step(*a, **k)

    def update_then_hand_over(*a, **k):
        stats = update_policy(*a, **k)
        turns.hand_over()
        return stats

    validations = []

    def final_validation_in_turn(*a, **k):  # the end-of-run validation must not overlap the other's step
        if validations:
            turns.wait()
        validations.append(1)
        return validate(*a, **k)

    trainer.collect_step, trainer.update_policy = turn_then_collect, update_then_hand_over
    trainer.validate = final_validation_in_turn

    overrides = [f"train.steps={steps}", f"data.train_size={steps * PROMPTS}", "data.val_size=8", f"train.seed={seed}",
                 "eval.eval_every=1000000", "eval.batch_size=8", "save_every=1000000", "samples_per_step=0",
                 f"train.micro_batch_size={PROMPTS * GENERATIONS}", f"model.device={device}", "model.dtype=float32"]
    config = load_config(Path(__file__).parents[1] / "examples/countdown.yaml", overrides)
    train(config, workdir / "run", progress=False)
    records = [json.loads(line) for line in (workdir / "run/metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "time/generate" in r]
    split = {k: [r[f"time/{k}"] for r in records] for k in ("generate", "grade", "update")}
    return {"step": [sum(parts) for parts in zip(*split.values())], **split,
            "reward": [r["reward/mean"] for r in records], "length": [r["len/completion"] for r in records]}


def run_trl(steps: int, seed: int, workdir: Path, turns: Turns, device: str = "cpu") -> dict:
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
                      gradient_checkpointing=False, bf16=False, use_cpu=device == "cpu", seed=seed, logging_steps=1,
                      save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0)
    timer = _TrlTimer(turns)
    model_config = ModelConfig(device=device, dtype="float32")
    trainer = GRPOTrainer(model=load_base_model(model_config), reward_funcs=countdown_reward, args=args,
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

    def __init__(self, turns: Turns):
        self.turns = turns
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
                timer.turns.wait()
                timer._start, timer._gen, timer._grade = time.perf_counter(), 0.0, 0.0

            def on_step_end(self, args, state, control, **kwargs):
                timer.step.append(time.perf_counter() - timer._start)
                timer.generate.append(timer._gen)
                timer.grade.append(timer._grade)
                timer.turns.hand_over()

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "reward" in logs:
                    timer.reward.append(logs["reward"])
                    timer.length.append(logs["completions/mean_length"])
        return Callback()


def worker(impl: str, steps: int, seed: int, out: Path, turns: Turns, device: str = "cpu") -> None:
    import torch

    from rftkit.train.process import set_threads

    set_threads(None)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = (run_rftkit if impl == "rftkit" else run_trl)(steps, seed, Path(tmp), turns, device)
        finally:
            turns.finish()
    result.update(peak_rss_mb=_peak_rss_mb(), threads=torch.get_num_threads(), device=device)
    if device.startswith("cuda"):
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
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
    parser.add_argument("--turn-fifos", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: both sides train on it, in float32")
    args = parser.parse_args()
    if args.worker:
        turns = Turns(*args.turn_fifos) if args.turn_fifos else Turns(None, None)
        return worker(args.worker, args.steps, args.seed, Path(args.result), turns, args.device)
    runs: dict[str, list[dict]] = {"rftkit": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            first = "rftkit" if repeat % 2 == 0 else "trl"
            fifos = {impl: Path(tmp) / f"turn-{impl}-{repeat}" for impl in runs}
            for fifo in fifos.values():
                os.mkfifo(fifo)
            started = time.perf_counter()
            procs = {}
            for impl, other in (("rftkit", "trl"), ("trl", "rftkit")):
                procs[impl] = subprocess.Popen(
                    [sys.executable, __file__, "--worker", impl, "--steps", str(args.steps), "--seed", str(repeat),
                     "--result", str(Path(tmp) / f"{impl}-{repeat}.json"), "--turn-fifos", str(fifos[impl]),
                     str(fifos[other]), "--device", args.device],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if impl == "trl" else None)
            kickoff = os.open(fifos[first], os.O_RDWR)
            os.write(kickoff, b"t")  # the first side's first turn
            for impl, proc in procs.items():
                if proc.wait() != 0:
                    raise SystemExit(f"the {impl} worker failed (exit {proc.returncode})")
            os.close(kickoff)
            for impl in runs:
                runs[impl].append(json.loads((Path(tmp) / f"{impl}-{repeat}.json").read_text()))
            print(f"repeat {repeat} ({first} first, {time.perf_counter() - started:.0f} s): median step "
                  + ", ".join(f"{impl} {statistics.median(runs[impl][-1]['step'][1:]):.3f} s" for impl in runs),
                  flush=True)
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
              "steps": args.steps, "repeats": args.repeats, "device": args.device,
              "speedup_per_step": round(speedup, 2),
              "peak_memory_ratio": round(memory_ratio, 3), "goals_met": speedup >= 3 and memory_ratio <= 1,
              "rftkit": ours, "trl": theirs,
              "machine": {"cpus": len(os.sched_getaffinity(0)), "torch": torch.__version__, "trl": trl.__version__,
                          "platform": platform.platform()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
