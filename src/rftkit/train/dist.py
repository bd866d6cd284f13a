"""Several learner processes (torchrun): ranks, sums over ranks, and who writes the run directory.

`torchrun --nproc_per_node N -m rftkit.cli train CONFIG` (or `rft train CONFIG --nproc N`) starts N
ranks. Each samples and grades its own shard of every step's prompts (whole groups, so group-relative
advantages need nothing from other ranks), and the update sums the loss denominators and the LoRA
gradients over ranks with one all-reduce each: N ranks with B/N prompts each make the update one
process makes with all B (tests/train/test_dist.py). The parameters are never wrapped in
DistributedDataParallel, whose hooks would switch the fused training forward off; the all-reduce
is ours, over the flattened gradients. Rank 0 alone writes metrics, samples and checkpoints.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch

# A collective that waits longer than this means a rank is gone: the job stops with that message
# instead of hanging (torchrun also stops the whole group when one rank exits with an error).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


class Collective:
    """Sums over the learner's ranks. This base class is the single-process case: every sum is the identity."""

    rank, world_size = 0, 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        return None

    def gather(self, item: Any) -> list[Any]:
        """Every rank's `item`, in rank order (a list of one here)."""
        return [item]

    def shard(self, items: list) -> list:
        """This rank's contiguous share of `items` (all of them here)."""
        return items

    def barrier(self) -> None:
        return None


LOCAL = Collective()


class TorchDistributed(Collective):
    """The process group torchrun set up (gloo on CPU, nccl on CUDA)."""

    def __init__(self, rank: int, world_size: int, device: torch.device):
        self.rank, self.world_size = rank, world_size
        self.device = device  # where collectives run: the rank's GPU under nccl, the CPU under gloo

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.to(self.device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(tensor.device)

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])  # one all-reduce for the whole adapter
        flat = flat.to(self.device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = flat.to(grads[0].device)
        start = 0
        for param, grad in zip(params, grads):
            count = grad.numel()
            param.grad = flat[start:start + count].view_as(grad)
            start += count

    def gather(self, item: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, item)
        return out

    def shard(self, items: list) -> list:
        if len(items) % self.world_size:
            raise ValueError(f"train.batch_size ({len(items)}) must be a multiple of the number of ranks "
                             f"({self.world_size}) so that every rank gets whole prompt groups")
        size = len(items) // self.world_size
        return items[self.rank * size:(self.rank + 1) * size]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_collective(device: torch.device) -> Collective:
    """The process group when torchrun started this process with WORLD_SIZE > 1, else LOCAL."""
    if not launched_by_torchrun():
        return LOCAL
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return TorchDistributed(dist.get_rank(), dist.get_world_size(),
                            device if dist.get_backend() == "nccl" else torch.device("cpu"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def close_collective(collective: Collective) -> None:
    if isinstance(collective, TorchDistributed):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
