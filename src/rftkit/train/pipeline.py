"""The rollout engine on Ray: workers sample and grade, the learner updates; synchronous or k steps ahead.

`collect_step` hands the loop the same `StepData` the in-process `collect` makes (it *is* `collect`,
with sampling and grading done by the workers), so the loop does not change (DESIGN 13).

- **Shares.** Each data batch of `train.batch_size` prompts is split into one contiguous share of
  whole groups per worker; share i goes to worker i. A share samples from a generator seeded from
  (train.seed, where the batch ends in the data stream, i), so a share issued again after a fault
  samples the same completions from the same policy. With one share and k = 0 the request carries
  the learner's own generator state instead and returns its end state: the learner's sampling
  stream, and so exactly the in-process run (`tests/train/test_ray.py`).
- **Weights.** When the policy version (optimizer steps taken) moves, the learner puts the adapter's
  tensors into Ray's object store once and every worker copies them in (`set_adapter`); Ray runs an
  actor's calls in order, so a share issued after that call samples with the new adapter. Nothing
  else about the model ever crosses the network.
- **Bounded staleness.** With `max_staleness: k` the shares of the next k data batches are issued
  as soon as a batch is taken, so they sample while the learner updates. A batch consumed at policy
  version v that was sampled at version u has staleness v - u <= k by construction; a share older
  than k (only possible if a worker lagged) is dropped, counted in `pipeline/dropped_groups`, and
  sampled again. Per-sample staleness is logged as counts `pipeline/samples_staleness_<s>`.
- **Faults.** A worker that dies (its calls raise `RayActorError`) or exceeds `rollout_timeout` is
  killed, started again, sent the current adapter, and given its unfinished shares again, with the
  same ids and seeds; each share's result is taken once, so no group is lost or counted twice.
  Restarts and timeouts are logged and counted; past `max_restarts` the run stops with the cause.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter, deque
from dataclasses import dataclass, field, replace

import torch

from rftkit.algorithms.offpolicy import truncated_is_advantages
from rftkit.config import RFTConfig
from rftkit.data import Example
from rftkit.rollout.ray_workers import RolloutRequest, RolloutResult, RolloutWorker, adapter_bytes, adapter_tensors
from rftkit.train.collect import StepData, _merge_stats, collect, concat_batches
from rftkit.types import RolloutBatch, SamplingSettings

log = logging.getLogger("rftkit")


class WorkerError(RuntimeError):
    """A rollout worker could not start, kept failing, or hung past its timeout; the message says which and why."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise WorkerError("distributed: needs Ray, which is not installed: `pip install rftkit[ray]` (or "
                          "`pip install -e .[ray]`), or remove the distributed: section to run in one "
                          "process") from None
    return ray


