"""One step's training data: sample, grade, turn grades into rewards; with DAPO's dynamic sampling.

Dynamic sampling (Yu et al. 2025, section 3.2): groups whose rewards all tie carry no gradient
under a group baseline, so they are dropped and more prompts are sampled until the batch holds
`batch_size` informative groups or `dapo.max_sampling_rounds` rounds have run (then the batch
is what was found; it is never padded with tied groups unless nothing informative was found).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch

from rftkit.algorithms.dapo import informative_groups
from rftkit.graders.base import BatchContext
from rftkit.envs.episodes import turn_reward_sums
from rftkit.graders.combine import GradedCompletion, GradingStats, check_health, grade_all
from rftkit.types import RolloutBatch


@dataclass
class StepData:
    rollouts: RolloutBatch
    graded: list[GradedCompletion]  # [N]
    grading: GradingStats
    rewards: torch.Tensor  # [N] shaped rewards the advantages use
    weights: torch.Tensor  # [N] 0 where no grader gave a signal
    sampled_groups: int  # groups sampled this step (> batch groups when dynamic sampling refilled)
    times: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)  # the rollout engine's own (pipeline/*, Ray workers)


def rewards_and_weights(graded: list[GradedCompletion], device: torch.device | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards [N] and sample weights [N] on `device`: completions with no grader signal get weight 0."""
    rewards = torch.tensor([g.reward if g.reward is not None else float("nan") for g in graded], device=device)
    weights = (~rewards.isnan()).float()
    fill = rewards[weights > 0].mean() if weights.any() else torch.tensor(0.0, device=device)
    return torch.where(weights > 0, rewards, fill), weights


def _pad_cat(tensors: list[torch.Tensor], left: bool) -> torch.Tensor:
    width = max(t.shape[1] for t in tensors)
    pad = [(width - t.shape[1], 0) if left else (0, width - t.shape[1]) for t in tensors]
    return torch.cat([torch.nn.functional.pad(t, p) for t, p in zip(tensors, pad)])


def concat_batches(batches: list[RolloutBatch], pad_id: int) -> RolloutBatch:
    """Stack rollout batches row-wise; prompts stay left-padded, completions right-padded."""
    prompt_ids = _pad_cat([b.prompt_ids for b in batches], left=True)
    prompt_mask = _pad_cat([b.prompt_mask for b in batches], left=True)
    prompt_ids = torch.where(prompt_mask.bool(), prompt_ids, torch.full_like(prompt_ids, pad_id))
    episodic = batches[0].episodes is not None  # every round of a step comes from the same backend
    return RolloutBatch([e for b in batches for e in b.examples], [c for b in batches for c in b.completions],
                        prompt_ids, prompt_mask, _pad_cat([b.completion_ids for b in batches], left=False),
                        _pad_cat([b.completion_mask for b in batches], left=False),
                        _pad_cat([b.old_logprobs for b in batches], left=False), batches[0].group_size,
                        min(b.policy_version for b in batches),
                        _pad_cat([b.loss_mask for b in batches], left=False) if episodic else None,
                        [e for b in batches for e in b.episodes] if episodic else None)


def grading_context(batch: RolloutBatch, step: int = 0, max_steps: int = 0) -> BatchContext:
    """What TRL-style reward functions read besides the text: each completion's sampled token ids
    (without padding) and the training progress (their `trainer_state`)."""
    ids, mask = batch.completion_ids.cpu(), batch.loss_mask.cpu().bool()  # the sampled tokens (episodes: the model's)
    return BatchContext([row[keep].tolist() for row, keep in zip(ids, mask)], step, max_steps)


def _merge_stats(all_stats: list[GradingStats]) -> GradingStats:
    return sum(all_stats[1:], all_stats[0]) if all_stats else GradingStats()


def collect(sample: Callable[[list], RolloutBatch], next_prompts: Callable[[], list], graders, pad_id: int,
            shape_rewards: Callable[[torch.Tensor, RolloutBatch], torch.Tensor], dynamic_rounds: int,
            grade: Callable[[RolloutBatch], tuple[list[GradedCompletion], GradingStats]] | None = None,
            step: int = 0, max_steps: int = 0) -> StepData:
    """Sample and grade one batch; with dynamic_rounds > 0, keep only informative groups and refill.
    `grade`: the grades of a batch `sample` just returned, when they were made elsewhere (Ray workers)."""
    times: Counter = Counter()
    batches, graded_all, stats_all, rewards_all, weights_all = [], [], [], [], []
    kept_groups, sampled_groups, wanted = 0, 0, None
    for _ in range(max(1, dynamic_rounds)):
        prompts = next_prompts()
        wanted = wanted or len(prompts)
        t0 = time.perf_counter()
        batch = sample(prompts)
        t1 = time.perf_counter()
        graded, stats = grade(batch) if grade else grade_all(graders, batch.examples, batch.completions,
                                                             grading_context(batch, step, max_steps))
        check_health(stats, len(graded), graded)
        times["generate"] += t1 - t0
        times["grade"] += time.perf_counter() - t1
        rewards, weights = rewards_and_weights(graded, batch.device)
        if batch.episodes is not None:  # an environment's per-turn rewards join its episodes' return
            rewards = rewards + turn_reward_sums(batch)
        rewards = shape_rewards(rewards, batch)
        sampled_groups += len(prompts)
        batches.append(batch), graded_all.append(graded), stats_all.append(stats)
        rewards_all.append(rewards), weights_all.append(weights)
        if dynamic_rounds == 0:
            break
        kept_groups += int(informative_groups(rewards, batch.group_size).sum())
        if kept_groups >= wanted:
            break
    batch = concat_batches(batches, pad_id)
    graded = [g for gs in graded_all for g in gs]
    rewards, weights = torch.cat(rewards_all), torch.cat(weights_all)
    if dynamic_rounds > 0:
        keep = informative_groups(rewards, batch.group_size).nonzero().squeeze(-1)[:wanted]
        if len(keep) == 0:  # nothing informative at all: train on the first batch (zero advantages)
            keep = torch.arange(wanted, device=rewards.device)
        rows = (keep[:, None] * batch.group_size + torch.arange(batch.group_size, device=rewards.device)).reshape(-1)
        batch, graded = batch.rows(rows), [graded[i] for i in rows.tolist()]
        rewards, weights = rewards[rows], weights[rows]
    return StepData(batch, graded, _merge_stats(stats_all), rewards, weights, sampled_groups, dict(times))
