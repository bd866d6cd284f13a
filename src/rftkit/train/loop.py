"""The RFT loop: generate, grade, compute advantages, update the LoRA adapter, validate, save. Repeat.

    data    = collect_step(run)                     # G completions per prompt, graded into rewards
    targets = run.algorithm.targets(...)            # advantages (group-relative, leave-one-out or GAE)
    stats   = update_policy(run.learner, ...)       # x num_iterations
    record  = step_metrics(...); validate(...); save(...)

`algorithm:` picks an entry of rftkit.algorithms.registry.ALGORITHMS; an `sft_warmup:` block runs SFT
on the adapter before the first step. Under torchrun every rank runs this same loop on its shard of
each step's prompts (rftkit.train.dist); rank 0 writes the run directory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from rftkit.algorithms.registry import Models, next_kl_coef
from rftkit.atomic import write_json_atomic
from rftkit.config import RFTConfig
from rftkit.envs.metrics import episode_metrics
from rftkit.eval.validate import evaluate
from rftkit.logging.completions import completion_records, number_groups
from rftkit.logging.alarms import Alarm, AlarmMonitor, AlarmSettings, truncated_count
from rftkit.logging.sinks import sample_records, validation_line
from rftkit.models.loading import stop_token_ids
from rftkit.rollout import RolloutBackend, SamplingSettings, build_backend
from rftkit.train.checkpoint import capture_rng, latest_checkpoint, save_checkpoint
from rftkit.train.collect import StepData, collect
from rftkit.train.dist import close_collective
from rftkit.train.selection import best_dir, maybe_keep_best, test_metrics
from rftkit.train.sft import new_optimizer, run_sft
from rftkit.train.setup import PPO_STATE, Run, next_prompts, setup
from rftkit.train.update import UpdateSettings, UpdateStats, update_policy

log = logging.getLogger("rftkit")


def step_metrics(run: Run, data: StepData, stats: UpdateStats, extra: dict[str, float],
                 times: dict[str, float]) -> dict:
    """The step's metrics record over every rank's completions (the same record on every rank)."""
    view = run.collective.gather(_step_view(run, data))
    rewards = torch.cat([v["rewards"] for v in view])
    lengths = torch.cat([v["lengths"] for v in view])
    accurate = [a for v in view for a in v["accurate"]]
    n = len(accurate)
    groups = rewards.view(-1, data.rollouts.group_size)
    record = {"step": run.state.step, "reward/mean": rewards.mean().item(), "reward/std": rewards.std().item(),
              "accuracy": sum(accurate) / n, "frac_groups_tied": (groups.std(dim=1) == 0).float().mean().item()}
    for wg in run.graders:
        record[f"reward/{wg.grader.name}"] = sum(s for v in view for s in v["scores"][wg.grader.name]) / n
        record[f"grader/{wg.grader.name}/unscored"] = sum(v["unscored"][wg.grader.name] for v in view) / n
    record["len/truncated"] = sum(v["truncated"] for v in view) / n
    record.update({"loss/total": stats.loss, "loss/policy": stats.policy_loss, "kl/mean": stats.kl,
                   "clip_frac": stats.clip_frac, "entropy": stats.entropy, "grad_norm": stats.grad_norm,
                   "len/completion": lengths.float().mean().item(),
                   "lr": run.learner.optimizer.param_groups[0]["lr"],
                   "grader/errors": sum(v["errors"] for v in view), "grader/masked": sum(v["masked"] for v in view)})
    flags: dict[str, int] = {}
    for v in view:
        for kind, count in v["flags"].items():
            flags[kind] = flags.get(kind, 0) + count
    record.update({f"reward_hack/{kind}": count for kind, count in flags.items()})
    if run.learner.value_head is not None:
        record["loss/value"] = stats.value_loss
    if run.algorithm.dynamic_sampling:
        record["sampling/groups_sampled"] = sum(v["sampled_groups"] for v in view)
    if data.rollouts.episodes is not None:
        record.update(episode_metrics([e for v in view for e in v["episodes"]]))
    record.update(extra)
    record.update(data.metrics)
    record.update({f"time/{k}": round(v, 4) for k, v in times.items()})
    return record


def _step_view(run: Run, data: StepData) -> dict:
    """What `step_metrics` reads from one rank's step (plain CPU data, cheap to gather)."""
    rule = run.eval_settings.accuracy
    return {"rewards": data.rewards.cpu(), "lengths": data.rollouts.completion_lengths.cpu(),
            "accurate": [rule.accurate(g) for g in data.graded],
            "scores": {wg.grader.name: [g.grades[wg.grader.name].score for g in data.graded] for wg in run.graders},
            "errors": sum(data.grading.errors.values()), "masked": sum(data.grading.masked.values()),
            "flags": dict(data.grading.flags), "sampled_groups": data.sampled_groups,
            "unscored": {wg.grader.name: data.grading.errors[wg.grader.name] + data.grading.masked[wg.grader.name]
                         for wg in run.graders},
            "truncated": truncated_count(data.rollouts, run.config.train.max_completion_length,
                                         stop_token_ids(run.tokenizer)),
            "episodes": [(e.model_turns, e.finish, e.tokens - e.model_tokens) for e in data.rollouts.episodes or ()]}


