"""Validation on held-out prompts: sampled and greedy accuracy, mean reward; and `rft eval`.

Every evaluation uses a fresh sampling generator seeded from `train.seed`, and the same batch
order, so a saved adapter reloaded with `rft eval --adapter` reproduces the accuracy that
training reported at that step.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rftkit.config import RFTConfig, load_config
from rftkit.data import Example, load_jsonl, write_jsonl
from rftkit.graders import WeightedGrader, build_graders
from rftkit.graders.combine import GradedCompletion, grade_all
from rftkit.rollout import HFBackend, RolloutBackend, build_backend, generate_rollouts

EVAL_SEED_OFFSET = 1_000_003  # keeps the evaluation stream apart from the training stream


@dataclass
class EvalResult:
    metrics: dict[str, float]  # accuracy, accuracy_greedy, mean_reward
    records: list[dict[str, Any]]  # one per example: prompt, completions, grades


def is_accurate(graded: GradedCompletion, config: RFTConfig) -> bool:
    if config.accuracy_grader is not None:
        return graded.grades[config.accuracy_grader].score >= config.accuracy_threshold
    return graded.reward is not None and graded.reward >= config.accuracy_threshold


def _pass(policy, tokenizer, examples: list[Example], graders: list[WeightedGrader], config: RFTConfig,
          greedy: bool, backend: RolloutBackend) -> tuple[list[str], list[GradedCompletion]]:
    generator = torch.Generator().manual_seed(config.train.seed + EVAL_SEED_OFFSET)
    max_tokens = config.eval.max_completion_length or config.train.max_completion_length
    completions: list[str] = []
    graded: list[GradedCompletion] = []
    for start in range(0, len(examples), config.eval.batch_size):
        chunk = examples[start:start + config.eval.batch_size]
        batch = backend.generate(policy, tokenizer, chunk, 1, max_tokens, config.eval.temperature, 1.0, generator,
                                 config.model, config.data.system_prompt, greedy=greedy)
        results, _ = grade_all(graders, chunk, batch.completions)
        completions += batch.completions
        graded += results
    return completions, graded


def evaluate(policy, tokenizer, examples: list[Example], graders: list[WeightedGrader], config: RFTConfig,
             backend: RolloutBackend | None = None) -> EvalResult:
    """Sampled and greedy passes through `backend` (training's own, so validation samples the way
    training does: vLLM, or the merged copy); by default the built-in sampler per `rollout.merge_lora`."""
    backend = backend or HFBackend(config.rollout.merge_lora, config.rollout.fast_decode)
    sampled, sampled_grades = _pass(policy, tokenizer, examples, graders, config, False, backend)
    greedy, greedy_grades = _pass(policy, tokenizer, examples, graders, config, True, backend)
    n = max(len(examples), 1)
    rewards = [g.reward for g in sampled_grades if g.reward is not None]
    metrics = {
        "accuracy": sum(is_accurate(g, config) for g in sampled_grades) / n,
        "accuracy_greedy": sum(is_accurate(g, config) for g in greedy_grades) / n,
        "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0,
    }
    records = [{"id": example.id, "prompt": example.prompt_text(),
                "sampled": _graded_record(s, sg, config), "greedy": _graded_record(gr, gg, config)}
               for example, s, sg, gr, gg in zip(examples, sampled, sampled_grades, greedy, greedy_grades)]
    return EvalResult(metrics, records)


def _graded_record(completion: str, graded: GradedCompletion, config: RFTConfig) -> dict[str, Any]:
    return {"completion": completion, "reward": graded.reward, "accurate": is_accurate(graded, config),
            "grades": {name: {"score": g.score, "reason": g.reason} for name, g in graded.grades.items()}}


def load_policy(config: RFTConfig, adapter: str | Path | None):
    """Base model + tokenizer, with a saved adapter applied (or none: the base model itself)."""
    from rftkit.models.loading import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(config.model)
    model = load_base_model(config.model)
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"--adapter {adapter}: no adapter_config.json there (expected a "
                                    "checkpoints/step-N directory)")
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    return model, tokenizer


def sample_completions(config: RFTConfig, examples: list[Example], num_generations: int) -> list[list[str]]:
    """Completions from the configured model (base, no adapter) for `rft grade` without a samples file."""
    from rftkit.train.process import set_threads

    set_threads(config.train.threads)
    model, tokenizer = load_policy(config, None)
    generator = torch.Generator().manual_seed(config.train.seed)
    batch = generate_rollouts(model, tokenizer, examples, num_generations, config.train.max_completion_length,
                              config.train.temperature, config.train.top_p, generator, config.model,
                              config.data.system_prompt)
    return [batch.completions[i * num_generations:(i + 1) * num_generations] for i in range(len(examples))]


def run_eval(config_path: str, adapter: str | None, data: str | None, output: str | None,
             overrides: list[str]) -> dict[str, float]:
    from rftkit.tasks import load_examples
    from rftkit.train.process import set_threads

    config = load_config(config_path, overrides)
    set_threads(config.train.threads)
    examples = load_jsonl(data) if data else load_examples(config.data)[1]
    policy, tokenizer = load_policy(config, adapter)
    with tempfile.TemporaryDirectory(prefix="rftkit-eval-") as scratch:  # vLLM loads the adapter from a directory
        backend = build_backend(config, Path(scratch))
        result = evaluate(policy, tokenizer, examples, build_graders(config.graders), config, backend)
    if output:
        write_jsonl(output, result.records)
    return result.metrics | {"examples": len(examples)}
