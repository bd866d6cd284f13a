"""torchrun: N ranks with B/N prompts each make the update one process makes with all B prompts.

The ranks run under the real launcher (`python -m torch.distributed.run`, gloo on the CPU); the
oracle is the same update in this process on the whole batch.
"""

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from rftkit.algorithms.grpo import group_relative_advantages
from rftkit.config import DataConfig, ModelConfig
from rftkit.models.loading import load_tokenizer
from rftkit.rollout import generate_rollouts
from rftkit.tasks import load_examples
from rftkit.train.dist import LOCAL, TorchDistributed, launched_by_torchrun
from rftkit.train.update import UpdateTargets, update_policy
from rftkit.types import SamplingSettings
from tests.train.dist_update_worker import build_learner, settings

WORKER = Path(__file__).with_name("dist_update_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def torchrun(nproc: int, *args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=environment)


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """4 prompts x 4 completions with ragged lengths and one masked completion (weight 0)."""
    torch.set_num_threads(1)
    learner = build_learner(seed=3)
    tokenizer = load_tokenizer(ModelConfig())
    examples, _ = load_examples(DataConfig(train_size=8, val_size=2))
    batch = generate_rollouts(learner.policy, tokenizer, examples[:4], SamplingSettings(4, 24, 1.0),
                              torch.Generator().manual_seed(1))
    assert batch.completion_lengths.min() < batch.completion_lengths.max()
    rewards = torch.rand(16, generator=torch.Generator().manual_seed(2))
    weights = torch.ones(16)
    weights[5] = 0.0
    return batch, group_relative_advantages(rewards, 4), weights


@pytest.mark.parametrize("aggregation", ["sequence", "token", "constant"])
def test_two_ranks_with_half_the_prompts_make_the_one_process_update(rollouts, aggregation, tmp_path):
    batch, advantages, weights = rollouts
    torch.save({"batch": batch, "advantages": advantages, "weights": weights, "seed": 3,
                "aggregation": aggregation}, tmp_path / "batch.pt")
    result = torchrun(2, str(WORKER), str(tmp_path / "batch.pt"), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = torch.load(tmp_path / "rank0.pt", weights_only=False)

    learner = build_learner(seed=3)
    before = {n: p.detach().clone() for n, p in learner.policy.named_parameters() if p.requires_grad}
    stats = update_policy(learner, batch, UpdateTargets(advantages, None), weights, settings(aggregation))
    for name, param in learner.policy.named_parameters():
        if param.requires_grad:
            assert not torch.equal(param.detach(), before[name]), f"{name} did not move"
            torch.testing.assert_close(ranks["params"][name], param.detach(), atol=1e-6, rtol=1e-5)
    for key, value in asdict(stats).items():
        assert ranks["stats"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_single_process_collective_is_the_identity():
    assert not launched_by_torchrun() and LOCAL.world_size == 1 and LOCAL.is_main
    tensor = torch.tensor([1.0, 2.0])
    assert LOCAL.sum(tensor) is tensor and LOCAL.gather("x") == ["x"] and LOCAL.shard([1, 2, 3]) == [1, 2, 3]


def test_shards_are_whole_prompt_groups_or_refused():
    ranks = [TorchDistributed(r, 2, torch.device("cpu")) for r in range(2)]
    assert [c.shard(list(range(8))) for c in ranks] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="multiple of the number of ranks"):
        ranks[0].shard(list(range(5)))
