"""The RFT loop: generate, grade, compute advantages, update the LoRA adapter, validate, save. Repeat.

    data    = collect(...)                   # G completions per prompt, graded into rewards
    targets = algorithm.targets(...)         # advantages (group-relative, leave-one-out or GAE)
    stats   = update_policy(...)             # x num_iterations
    log(...); validate(...); save(...)

`algorithm:` picks an entry of rftkit.algorithms.registry.ALGORITHMS; an `sft_warmup:` block runs SFT on
the adapter before the first step.
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

from rftkit.train.checkpoint import (TrainerState, capture_rng, latest_checkpoint, load_trainer_state, restore_rng,
                               save_checkpoint)
from rftkit.config import RFTConfig, dump_config
from rftkit.data import Example
from rftkit.eval.validate import evaluate, is_accurate
from rftkit.graders import WeightedGrader, build_graders
from rftkit.train.collect import StepData, collect
from rftkit.logging.sinks import JsonlSink, overfitting_warning, sample_records
from rftkit.models.loading import attach_lora, load_base_model, load_tokenizer, lora_parameters
from rftkit.algorithms.registry import ALGORITHMS, AlgorithmSpec, Models, new_value_head, next_kl_coef
from rftkit.rollout import RolloutBackend, build_backend
from rftkit.train.sft import new_optimizer, run_sft
from rftkit.tasks import load_examples
from rftkit.train.process import adamw, seed_everything, set_threads
from rftkit.train.update import UpdateStats, update_policy

PPO_STATE = "ppo_state.pt"  # value head + adaptive KL coefficient, beside the adapter in a checkpoint

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
    algorithm: AlgorithmSpec
    value_head: torch.nn.Module | None = None  # PPO's value head on the last hidden state
    kl_coef: float = 0.0  # PPO's KL coefficient (adapted when ppo.adaptive_kl)
    rollout: RolloutBackend | None = None  # built on first use from config.rollout (hf or vllm)


def _value_head(config: RFTConfig, policy, checkpoint: Path | None) -> tuple[torch.nn.Module | None, float]:
    if not ALGORITHMS[config.algorithm].value_head:
        return None, 0.0
    head = new_value_head(policy.get_base_model().config.hidden_size)
    kl_coef = config.ppo.kl_coef
    if checkpoint is not None and (checkpoint / PPO_STATE).is_file():
        saved = torch.load(checkpoint / PPO_STATE, weights_only=True)
        head.load_state_dict(saved["value_head"])
        kl_coef = float(saved["kl_coef"])
    return head, kl_coef


def setup(config: RFTConfig, run_dir: Path, resume: bool) -> Run:
    # Decide fresh-or-resume before any expensive loading, so a wrong directory fails at once.
    checkpoint = latest_checkpoint(run_dir)
    if not resume and checkpoint is not None:  # never mix or overwrite an earlier run's results
        raise FileExistsError(f"{run_dir} already holds a run with checkpoints: continue it with "
                              f"`rft train --resume {run_dir}`, or pick another --output (or delete it)")
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume {run_dir}: no complete checkpoint under {run_dir / 'checkpoints'}")
    set_threads(config.train.threads)
    generator = seed_everything(config.train.seed)
    train_examples, val_examples = load_examples(config.data)
    tokenizer = load_tokenizer(config.model)
    graders = build_graders(config.graders)
    policy = attach_lora(load_base_model(config.model), config.lora, adapter_dir=checkpoint)
    params = lora_parameters(policy)
    value_head, kl_coef = _value_head(config, policy, checkpoint)
    groups = [{"params": params, "lr": config.train.learning_rate, "base_lr": config.train.learning_rate}]
    if value_head is not None:
        groups.append({"params": list(value_head.parameters()), "lr": config.ppo.value_learning_rate,
                       "base_lr": config.ppo.value_learning_rate})
        params = params + groups[1]["params"]
    optimizer = adamw(groups, config.train.learning_rate, config.train.weight_decay)
    state = TrainerState(step=0, data_epoch=0, data_cursor=0)
    if checkpoint is not None:
        state = load_trainer_state(checkpoint, optimizer)
        restore_rng(state, generator)
        log.info("resuming from %s (step %d)", checkpoint, state.step)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    truncate = state.step if checkpoint is not None else -1  # a fresh run starts empty files
    return Run(config, run_dir, tokenizer, policy, params, optimizer, graders, train_examples, val_examples,
               generator, state, JsonlSink(run_dir / "metrics.jsonl", truncate), JsonlSink(run_dir / "samples.jsonl", truncate),
               ALGORITHMS[config.algorithm], value_head, kl_coef)


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


def step_metrics(run: Run, data: StepData, stats: UpdateStats, extra: dict[str, float], times: dict[str, float]) -> dict:
    batch, graded, grading, rewards = data.rollouts, data.graded, data.grading, data.rewards
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
    if run.value_head is not None:
        record["loss/value"] = stats.value_loss
    if run.algorithm.dynamic_sampling:
        record["sampling/groups_sampled"] = data.sampled_groups
    record.update(extra)
    record.update({f"time/{k}": round(v, 4) for k, v in times.items()})
    return record


def rollout_backend(run: Run) -> RolloutBackend:
    """The run's sampling backend (validation and rollouts share it), built on first use from config.rollout."""
    run.rollout = run.rollout or build_backend(run.config, run.run_dir)
    return run.rollout