def connect(address: str | None) -> bool:
    """Start a local Ray runtime (address None) or join a cluster; True when this call started or joined it
    (and `close` should shut it down), False when the process was already connected (tests share one)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        ray.init(num_cpus=cores, include_dashboard=False, configure_logging=False, log_to_driver=True)
    else:
        ray.init(address=address, configure_logging=False)
    return True


def share_seed(seed: int, position: tuple[int, int], share: int) -> int:
    """A generator seed for one share of the data batch that ends at `position` (epoch, cursor)."""
    digest = hashlib.sha256(f"rftkit-share-{seed}-{position[0]}-{position[1]}-{share}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def split(items: list, parts: int) -> list[list]:
    """`items` in `parts` contiguous shares whose sizes differ by at most one (no empty share)."""
    parts = min(parts, len(items))
    base, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (i < extra)
        out.append(items[start:end])
        start = end
    return out


@dataclass
class Share:
    request: RolloutRequest
    worker: int
    ref: object = None  # the ObjectRef of the worker's current call
    result: RolloutResult | None = None


@dataclass
class PendingBatch:
    examples: list[Example]  # the data batch, as next_prompts will return it
    after: tuple[int, int]  # (data_epoch, data_cursor) where the next batch starts: names it in the stream
    shares: list[Share] = field(default_factory=list)


class RayPipeline:
    """Rollout workers and the queue of issued batches; the loop calls `collect_step`, `correct` and `close`."""

    def __init__(self, config: RFTConfig, device: torch.device):
        self.ray = import_ray()
        self.config, self.cfg, self.device = config, config.distributed, device
        self.owns_runtime = connect(self.cfg.address)
        self.k = self.cfg.max_staleness
        self.version, self.adapter_ref, self.adapter_size = -1, None, 0
        self.pending: deque[PendingBatch] = deque()
        self.next_request = 0
        self.restarts, self.timeouts = 0, 0
        self.step_counts: Counter = Counter()  # this step's pipeline/* counts
        self.staleness: Counter = Counter()  # this step's samples by staleness
        self.worker_times: Counter = Counter()  # this step's slowest share: seconds in a worker
        self.last: tuple[RolloutBatch, list, object] | None = None
        self._check_resources()
        self.actor_class = self.ray.remote(RolloutWorker)
        self.workers = [self._spawn(i) for i in range(self.cfg.workers)]
        try:
            self.info = [self._wait_started(i) for i in range(self.cfg.workers)]
        except BaseException:
            self.close()  # the workers that did start give their CPUs back
            raise
        self.worker_device = torch.device(self.info[0]["device"])
        nodes = len({info["node"] for info in self.info})
        log.info("ray: %d rollout workers on %d node(s), %s, max_staleness %d", len(self.workers), nodes,
                 self.worker_device, self.k)

    # -- workers -------------------------------------------------------------------------------------------
    def _check_resources(self) -> None:
        need = {"CPU": self.cfg.workers * self.cfg.cpus_per_worker, "GPU": self.cfg.workers * self.cfg.gpus_per_worker}
        have = self.ray.cluster_resources()
        for kind, amount in need.items():
            if amount > have.get(kind, 0.0) + 1e-9:
                each = self.cfg.cpus_per_worker if kind == "CPU" else self.cfg.gpus_per_worker
                raise WorkerError(f"distributed.workers: {self.cfg.workers} workers x {each:g} "
                                  f"{kind} need {amount:g} {kind}s but the Ray cluster has "
                                  f"{have.get(kind, 0.0):g} in all; lower distributed.workers or "
                                  f"distributed.{kind.lower()}s_per_worker, or add nodes (`ray status` shows them)")

    def _spawn(self, index: int):
        # Ray's own actor restarts stay off: a restarted actor must get the adapter before any rollout.
        options = {"num_cpus": self.cfg.cpus_per_worker, "num_gpus": self.cfg.gpus_per_worker, "max_restarts": 0}
        return self.actor_class.options(**options).remote(self.config, index, self.cfg.threads_per_worker)

    def _wait_started(self, index: int) -> dict:
        ref = self.workers[index].info.remote()
        ready, _ = self.ray.wait([ref], timeout=self.cfg.start_timeout)
        if not ready:
            free = self.ray.available_resources()
            self.ray.kill(self.workers[index], no_restart=True)
            raise WorkerError(f"rollout worker {index} did not start within distributed.start_timeout = "
                              f"{self.cfg.start_timeout:g} s: it needs {self.cfg.cpus_per_worker:g} CPU and "
                              f"{self.cfg.gpus_per_worker:g} GPU, and the cluster has free "
                              f"CPU {free.get('CPU', 0.0):g}, GPU {free.get('GPU', 0.0):g} (other jobs may hold "
                              "them; `ray status`)")
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            raise WorkerError(f"rollout worker {index} could not start: {_cause(exc)}") from None

    def _restart(self, index: int, why: str) -> None:
        self.restarts += 1
        self.step_counts["pipeline/restarts"] += 1
        if self.restarts > self.cfg.max_restarts:
            raise WorkerError(f"rollout worker {index} failed ({why}) and the run has used its "
                              f"distributed.max_restarts = {self.cfg.max_restarts} restarts; stopping")
        log.warning("ray: rollout worker %d %s; restarting it and issuing its prompts again", index, why)
        self.ray.kill(self.workers[index], no_restart=True)
        self.workers[index] = self._spawn(index)
        self.info[index] = self._wait_started(index)
        if self.adapter_ref is not None:
            self.workers[index].set_adapter.remote(self.adapter_ref, self.version)
        for batch in self.pending:  # its unfinished shares, in the order they were first issued
            for share in batch.shares:
                if share.worker == index and share.result is None:
                    share.ref = self.workers[index].rollout.remote(share.request)

    # -- weights and requests ------------------------------------------------------------------------------
    def publish(self, policy, version: int) -> None:
        """Send the adapter of policy `version` to every worker (once per version)."""
        if version == self.version:
            return
        tensors = adapter_tensors(policy)
        self.adapter_ref, self.version, self.adapter_size = self.ray.put(tensors), version, adapter_bytes(tensors)
        for worker in self.workers:
            worker.set_adapter.remote(self.adapter_ref, version)

    def _issue(self, batch: PendingBatch, settings: SamplingSettings, generator: torch.Generator | None,
               step: int) -> None:
        chained = generator is not None
        for i, examples in enumerate(split(batch.examples, len(self.workers))):
            request = RolloutRequest(self.next_request, examples, settings,
                                     seed=None if chained else share_seed(self.config.train.seed, batch.after, i),
                                     generator_state=generator.get_state() if chained else None, step=step,
                                     max_steps=self.config.train.steps)
            self.next_request += 1
            share = Share(request, worker=i)
            share.ref = self.workers[i].rollout.remote(request)
            batch.shares.append(share)

    def _wait(self, batch: PendingBatch) -> list[RolloutResult]:
        for share in batch.shares:
            while share.result is None:
                ready, _ = self.ray.wait([share.ref], timeout=self.cfg.rollout_timeout)
                if not ready:
                    self.timeouts += 1
                    self.step_counts["pipeline/timeouts"] += 1
                    log.warning("ray: rollout request %d (%d prompts) on worker %d took longer than "
                                "distributed.rollout_timeout = %g s: the worker or a grader hangs",
                                share.request.request_id, len(share.request.examples), share.worker,
                                self.cfg.rollout_timeout)
                    self._restart(share.worker, f"hung past rollout_timeout = {self.cfg.rollout_timeout:g} s on "
                                  f"request {share.request.request_id}")
                    continue
                try:
                    share.result = self.ray.get(share.ref)
                except self.ray.exceptions.RayActorError as exc:  # the worker process is gone
                    self._restart(share.worker, f"died ({_cause(exc)})")
                except self.ray.exceptions.RayTaskError as exc:  # rollout raised: a bug or a real failure
                    raise WorkerError(f"rollout worker {share.worker} failed on request "
                                      f"{share.request.request_id}: {_cause(exc)}") from None
        return [share.result for share in batch.shares]

    # -- the step ------------------------------------------------------------------------------------------
    def collect_step(self, run) -> StepData:
        """One step's StepData, as `rftkit.train.loop.collect_step` makes it in process."""
        from rftkit.train.setup import next_prompts

        cfg = run.config
        settings = SamplingSettings(cfg.grpo.num_generations, cfg.train.max_completion_length, cfg.train.temperature,
                                    cfg.train.top_p, False, cfg.model.chat_template, cfg.data.system_prompt)
        self.publish(run.learner.policy, run.state.step)
        self.step_counts, self.staleness, self.worker_times = Counter(), Counter(), Counter()
        shape = lambda rewards, batch: run.algorithm.shape_rewards(rewards, batch, cfg)  # noqa: E731
        rounds = cfg.dapo.max_sampling_rounds if run.algorithm.dynamic_sampling else 0
        data = collect(lambda prompts: self._sample(run, prompts, settings), lambda: next_prompts(run), run.graders,
                       run.tokenizer.pad_token_id, shape, rounds, grade=self._grades, step=run.state.step,
                       max_steps=cfg.train.steps)
        data.metrics = self._metrics()
        return data

    def _sample(self, run, prompts: list[Example], settings: SamplingSettings) -> RolloutBatch:
        from rftkit.train.setup import next_prompts

        state = run.state
        after = (state.data_epoch, state.data_cursor)
        chain = self.k == 0 and len(self.workers) == 1 and self.worker_device.type == run.generator.device.type
        if self.pending and not _same(self.pending[0].examples, prompts):
            for stale in self.pending:  # the data stream moved on without them (should not happen): count them
                self.step_counts["pipeline/dropped_groups"] += len(stale.examples)
            self.pending.clear()
        if not self.pending:
            head = PendingBatch(list(prompts), after)
            self._issue(head, settings, run.generator if chain else None, state.step)
            self.pending.append(head)
        # Issue the next k batches of the data stream now, so they sample while this one updates.
        epoch, cursor = self.pending[-1].after
        while len(self.pending) < 1 + self.k:
            saved = (state.data_epoch, state.data_cursor)
            state.data_epoch, state.data_cursor = epoch, cursor
            ahead = next_prompts(run)
            ahead_batch = PendingBatch(ahead, (state.data_epoch, state.data_cursor))
            state.data_epoch, state.data_cursor = saved
            self._issue(ahead_batch, settings, None, state.step + len(self.pending))
            self.pending.append(ahead_batch)
            epoch, cursor = ahead_batch.after
        head = self.pending[0]
        results = self._wait(head)
        while True:  # a share older than k is dropped and sampled again at the current version
            old = [s for s, r in zip(head.shares, results) if state.step - r.batch.policy_version > self.k]
            if not old:
                break
            for share in old:
                self.step_counts["pipeline/dropped_groups"] += len(share.request.examples)
                log.warning("ray: worker %d sampled request %d with policy version %d, older than max_staleness "
                            "%d allows at step %d; its %d groups are dropped and sampled again",
                            share.worker, share.request.request_id, share.result.batch.policy_version, self.k,
                            state.step, len(share.request.examples))
                worker = self.workers[share.worker]
                worker.set_adapter.remote(self.adapter_ref, self.version)  # in case it missed the update
                share.result, share.ref = None, worker.rollout.remote(share.request)
            results = self._wait(head)
        self.pending.popleft()
        if chain:
            run.generator.set_state(results[0].generator_state)
        batch = concat_batches([r.batch for r in results], run.tokenizer.pad_token_id)
        batch = batch.to(run.device)
        for r in results:
            self.staleness[state.step - r.batch.policy_version] += len(r.batch.completions)
            for key, seconds in r.times.items():
                self.worker_times[key] = max(self.worker_times[key], seconds)
        self.last = (batch, [g for r in results for g in r.graded], _merge_stats([r.stats for r in results]))
        return batch

    def _grades(self, batch: RolloutBatch):
        if self.last is None or batch is not self.last[0]:
            raise RuntimeError("pipeline: grades asked for a batch it did not just return")
        return self.last[1], self.last[2]

    def _metrics(self) -> dict[str, float]:
        samples = sum(self.staleness.values())
        stale = sum(s * count for s, count in self.staleness.items())
        metrics = {"pipeline/staleness_mean": stale / max(samples, 1), "pipeline/staleness_max": max(self.staleness),
                   "pipeline/policy_version": self.version,
                   "pipeline/adapter_bytes": self.adapter_size, "pipeline/dropped_groups": 0,
                   "pipeline/restarts": 0, "pipeline/timeouts": 0}
        metrics.update(self.step_counts)
        metrics.update({f"pipeline/samples_staleness_{s}": count for s, count in sorted(self.staleness.items())})
        metrics.update({f"time/worker_{k}": round(v, 4) for k, v in self.worker_times.items()})
        return metrics

    # -- truncated importance sampling ---------------------------------------------------------------------
    def correct(self, run, data: StepData, targets, settings):
        """With `distributed.truncated_is: C`: the ratio against the learner's own log-probs (one no-grad
        forward), each token's advantage weighted by min(pi_learner / pi_behaviour, C). Otherwise unchanged."""
        cap = self.cfg.truncated_is
        if cap is None:
            return data, targets
        learner = learner_logprobs(run.learner.policy, data.rollouts, settings)
        advantages, metrics = truncated_is_advantages(targets.advantages, learner, data.rollouts.old_logprobs,
                                                      data.rollouts.loss_mask, cap)
        rollouts = replace(data.rollouts, old_logprobs=learner)
        return (replace(data, rollouts=rollouts, metrics=data.metrics | metrics),
                replace(targets, advantages=advantages))

    def close(self) -> None:
        for worker in self.workers:
            try:
                self.ray.kill(worker, no_restart=True)
            except Exception:  # noqa: BLE001  (already gone)
                pass
        self.workers, self.pending = [], deque()
        if self.owns_runtime and self.ray.is_initialized():
            self.ray.shutdown()


