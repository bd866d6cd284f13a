"""Full-weight fine-tuning (lora: null): every weight trains, a frozen copy of the base is the reference
only when the algorithm reads one, checkpoints are whole transformers models, and resume is exact."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rftkit.config import ConfigError, parse_config
from rftkit.eval.validate import load_policy
from rftkit.models.loading import load_base_model
from rftkit.train.loop import _train, setup, train
from tests.conftest import tiny_config_dict


def full_weight(tmp_path, **overrides):
    return parse_config(tiny_config_dict(tmp_path, lora=None, train__learning_rate=1e-3, **overrides))


def metric_lines(run_dir):
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algorithm,extra", [("grpo", {"grpo__beta": 0.05}), ("online_dpo", {"train__batch_size": 4})])
def test_two_steps_move_every_weight_and_not_the_reference(tmp_path, algorithm, extra):
    config = full_weight(tmp_path, algorithm=algorithm, **extra)
    base = {k: v.clone() for k, v in load_base_model(config.model).state_dict().items()}
    run = setup(config, tmp_path / "run", resume=False)
    assert run.reference is not None and run.reference is not run.learner.policy
    assert not any(p.requires_grad for p in run.reference.parameters())
    assert len(run.learner.params) == len(list(run.learner.policy.parameters()))  # every weight trains
    summary = _train(run, progress=False)
    assert summary["steps"] == 2
    after = run.learner.policy.state_dict()
    moved = [name for name in base if not torch.equal(base[name], after[name])]
    assert len(moved) == len(base), sorted(set(base) - set(moved))  # each tensor of the model changed
    for name, tensor in run.reference.state_dict().items():
        assert torch.equal(tensor, base[name]), name  # the reference stays the base, bit for bit
    step = run.run_dir / "checkpoints" / "step-2"
    assert (step / "config.json").is_file() and (step / "model.safetensors").is_file()
    assert not (step / "adapter_config.json").exists()
    saved = AutoModelForCausalLM.from_pretrained(step).state_dict()  # transformers' own format
    for name, tensor in after.items():
        assert torch.equal(saved[name], tensor), name
    reloaded, tokenizer = load_policy(config, step)  # what `rft eval --adapter step-2` loads
    ids = torch.tensor([tokenizer.encode("Using the numbers [1, 2, 3], make 6.")])
    assert torch.equal(reloaded(input_ids=ids).logits, run.learner.policy(input_ids=ids).logits)


def test_no_reference_copy_without_a_reference_term(tmp_path):
    run = setup(full_weight(tmp_path), tmp_path / "run", resume=False)  # grpo, beta 0
    assert run.reference is None


def test_resume_equals_the_uninterrupted_run_bit_for_bit(tmp_path):
    full = full_weight(tmp_path, grpo__beta=0.05, train__steps=3)
    train(full, tmp_path / "full", progress=False)
    train(full_weight(tmp_path, grpo__beta=0.05, train__steps=1), tmp_path / "cut", progress=False)
    train(full, tmp_path / "cut", resume=True, progress=False)
    assert metric_lines(tmp_path / "cut") == metric_lines(tmp_path / "full")
    a = (tmp_path / "full" / "checkpoints" / "step-3" / "model.safetensors").read_bytes()
    b = (tmp_path / "cut" / "checkpoints" / "step-3" / "model.safetensors").read_bytes()
    assert a == b


@pytest.mark.parametrize("overrides,key", [
    ({"algorithm": "ppo", "ppo__value_model": "separate"}, "ppo.value_model"),
    ({"train__fused_forward": "on"}, "train.fused_forward"),
    ({"rollout__backend": "vllm"}, "rollout.backend"),
    ({"sft_warmup": {"steps": 1}}, "sft_warmup"),
    ({"distributed": {"workers": 1}}, "distributed"),
])
def test_what_needs_an_adapter_is_refused_by_name(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=f"{key}: .* not supported with lora: null"):
        parse_config(tiny_config_dict(tmp_path, lora=None, **overrides), "x.yaml")
