"""`rft train CONFIG --seeds 0 1 2`: one config trained under several seeds, with mean and spread in one summary.

With 10 to 1,000 prompts one run's held-out accuracy moves by several points from the seed alone,
so a comparison needs more than one. Each seed is `train.seed` (sampling, LoRA init, data order);
the data (`data.seed`: the prompts and the train/validation/test split) stays the same, so the
spread measured is training's. Seed s runs in OUTPUT/seed-s (a run directory like any other:
`rft report OUTPUT/seed-1`); OUTPUT/seeds.json holds every run's summary and, for each number in
them, mean, sample standard deviation (n - 1), min and max. A seed whose directory already holds
a finished run of the same config is read, not trained again, so a study that was interrupted
continues where it stopped (resume the unfinished seed's run with `rft train --resume`, or pass
--overwrite to start it afresh).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from rftkit.atomic import write_json_atomic
from rftkit.config import ConfigError, RFTConfig

SUMMARY_FILE = "seeds.json"
METRIC_GROUPS = ("before", "after", "test")  # the summary's held-out sections, printed as columns


def seed_config(config: RFTConfig, seed: int, run_dir: Path) -> RFTConfig:
    return config.model_copy(update={"train": config.train.model_copy(update={"seed": seed}),
                                     "output_dir": str(run_dir)})


def finished_summary(config: RFTConfig, run_dir: Path) -> dict | None:
    """The summary of a finished run of exactly `config` in run_dir (its saved config equal, output_dir aside)."""
    from rftkit.config import load_config

    if not (run_dir / "summary.json").is_file() or not (run_dir / "config.yaml").is_file():
        return None
    saved = load_config(run_dir / "config.yaml").model_dump(mode="json", exclude={"output_dir"})
    if saved != config.model_dump(mode="json", exclude={"output_dir"}):
        return None
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


def numbers(summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a summary, flattened with dotted keys (after.accuracy, test.mean_reward, best.value)."""
    flat: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "seed":
            flat[f"{prefix}{key}"] = float(value)
    return flat


def aggregate(summaries: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each number present in every seed's summary: mean, std (sample, n - 1; 0 for one seed), min, max."""
    flats = [numbers(s) for s in summaries.values()]
    keys = [k for k in flats[0] if all(k in f for f in flats)] if flats else []
    spread = {}
    for key in keys:
        values = [f[key] for f in flats]
        spread[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                       "min": min(values), "max": max(values), "values": values}
    return spread


def train_seeds(config: RFTConfig, seeds: Sequence[int], output: Path, overwrite: bool,
                train_one: Callable[[RFTConfig, Path, bool], dict], out: TextIO | None = None) -> dict[str, Any]:
    """Train (or read back) each seed's run, then write OUTPUT/seeds.json."""
    out = out or sys.stdout
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: {' '.join(map(str, seeds))} repeats a seed")
    summaries, runs = {}, {}
    for seed in seeds:
        run_dir = output / f"seed-{seed}"
        seeded = seed_config(config, seed, run_dir)
        done = None if overwrite else finished_summary(seeded, run_dir)
        if done is not None:
            out.write(f"seed {seed}: {run_dir} already holds this run, finished; read, not trained again\n")
        summaries[seed] = done if done is not None else train_one(seeded, run_dir, overwrite)
        runs[seed] = str(run_dir)
        before, after = summaries[seed]["before"], summaries[seed]["after"]
        out.write(f"seed {seed}: held-out accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} "
                  f"(greedy {before['accuracy_greedy']:.3f} -> {after['accuracy_greedy']:.3f})  {run_dir}\n")
    result = {"seeds": list(seeds), "runs": runs, "spread": aggregate(summaries),
              "summaries": {str(s): summaries[s] for s in seeds}}
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / SUMMARY_FILE, result)
    return result


def print_seeds(result: dict[str, Any], output: Path, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    spread, seeds = result["spread"], result["seeds"]
    steps = spread.get("steps", {}).get("mean")
    groups = [g for g in METRIC_GROUPS if f"{g}.accuracy" in spread]
    out.write(f"\n{len(seeds)} seeds ({' '.join(map(str, seeds))})"
              + (f", {steps:.0f} steps each" if steps is not None else "")
              + ": mean ± std (min - max) over the seeds\n")
    out.write(f"  {'':<16}" + "".join(f"{g:<30}" for g in groups) + "\n")
    for metric in ("accuracy", "accuracy_greedy", "mean_reward"):
        cells = []
        for group in groups:
            s = spread.get(f"{group}.{metric}")
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f} ({s['min']:.3f} - {s['max']:.3f})" if s else "-")
        out.write(f"  {metric:<16}" + "".join(f"{c:<30}" for c in cells) + "\n")
    if "best.value" in spread:
        out.write(f"  best checkpoint's validation value: {spread['best.value']['mean']:.3f} ± "
                  f"{spread['best.value']['std']:.3f}\n")
    out.write(f"summary: {output / SUMMARY_FILE}; runs: {' '.join(result['runs'].values())}\n")
