"""The RFT loop: generate, grade, compute advantages, update the LoRA adapter, validate, save. Repeat.

    rollouts = generate_rollouts(...)        # G completions per prompt, old log-probs recorded
    graded   = grade_all(...)                # every grader, weighted into one reward
    adv      = group_relative_advantages(...)
    stats    = update_policy(...)            # x num_iterations
    log(...); validate(...); save(...)
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from rftkit.algorithms.grpo import group_relative_advantages
from rftkit.checkpoint import (TrainerState, capture_rng, latest_checkpoint, load_trainer_state, restore_rng,
                               save_checkpoint)
from rftkit.config import RFTConfig, dump_config
from rftkit.data import Example
from rftkit.evaluate import evaluate, is_accurate
from rftkit.graders import WeightedGrader, build_graders
from rftkit.graders.combine import GradedCompletion, check_health, grade_all
from rftkit.metrics import JsonlSink, overfitting_warning, sample_records
from rftkit.models.loading import attach_lora, load_base_model, load_tokenizer, lora_parameters
from rftkit.rollout import RolloutBatch, generate_rollouts
from rftkit.tasks import load_examples
from rftkit.training_setup import seed_everything, set_threads
from rftkit.update import UpdateStats, reference_logprobs, update_policy

log = logging.getLogger("rftkit")


@dataclass
class Run:
    config: RFTConfig
    run_dir: Path
    tokenizer: object
    policy: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    graders: list[WeightedGrader]
    train_examples: list[Example]
    val_examples: list[Example]
    generator: torch.Generator
    state: TrainerState
    metrics: JsonlSink
    samples: JsonlSink


def setup(config: RFTConfig, run_dir: Path, resume: bool) -> Run:
    set_threads(config.train.threads)
    generator = seed_everything(config.train.seed)
    train_examples, val_examples = load_examples(config.data)
    tokenizer = load_tokenizer(config.model)
    graders = build_graders(config.graders)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume {run_dir}: no complete checkpoint under {run_dir / 'checkpoints'}")
    policy = attach_lora(load_base_model(config.model), config.lora, adapter_dir=checkpoint)
    params = lora_parameters(policy)
    optimizer = torch.optim.AdamW(params, lr=config.train.learning_rate, weight_decay=config.train.weight_decay)
    state = TrainerState(step=0, data_epoch=0, data_cursor=0)
    if checkpoint is not None:
        state = load_trainer_state(checkpoint, optimizer)
        restore_rng(state, generator)
        log.info("resuming from %s (step %d)", checkpoint, state.step)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    truncate = state.step if checkpoint is not None else -1  # a fresh run starts empty files
    return Run(config, run_dir, tokenizer, policy, params, optimizer, graders, train_examples, val_examples,
               generator, state, JsonlSink(run_dir / "metrics.jsonl", truncate), JsonlSink(run_dir / "samples.jsonl", truncate))


def next_prompts(run: Run) -> list[Example]:
    """The next batch_size training prompts: seeded shuffles, epoch after epoch, resumable by position."""
    batch: list[Example] = []
    n = len(run.train_examples)
    while len(batch) < run.config.train.batch_size:
        order = list(range(n))
        random.Random(f"{run.config.train.seed}-epoch-{run.state.data_epoch}").shuffle(order)
        take = order[run.state.data_cursor:run.state.data_cursor + run.config.train.batch_size - len(batch)]
        batch += [run.train_examples[i] for i in take]
        run.state.data_cursor += len(take)
        if run.state.data_cursor >= n:
            run.state.data_epoch, run.state.data_cursor = run.state.data_epoch + 1, 0
    return batch


def rewards_and_weights(graded: list[GradedCompletion]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards [N] and sample weights [N]: completions with no grader signal get weight 0."""
    rewards = torch.tensor([g.reward if g.reward is not None else float("nan") for g in graded])
    weights = (~rewards.isnan()).float()
    fill = rewards[weights > 0].mean() if weights.any() else torch.tensor(0.0)
    return torch.where(weights > 0, rewards, fill), weights


