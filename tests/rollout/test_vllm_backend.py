"""The vLLM backend against a fake engine that follows vLLM's API.

`LLM.generate(prompts, SamplingParams, lora_request=LoRARequest(name, int_id, path))` returns
one `RequestOutput` per prompt whose `.outputs[i]` carry `.token_ids` and `.logprobs` (one
`{token_id: Logprob}` dict per generated token). The fake loads the adapter from the request's
path onto the base model and samples with it, so the tests see whether the adapter vLLM would
load is the policy's current one.
"""

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch

from rftkit.types import SamplingSettings
from rftkit.config import DataConfig, LoraConfig, ModelConfig, parse_config
from rftkit.models.loading import attach_lora, load_base_model, load_tokenizer, stop_token_ids
from rftkit.rollout import HFBackend, build_backend, vllm_backend
from rftkit.rollout.sampler import sample
from rftkit.rollout.vllm_backend import INSTALL_HINT, VllmBackend
from rftkit.tasks import load_examples
from tests.conftest import randomise_lora, tiny_config_dict


@dataclass
class SamplingParams:  # the fields of vllm.SamplingParams the backend sets
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    logprobs: int | None = None
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class FakeLLM:
    """Samples with the base model + the adapter found at `lora_request.lora_path`."""

    def __init__(self):
        self.base = load_base_model(ModelConfig())
        self.calls = []

    def generate(self, prompts, sampling_params, *, lora_request=None, use_tqdm=True):
        from peft import PeftModel

        self.calls.append((prompts, sampling_params, lora_request))
        policy = PeftModel.from_pretrained(self.base, lora_request.lora_path) if lora_request else self.base
        ids = [p["prompt_token_ids"] for p in prompts]
        out = sample(policy, ids, sampling_params.n, sampling_params.max_tokens, set(sampling_params.stop_token_ids),
                     0, temperature=sampling_params.temperature or 1.0, greedy=sampling_params.temperature == 0,
                     generator=torch.Generator().manual_seed(sampling_params.seed))
        if lora_request:
            self.base = policy.unload()  # leave the base model bare for the next request
        results = []
        for i in range(len(ids)):
            completions = []
            for g in range(sampling_params.n):
                row = i * sampling_params.n + g
                tokens = out.completion_ids[row][out.completion_mask[row].bool()].tolist()
                logprobs = [{t: Logprob(float(lp), rank=1)} for t, lp in zip(tokens, out.logprobs[row].tolist())]
                completions.append(SimpleNamespace(index=g, token_ids=tokens, logprobs=logprobs, text=""))
            results.append(SimpleNamespace(request_id=str(i), prompt_token_ids=ids[i], outputs=completions,
                                           finished=True, lora_request=lora_request))
        return results


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(ModelConfig())
    policy = attach_lora(load_base_model(ModelConfig()), LoraConfig(r=4))
    examples, _ = load_examples(DataConfig(train_size=4, val_size=2))
    return tokenizer, policy, examples[:3]


def _perturb(policy, seed):
    randomise_lora(policy, seed, scale=0.05)


def test_rollout_batch_from_vllm_outputs_matches_the_policy(model, tmp_path):
    tokenizer, policy, examples = model
    engine = FakeLLM()
    backend = VllmBackend(engine, tmp_path / "adapters", SamplingParams, LoRARequest)
    _perturb(policy, 0)
    batch = backend.generate(policy, tokenizer, examples, SamplingSettings(4, 12, 0.8, 1.0),
                             torch.Generator().manual_seed(0))
    prompts, params, request = engine.calls[-1]
    assert len(prompts) == 3 and all(set(p) == {"prompt_token_ids"} for p in prompts)  # each prompt once
    assert (params.n, params.max_tokens, params.temperature, params.logprobs) == (4, 12, 0.8, 0)
    assert set(params.stop_token_ids) == stop_token_ids(tokenizer)
    assert request.lora_int_id == 1
    assert batch.completion_ids.shape[0] == 12 and batch.group_size == 4
    assert [e.id for e in batch.examples] == [e.id for e in examples for _ in range(4)]
    for i in range(3):  # row i*G+g answers prompt i
        assert batch.prompt_ids[i * 4][batch.prompt_mask[i * 4].bool()].tolist() == prompts[i]["prompt_token_ids"]
    mask = batch.completion_mask.bool()
    assert (batch.completion_ids[~mask] == tokenizer.pad_token_id).all() and (batch.old_logprobs[~mask] == 0).all()
    # The log-probs vLLM reported are those of the adapter the policy has now.
    from rftkit.models.forward import token_logprobs
    fresh, _ = token_logprobs(policy, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                              batch.completion_mask, 0.8)
    torch.testing.assert_close(batch.old_logprobs[mask], fresh[mask].detach(), atol=2e-5, rtol=1e-5)
    assert batch.completions == tokenizer.batch_decode(batch.completion_ids, skip_special_tokens=True)


