"""Which advantage and loss each `algorithm:` uses: one registry, one entry per algorithm.

The loop calls `targets = ALGORITHMS[name].targets(...)` and `update_policy(..., spec.loss(config))`;
no `if algorithm ==` chains. The loss itself is a function registered in `rftkit.algorithms.losses`
(`register_policy_loss`), which `LossSettings.name` picks. Outcome algorithms (grpo, dr_grpo, dapo, rloo, gspo,
cispo) score whole completions; ppo spreads the score over tokens with GAE and a value head (on the policy, or
a separate critic adapter); online_dpo turns each group into a best-vs-worst pair for DPO's loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rftkit.algorithms.dapo import overlong_penalty
from rftkit.algorithms.dpo import best_worst_pairs
from rftkit.algorithms.grpo import group_relative_advantages, masked_mean
from rftkit.algorithms.ppo import adaptive_kl_coefficient, gae, kl_shaped_rewards, pack_masked, unpack_masked, whiten
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
    reference: torch.nn.Module | None = None  # full-weight runs: the frozen base (LoRA: the adapter disabled)
    value_adapter: str | None = None  # ppo.value_model: separate: the critic's adapter


def _kernels(config: RFTConfig) -> str:
    """train.fused_forward for the targets' forwards: the fused kernels expect LoRA (lora: null -> the model's own)."""
    return "off" if config.lora is None else config.train.fused_forward


def _reference(models: Models, batch: RolloutBatch, config: RFTConfig) -> torch.Tensor:
    return reference_logprobs(models.policy, batch, config.train.temperature, config.train.micro_batch_size,
                              _kernels(config), models.reference)


def _outcome(advantage_fn: Callable[[torch.Tensor, int, RFTConfig], torch.Tensor]):
    def targets(models: Models, batch: RolloutBatch, rewards: torch.Tensor, config: RFTConfig) -> UpdateTargets:
        ref = _reference(models, batch, config) if config.grpo.beta > 0 else None
        return UpdateTargets(advantage_fn(rewards, batch.group_size, config), ref)
    return targets


def ppo_targets(models: Models, batch: RolloutBatch, rewards: torch.Tensor, config: RFTConfig) -> UpdateTargets:
    """Tülu 3 RLVR: score on the last token, -beta*KL per token (or in the loss), GAE over tokens."""
    cfg, mask = config.ppo, batch.loss_mask
    temperature, mbs = config.train.temperature, config.train.micro_batch_size
    ref = _reference(models, batch, config) if cfg.kl_coef > 0 else None
    old_values = rollout_values(models.policy, models.value_head, batch, temperature, mbs, _kernels(config),
                                models.value_adapter)
    in_reward = cfg.kl_in == "reward"
    # Multi-turn rows: GAE over the model's tokens packed into one sequence (environment tokens are no actions).
    pack = (lambda x: x) if batch.action_mask is None else (lambda x: pack_masked(x, mask))
    token_rewards = kl_shaped_rewards(rewards, pack(batch.old_logprobs), pack(ref) if in_reward and ref is not None
                                      else None, pack(mask), models.kl_coef)
    advantages, returns = gae(token_rewards, pack(old_values), pack(mask), cfg.gamma, cfg.lam)
    if batch.action_mask is not None:
        advantages, returns = unpack_masked(advantages, mask), unpack_masked(returns, mask)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask, sum_over_ranks=(models.collective.sum
                                                              if models.collective.world_size > 1 else None))
    metrics = {"kl/coef": models.kl_coef, "value/mean": float(masked_mean(old_values, mask)),
               "value/return": float(masked_mean(returns, mask))}
    return UpdateTargets(advantages, ref, ValueTargets(old_values, returns), metrics)


def online_dpo_targets(models: Models, batch: RolloutBatch, rewards: torch.Tensor, config: RFTConfig) -> UpdateTargets:
    """Each group's best and worst completion as one DPO pair (tied groups skipped): the update trains on rows
    [chosen_0, rejected_0, chosen_1, ...] (`rows`), marked +1 / -1, with their reference log-probs."""
    pairs = best_worst_pairs(rewards, batch.group_size)  # [P, 2]
    rows = pairs.reshape(-1)  # [2P]
    signs = torch.tensor([1.0, -1.0], device=rewards.device).repeat(len(pairs))
    ref = _reference(models, batch.rows(rows), config)  # [2P, T]
    groups = max(len(rewards) // batch.group_size, 1)
    return UpdateTargets(signs, ref, metrics={"dpo/pair_frac": len(pairs) / groups}, rows=rows)


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


def _gspo_loss(c: RFTConfig, kl_coef: float) -> LossSettings:
    return LossSettings("gspo", c.gspo.epsilon, c.gspo.epsilon_high, c.grpo.beta, "sequence")


def _cispo_loss(c: RFTConfig, kl_coef: float) -> LossSettings:
    low = c.cispo.epsilon_low if c.cispo.epsilon_low is not None else float("inf")  # inf: no lower bound
    return LossSettings("cispo", low, c.cispo.epsilon_high, c.grpo.beta, "token")


def _online_dpo_loss(c: RFTConfig, kl_coef: float) -> LossSettings:
    return LossSettings("online_dpo", c.grpo.epsilon, None, c.online_dpo.beta, "sequence", rows_per_item=2)


def _ppo_loss(c: RFTConfig, kl_coef: float) -> LossSettings:
    beta = kl_coef if c.ppo.kl_in == "loss" else 0.0  # the current, possibly adapted, coefficient
    return LossSettings(CLIPPED, c.grpo.epsilon, c.grpo.epsilon_high, beta, "token", vf_coef=c.ppo.vf_coef,
                        value_clip=c.ppo.value_clip)


def dapo_reward_shaping(rewards: torch.Tensor, batch: RolloutBatch, config: RFTConfig) -> torch.Tensor:
    return rewards + overlong_penalty(batch.completion_lengths, config.length_limit(),
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
    # whether the targets read the reference (full-weight runs keep a frozen copy of the base only then)
    uses_reference: Callable[[RFTConfig], bool] = lambda c: c.grpo.beta > 0


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "grpo": AlgorithmSpec(_outcome(lambda r, g, c: group_relative_advantages(r, g, c.grpo.scale_rewards)),
                          _grpo_loss),
    "dr_grpo": AlgorithmSpec(_outcome(lambda r, g, c: group_relative_advantages(r, g, scale_by_std=False)),
                             _dr_grpo_loss),
    "dapo": AlgorithmSpec(_outcome(lambda r, g, c: group_relative_advantages(r, g, scale_by_std=True)),
                          _dapo_loss, shape_rewards=dapo_reward_shaping, dynamic_sampling=True),
    "rloo": AlgorithmSpec(_outcome(lambda r, g, c: leave_one_out_advantages(r, g)), _grpo_loss),
    "ppo": AlgorithmSpec(ppo_targets, _ppo_loss, value_head=True, uses_reference=lambda c: c.ppo.kl_coef > 0),
    "gspo": AlgorithmSpec(_outcome(lambda r, g, c: group_relative_advantages(r, g, c.grpo.scale_rewards)),
                          _gspo_loss),
    "cispo": AlgorithmSpec(_outcome(lambda r, g, c: group_relative_advantages(r, g, c.grpo.scale_rewards)),
                           _cispo_loss),
    "online_dpo": AlgorithmSpec(online_dpo_targets, _online_dpo_loss, uses_reference=lambda c: True),
}


def new_value_head(hidden_size: int) -> torch.nn.Linear:
    """A linear value head on the last hidden state, zero-initialised so V starts at 0 (no bias toward any return)."""
    head = torch.nn.Linear(hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head
