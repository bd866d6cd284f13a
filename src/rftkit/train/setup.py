"""Everything a run holds before its first step: model on its device, adapter, optimizer, data, sinks, ranks.

`setup` decides fresh-or-resume first (a wrong directory fails before anything is loaded), then
loads in one place what the loop needs into a `Run`.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from rftkit.algorithms.registry import ALGORITHMS, AlgorithmSpec, new_value_head
from rftkit.config import ConfigError, RFTConfig, dump_config
from rftkit.data import Example
from rftkit.eval.validate import EvalSettings
from rftkit.graders import WeightedGrader, build_graders
from rftkit.logging.sinks import JsonlSink, NullSink
from rftkit.models.kernels.fused_forward import FusedForward
from rftkit.models.loading import (attach_lora, enable_gradient_checkpointing, load_base_model, load_tokenizer,
                                   lora_parameters, resolve_device)
from rftkit.rollout import RolloutBackend
from rftkit.tasks import load_examples
from rftkit.train.checkpoint import TrainerState, latest_checkpoint, load_trainer_state, restore_rng
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
    lora_param_count: int  # learner.params[:lora_param_count] are the adapter's (the rest: PPO's value head)
    graders: list[WeightedGrader]
    train_examples: list[Example]
    val_examples: list[Example]
    generator: torch.Generator  # the rollout sampling stream, on the model's device
    state: TrainerState
    metrics: JsonlSink | NullSink
    samples: JsonlSink | NullSink
    algorithm: AlgorithmSpec
    eval_settings: EvalSettings
    kl_coef: float = 0.0  # PPO's KL coefficient (adapted when ppo.adaptive_kl)
    rollout: RolloutBackend | None = None  # built on first use from config.rollout (hf or vllm)


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


def setup(config: RFTConfig, run_dir: Path, resume: bool) -> Run:
    # Decide fresh-or-resume before any expensive loading, so a wrong directory fails at once.
    checkpoint = latest_checkpoint(run_dir)
    if not resume and checkpoint is not None:  # never mix or overwrite an earlier run's results
        raise FileExistsError(f"{run_dir} already holds a run with checkpoints: continue it with "
                              f"`rft train --resume {run_dir}`, or pick another --output (or delete it)")
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume {run_dir}: no complete checkpoint under {run_dir / 'checkpoints'}")
    device = resolve_device(config.model.device, local_rank() if launched_by_torchrun() else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    collective = init_collective(device)
    set_threads(config.train.threads)
    generator = seed_everything(config.train.seed, device, collective.rank * RANK_SAMPLING_OFFSET)
    train_examples, val_examples = load_examples(config.data)
    tokenizer = load_tokenizer(config.model)
    graders = build_graders(config.graders)
    policy = attach_lora(load_base_model(config.model, device), config.lora, adapter_dir=checkpoint)
    if config.train.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    _check_kernels(config, policy)
    params = lora_parameters(policy)
    lora_count = len(params)
    value_head, kl_coef = _value_head(config, policy.get_base_model().config.hidden_size, checkpoint, device)
    groups = [{"params": params, "lr": config.train.learning_rate, "base_lr": config.train.learning_rate}]
    if value_head is not None:
        groups.append({"params": list(value_head.parameters()), "lr": config.ppo.value_learning_rate,
                       "base_lr": config.ppo.value_learning_rate})
        params = params + groups[1]["params"]
    optimizer = adamw(groups, config.train.learning_rate, config.train.weight_decay)
    state = TrainerState(step=0, data_epoch=0, data_cursor=0)
    if checkpoint is not None:
        state = load_trainer_state(checkpoint, optimizer)
        restore_rng(state, generator, collective.rank)
        log.info("resuming from %s (step %d)", checkpoint, state.step)
    metrics, samples = NullSink(), NullSink()
    if collective.is_main:  # rank 0 alone writes the run directory
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, run_dir / "config.yaml")
        truncate = state.step if checkpoint is not None else -1  # a fresh run starts empty files
        metrics = JsonlSink(run_dir / "metrics.jsonl", truncate)
        samples = JsonlSink(run_dir / "samples.jsonl", truncate)
    learner = Learner(policy, optimizer, params, value_head, config.train.gradient_checkpointing)
    return Run(config, run_dir, device, collective, tokenizer, learner, lora_count, graders, train_examples,
               val_examples, generator, state, metrics, samples, ALGORITHMS[config.algorithm],
               EvalSettings.of(config), kl_coef)


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
