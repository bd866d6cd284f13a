"""`rft grade CONFIG.yaml [--samples FILE.jsonl] [--output FILE.jsonl] [--show N] [--set k=v]`.

Debug the reward before spending compute: grade given completions (each JSONL line is the
example's fields plus `completion`) or completions sampled from the model, then print the
first N grades with their reasons and a summary: each grader's score distribution, its errors
and masks, and the share of prompt groups whose rewards all tie. A tied group has zero
group-relative advantage: GRPO learns nothing from it, so a high tie rate means the reward
is too coarse (or too hard) for the current model.

TRL reward functions get `completion_ids` from the model's tokenizer (the completions
re-tokenized, since sampled token ids are not kept). Text is printed and written so that no
character can fail to encode (a lone surrogate is written as its `\\udXXX` escape).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import Any, Sequence, TextIO

from rftkit.config import ConfigError, RFTConfig, load_config
from rftkit.data import DataError, Example, example_from_row, load_hf_dataset, load_jsonl, read_jsonl_rows, write_jsonl
from rftkit.envs.base import episode_of
from rftkit.graders import WeightedGrader, build_graders
from rftkit.graders.base import BatchContext
from rftkit.graders.combine import GradedCompletion, GradingStats, grade_all
from rftkit.graders.functions import wants_token_ids

DEFAULT_PROMPTS = 8


def add_grade_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config whose graders to run")
    parser.add_argument("--samples", help="JSONL: one line per completion, the example's fields plus 'completion'")
    parser.add_argument("--output", help="write one JSONL line per completion with every grader's score and reason")
    parser.add_argument("--show", type=int, default=10, help="completions to print in the table (default 10)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set graders.0.weight=2 (repeatable)")


def read_samples(path: str) -> tuple[list[Example], list[str]]:
    """Rows of `--samples`; a bad line raises DataError naming file:line."""
    examples, completions = [], []
    for row, where in read_jsonl_rows(path, "samples"):
        if not isinstance(row, dict) or not isinstance(row.get("completion"), str):
            raise DataError(f"{where}: each line needs a string 'completion' beside the example's fields")
        completion = row.pop("completion")
        examples.append(example_from_row(row, where))
        completions.append(completion)
    if not examples:
        raise DataError(f"{path}: no samples")
    return examples, completions


def _held_out_examples(config: RFTConfig, count: int) -> list[Example]:
    source = config.data.val_source or config.data.source
    if source == "env":  # the environment's own dataset (verifiers)
        from rftkit.tasks import load_examples

        return load_examples(config.data, config.env)[1][:count]
    if source.startswith("hf:"):
        examples = load_hf_dataset(source[3:], config.data.hf_split)
    elif source.endswith(".jsonl"):
        examples = load_jsonl(source)
    else:
        from rftkit.tasks import GENERATORS

        if source not in GENERATORS:
            raise ConfigError(f"data.source: unknown task {source!r}; built-in: {', '.join(GENERATORS)}")
        examples = GENERATORS[source](count, config.data.seed, config.data.options)
    return examples[:count]


def sampled_completions(config: RFTConfig, count: int) -> tuple[list[Example], list[str]]:
    from rftkit.eval.validate import sample_completions  # the model side; imported only when sampling

    prompts = _held_out_examples(config, count)
    groups = sample_completions(config, prompts, config.grpo.num_generations)
    examples = [ex for ex, group in zip(prompts, groups) for _ in group]
    return examples, [c for group in groups for c in group]


def _histogram(scores: list[float]) -> str:
    counts = (sum(s == 0 for s in scores), sum(0 < s < 0.5 for s in scores), sum(0.5 <= s < 1 for s in scores),
              sum(s == 1 for s in scores))
    return "  ".join(f"{label}:{n}" for label, n in zip(("=0", "(0,.5)", "[.5,1)", "=1"), counts))


def tie_fraction(examples: Sequence[Example], results: Sequence[GradedCompletion]) -> tuple[float, int]:
    """Share of prompt groups (>= 2 completions of one example id) whose rewards are all equal."""
    groups: dict[str, list[float | None]] = defaultdict(list)
    for example, result in zip(examples, results):
        groups[example.id].append(result.reward)
    sized = [rewards for rewards in groups.values() if len(rewards) >= 2]
    if not sized:
        return 0.0, 0
    return sum(len(set(rewards)) == 1 for rewards in sized) / len(sized), len(sized)


def printable(text: str) -> str:
    """The text with anything UTF-8 cannot encode (lone surrogates) written as a backslash escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return printable(flat if len(flat) <= width else flat[:width - 1] + "…")