def test_each_step_loads_the_current_adapter_under_a_new_id(model, tmp_path):
    tokenizer, policy, examples = model
    engine = FakeLLM()
    backend = VllmBackend(engine, tmp_path / "adapters", SamplingParams, LoRARequest)
    runs = []
    for step in range(2):
        _perturb(policy, 10 + step)  # the update changed the adapter
        runs.append(backend.generate(policy, tokenizer, examples[:1], SamplingSettings(2, 8, 1.0, 1.0, greedy=True),
                                     torch.Generator().manual_seed(5)))
    first, second = engine.calls[0][2], engine.calls[1][2]
    assert (first.lora_int_id, second.lora_int_id) == (1, 2) and first.lora_name != second.lora_name
    assert engine.calls[0][1].temperature == 0.0  # greedy
    from pathlib import Path
    assert not Path(first.lora_path).exists() and (Path(second.lora_path) / "adapter_config.json").is_file()
    assert not torch.equal(runs[0].old_logprobs, runs[1].old_logprobs)  # a different adapter was used


def test_rft_eval_of_the_base_model_loads_no_adapter(model, tmp_path):
    tokenizer, policy, examples = model
    engine = FakeLLM()
    backend = VllmBackend(engine, tmp_path / "adapters", SamplingParams, LoRARequest)
    batch = backend.generate(load_base_model(ModelConfig()), tokenizer, examples, SamplingSettings(1, 8, 1.0, 1.0),
                             torch.Generator().manual_seed(0))
    assert engine.calls[-1][2] is None and len(batch.completions) == len(examples)
    assert not (tmp_path / "adapters").exists() or not any((tmp_path / "adapters").iterdir())


def test_missing_vllm_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    config = parse_config(tiny_config_dict(tmp_path, rollout__backend="vllm"))
    with pytest.raises(ImportError, match=r"pip install rftkit\[vllm\]"):
        build_backend(config, tmp_path)
    assert "rollout.backend: hf" in INSTALL_HINT
    assert isinstance(build_backend(parse_config(tiny_config_dict(tmp_path)), tmp_path), HFBackend)


def test_training_runs_through_the_vllm_backend(tmp_path, monkeypatch):
    from rftkit.train.loop import train

    engines = []
    monkeypatch.setattr(vllm_backend, "create_engine", lambda *a, **k: engines.append(FakeLLM()) or engines[-1])
    monkeypatch.setattr(vllm_backend, "_vllm", lambda: (SimpleNamespace(SamplingParams=SamplingParams), LoRARequest))
    config = parse_config(tiny_config_dict(tmp_path, rollout__backend="vllm"))
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 2
    calls = engines[0].calls
    ids = [c[2].lora_int_id for c in calls]
    assert ids == sorted(set(ids))  # every request loads the adapter as it is then, under a new id
    training = [c for c in calls if c[1].n == config.grpo.num_generations]
    validation = [c for c in calls if c[1].n == 1]  # validation samples through vLLM too, sampled and greedy
    assert len(training) == 2
    assert {c[1].temperature for c in validation} == {0.0, config.eval.temperature}
    assert len(validation) == len(calls) - 2
