"""Validation on held-out prompts: sampled and greedy accuracy, mean reward; and `rft eval`.

Every evaluation uses a fresh sampling generator seeded from `train.seed`, and the same batch
order, so a saved adapter reloaded with `rft eval --adapter` reproduces the accuracy that
training reported at that step.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rftkit.config import RFTConfig, load_config
from rftkit.data import Example, load_jsonl, write_jsonl
from rftkit.envs.base import episode_of
from rftkit.graders import WeightedGrader, build_graders
from rftkit.graders.combine import GradedCompletion, grade_all
from rftkit.rollout import HFBackend, RolloutBackend, build_backend, generate_rollouts
from rftkit.train.collect import grading_context
from rftkit.train.dist import LOCAL, Collective
from rftkit.types import SamplingSettings

EVAL_SEED_OFFSET = 1_000_003  # keeps the evaluation stream apart from the training stream


@dataclass(frozen=True)
class AccuracyRule:
    """When a graded completion counts as correct: `accuracy_grader` >= `accuracy_threshold`, or the
    combined reward when no grader is named."""

    grader: str | None
    threshold: float

    @classmethod
    def of(cls, config: RFTConfig) -> "AccuracyRule":
        return cls(config.accuracy_grader, config.accuracy_threshold)

    def accurate(self, graded: GradedCompletion) -> bool:
        if self.grader is not None:
            return graded.grades[self.grader].score >= self.threshold
        return graded.reward is not None and graded.reward >= self.threshold


@dataclass(frozen=True)
class EvalSettings:
    """What validation reads: the `eval:` section, the prompt rendering and the accuracy rule."""

    seed: int  # train.seed: each pass samples from a fresh generator seeded from it
    batch_size: int
    sampling: SamplingSettings  # the sampled pass (the greedy pass is the same with greedy=True)
    accuracy: AccuracyRule

    @classmethod
    def of(cls, config: RFTConfig) -> "EvalSettings":
        sampling = SamplingSettings(1, config.eval.max_completion_length or config.train.max_completion_length,
                                    config.eval.temperature, 1.0, False, config.model.chat_template,
                                    config.data.system_prompt)
        return cls(config.train.seed, config.eval.batch_size, sampling, AccuracyRule.of(config))


@dataclass
class EvalResult:
    metrics: dict[str, float]  # accuracy, accuracy_greedy, mean_reward
    records: list[dict[str, Any]]  # one per example: prompt, completions, grades


def _device(policy) -> torch.device:
    return next(policy.parameters()).device


def _pass(policy, tokenizer, examples: list[Example], graders: list[WeightedGrader], settings: EvalSettings,
          greedy: bool, backend: RolloutBackend, seed_offset: int) -> tuple[list[str], list[GradedCompletion]]:
    """Completions (multi-turn: `Transcript`s, whose `.episode` is the whole trajectory) and their grades."""
    generator = torch.Generator(_device(policy)).manual_seed(settings.seed + EVAL_SEED_OFFSET + seed_offset)
    sampling = replace(settings.sampling, greedy=greedy)
    completions: list[str] = []
    graded: list[GradedCompletion] = []
    for start in range(0, len(examples), settings.batch_size):
        chunk = examples[start:start + settings.batch_size]
        batch = backend.generate(policy, tokenizer, chunk, sampling, generator)
        results, _ = grade_all(graders, chunk, batch.completions, grading_context(batch))
        completions += batch.completions
        graded += results
    return completions, graded


def evaluate(policy, tokenizer, examples: list[Example], graders: list[WeightedGrader], settings: EvalSettings,
             backend: RolloutBackend | None = None, collective: Collective = LOCAL) -> EvalResult:
    """Sampled and greedy passes through `backend` (training's own, so validation samples the way
    training does: vLLM, or the merged copy); by default the built-in sampler with its defaults.

    Under torchrun each rank evaluates its contiguous share of `examples` (its own sampling stream,
    seeded by rank) and the counts are summed, so every rank returns the metrics of the whole set;
    `records` holds this rank's examples only."""
    backend = backend or HFBackend()
    share = _shard_evenly(examples, collective)
    sampled, sampled_grades = _pass(policy, tokenizer, share, graders, settings, False, backend, collective.rank)
    greedy, greedy_grades = _pass(policy, tokenizer, share, graders, settings, True, backend, collective.rank)
    rule = settings.accuracy
    rewards = [g.reward for g in sampled_grades if g.reward is not None]
    counts = torch.tensor([len(share), sum(rule.accurate(g) for g in sampled_grades),
                           sum(rule.accurate(g) for g in greedy_grades), len(rewards), sum(rewards)],
                          dtype=torch.float64)
    # Python sums converted to float64 are exact, so one process gets exactly sum / len as before.
    total, accurate, accurate_greedy, rewarded, reward_sum = collective.sum(counts).tolist()
    metrics = {"accuracy": accurate / max(total, 1.0), "accuracy_greedy": accurate_greedy / max(total, 1.0),
               "mean_reward": reward_sum / rewarded if rewarded else 0.0}
    if sampled and episode_of(sampled[0]) is not None:  # multi-turn: success within the episode's turns, and at once
        metrics.update(_episode_metrics(sampled, sampled_grades, greedy, greedy_grades, rule, collective))
    records = [{"id": example.id, "prompt": example.prompt_text(),
                "sampled": _graded_record(s, sg, rule), "greedy": _graded_record(gr, gg, rule)}
               for example, s, sg, gr, gg in zip(share, sampled, sampled_grades, greedy, greedy_grades)]
    return EvalResult(metrics, records)


