"""`rft screen CONFIG --k 16 [--adapter DIR]`: which training prompts carry signal under the current model.

Every training prompt is sampled k times the way training samples (train.temperature, top_p,
max_completion_length, the chat template) and graded. A prompt is *always solved* when all k
completions are accurate (the config's accuracy rule: `accuracy_grader` >= `accuracy_threshold`),
*never solved* when none is, and *informative* otherwise. A group whose rewards all tie has zero
group-relative advantage, so with 10 to 1,000 prompts the always- and never-solved ones spend
compute for no gradient: DAPO's dynamic sampling (Yu et al. 2025, section 3.2) drops such groups at
every step; screening drops them once, before training. pass@j is Chen et al.'s unbiased estimator
(rftkit.eval.pass_at_k) averaged over the prompts.

Writes OUTPUT/screen.json (each prompt's id, a hash of its row, its pass count out of k, its
category; the counts and pass@j) and OUTPUT/train.jsonl (the kept prompts as dataset rows).
`data.screen: OUTPUT/screen.json` trains on the kept prompts of the configured data: validation
and test stay what they were, and a prompt missing from the screen or changed since stops the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

from rftkit.atomic import write_json_atomic
from rftkit.config import RFTConfig, ScreenConfig
from rftkit.data import DataError, Example, write_jsonl
from rftkit.eval.pass_at_k import ks_up_to, pass_at_k

log = logging.getLogger("rftkit")

FORMAT = "rftkit-screen/1"
CATEGORIES = ("always_solved", "never_solved", "informative")
SCREEN_SEED_OFFSET = 2_000_003  # the screen's sampling stream, apart from training's and validation's


@dataclass(frozen=True)
class PromptScreen:
    """One training prompt's k samples, as screen.json stores it."""

    id: str
    key: str  # prompt_key of the example: a changed row (prompt or fields) no longer matches
    solved: int  # accurate completions out of k
    k: int
    mean_reward: float | None  # None: no grader gave a signal on any of the k
    reward_tied: bool  # all k rewards equal: no group-relative signal at all (not even partial credit)

    @property
    def category(self) -> str:
        return category(self.solved, self.k)


def category(solved: int, k: int) -> str:
    return "always_solved" if solved == k else "never_solved" if solved == 0 else "informative"


