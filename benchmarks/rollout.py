"""Rollout throughput: our KV-cache sampler against `model.generate`, tokens per second.

    flock /tmp/rftkit-cpu.lock .venv/bin/python benchmarks/rollout.py   # table + benchmarks/results/rollout.json

The policy is the embedded model with the example's LoRA adapter (r=16, all-linear), as in
training; 8 generations per Countdown prompt, 32 new tokens at most, temperature 1. "Batch"
counts completions (prompts x 8). Four paths, all returning token ids and per-token log-probs:
our sampler on the merged copy of the policy with the fused prefill and decode step (training's default,
`rollout.merge_lora: auto`, `rollout.fast_decode: true`; the copy's refresh from the adapter is
timed too), the same through the merged copy's own forward, our sampler on the PEFT-wrapped policy, and
`model.generate` on the PEFT-wrapped policy (log-probs through `output_logits`).
Tokens are the completion tokens kept (up to and
including EOS); the rate is their number over the wall time, median of REPEATS interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from rftkit.config import DataConfig, LoraConfig, ModelConfig
from rftkit.models.loading import attach_lora, encode_prompts, load_base_model, load_tokenizer, stop_token_ids
from rftkit.rollout.merged import MergedCopy
from rftkit.rollout.sampler import generate_with_logprobs, sample
from rftkit.tasks import load_examples
from rftkit.train.process import set_threads

GENERATIONS, MAX_NEW_TOKENS = 8, 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64, 256], help="completions per batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/rollout.json")
    args = parser.parse_args()
    threads = set_threads(None)
    model_config = ModelConfig()
    tokenizer = load_tokenizer(model_config)
    policy = attach_lora(load_base_model(model_config), LoraConfig())
    train, _ = load_examples(DataConfig(train_size=max(args.batches) // GENERATIONS, val_size=8))
    eos, pad = stop_token_ids(tokenizer), tokenizer.pad_token_id
    merged = MergedCopy(policy, fast_decode=True)
    paths = {"rftkit": lambda p, g: sample(merged.refresh(policy), p, GENERATIONS, MAX_NEW_TOKENS, eos, pad,
                                           generator=g, decoder=merged.decoder),
             "rftkit_merged_forward": lambda p, g: sample(merged.refresh(policy), p, GENERATIONS, MAX_NEW_TOKENS, eos,
                                                          pad, generator=g),
             "rftkit_peft": lambda p, g: sample(policy, p, GENERATIONS, MAX_NEW_TOKENS, eos, pad, generator=g),
             "generate": lambda p, g: generate_with_logprobs(policy, p, GENERATIONS, MAX_NEW_TOKENS, eos, pad)}
    rows = []
    for batch in args.batches:
        prompts = encode_prompts(tokenizer, train[:max(1, batch // GENERATIONS)], model_config.chat_template, None)
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
            for name, run in paths.items():  # interleaved, so drift in machine load hits both alike
                torch.manual_seed(repeat)
                start = time.perf_counter()
                out = run(prompts, torch.Generator().manual_seed(repeat))
                seconds = time.perf_counter() - start
                if repeat:
                    rates[name].append(int(out.completion_mask.sum()) / seconds)
        row = {"batch": batch, **{f"{name}_tokens_per_s": round(statistics.median(r), 1) for name, r in rates.items()}}
        row["speedup"] = round(row["rftkit_tokens_per_s"] / row["generate_tokens_per_s"], 2)
        rows.append(row)
        print(f"batch {batch:>4}: rftkit {row['rftkit_tokens_per_s']:>9.1f} tok/s   merged copy's forward "
              f"{row['rftkit_merged_forward_tokens_per_s']:>9.1f}   on the PEFT model "
              f"{row['rftkit_peft_tokens_per_s']:>9.1f}   generate {row['generate_tokens_per_s']:>9.1f} tok/s   "
              f"x{row['speedup']:.2f}", flush=True)
    print("\n| completions per batch | rftkit sampler, merged copy + fused prefill and decode (tok/s) "
          "| merged copy, its own "
          "forward (tok/s) | rftkit sampler, PEFT model (tok/s) | model.generate, PEFT model (tok/s) "
          "| speed-up over generate |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch']} | {r['rftkit_tokens_per_s']:,.0f} | {r['rftkit_merged_forward_tokens_per_s']:,.0f} "
              f"| {r['rftkit_peft_tokens_per_s']:,.0f} "
              f"| {r['generate_tokens_per_s']:,.0f} | {r['speedup']:.2f}x |")
    result = {"benchmark": "rollout", "command": " ".join([Path(sys.executable).name, *sys.argv]), "rows": rows,
              "generations_per_prompt": GENERATIONS, "max_new_tokens": MAX_NEW_TOKENS, "repeats": args.repeats,
              "machine": {"cpus": len(os.sched_getaffinity(0)), "threads": threads, "torch": torch.__version__,
                          "platform": platform.platform()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