def _episode_metrics(sampled, sampled_grades, greedy, greedy_grades, rule: AccuracyRule,
                     collective: Collective) -> dict[str, float]:
    """`accuracy_first_turn`: episodes that are accurate and ended after one model turn (the first answer was
    right); `turns`: mean model turns per episode (sampled pass)."""
    def first(completions, grades):
        return sum(rule.accurate(g) and episode_of(c).model_turns == 1 for c, g in zip(completions, grades))
    counts = torch.tensor([len(sampled), first(sampled, sampled_grades), first(greedy, greedy_grades),
                           sum(episode_of(c).model_turns for c in sampled)], dtype=torch.float64)
    total, first_sampled, first_greedy, turns = collective.sum(counts).tolist()
    total = max(total, 1.0)
    return {"accuracy_first_turn": first_sampled / total, "accuracy_greedy_first_turn": first_greedy / total,
            "turns": turns / total}


def _shard_evenly(examples: list[Example], collective: Collective) -> list[Example]:
    """Rank r's contiguous share; shares differ by at most one example when the count does not divide."""
    size, extra = divmod(len(examples), collective.world_size)
    start = collective.rank * size + min(collective.rank, extra)
    return examples[start:start + size + (collective.rank < extra)]


def _graded_record(completion: str, graded: GradedCompletion, rule: AccuracyRule) -> dict[str, Any]:
    record = {"completion": completion, "reward": graded.reward, "accurate": rule.accurate(graded),
              "grades": {name: {"score": g.score, "reason": g.reason} for name, g in graded.grades.items()}}
    episode = episode_of(completion)
    return record if episode is None else record | episode.record()


def load_policy(config: RFTConfig, adapter: str | Path | None):
    """Base model + tokenizer, with a saved adapter applied (or none: the base model itself). A checkpoint
    of a full-weight run (`lora: null`: a whole model in transformers' format) is loaded in the base's place."""
    from rftkit.models.loading import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(config.model)
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file() \
            and (Path(adapter) / "config.json").is_file():
        return load_base_model(config.model.model_copy(update={"name": str(adapter)})), tokenizer
    model = load_base_model(config.model)
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"--adapter {adapter}: no adapter_config.json (or, for a full-weight run, "
                                    "config.json) there (expected a checkpoints/step-N directory)")
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    return model, tokenizer


def sample_completions(config: RFTConfig, examples: list[Example], num_generations: int) -> list[list[str]]:
    """Completions from the configured model (base, no adapter) for `rft grade` without a samples file."""
    from rftkit.train.process import set_threads

    set_threads(config.train.threads)
    model, tokenizer = load_policy(config, None)
    generator = torch.Generator(_device(model)).manual_seed(config.train.seed)
    settings = SamplingSettings(num_generations, config.train.max_completion_length, config.train.temperature,
                                config.train.top_p, False, config.model.chat_template, config.data.system_prompt)
    if config.env.name is not None:  # episodes: the completions are Transcripts of whole trajectories
        with tempfile.TemporaryDirectory(prefix="rftkit-grade-") as scratch:
            batch = build_backend(config, Path(scratch)).generate(model, tokenizer, examples, settings, generator)
    else:
        batch = generate_rollouts(model, tokenizer, examples, settings, generator)
    return [batch.completions[i * num_generations:(i + 1) * num_generations] for i in range(len(examples))]


def run_eval(config_path: str, adapter: str | None, data: str | None, output: str | None,
             overrides: list[str]) -> dict[str, float]:
    from rftkit.tasks import load_examples
    from rftkit.train.process import set_threads

    config = load_config(config_path, overrides)
    set_threads(config.train.threads)
    examples = load_jsonl(data) if data else load_examples(config.data, config.env)[1]
    policy, tokenizer = load_policy(config, adapter)
    with tempfile.TemporaryDirectory(prefix="rftkit-eval-") as scratch:  # vLLM loads the adapter from a directory
        backend = build_backend(config, Path(scratch))
        result = evaluate(policy, tokenizer, examples, build_graders(config.graders), EvalSettings.of(config),
                          backend)
    if output:
        write_jsonl(output, result.records)
    return result.metrics | {"examples": len(examples)}
