"""Which advantage and loss each `algorithm:` uses: one registry, one entry per algorithm.

The loop calls `targets = ALGORITHMS[name].targets(...)` and `update_policy(..., spec.loss(config))`;
no `if algorithm ==` chains. The loss itself is a function registered in `rftkit.algorithms.losses`
(`register_policy_loss`), which `LossSettings.name` picks. Outcome algorithms (grpo, dr_grpo, dapo, rloo) score whole
completions; ppo spreads the score over tokens with GAE and a value head on the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rftkit.algorithms.dapo import overlong_penalty
from rftkit.algorithms.grpo import group_relative_advantages, masked_mean
from rftkit.algorithms.ppo import adaptive_kl_coefficient, gae, kl_shaped_rewards, whiten
from rftkit.algorithms.rloo import leave_one_out_advantages
from rftkit.config import RFTConfig
from rftkit.algorithms.losses import LossSettings
from rftkit.models.forward import reference_logprobs, rollout_values
from rftkit.train.dist import LOCAL, Collective
from rftkit.types import RolloutBatch, UpdateTargets, ValueTargets


@dataclass
class Models:
    """What the targets of an algorithm may need from the run."""

    policy: torch.nn.Module
    value_head: torch.nn.Module | None
    kl_coef: float  # PPO's current (possibly adapted) KL coefficient
    collective: Collective = LOCAL  # torchrun ranks, for statistics over the whole batch (PPO's whitening)


def _outcome(advantage_fn: Callable[[torch.Tensor, int, RFTConfig], torch.Tensor]):
    def targets(models: Models, batch: RolloutBatch, rewards: torch.Tensor, config: RFTConfig) -> UpdateTargets:
        ref = (reference_logprobs(models.policy, batch, config.train.temperature, config.train.micro_batch_size,
                                  config.train.fused_forward) if config.grpo.beta > 0 else None)
        return UpdateTargets(advantage_fn(rewards, batch.group_size, config), ref)
    return targets


def ppo_targets(models: Models, batch: RolloutBatch, rewards: torch.Tensor, config: RFTConfig) -> UpdateTargets:
    """Tülu 3 RLVR: score on the last token, -beta*KL per token (or in the loss), GAE over tokens."""
    cfg, mask = config.ppo, batch.completion_mask
    temperature, mbs = config.train.temperature, config.train.micro_batch_size
    fused = config.train.fused_forward
    ref = reference_logprobs(models.policy, batch, temperature, mbs, fused) if cfg.kl_coef > 0 else None
    old_values = rollout_values(models.policy, models.value_head, batch, temperature, mbs, fused)
    in_reward = cfg.kl_in == "reward"
    token_rewards = kl_shaped_rewards(rewards, batch.old_logprobs, ref if in_reward else None, mask, models.kl_coef)
    advantages, returns = gae(token_rewards, old_values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask, sum_over_ranks=(models.collective.sum
                                                              if models.collective.world_size > 1 else None))
    metrics = {"kl/coef": models.kl_coef, "value/mean": float(masked_mean(old_values, mask)),
               "value/return": float(masked_mean(returns, mask))}
    return UpdateTargets(advantages, ref, ValueTargets(old_values, returns), metrics)


def next_kl_coef(config: RFTConfig, kl_coef: float, observed_kl: float, num_completions: int) -> float:
    cfg = config.ppo
    if not cfg.adaptive_kl:
        return kl_coef
    return adaptive_kl_coefficient(kl_coef, observed_kl, cfg.target_kl, cfg.kl_horizon, num_completions)


CLIPPED = "clipped_surrogate"  # rftkit.algorithms.losses.clipped_surrogate_loss


def _grpo_loss(c: RFTConfig, kl_coef: float) -> LossSettings:
    return LossSettings(CLIPPED, c.grpo.epsilon, c.grpo.epsilon_high, c.grpo.beta, c.grpo.loss_aggregation)


def _dr_grpo_loss(c: RFTConfig, kl_coef: float) -> LossSettings:
    return LossSettings(CLIPPED, c.grpo.epsilon, c.grpo.epsilon_high, c.grpo.beta, "constant",
                        c.train.max_completion_length)


def _dapo_loss(c: RFTConfig, kl_coef: float) -> LossSettings:
    return LossSettings(CLIPPED, c.grpo.epsilon, c.dapo.epsilon_high, c.grpo.beta, "token")


def _ppo_loss(c: RFTConfig, kl_coef: float) -> LossSettings:
    beta = kl_coef if c.ppo.kl_in == "loss" else 0.0  # the current, possibly adapted, coefficient
    return LossSettings(CLIPPED, c.grpo.epsilon, c.grpo.epsilon_high, beta, "token", vf_coef=c.ppo.vf_coef,
                        value_clip=c.ppo.value_clip)


def dapo_reward_shaping(rewards: torch.Tensor, batch: RolloutBatch, config: RFTConfig) -> torch.Tensor:
    return rewards + overlong_penalty(batch.completion_lengths, config.train.max_completion_length,
                                      config.dapo.overlong_buffer, config.dapo.overlong_penalty)


def no_shaping(rewards: torch.Tensor, batch: RolloutBatch, config: RFTConfig) -> torch.Tensor:
    return rewards


@dataclass(frozen=True)
class AlgorithmSpec:
    targets: Callable[[Models, RolloutBatch, torch.Tensor, RFTConfig], UpdateTargets]
    loss: Callable[[RFTConfig, float], LossSettings]  # (config, PPO's current KL coefficient)
    shape_rewards: Callable[[torch.Tensor, RolloutBatch, RFTConfig], torch.Tensor] = no_shaping
    dynamic_sampling: bool = False  # drop tied groups and refill the batch (DAPO)
    value_head: bool = False


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "grpo": AlgorithmSpec(_outcome(lambda r, g, c: group_relative_advantages(r, g, c.grpo.scale_rewards)),
                          _grpo_loss),
    "dr_grpo": AlgorithmSpec(_outcome(lambda r, g, c: group_relative_advantages(r, g, scale_by_std=False)),
                             _dr_grpo_loss),
    "dapo": AlgorithmSpec(_outcome(lambda r, g, c: group_relative_advantages(r, g, scale_by_std=True)),
                          _dapo_loss, shape_rewards=dapo_reward_shaping, dynamic_sampling=True),
    "rloo": AlgorithmSpec(_outcome(lambda r, g, c: leave_one_out_advantages(r, g)), _grpo_loss),
    "ppo": AlgorithmSpec(ppo_targets, _ppo_loss, value_head=True),
}


def new_value_head(hidden_size: int) -> torch.nn.Linear:
    """A linear value head on the last hidden state, zero-initialised so V starts at 0 (no bias toward any return)."""
    head = torch.nn.Linear(hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head
