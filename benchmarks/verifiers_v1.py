"""verifiers 0.4 episodes per second: the null harness program, rftkit-chat (its chat loop in-process), and rftkit's own
countdown_feedback on the same puzzles.

    flock /tmp/rftkit-cpu.lock .venv-verifiers04/bin/python benchmarks/verifiers_v1.py   # table + JSON

Needs verifiers 0.4 (`make setup-verifiers04`). examples/verifiers_countdown.yaml's environment (a verifiers
Taskset + Env: Countdown, up to 3 answers with feedback) on the embedded model with a fresh LoRA adapter, as in
training: a batch is PROMPTS prompts x G episodes, each turn sampled by rftkit (32 new tokens at most, temperature
1). Per round, one batch through each harness, alternating which goes first; the wall time of `generate` (sampling
every turn, verifiers running the episodes and scoring them) and the CPU time of child processes. Medians over the
rounds after a warm-up round (which also builds the null harness's uv environment once). The third row runs the
same puzzles through rftkit's built-in countdown_feedback environment (no verifiers): what verifiers' machinery
(interception, trace, scoring, two HTTP hops per model call) costs on top of sampling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "verifiers_countdown.yaml"
HARNESSES = {"null": {"id": "null"}, "rftkit-chat": {"id": "rftkit-chat"}}
BUILTIN = "countdown_feedback (built-in)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verifiers_v1.json"))
    args = parser.parse_args()
    os.chdir(ROOT)  # the example's taskset path is relative to the repository
    from rftkit.config import EnvConfig, load_config
    from rftkit.data import Example
    from rftkit.envs import episode_backend
    from rftkit.models.loading import attach_lora, load_base_model, load_tokenizer
    from rftkit.rollout import HFBackend
    from rftkit.tasks import load_examples
    from rftkit.train.process import set_threads
    from rftkit.types import SamplingSettings

    threads = set_threads(None)
    base = load_config(EXAMPLE)
    tokenizer = load_tokenizer(base.model)
    policy = attach_lora(load_base_model(base.model), base.lora)
    train, _ = load_examples(base.data, base.env)
    examples = train[:args.prompts]
    settings = SamplingSettings(args.generations, base.train.max_completion_length, base.train.temperature)
    backends = {}
    for name, harness in HARNESSES.items():
        config = base.model_copy(deep=True)
        config.env.options["config"] = {**config.env.options.get("config", {}), "agent": {"harness": harness}}
        backends[name] = episode_backend(config, HFBackend(base.rollout.merge_lora, base.rollout.fast_decode))
    builtin = base.model_copy(update={"env": EnvConfig(name="countdown_feedback", max_turns=base.env.max_turns,
                                                       max_episode_tokens=base.env.max_episode_tokens)})
    backends[BUILTIN] = episode_backend(builtin, HFBackend(base.rollout.merge_lora, base.rollout.fast_decode))
    tasks = backends["rftkit-chat"].env.tasks()
    puzzles = [Example(id=e.id, prompt=e.prompt, fields={"numbers": tasks[e.fields["verifiers_task"]].data.numbers,
                                                         "target": tasks[e.fields["verifiers_task"]].data.target})
               for e in examples]  # the same prompts, for the built-in environment
    names = [*HARNESSES, BUILTIN]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    child_cpu: dict[str, list[float]] = {name: [] for name in names}
    segments: dict[str, list[int]] = {name: [] for name in names}
    for round_ in range(args.rounds + 1):  # round 0 warms up (and builds the null harness's uv environment)
        order = names if round_ % 2 == 0 else list(reversed(names))
        for name in order:
            before, start = os.times(), time.perf_counter()
            generator = torch.Generator().manual_seed(round_)
            batch = backends[name].generate(policy, tokenizer, puzzles if name == BUILTIN else examples, settings,
                                            generator)
            wall, after = time.perf_counter() - start, os.times()
            if round_:
                seconds[name].append(wall)
                child_cpu[name].append(after.children_user + after.children_system
                                       - before.children_user - before.children_system)
                segments[name].append(sum(e.model_turns for e in batch.episodes))
            print(f"round {round_} {name:>12}: {wall:7.2f} s for {len(batch.episodes)} episodes "
                  f"({sum(e.model_turns for e in batch.episodes)} model turns)", flush=True)
    rows = []
    for name in names:
        wall = statistics.median(seconds[name])
        turns = statistics.median(segments[name])
        rows.append({"harness": name, "episodes": args.prompts * args.generations, "model_turns": turns,
                     "seconds_per_batch": round(wall, 3), "episodes_per_s": round(args.prompts * args.generations
                                                                                  / wall, 2),
                     "child_cpu_s_per_batch": round(max(0.0, statistics.median(child_cpu[name])), 2)})
    speedup = rows[0]["seconds_per_batch"] / rows[1]["seconds_per_batch"]
    print("\n| episodes run by | episodes per batch | model turns (median) | s per batch | episodes/s "
          "| child-process CPU s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['harness']} | {row['episodes']} | {row['model_turns']:g} | {row['seconds_per_batch']:.2f} | "
              f"{row['episodes_per_s']:.2f} | {row['child_cpu_s_per_batch']:.1f} |")
    over_builtin = rows[1]["seconds_per_batch"] / rows[2]["seconds_per_batch"]
    print(f"\nrftkit-chat is {speedup:.1f}x the null harness's episodes/s; a batch takes {over_builtin:.2f}x the "
          "built-in environment's time")
    result = {"benchmark": "verifiers_v1", "rows": rows, "speedup": round(speedup, 2),
              "rftkit_chat_over_builtin_time": round(over_builtin, 2), "rounds": args.rounds,
              "threads": threads, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "verifiers": __import__("verifiers").__version__, "example": str(EXAMPLE.relative_to(ROOT))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
