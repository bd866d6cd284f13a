"""Everything a run holds before its first step: model on its device, adapter, optimizer, data, sinks, ranks.

`setup` decides fresh-or-resume first (a wrong directory fails before anything is loaded), then
loads in one place what the loop needs into a `Run`.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rftkit.algorithms.registry import ALGORITHMS, AlgorithmSpec, new_value_head
from rftkit.config import ConfigError, RFTConfig, dump_config
from rftkit.data import DataError, Example
from rftkit.eval.validate import EvalSettings
from rftkit.graders import WeightedGrader, build_graders
from rftkit.logging.completions import COMPLETIONS_FILE
from rftkit.logging.sinks import JsonlSink, NullSink
from rftkit.logging.trackers import RUN_FILES as TRACKER_FILES, MetricSink, with_trackers
from rftkit.models.kernels.fused_forward import FusedForward
from rftkit.models.loading import enable_gradient_checkpointing, encode_prompts, load_tokenizer, resolve_device
from rftkit.rollout import RolloutBackend
from rftkit.tasks import load_splits
from rftkit.tools.screen import screened
from rftkit.train.checkpoint import TrainerState, latest_checkpoint, load_trainer_state, restore_rng
from rftkit.train.policy import trainable_policy
from rftkit.train.dist import Collective, init_collective, launched_by_torchrun, local_rank
from rftkit.train.process import adamw, seed_everything, set_threads
from rftkit.train.update import Learner

PPO_STATE = "ppo_state.pt"  # value head + adaptive KL coefficient, beside the adapter in a checkpoint
RANK_SAMPLING_OFFSET = 7_919  # rank r samples from seed + r * this (rank 0: the single-process stream)

log = logging.getLogger("rftkit")


@dataclass
class Run:
    config: RFTConfig
    run_dir: Path
    device: torch.device
    collective: Collective
    tokenizer: object
    learner: Learner
    lora_param_count: int  # learner.params[:lora_param_count] are the policy's (the adapter's, or every weight when
    #                        lora: null); the rest are PPO's critic (value head, and a separate critic's adapter)
    graders: list[WeightedGrader]
    train_examples: list[Example]
    val_examples: list[Example]
    generator: torch.Generator  # the rollout sampling stream, on the model's device
    state: TrainerState
    metrics: MetricSink  # metrics.jsonl and report_to's trackers (rank 0), or a NullSink
    samples: JsonlSink | NullSink
    algorithm: AlgorithmSpec
    eval_settings: EvalSettings
    kl_coef: float = 0.0  # PPO's KL coefficient (adapted when ppo.adaptive_kl)
    rollout: RolloutBackend | None = None  # built on first use from config.rollout (hf or vllm)
    pipeline: Any = None  # rftkit.train.pipeline.RayPipeline when `distributed:` asks for Ray workers
    reference: torch.nn.Module | None = None  # lora: null with a KL or DPO term: the frozen base (rftkit.train.policy)
    test_examples: list[Example] = field(default_factory=list)  # data.test_size: scored once at the end
    completions: JsonlSink | NullSink = field(default_factory=NullSink)  # store_completions: completions.jsonl


def _value_head(config: RFTConfig, hidden_size: int, checkpoint: Path | None,
                device: torch.device) -> tuple[torch.nn.Module | None, float]:
    if not ALGORITHMS[config.algorithm].value_head:
        return None, 0.0
    head = new_value_head(hidden_size).to(device)
    kl_coef = config.ppo.kl_coef
    if checkpoint is not None and (checkpoint / PPO_STATE).is_file():
        saved = torch.load(checkpoint / PPO_STATE, weights_only=True, map_location=device)
        head.load_state_dict(saved["value_head"])
        kl_coef = float(saved["kl_coef"])
    return head, kl_coef


def _check_kernels(config: RFTConfig, policy) -> None:
    checkpointing = config.train.gradient_checkpointing
    if config.train.fused_forward == "on" and (checkpointing or not FusedForward.supports(policy)):
        why = ("train.gradient_checkpointing runs the model's own forward" if checkpointing
               else "the fused kernels support Qwen2/Llama policies with plain LoRA adapters only")
        raise ConfigError(f"train.fused_forward: 'on' but {why}; use 'auto' or 'off'")


RUN_STATE = ("metrics.jsonl", "samples.jsonl", "summary.json", "config.yaml", "sft_warmup.json", "checkpoints",
             COMPLETIONS_FILE,
             *TRACKER_FILES)


def _clear_or_refuse(run_dir: Path, overwrite: bool) -> None:
    """A fresh run never writes over an earlier run's state unless asked to (`--overwrite`)."""
    found = [name for name in RUN_STATE if (run_dir / name).exists()]
    if not found:
        return
    if not overwrite:
        resumable = latest_checkpoint(run_dir) is not None
        raise FileExistsError(f"{run_dir} already holds an earlier run ({', '.join(found)}): "
                              + (f"continue it with `rft train --resume {run_dir}`, " if resumable else "")
                              + "pick another --output, or pass --overwrite to delete it and start afresh")
    for name in found:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def setup(config: RFTConfig, run_dir: Path, resume: bool, overwrite: bool = False) -> Run:
    # Decide fresh-or-resume before any expensive loading, so a wrong directory fails at once.
    checkpoint = None
    if not resume and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 owns the run directory
        _clear_or_refuse(run_dir, overwrite)
    if resume:
        checkpoint = latest_checkpoint(run_dir)
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume {run_dir}: no complete checkpoint under {run_dir / 'checkpoints'}")
    device = resolve_device(config.model.device, local_rank() if launched_by_torchrun() else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    collective = init_collective(device)
    set_threads(config.train.threads)
    generator = seed_everything(config.train.seed, device, collective.rank * RANK_SAMPLING_OFFSET)
    train_examples, val_examples, test_examples = load_splits(config.data, config.env)
    if config.data.screen is not None:  # only the prompts an `rft screen` result keeps
        train_examples = screened(config.data.screen, train_examples)
    tokenizer = load_tokenizer(config.model)
    check_prompt_lengths(tokenizer, train_examples + val_examples + test_examples, config)
    graders = build_graders(config.graders)
    trainable = trainable_policy(config, device, checkpoint)  # LoRA, or every weight (lora: null)
    policy = trainable.model
    if config.train.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    _check_kernels(config, policy)
    params = trainable.params
    lora_count = len(params)
    value_head, kl_coef = _value_head(config, trainable.hidden_size, checkpoint, device)
    groups = [{"params": params, "lr": config.train.learning_rate, "base_lr": config.train.learning_rate}]
    if value_head is not None:  # the critic: the head (+ a separate critic's adapter) at its own rate
        groups.append({"params": (trainable.critic_params or []) + list(value_head.parameters()),
                       "lr": config.ppo.value_learning_rate, "base_lr": config.ppo.value_learning_rate})
        params = params + groups[1]["params"]
    optimizer = adamw(groups, config.train.learning_rate, config.train.weight_decay)
    state = TrainerState(step=0, data_epoch=0, data_cursor=0)
    if checkpoint is not None:
        state = load_trainer_state(checkpoint, optimizer)
        restore_rng(state, generator, collective.rank)
        log.info("resuming from %s (step %d)", checkpoint, state.step)
    metrics, samples, completions = NullSink(), NullSink(), NullSink()
    if collective.is_main:  # rank 0 alone writes the run directory
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, run_dir / "config.yaml")
        truncate = state.step if checkpoint is not None else -1  # a fresh run starts empty files
        metrics = with_trackers(JsonlSink(run_dir / "metrics.jsonl", truncate), config, run_dir,
                                state.step if checkpoint is not None else None)  # + report_to's trackers
        samples = JsonlSink(run_dir / "samples.jsonl", truncate)
        if config.store_completions:
            completions = JsonlSink(run_dir / COMPLETIONS_FILE, truncate)
    learner = Learner(policy, optimizer, params, value_head, config.train.gradient_checkpointing,
                      trainable.value_adapter)
    run = Run(config, run_dir, device, collective, tokenizer, learner, lora_count, graders, train_examples,
              val_examples, generator, state, metrics, samples, ALGORITHMS[config.algorithm],
              EvalSettings.of(config), kl_coef, reference=trainable.reference, test_examples=test_examples,
              completions=completions)
    if config.distributed is not None:  # Ray is imported only here, when the config asks for it
        if collective.world_size > 1:
            raise ConfigError("distributed: Ray rollout workers and torchrun ranks cannot be combined yet; "
                              "drop --nproc or the distributed: section")
        from rftkit.train.pipeline import RayPipeline

        run.pipeline = RayPipeline(config, device)
    return run


def check_prompt_lengths(tokenizer, examples: list[Example], config: RFTConfig) -> None:
    """Refuse a prompt longer than `data.max_prompt_length` tokens before anything is sampled: one huge row
    would otherwise ask the sampler for a cache of prompt length x G rows at every resume."""
    limit = config.data.max_prompt_length
    for example in examples:
        if len(example.prompt_text()) <= limit:  # a token is at least one character: no need to tokenize
            continue
        length = len(encode_prompts(tokenizer, [example], config.model.chat_template, config.data.system_prompt)[0])
        if length > limit:
            raise DataError(f"data: example {example.id!r} has a prompt of {length} tokens, more than "
                            f"data.max_prompt_length={limit}; shorten or drop that row, or raise the limit")


def next_prompts(run: Run) -> list[Example]:
    """The next batch_size training prompts: seeded shuffles, epoch after epoch, resumable by position
    (the same on every rank; each then takes its shard)."""
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
