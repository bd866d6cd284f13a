"""Run by tests/train/test_dist.py under `torchrun --nproc_per_node N`: one update on this rank's shard.

argv: BATCH.pt OUT_DIR. BATCH.pt holds the whole rollout batch, its advantages and the seeds; rank r
takes prompt groups r*B/N .. (r+1)*B/N - 1 and writes its LoRA parameters after the step and the stats.
"""

import sys
from dataclasses import asdict

import torch

from rftkit.algorithms.losses import LossSettings
from rftkit.config import LoraConfig, ModelConfig
from rftkit.models.loading import attach_lora, load_base_model, lora_parameters
from rftkit.train.dist import close_collective, init_collective
from rftkit.train.update import Learner, UpdateSettings, update_policy
from rftkit.types import UpdateTargets


def build_learner(seed: int) -> Learner:
    torch.manual_seed(seed)
    policy = attach_lora(load_base_model(ModelConfig(device="cpu")), LoraConfig(r=4))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # B = 0 would make the first step's gradient of A vanish: randomise both
        for name, param in policy.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    params = lora_parameters(policy)
    # SGD: the step is linear in the gradient, so equal gradients (to float rounding) give equal weights;
    # Adam's g / sqrt(v) turns rounding noise in near-zero gradients into full-size steps.
    return Learner(policy, torch.optim.SGD(params, lr=0.5), params)


def settings(aggregation: str) -> UpdateSettings:
    return UpdateSettings(LossSettings("clipped_surrogate", 0.2, None, 0.0, aggregation, max_length=24),
                          temperature=1.0, micro_batch_size=5, max_grad_norm=1.0)


def main() -> None:
    torch.set_num_threads(1)
    payload = torch.load(sys.argv[1], weights_only=False)
    collective = init_collective(torch.device("cpu"))
    batch, advantages, weights = payload["batch"], payload["advantages"], payload["weights"]
    groups = len(batch.completions) // batch.group_size
    share = groups // collective.world_size
    rows = torch.arange(collective.rank * share * batch.group_size, (collective.rank + 1) * share * batch.group_size)
    learner = build_learner(payload["seed"])
    stats = update_policy(learner, batch.rows(rows), UpdateTargets(advantages[rows], None), weights[rows],
                          settings(payload["aggregation"]), collective)
    if collective.is_main:
        torch.save({"params": {n: p.detach() for n, p in learner.policy.named_parameters() if p.requires_grad},
                    "stats": asdict(stats)}, f"{sys.argv[2]}/rank0.pt")
    close_collective(collective)


if __name__ == "__main__":
    main()