def step_metrics(run: Run, batch: RolloutBatch, graded: list[GradedCompletion], grading, rewards: torch.Tensor,
                 stats: UpdateStats, times: dict[str, float]) -> dict:
    n = len(graded)
    groups = rewards.view(-1, batch.group_size)
    record = {"step": run.state.step, "reward/mean": rewards.mean().item(), "reward/std": rewards.std().item(),
              "accuracy": sum(is_accurate(g, run.config) for g in graded) / n,
              "frac_groups_tied": (groups.std(dim=1) == 0).float().mean().item()}
    for wg in run.graders:
        record[f"reward/{wg.grader.name}"] = sum(g.grades[wg.grader.name].score for g in graded) / n
    record.update({"loss/total": stats.loss, "loss/policy": stats.policy_loss, "kl/mean": stats.kl,
                   "clip_frac": stats.clip_frac, "entropy": stats.entropy, "grad_norm": stats.grad_norm,
                   "len/completion": batch.completion_lengths.float().mean().item(),
                   "lr": run.optimizer.param_groups[0]["lr"], "grader/errors": sum(grading.errors.values()),
                   "grader/masked": sum(grading.masked.values())})
    record.update({f"reward_hack/{kind}": count for kind, count in grading.flags.items()})
    record.update({f"time/{k}": round(v, 4) for k, v in times.items()})
    return record


def validate(run: Run, record: dict) -> dict[str, float]:
    started = time.perf_counter()
    metrics = evaluate(run.policy, run.tokenizer, run.val_examples, run.graders, run.config).metrics
    record.update({f"val/{k}": v for k, v in metrics.items()})
    record["time/validate"] = round(time.perf_counter() - started, 3)
    run.state.last_validation = metrics
    return metrics


def check_overfitting(run: Run, val: dict[str, float], train_reward: float) -> None:
    run.state.history.append({"step": run.state.step, "val_accuracy": val["accuracy"], "train_reward": train_reward})
    warning = overfitting_warning(run.state.history, run.config.eval.overfit_patience)
    if warning:
        log.warning(warning)
        tqdm.write(f"WARNING: {warning}")


def set_learning_rate(run: Run) -> None:
    cfg = run.config.train
    scale = min(1.0, (run.state.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    for group in run.optimizer.param_groups:
        group["lr"] = cfg.learning_rate * scale


def train(config: RFTConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    run = setup(config, Path(run_dir), resume)
    cfg, state = run.config, run.state
    session_start = time.perf_counter() - state.elapsed_seconds
    if state.step == 0:
        state.before = validate(run, record := {"step": 0})
        run.metrics.write(record)
    bar = tqdm(total=cfg.train.steps, initial=state.step, disable=not progress, desc="rft train", unit="step")
    while state.step < cfg.train.steps:
        prompts = next_prompts(run)
        t0 = time.perf_counter()
        rollouts = generate_rollouts(run.policy, run.tokenizer, prompts, cfg.grpo.num_generations,
                                     cfg.train.max_completion_length, cfg.train.temperature, cfg.train.top_p,
                                     run.generator, cfg.model, cfg.data.system_prompt)
        t1 = time.perf_counter()
        graded, grading = grade_all(run.graders, rollouts.examples, rollouts.completions)
        check_health(grading, len(graded))
        t2 = time.perf_counter()
        rewards, weights = rewards_and_weights(graded)
        advantages = group_relative_advantages(rewards, cfg.grpo.num_generations, cfg.grpo.scale_rewards)
        ref = (reference_logprobs(run.policy, rollouts, cfg.train.temperature, cfg.train.micro_batch_size)
               if cfg.grpo.beta > 0 else None)
        set_learning_rate(run)
        for _ in range(cfg.grpo.num_iterations):
            stats = update_policy(run.policy, run.optimizer, run.params, rollouts, advantages, weights, ref, cfg.grpo,
                                  cfg.train.temperature, cfg.train.micro_batch_size, cfg.train.max_grad_norm)
        state.step += 1
        times = {"generate": t1 - t0, "grade": t2 - t1, "update": time.perf_counter() - t2}
        record = step_metrics(run, rollouts, graded, grading, rewards, stats, times)
        if state.step % cfg.eval.eval_every == 0 or state.step == cfg.train.steps:
            check_overfitting(run, validate(run, record), record["reward/mean"])
        state.elapsed_seconds = time.perf_counter() - session_start
        run.metrics.write(record)
        for sample in sample_records(state.step, rollouts.completions, graded, rollouts.examples,
                                     cfg.samples_per_step, rollouts.group_size):
            run.samples.write(sample)
        if state.step % cfg.save_every == 0 or state.step == cfg.train.steps:
            capture_rng(state, run.generator)
            save_checkpoint(run.run_dir, run.policy, run.optimizer, state)
        bar.set_postfix(reward=f"{record['reward/mean']:.3f}", val_acc=f"{state.last_validation['accuracy']:.3f}")
        bar.update(1)
    bar.close()
    return write_summary(run)


def write_summary(run: Run) -> dict:
    summary = {"before": run.state.before, "after": run.state.last_validation, "steps": run.state.step,
               "wall_seconds": round(run.state.elapsed_seconds, 1), "validation_size": len(run.val_examples),
               "train_size": len(run.train_examples), "seed": run.config.train.seed}
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