def rollout_backend(run: Run) -> RolloutBackend:
    """The run's sampling backend (validation and rollouts share it), built on first use from config.rollout."""
    run.rollout = run.rollout or build_backend(run.config, run.run_dir)
    return run.rollout


def validate(run: Run, record: dict) -> dict[str, float]:
    started = time.perf_counter()
    metrics = evaluate(run.learner.policy, run.tokenizer, run.val_examples, run.graders, run.eval_settings,
                       rollout_backend(run), run.collective).metrics
    record.update({f"val/{k}": v for k, v in metrics.items()})
    record["time/validate"] = round(time.perf_counter() - started, 3)
    run.state.last_validation = metrics
    if run.collective.is_main:
        tqdm.write(validation_line(record, run.config.train.steps))
    return metrics


def check_overfitting(run: Run, val: dict[str, float], train_reward: float) -> None:
    """Keep the validation history (resumable); the overfitting alarm reads it (rftkit.logging.alarms)."""
    run.state.history.append({"step": run.state.step, "val_accuracy": val["accuracy"], "train_reward": train_reward})


def alarm_monitor(run: Run) -> AlarmMonitor:
    """The run's alarms; a resumed run keeps its validation history (the step windows restart)."""
    history = [{"step": h["step"], "val/accuracy": h["val_accuracy"], "reward/mean": h["train_reward"]}
               for h in run.state.history]
    return AlarmMonitor(AlarmSettings.of(run.config), run.collective.is_main, history)


