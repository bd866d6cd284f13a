"""Process-level set-up shared by the verbs: thread count and seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_threads(threads: int | None) -> int:
    """One intra-op thread per core by default: oversubscription makes small CPU matmuls slower."""
    count = threads or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    torch.set_num_threads(count)
    return count


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return the generator rollouts sample from."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