def print_table(examples: Sequence[Example], completions: Sequence[str], results: Sequence[GradedCompletion],
                show: int, out: TextIO) -> None:
    for i in range(min(show, len(results))):
        reward = results[i].reward
        out.write(f"[{i}] id={printable(examples[i].id)}  reward={'masked' if reward is None else f'{reward:.3f}'}\n")
        episode = episode_of(completions[i])
        if episode is None:
            out.write(f"    completion: {_clip(completions[i], 100)!s}\n")
        else:  # a multi-turn episode, turn by turn
            for turn in episode.messages:
                out.write(f"    {turn['role']:>9}: {_clip(turn['content'], 100)}\n")
            out.write(f"    (episode ended: {episode.finish}, {episode.model_turns} model turn(s))\n")
        for name, grade in results[i].grades.items():
            mark = " ERROR" if grade.error else " MASKED" if grade.masked else ""
            out.write(f"    {name:<20} {grade.score:6.3f}{mark}  {_clip(grade.reason, 90)}\n")


def print_summary(examples: Sequence[Example], results: Sequence[GradedCompletion], stats: GradingStats,
                  out: TextIO) -> None:
    out.write(f"\n{len(results)} completions\n")
    out.write(f"{'grader':<20} {'mean':>6} {'min':>6} {'max':>6}  {'errors':>6} {'masked':>6}  distribution\n")
    names = list(results[0].grades) if results else []
    for name in names:
        scores = [r.grades[name].score for r in results if not r.grades[name].masked]
        mean = sum(scores) / len(scores) if scores else float("nan")
        low, high = (min(scores), max(scores)) if scores else (float("nan"),) * 2
        out.write(f"{name:<20} {mean:6.3f} {low:6.3f} {high:6.3f}  {stats.errors[name]:>6} {stats.masked[name]:>6}"
                  f"  {_histogram(scores)}\n")
    rewards = [r.reward for r in results if r.reward is not None]
    if rewards:
        out.write(f"{'reward':<20} {sum(rewards) / len(rewards):6.3f} {min(rewards):6.3f} {max(rewards):6.3f}  "
                  f"{'':>6} {len(results) - len(rewards):>6}  {_histogram(rewards)}\n")
    ties, groups = tie_fraction(examples, results)
    if groups:
        out.write(f"tied groups: {ties:.0%} of {groups} prompt groups have identical rewards "
                  "(no learning signal there)\n")
    for name, count in stats.errors.items():
        if count == len(results) and count:
            out.write(f"WARNING: grader {name} raised on every completion; training would stop\n")


def output_rows(examples: Sequence[Example], completions: Sequence[str],
                results: Sequence[GradedCompletion]) -> list[dict[str, Any]]:
    return [{"id": ex.id, "completion": c, "reward": r.reward,
             "grades": {name: {"score": g.score, "reason": g.reason, "error": g.error, "masked": g.masked,
                               "details": g.details} for name, g in r.grades.items()}}
            | (episode_of(c).record() if episode_of(c) is not None else {})
            for ex, c, r in zip(examples, completions, results)]


def token_context(config: RFTConfig, graders: Sequence[WeightedGrader], completions: Sequence[str],
                  out: TextIO) -> BatchContext | None:
    """Token ids for TRL reward functions, from the config's tokenizer; None when no grader wants
    them or the tokenizer cannot be loaded (a function that names completion_ids then errs)."""
    if not any(wants_token_ids(wg.grader) for wg in graders):
        return None
    try:
        from rftkit.models.loading import load_tokenizer

        tokenizer = load_tokenizer(config.model)
        ids = [tokenizer(printable(c), add_special_tokens=False)["input_ids"] for c in completions]
    except Exception as exc:  # no cached tokenizer, no transformers: grading goes on without token ids
        out.write(f"note: no completion_ids for TRL reward functions ({type(exc).__name__}: {exc})\n")
        return None
    return BatchContext(completion_ids=ids)


def run_grade(config_path: str, samples: str | None, output: str | None, show: int, overrides: list[str],
              out: TextIO = sys.stdout) -> int:
    """The `rft grade` verb; returns the exit code (0 ok, 2 bad input)."""
    try:
        config = load_config(config_path, overrides)
        if samples is not None:
            examples, completions = read_samples(samples)
        else:
            examples, completions = sampled_completions(config, max(1, min(show, DEFAULT_PROMPTS)))
        graders = build_graders(config.graders)
    except (ConfigError, DataError, ValueError) as exc:
        sys.stderr.write(f"rft grade: {exc}\n")
        return 2
    results, stats = grade_all(graders, examples, completions, token_context(config, graders, completions, out))
    print_table(examples, completions, results, show, out)
    print_summary(examples, results, stats, out)
    if output is not None:
        write_jsonl(output, output_rows(examples, completions, results))
        out.write(f"wrote {len(results)} lines to {output}\n")
    return 0