@torch.no_grad()
def learner_logprobs(policy, batch: RolloutBatch, settings) -> torch.Tensor:
    """[N, T] log-probs of the batch's tokens under the learner's current policy (micro-batched, no grad)."""
    from rftkit.models.forward import token_logprobs_and_values

    out = torch.zeros_like(batch.old_logprobs)
    for s in range(0, len(batch.completions), settings.micro_batch_size):
        sl = slice(s, s + settings.micro_batch_size)
        logp, _, _ = token_logprobs_and_values(policy, None, batch.prompt_ids[sl], batch.prompt_mask[sl],
                                               batch.completion_ids[sl], batch.completion_mask[sl],
                                               settings.temperature, fused_forward=settings.fused_forward)
        out[sl, :logp.shape[1]] = logp
    return out


def _same(a: list[Example], b: list[Example]) -> bool:
    return len(a) == len(b) and all(x.id == y.id and x.prompt == y.prompt for x, y in zip(a, b))


def _cause(exc: BaseException) -> str:
    """The last meaningful line of a Ray error (the worker's own exception, not Ray's wrapping)."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, type(exc)):
        text = f"{type(cause).__name__}: {cause}"
    else:
        text = str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~")) and "Traceback" not in line:
            return line[:500]
    return lines[-1][:500] if lines else type(exc).__name__
