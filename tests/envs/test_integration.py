"""Two steps of GRPO, RLOO, DAPO and PPO over multi-turn trajectories on the embedded model: the LoRA adapter
moves, the base weights stay bit-identical, and the run directory shows whole trajectories."""

import json

import pytest
import torch

from rftkit.config import parse_config
from rftkit.eval.validate import load_policy
from rftkit.logging.report import build_report, trajectory
from rftkit.models.loading import load_base_model
from rftkit.train.loop import setup, train
from tests.conftest import tiny_config_dict

ENV = {"name": "countdown_feedback", "max_turns": 2, "max_episode_tokens": 60}
OVERRIDES = {"grpo": {}, "rloo": {}, "dapo": {"dapo__overlong_buffer": 4},
             "ppo": {"ppo__adaptive_kl": True, "ppo__kl_in": "reward"}}


@pytest.mark.parametrize("algorithm", sorted(OVERRIDES))
def test_two_steps_over_trajectories_change_lora_only(tmp_path, algorithm):
    raw = tiny_config_dict(tmp_path, algorithm=algorithm, env=dict(ENV), **OVERRIDES[algorithm])
    raw["graders"] = [{"name": "solved", "type": "environment"}, {"name": "format", "type": "countdown_format",
                                                                   "weight": 0.1}]
    raw["accuracy_grader"] = "solved"
    config = parse_config(raw)
    base_before = {k: v.clone() for k, v in load_base_model(config.model).state_dict().items()}
    probe = setup(config, tmp_path / "probe", resume=False)
    lora_before = {n: p.detach().clone() for n, p in probe.learner.policy.named_parameters() if "lora_" in n}
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 2
    trained, _ = load_policy(config, tmp_path / "run" / "checkpoints" / "step-2")
    lora_after = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    assert any(not torch.equal(lora_before[n], lora_after[n]) for n in lora_before)
    base_after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                  for k, v in trained.state_dict().items() if "lora_" not in k}
    for name, tensor in base_before.items():
        assert torch.equal(tensor, base_after[name]), name
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"val/accuracy_first_turn", "val/turns"} <= steps[0].keys()
    assert all(step["loss/total"] == step["loss/total"] for step in steps[1:])  # no NaN
    assert {"turns/mean", "episodes/max_turns", "len/environment"} <= steps[1].keys()
    assert steps[1]["turns/mean"] > 1.0  # some episodes did take a second turn
    if algorithm == "ppo":
        assert {"loss/value", "value/mean"} <= steps[1].keys()
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    for sample in samples:  # the whole trajectory: the prompt, then model and environment turns
        roles = [m["role"] for m in sample["messages"]]
        assert roles[0] == "user" and roles[1] == "assistant" and sample["finish"] and sample["model_turns"] >= 1
        assert sample["messages"][-1]["content"] == sample["completion"]
        assert [t["role"] for t in trajectory(sample)] == roles  # what rft report shows
    assert "accuracy_first_turn" in summary["after"]
    if algorithm == "grpo":
        assert build_report(tmp_path / "run").is_file()


def test_ppo_advantages_flow_through_environment_tokens():
    """GAE over a multi-turn row runs over its model tokens as one sequence: the score at the end reaches
    the first turn (with gamma = lam = 1 and zero values every model token's advantage is the score)."""
    from rftkit.algorithms.ppo import gae, kl_shaped_rewards, pack_masked, unpack_masked

    action = torch.tensor([[1, 1, 0, 0, 1, 1, 0], [1, 0, 0, 1, 0, 0, 0]])
    packed = pack_masked(action.float(), action)
    assert packed.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    rewards = kl_shaped_rewards(torch.tensor([1.0, 0.5]), pack_masked(torch.zeros(2, 7), action), None,
                                pack_masked(action, action), 0.0)
    advantages, _ = gae(rewards, torch.zeros_like(rewards), pack_masked(action, action), 1.0, 1.0)
    assert unpack_masked(advantages, action).tolist() == [[1, 1, 0, 0, 1, 1, 0], [0.5, 0, 0, 0.5, 0, 0, 0]]