def prompt_key(example: Example) -> str:
    """A short hash of the example's whole row (prompt and the fields graders read)."""
    row = json.dumps(example.to_row(), sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha1(row.encode("utf-8", "backslashreplace")).hexdigest()[:16]


def screen_prompts(policy, tokenizer, examples: Sequence[Example], graders, rule, settings, generator, backend,
                   prompts_per_batch: int, progress: bool = False) -> list[PromptScreen]:
    """Sample `settings.num_generations` (k) completions of every example, grade them, count the accurate ones."""
    from tqdm import tqdm

    from rftkit.graders.combine import grade_all

    k = settings.num_generations
    screened: list[PromptScreen] = []
    with tqdm(total=len(examples), desc="rft screen", unit="prompt", disable=not progress) as bar:
        for start in range(0, len(examples), prompts_per_batch):
            chunk = list(examples[start:start + prompts_per_batch])
            batch = backend.generate(policy, tokenizer, chunk, settings, generator)
            graded, _ = grade_all(graders, batch.examples, batch.completions)
            for i, example in enumerate(chunk):
                group = graded[i * k:(i + 1) * k]
                rewards = [g.reward for g in group]
                given = [r for r in rewards if r is not None]
                screened.append(PromptScreen(example.id, prompt_key(example), sum(rule.accurate(g) for g in group), k,
                                             sum(given) / len(given) if given else None, len(set(rewards)) == 1))
            bar.update(len(chunk))
    return screened


def summarize(prompts: Sequence[PromptScreen], k: int) -> dict[str, Any]:
    """Counts per category, prompts whose rewards all tie, and pass@j (j = 1, 2, 4, ..., k) over the prompts."""
    counts = {name: sum(p.category == name for p in prompts) for name in CATEGORIES}
    n = max(len(prompts), 1)
    return {"prompts": len(prompts), "counts": counts, "reward_tied": sum(p.reward_tied for p in prompts),
            "pass_at": {str(j): sum(pass_at_k(k, p.solved, j) for p in prompts) / n for j in ks_up_to(k)}}


def run_screen(config: RFTConfig, k: int, adapter: str | None, output: str | Path | None,
               keep: Sequence[str] = ("informative",), progress: bool = True) -> dict[str, Any]:
    """The `rft screen` verb: screen the configured training prompts (before any data.screen), write the result."""
    import torch

    from rftkit.eval.validate import AccuracyRule, load_policy
    from rftkit.graders import build_graders
    from rftkit.rollout import build_backend
    from rftkit.tasks import load_splits
    from rftkit.train.process import set_threads
    from rftkit.types import SamplingSettings

    if k < 2:
        raise DataError("rft screen: --k must be at least 2 (one sample cannot tell informative prompts apart)")
    out_dir = Path(output) if output else Path(config.output_dir) / "screen"
    set_threads(config.train.threads)
    examples = load_splits(config.data)[0]
    policy, tokenizer = load_policy(config, adapter)
    cfg = config.train
    settings = SamplingSettings(k, cfg.max_completion_length, cfg.temperature, cfg.top_p, False,
                                config.model.chat_template, config.data.system_prompt)
    generator = torch.Generator(next(policy.parameters()).device).manual_seed(cfg.seed + SCREEN_SEED_OFFSET)
    with tempfile.TemporaryDirectory(prefix="rftkit-screen-") as scratch:  # vLLM loads the adapter from a directory
        prompts = screen_prompts(policy, tokenizer, examples, build_graders(config.graders), AccuracyRule.of(config),
                                 settings, generator, build_backend(config, Path(scratch)),
                                 max(1, config.eval.batch_size // k), progress)
    result = {"format": FORMAT, "k": k, "model": config.model.name, "adapter": str(adapter) if adapter else None,
              "accuracy": {"grader": config.accuracy_grader, "threshold": config.accuracy_threshold},
              "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p,
                           "max_completion_length": cfg.max_completion_length, "seed": cfg.seed},
              **summarize(prompts, k), "keep": list(keep),
              "per_prompt": [asdict(p) | {"category": p.category} for p in prompts]}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "screen.json", result)
    by_id = {p.id: p for p in prompts}
    write_jsonl(out_dir / "train.jsonl", [e.to_row() for e in examples if by_id[e.id].category in keep])
    return result | {"output": str(out_dir)}


def print_screen(result: dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    k, n, counts = result["k"], result["prompts"], result["counts"]
    model = f"adapter {result['adapter']}" if result["adapter"] else f"base model ({result['model']})"
    rule = result["accuracy"]
    judge = f"{rule['grader']} >= {rule['threshold']}" if rule["grader"] else f"reward >= {rule['threshold']}"
    out.write(f"screened {n} training prompts, k={k} samples each, {model}; accurate: {judge}\n")
    rows = (("always_solved", f"{k}/{k}"), ("never_solved", f"0/{k}"), ("informative", f"1-{k - 1} of {k}"))
    for name, solved in rows:
        out.write(f"  {name.replace('_', ' '):<15} {solved:>10}  {counts[name]:>6}  {counts[name] / max(n, 1):6.1%}\n")
    out.write(f"  rewards tied across all {k} (no signal even from partial credit): {result['reward_tied']}\n")
    out.write("  " + "  ".join(f"pass@{j} {v:.3f}" for j, v in result["pass_at"].items()) + "\n")
    kept = sum(counts[name] for name in result["keep"])
    screen_json = Path(result["output"]) / "screen.json"
    out.write(f"wrote {screen_json} (every prompt) and {Path(result['output']) / 'train.jsonl'} ({kept} rows: "
              f"{', '.join(result['keep'])})\n")
    if list(result["keep"]) == ["informative"]:
        snippet = f"  data:\n    screen: {screen_json}\n"
    else:
        snippet = f"  data:\n    screen:\n      result: {screen_json}\n      keep: [{', '.join(result['keep'])}]\n"
    out.write("train on them (the same data keys, plus):\n" + snippet)


def read_screen(path: str | Path) -> dict[str, PromptScreen]:
    """A screen.json's prompts by id; DataError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.screen: {path} not found (write it with `rft screen CONFIG --k 16`)")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        if result.get("format") != FORMAT:
            raise ValueError(f"format is {result.get('format')!r}, expected {FORMAT!r}")
        prompts = [PromptScreen(str(p["id"]), str(p["key"]), int(p["solved"]), int(p["k"]), p["mean_reward"],
                                bool(p["reward_tied"])) for p in result["per_prompt"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"data.screen: {path} is not a screen result of `rft screen` ({type(exc).__name__}: "
                        f"{exc})") from None
    return {p.id: p for p in prompts}


def screened(screen: ScreenConfig, examples: list[Example]) -> list[Example]:
    """The training examples that `screen.result` puts in one of `screen.keep`'s categories.

    Every example must be in the result with the row it was screened with: a prompt never screened
    (more train_size, other data) or changed since would otherwise be kept or dropped by a guess."""
    prompts = read_screen(screen.result)
    missing = [e.id for e in examples if e.id not in prompts]
    changed = [e.id for e in examples if e.id in prompts and prompts[e.id].key != prompt_key(e)]
    if missing or changed:
        what = (f"{len(missing)} are not in it (e.g. {missing[0]!r})" if missing else "") + \
            (" and " if missing and changed else "") + \
            (f"{len(changed)} changed since it was written (e.g. {changed[0]!r})" if changed else "")
        raise DataError(f"data.screen: of the {len(examples)} training prompts, {what}: {screen.result} was made "
                        "for other data. Screen this config again: `rft screen CONFIG --k 16`")
    kept = [e for e in examples if prompts[e.id].category in screen.keep]
    counts = {name: sum(prompts[e.id].category == name for e in examples) for name in CATEGORIES}
    if not kept:
        raise DataError(f"data.screen: no training prompt is {' or '.join(screen.keep)} in {screen.result} "
                        f"({', '.join(f'{v} {k}' for k, v in counts.items())}); keep other categories "
                        "(data.screen.keep) or screen with another model")
    log.info("data.screen: training on %d of %d prompts (%s) from %s", len(kept), len(examples),
             ", ".join(screen.keep), screen.result)
    return kept
