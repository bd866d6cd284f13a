"""Process-level set-up shared by the verbs: thread count, seeding, and the optimizer."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_threads(threads: int | None) -> int:
    """One intra-op thread per core by default: oversubscription makes small CPU matmuls slower. Under
    torchrun the cores are split between the node's ranks (LOCAL_WORLD_SIZE)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    count = threads or max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(count)
    return count


def seed_everything(seed: int, device: torch.device | str = "cpu", sampling_offset: int = 0) -> torch.Generator:
    """Seed python, numpy and torch; return the generator rollouts sample from, on `device` (a CUDA
    sampler needs a CUDA generator). `sampling_offset` separates the sampling streams of torchrun ranks
    (rank 0: 0, the single-process stream); everything else is seeded alike on every rank, so that
    every rank starts from the same LoRA initialisation."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator(device).manual_seed(seed + sampling_offset)


def adamw(params, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW for the LoRA parameters (a list, or param groups) with the fused kernel: one pass over each
    tensor instead of a multi-tensor op per update rule (0.5 ms a step instead of 1.7 on the example's
    adapter; the same update to within float rounding)."""
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=True)