def set_learning_rate(run: Run) -> None:
    cfg = run.config.train
    scale = min(1.0, (run.state.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    for group in run.learner.optimizer.param_groups:
        group["lr"] = group["base_lr"] * scale


def sft_warmup(run: Run) -> None:
    """The `sft_warmup:` stage: SFT on the adapter before any RL step (its own optimizer, not resumed).
    Under torchrun every rank runs the same SFT steps on the same data, so the adapters stay equal."""
    cfg = run.config.sft_warmup
    lora = run.learner.params[:run.lora_param_count]
    summary = run_sft(run.learner.policy, run.tokenizer, run.train_examples, cfg, run.config, lora,
                      new_optimizer(lora, cfg, run.config))
    if run.collective.is_main:
        write_json_atomic(run.run_dir / "sft_warmup.json", summary)
    log.info("sft warm-up: %d steps in %.0f s, final loss %.4f", summary["sft_steps"], summary["sft_seconds"],
             summary["sft_final_loss"])


def collect_step(run: Run) -> StepData:
    if run.pipeline is not None:  # Ray workers sample and grade (rftkit.train.pipeline)
        return run.pipeline.collect_step(run)
    cfg = run.config
    settings = SamplingSettings(cfg.grpo.num_generations, cfg.train.max_completion_length, cfg.train.temperature,
                                cfg.train.top_p, False, cfg.model.chat_template, cfg.data.system_prompt)
    sample = lambda prompts: rollout_backend(run).generate(  # noqa: E731
        run.learner.policy, run.tokenizer, prompts, settings, run.generator, policy_version=run.state.step)
    shape = lambda rewards, batch: run.algorithm.shape_rewards(rewards, batch, cfg)  # noqa: E731
    rounds = cfg.dapo.max_sampling_rounds if run.algorithm.dynamic_sampling else 0
    prompts = lambda: run.collective.shard(next_prompts(run))  # noqa: E731  (every rank draws the same batch)
    return collect(sample, prompts, run.graders, run.tokenizer.pad_token_id, shape, rounds,
                   step=run.state.step, max_steps=cfg.train.steps)


def store_completions(run: Run, data: StepData) -> None:
    """The step's completions from every rank, in batch order, into completions.jsonl (rank 0 writes)."""
    batch = data.rollouts
    mine = completion_records(run.state.step, batch.examples, batch.completions, data.graded,
                              batch.completion_lengths.tolist(), batch.group_size, batch.policy_version)
    for record in number_groups(run.collective.gather(mine), batch.group_size):
        run.completions.write(record)


def save(run: Run) -> None:
    """Rank 0 writes the checkpoint; every rank's RNG states go into it, so each resumes its own stream."""
    capture_rng(run.state, run.generator)
    rank_rngs = run.collective.gather(run.state.rng_states())
    if run.collective.world_size > 1:
        run.state.rank_rngs = rank_rngs
    if run.collective.is_main:
        extra = ({PPO_STATE: {"value_head": run.learner.value_head.state_dict(), "kl_coef": run.kl_coef}}
                 if run.learner.value_head is not None else None)
        save_checkpoint(run.run_dir, run.learner.policy, run.learner.optimizer, run.state, extra)
    run.collective.barrier()  # no rank runs ahead of a checkpoint it might be resumed from


def update_settings(run: Run) -> UpdateSettings:
    cfg = run.config
    fused = "off" if cfg.train.gradient_checkpointing or cfg.lora is None else cfg.train.fused_forward
    return UpdateSettings(run.algorithm.loss(cfg, run.kl_coef), cfg.train.temperature, cfg.train.micro_batch_size,
                          cfg.train.max_grad_norm, fused)


def train(config: RFTConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> dict:
    run = setup(config, Path(run_dir), resume, overwrite)
    try:
        return _train(run, progress)
    finally:
        run.metrics.close()  # trackers finish their runs
        if run.pipeline is not None:
            run.pipeline.close()
        close_collective(run.collective)


def _train(run: Run, progress: bool) -> dict:
    cfg, state = run.config, run.state
    session_start = time.perf_counter() - state.elapsed_seconds
    if state.step == 0 and cfg.sft_warmup is not None:
        sft_warmup(run)
    if state.step == 0:
        state.before = validate(run, record := {"step": 0})
        run.metrics.write(record)
    bar = tqdm(total=cfg.train.steps, initial=state.step, disable=not progress or not run.collective.is_main,
               desc="rft train", unit="step")
    spent = 0.0  # training seconds this session (generate + grade + update), for train.max_seconds
    done, alarms, stopped_by = state.step >= cfg.train.steps, alarm_monitor(run), None
    while not done:
        data = collect_step(run)
        t2 = time.perf_counter()
        models = Models(run.learner.policy, run.learner.value_head, run.kl_coef, run.collective, run.reference,
                        run.learner.value_adapter)
        targets = run.algorithm.targets(models, data.rollouts, data.rewards, cfg)
        if run.pipeline is not None:  # distributed.truncated_is: learner log-probs and capped IS weights
            data, targets = run.pipeline.correct(run, data, targets, update_settings(run))
        settings = update_settings(run)
        set_learning_rate(run)
        for _ in range(cfg.grpo.num_iterations):
            stats = update_policy(run.learner, data.rollouts, targets, data.weights, settings, run.collective)
        completions = len(data.rollouts.completions) * run.collective.world_size
        run.kl_coef = next_kl_coef(cfg, run.kl_coef, stats.kl, completions)
        state.step += 1
        times = data.times | {"update": time.perf_counter() - t2}
        spent += sum(times.values())
        done = state.step >= cfg.train.steps or (cfg.train.max_seconds is not None and spent >= cfg.train.max_seconds)
        done = bool(run.collective.sum(torch.tensor([float(done)])).item())  # the ranks stop together
        record = step_metrics(run, data, stats, targets.metrics, times)
        validated = state.step % cfg.eval.eval_every == 0 or done
        if validated:
            val = validate(run, record)
            check_overfitting(run, val, record["reward/mean"])
            maybe_keep_best(run, val)
        stopped_by = alarms.observe(record)  # a warning and alarm/<name> per alarm; one in alarms.stop_on stops
        if stopped_by is not None and not validated:  # the summary's "after" is the stopping step's
            maybe_keep_best(run, validate(run, record))
        done = done or stopped_by is not None
        state.elapsed_seconds = time.perf_counter() - session_start
        run.metrics.write(record)
        for sample in sample_records(state.step, data.rollouts.completions, data.graded, data.rollouts.examples,
                                     cfg.samples_per_step, data.rollouts.group_size):
            run.samples.write(sample)
        if cfg.store_completions:  # every completion with its example's fields, for `rft regrade`
            store_completions(run, data)
        if state.step % cfg.save_every == 0 or done:
            save(run)
        bar.set_postfix(reward=f"{record['reward/mean']:.3f}", val_acc=f"{state.last_validation['accuracy']:.3f}")
        bar.update(1)
    bar.close()
    return write_summary(run, stopped_by)


def write_summary(run: Run, stopped_by: Alarm | None = None) -> dict:
    summary = {"before": run.state.before, "after": run.state.last_validation, "steps": run.state.step,
               "wall_seconds": round(run.state.elapsed_seconds, 1), "validation_size": len(run.val_examples),
               "train_size": len(run.train_examples), "seed": run.config.train.seed,
               "ranks": run.collective.world_size, "device": str(run.device)}
    chosen = best_dir(run.run_dir) if run.state.best else latest_checkpoint(run.run_dir)
    summary["best_checkpoint"] = str(chosen) if chosen else None
    if run.state.best:
        summary["best"] = run.state.best
    if stopped_by is not None:
        summary["stopped_by"] = {"alarm": stopped_by.name, "step": stopped_by.step, "message": stopped_by.message}
    test = test_metrics(run)
    if test is not None:
        summary |= {"test": test, "test_size": len(run.test_examples)}
    if run.collective.is_main:
        write_json_atomic(run.run_dir / "summary.json", summary)
    return summary