def validate(run: Run, record: dict) -> dict[str, float]:
    started = time.perf_counter()
    metrics = evaluate(run.policy, run.tokenizer, run.val_examples, run.graders, run.config,
                       rollout_backend(run)).metrics
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
        group["lr"] = group["base_lr"] * scale


def sft_warmup(run: Run) -> None:
    """The `sft_warmup:` stage: SFT on the adapter before any RL step (its own optimizer, not resumed)."""
    cfg = run.config.sft_warmup
    lora = lora_parameters(run.policy)
    summary = run_sft(run.policy, run.tokenizer, run.train_examples, cfg, run.config, lora,
                      new_optimizer(lora, cfg, run.config))
    (run.run_dir / "sft_warmup.json").write_text(json.dumps(summary, indent=2))
    log.info("sft warm-up: %d steps in %.0f s, final loss %.4f", summary["sft_steps"], summary["sft_seconds"],
             summary["sft_final_loss"])


def collect_step(run: Run) -> StepData:
    cfg = run.config
    sample = lambda prompts: rollout_backend(run).generate(  # noqa: E731
        run.policy, run.tokenizer, prompts, cfg.grpo.num_generations, cfg.train.max_completion_length,
        cfg.train.temperature, cfg.train.top_p, run.generator, cfg.model, cfg.data.system_prompt)
    shape = lambda rewards, batch: run.algorithm.shape_rewards(rewards, batch, cfg)  # noqa: E731
    rounds = cfg.dapo.max_sampling_rounds if run.algorithm.dynamic_sampling else 0
    return collect(sample, lambda: next_prompts(run), run.graders, run.tokenizer.pad_token_id, shape, rounds)


def save(run: Run) -> None:
    capture_rng(run.state, run.generator)
    path = save_checkpoint(run.run_dir, run.policy, run.optimizer, run.state)
    if run.value_head is not None:
        torch.save({"value_head": run.value_head.state_dict(), "kl_coef": run.kl_coef}, path / PPO_STATE)


def train(config: RFTConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    run = setup(config, Path(run_dir), resume)
    cfg, state = run.config, run.state
    session_start = time.perf_counter() - state.elapsed_seconds
    if state.step == 0 and cfg.sft_warmup is not None:
        sft_warmup(run)
    if state.step == 0:
        state.before = validate(run, record := {"step": 0})
        run.metrics.write(record)
    bar = tqdm(total=cfg.train.steps, initial=state.step, disable=not progress, desc="rft train", unit="step")
    spent = 0.0  # training seconds this session (generate + grade + update), for train.max_seconds
    done = state.step >= cfg.train.steps
    while not done:
        data = collect_step(run)
        t2 = time.perf_counter()
        models = Models(run.policy, run.value_head, run.kl_coef)
        targets = run.algorithm.targets(models, data.rollouts, data.rewards, cfg)
        loss = run.algorithm.loss(cfg, run.kl_coef)
        set_learning_rate(run)
        for _ in range(cfg.grpo.num_iterations):
            stats = update_policy(run.policy, run.optimizer, run.params, data.rollouts, targets.advantages,
                                  data.weights, targets.ref_logprobs, loss, cfg.train.temperature,
                                  cfg.train.micro_batch_size, cfg.train.max_grad_norm, run.value_head,
                                  targets.value_targets)
        run.kl_coef = next_kl_coef(cfg, run.kl_coef, stats.kl, len(data.rollouts.completions))
        state.step += 1
        times = data.times | {"update": time.perf_counter() - t2}
        spent += sum(times.values())
        done = state.step >= cfg.train.steps or (cfg.train.max_seconds is not None and spent >= cfg.train.max_seconds)
        record = step_metrics(run, data, stats, targets.metrics, times)
        if state.step % cfg.eval.eval_every == 0 or done:
            check_overfitting(run, validate(run, record), record["reward/mean"])
        state.elapsed_seconds = time.perf_counter() - session_start
        run.metrics.write(record)
        for sample in sample_records(state.step, data.rollouts.completions, data.graded, data.rollouts.examples,
                                     cfg.samples_per_step, data.rollouts.group_size):
            run.samples.write(sample)
        if state.step % cfg.save_every == 0 or done:
            save(run)
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
