"""Rollout workers on Ray: each holds the base model, the adapter of a known version, and the graders.

A worker is a Ray actor built from the run's config. It loads the base model once and attaches an
adapter of the same LoRA shape; after every optimizer step the learner sends it only the adapter's
tensors (`adapter_tensors`, a few MB on the embedded model: `adapter_bytes`), which it copies in and
tags with the policy version. `rollout(request)` samples whole prompt groups through the same
`HFBackend` (or vLLM) the in-process loop uses, grades them where they were sampled (so code
graders' sandboxes and judge calls run on the cluster), and returns plain data: the `RolloutBatch`
(on the CPU, with the version that sampled it), the grades, and the generator's end state.

Ray is imported by the caller (rftkit.train.pipeline); this module imports nothing from it, so the
class is testable in process and is made an actor with `ray.remote(RolloutWorker)`.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rftkit.config import RFTConfig
from rftkit.data import Example
from rftkit.graders.base import BatchContext
from rftkit.graders.combine import GradedCompletion, GradingStats, grade_all
from rftkit.types import RolloutBatch, SamplingSettings


def adapter_tensors(policy) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) tensors by parameter name, detached on the CPU: all that crosses to the workers."""
    return {name: param.detach().to("cpu", copy=True) for name, param in policy.named_parameters()
            if param.requires_grad}


def adapter_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


@dataclass
class RolloutRequest:
    request_id: int  # one share of one data batch; a request issued again keeps its id, seed and prompts
    examples: list[Example]  # [B'] whole prompt groups: each gets settings.num_generations completions
    settings: SamplingSettings
    seed: int | None = None  # sample from a fresh generator seeded with this, or
    generator_state: torch.Tensor | None = None  # continue this generator (the learner's own stream)
    step: int = 0  # the training step the batch is for, and train.steps: what TRL-style graders see
    max_steps: int = 0


@dataclass
class RolloutResult:
    request_id: int
    batch: RolloutBatch  # [N' rows] on the CPU; policy_version: the adapter version that sampled it
    graded: list[GradedCompletion]  # [N'] graded in the worker
    stats: GradingStats
    generator_state: torch.Tensor  # the generator after sampling (the learner continues from it)
    worker: int
    times: dict[str, float]  # generate, grade: seconds inside the worker; cpu: CPU seconds of the worker process


def _quiet_libraries() -> None:
    """What `rft`'s main does for the learner: no per-load progress bars or deprecation chatter from each worker."""
    import logging
    import warnings

    for noisy in ("transformers", "peft", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class RolloutWorker:
    """One rollout + grading worker (a Ray actor: `ray.remote(RolloutWorker)`)."""

    def __init__(self, config: RFTConfig, index: int, threads: int):
        from rftkit.graders import build_graders
        from rftkit.models.loading import attach_lora, load_base_model, load_tokenizer, resolve_device
        from rftkit.rollout import build_backend
        from rftkit.train.process import set_threads

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _quiet_libraries()
        self.index, self.threads = index, set_threads(threads)
        self.device = resolve_device(config.model.device)
        self.tokenizer = load_tokenizer(config.model)
        self.policy = attach_lora(load_base_model(config.model, self.device), config.lora)
        self.params = {name: p for name, p in self.policy.named_parameters() if p.requires_grad}
        self.graders = build_graders(config.graders)
        self.backend = build_backend(config, Path(tempfile.mkdtemp(prefix=f"rftkit-worker-{index}-")))
        self.version = -1  # no adapter received yet: a rollout before set_adapter is refused

    def info(self) -> dict:
        """Where this worker runs (tests read the node; logs name it)."""
        import ray

        return {"index": self.index, "pid": os.getpid(), "host": socket.gethostname(), "device": str(self.device),
                "threads": self.threads, "node": ray.get_runtime_context().get_node_id()}

    @torch.no_grad()
    def set_adapter(self, tensors: dict[str, torch.Tensor], version: int) -> int:
        if tensors.keys() != self.params.keys():
            missing = sorted(self.params.keys() - tensors.keys())[:3]
            raise ValueError(f"adapter tensors do not match this worker's adapter (missing e.g. {missing}); "
                             "the learner and the workers must use the same model and lora: settings")
        for name, value in tensors.items():
            self.params[name].copy_(value)
        self.version = version
        return version

    def rollout(self, request: RolloutRequest) -> RolloutResult:
        if self.version < 0:
            raise RuntimeError(f"worker {self.index}: rollout before any adapter was sent")
        generator = torch.Generator(self.device)
        if request.generator_state is not None:
            generator.set_state(request.generator_state)
        else:
            generator.manual_seed(request.seed)
        started, cpu = time.perf_counter(), time.process_time()
        batch = self.backend.generate(self.policy, self.tokenizer, request.examples, request.settings, generator,
                                      policy_version=self.version)
        sampled = time.perf_counter()
        ids, mask = batch.completion_ids.cpu(), batch.loss_mask.cpu().bool()  # as train.collect.grading_context
        context = BatchContext([row[keep].tolist() for row, keep in zip(ids, mask)], request.step, request.max_steps)
        graded, stats = grade_all(self.graders, batch.examples, batch.completions, context)
        times = {"generate": sampled - started, "grade": time.perf_counter() - sampled,
                 "cpu": time.process_time() - cpu}  # CPU seconds this process got: below the wall time, it was starved
        batch = replace(batch.to("cpu"), policy_version=self.version)
        return RolloutResult(request.request_id, batch, graded, stats, generator.get_state(), self.index, times)
