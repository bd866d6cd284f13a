"""Two steps of every algorithm on the embedded tiny model: the LoRA adapter moves, the base stays bit-identical."""

import json

import pytest
import torch

from rftkit.config import parse_config
from rftkit.eval.validate import load_policy
from rftkit.models.loading import load_base_model
from rftkit.algorithms.registry import ALGORITHMS
from rftkit.train.loop import setup, train
from tests.conftest import tiny_config_dict

OVERRIDES = {
    "grpo": {},
    "dr_grpo": {},
    "dapo": {"dapo__overlong_buffer": 4},
    "rloo": {},
    "ppo": {"ppo__adaptive_kl": True, "ppo__kl_in": "loss"},
    "gspo": {"grpo__beta": 0.05},
    "cispo": {},
    "online_dpo": {"train__batch_size": 4},
}


def test_every_registered_algorithm_is_covered():
    assert set(OVERRIDES) == set(ALGORITHMS)


@pytest.mark.parametrize("algorithm", sorted(OVERRIDES))
def test_two_steps_change_lora_only(tmp_path, algorithm):
    config = parse_config(tiny_config_dict(tmp_path, algorithm=algorithm, **OVERRIDES[algorithm]))
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
    steps = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][1:]
    assert all(step["loss/total"] == step["loss/total"] for step in steps)  # no NaN
    if algorithm == "ppo":
        assert {"loss/value", "kl/coef", "value/mean"} <= steps[0].keys()
        assert (tmp_path / "run" / "checkpoints" / "step-2" / "ppo_state.pt").is_file()
    if algorithm == "dapo":
        assert all(step["sampling/groups_sampled"] >= 2 for step in steps)
    if algorithm == "online_dpo":
        assert all(0 < step["dpo/pair_frac"] <= 1 for step in steps)


def test_ppo_resume_restores_the_value_head(tmp_path):
    full = parse_config(tiny_config_dict(tmp_path, algorithm="ppo", train__steps=2))
    train(full, tmp_path / "full", progress=False)
    train(parse_config(tiny_config_dict(tmp_path, algorithm="ppo", train__steps=1)), tmp_path / "cut", progress=False)
    train(full, tmp_path / "cut", resume=True, progress=False)
    def lines(name):
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
                for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert lines("cut") == lines("full")


def test_a_grpo_key_the_algorithm_fixes_is_an_error(tmp_path):
    from rftkit.config import ConfigError

    raw = tiny_config_dict(tmp_path, algorithm="ppo", grpo__beta=0.1)
    with pytest.raises(ConfigError, match="grpo.beta: not used with algorithm ppo"):
        parse_config(raw, "x.yaml")


@pytest.mark.parametrize("name", ["countdown", "dr_grpo", "dapo", "rloo", "ppo", "sft_warmup", "sft", "gspo",
                                  "cispo", "online_dpo", "full_weight", "ppo_separate_value"])
def test_example_configs_load(name):
    from pathlib import Path

    from rftkit.config import load_config

    config = load_config(Path(__file__).parents[2] / "examples" / f"{name}.yaml")
    algorithm = {"countdown": "grpo", "sft_warmup": "grpo", "sft": "grpo", "full_weight": "grpo",
                 "ppo_separate_value": "ppo"}.get(name, name)
    assert config.algorithm == algorithm
    assert (config.sft_warmup is not None) == (name == "sft_warmup")
    assert (config.lora is None) == (name == "full_weight")
    assert (config.ppo.value_model == "separate") == (name == "ppo_separate_value")


def test_separate_value_model_trains_its_own_adapter_and_leaves_the_policy_alone(tmp_path):
    from peft import PeftModel

    from rftkit.train.loop import _train
    from rftkit.train.policy import VALUE_ADAPTER

    config = parse_config(tiny_config_dict(tmp_path, algorithm="ppo", ppo__value_model="separate"))
    run = setup(config, tmp_path / "run", resume=False)
    policy = run.learner.policy
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    head_before = run.learner.value_head.weight.detach().clone()
    critic = {n for n in before if f".{VALUE_ADAPTER}." in n}
    assert critic and run.learner.value_adapter == VALUE_ADAPTER
    assert all(p.requires_grad == ("lora_" in n) for n, p in policy.named_parameters())  # both adapters train
    _train(run, progress=False)
    after = dict(policy.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed & critic and changed - critic  # the critic's adapter and the policy's both moved
    assert all("lora_" in n for n in changed)  # the base did not
    assert not torch.equal(head_before, run.learner.value_head.weight)
    assert policy.active_adapter == "default"
    step = tmp_path / "run" / "checkpoints" / "step-2"
    assert (step / VALUE_ADAPTER / "adapter_model.safetensors").is_file()
    # what samples and validates is the policy's adapter alone: a reload of step-2 without the critic matches it
    reloaded = PeftModel.from_pretrained(load_base_model(config.model), str(step)).eval()
    ids = torch.tensor([run.tokenizer.encode("Using the numbers [1, 2, 3], make 6.")])
    assert torch.equal(reloaded(input_ids=ids).logits, policy(input_ids=ids).logits)


def test_separate_value_model_resumes_the_same_trajectory(tmp_path):
    def config(steps):
        return parse_config(tiny_config_dict(tmp_path, algorithm="ppo", ppo__value_model="separate",
                                             train__steps=steps))
    train(config(2), tmp_path / "full", progress=False)
    train(config(1), tmp_path / "cut", progress=False)
    train(config(2), tmp_path / "cut", resume=True, progress=False)

    def lines(name):
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
                for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert lines("cut") == lines("full")
