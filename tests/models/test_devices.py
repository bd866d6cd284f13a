"""Devices: `model.device` and `model.dtype` resolve as documented, and the kernels' reference paths
(train.fused_forward: off, checkpointed layers) compute the same update as the fused one.

This machine has no GPU: CUDA and MPS are tested for their refusal messages only; the GPU check kit
(benchmarks/gpu_check.py) runs the CUDA paths where a GPU is lent.
"""

import json

import pytest
import torch

from rftkit.algorithms.losses import LossSettings
from rftkit.config import ConfigError, DataConfig, LoraConfig, ModelConfig, parse_config
from rftkit.models.forward import token_logprobs
from rftkit.models.loading import (ModelLoadError, attach_lora, enable_gradient_checkpointing, load_base_model,
                                   load_tokenizer, lora_parameters, resolve_device, resolve_dtype)
from rftkit.rollout import generate_rollouts
from rftkit.tasks import load_examples
from rftkit.train.loop import train
from rftkit.train.setup import setup
from rftkit.train.update import Learner, UpdateSettings, update_policy
from rftkit.types import SamplingSettings, UpdateTargets
from tests.conftest import randomise_lora, tiny_config_dict


def test_auto_is_cpu_without_cuda_and_explicit_devices_resolve():
    assert not torch.cuda.is_available()  # this suite's machine; the GPU kit covers CUDA
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize("setting", ["cuda", "cuda:1", "mps"])
def test_an_unavailable_device_is_refused_by_name(setting):
    with pytest.raises(ModelLoadError, match=rf"model.device '{setting}'"):
        resolve_device(setting)


def test_a_malformed_device_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="model.device"):
        parse_config(tiny_config_dict(tmp_path, model__device="gpu"))


def test_training_on_explicit_cpu_and_auto_is_the_same_run(tmp_path):
    lines = {}
    for setting in ("cpu", "auto"):
        config = parse_config(tiny_config_dict(tmp_path / setting, model__device=setting))
        summary = train(config, tmp_path / setting / "run", progress=False)
        assert summary["device"] == "cpu"
        lines[setting] = [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
                          for line in (tmp_path / setting / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines["cpu"] == lines["auto"]


@pytest.fixture(scope="module")
def rollouts():
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(ModelConfig())
    policy = attach_lora(load_base_model(ModelConfig()), LoraConfig(r=4))
    randomise_lora(policy, seed=0, scale=0.02)
    examples, _ = load_examples(DataConfig(train_size=8, val_size=2))
    batch = generate_rollouts(policy, tokenizer, examples[:3], SamplingSettings(4, 20, 1.0),
                              torch.Generator().manual_seed(0))
    return policy, batch


def test_fused_and_reference_forward_agree(rollouts):
    policy, batch = rollouts
    args = (policy, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask, 1.0)
    fused, _ = token_logprobs(*args, fused_forward="on")
    reference, _ = token_logprobs(*args, fused_forward="off")
    torch.testing.assert_close(fused, reference, atol=2e-5, rtol=1e-5)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(batch.old_logprobs[mask], reference[mask], atol=1e-4, rtol=1e-4)  # the sampler's own


def _one_update(batch, checkpointing: bool, fused: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    policy = attach_lora(load_base_model(ModelConfig()), LoraConfig(r=4))
    randomise_lora(policy, seed=0, scale=0.02)
    calls = []
    if checkpointing:
        enable_gradient_checkpointing(policy)
        for module in policy.modules():  # count the layers that really went through the checkpoint
            if getattr(module, "gradient_checkpointing", False) and hasattr(module, "_gradient_checkpointing_func"):
                inner = module._gradient_checkpointing_func
                module._gradient_checkpointing_func = lambda *a, inner=inner, **k: calls.append(1) or inner(*a, **k)
    params = lora_parameters(policy)
    learner = Learner(policy, torch.optim.SGD(params, lr=0.5), params, gradient_checkpointing=checkpointing)
    advantages = torch.linspace(-1, 1, len(batch.completions))
    settings = UpdateSettings(LossSettings("clipped_surrogate", 0.2, None, 0.0, "sequence"), 1.0, 5, 1.0, fused)
    update_policy(learner, batch, UpdateTargets(advantages, None), torch.ones(len(batch.completions)), settings)
    assert not policy.training  # back in eval mode after the checkpointed update
    layers = policy.get_base_model().config.num_hidden_layers
    assert len(calls) == (layers * -(-len(batch.completions) // 5) if checkpointing else 0)  # per layer, micro-batch
    return {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}


def test_checkpointed_and_reference_updates_agree_with_the_fused_one(rollouts):
    _, batch = rollouts
    fused = _one_update(batch, checkpointing=False, fused="auto")
    for other in (_one_update(batch, checkpointing=False, fused="off"),
                  _one_update(batch, checkpointing=True, fused="off")):
        for name, value in fused.items():
            torch.testing.assert_close(other[name], value, atol=1e-6, rtol=1e-5)


def test_fused_forward_on_with_checkpointing_is_refused(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path, train__fused_forward="on", train__gradient_checkpointing=True))
    with pytest.raises(ConfigError, match="train.fused_forward"):
        setup(config, tmp_path / "run", resume=False)


def test_fast_decode_on_for_an_unmergeable_policy_is_refused(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path, rollout__fast_decode="on", rollout__merge_lora="off"))
    with pytest.raises(ValueError, match="rollout.fast_decode"):
        train(config, tmp_path / "run", progress=False)
