"""Tiny-model integration tests of the GRPO loop: learning touches only LoRA, checkpoints reload exactly,
resume continues the same trajectory, and a broken grader stops the run."""

import json

import pytest
import torch

from rftkit.config import parse_config
from rftkit.eval.validate import load_policy, run_eval
from rftkit.graders import GRADER_TYPES, GraderParams, register
from rftkit.graders.combine import GraderFailure
from rftkit.models.loading import load_base_model
from rftkit.train.loop import setup, train
from tests.conftest import tiny_config_dict


def metric_lines(run_dir):
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.startswith("time/")} for line in lines]


def test_two_grpo_steps_change_lora_and_leave_base_bit_identical(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path))
    base_before = {k: v.clone() for k, v in load_base_model(config.model).state_dict().items()}
    run = setup(config, tmp_path / "probe", resume=False)
    lora_before = {n: p.detach().clone() for n, p in run.learner.policy.named_parameters() if "lora_" in n}
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["validation_size"] == 8
    assert set(summary["before"]) == {"accuracy", "accuracy_greedy", "mean_reward"} == set(summary["after"])
    trained, _ = load_policy(config, tmp_path / "run" / "checkpoints" / "step-2")
    lora_after = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    assert lora_after.keys() == lora_before.keys()
    assert any(not torch.equal(lora_before[n], lora_after[n]) for n in lora_before)  # LoRA moved
    merged_free_base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                        for k, v in trained.state_dict().items() if "lora_" not in k}
    for name, tensor in base_before.items():
        assert torch.equal(tensor, merged_free_base[name]), name  # base weights untouched, bit for bit


def test_run_directory_contents(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path))
    train(config, tmp_path / "run", progress=False)
    run_dir = tmp_path / "run"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "summary.json").is_file()
    lines = metric_lines(run_dir)
    assert [l["step"] for l in lines] == [0, 1, 2]
    step = lines[1]
    for key in ("reward/mean", "reward/std", "reward/format", "reward/correct", "accuracy", "kl/mean", "clip_frac",
                "entropy", "len/completion", "loss/policy", "grader/errors", "val/accuracy", "val/accuracy_greedy"):
        assert key in step, key
    raw_times = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[1])
    assert {"time/generate", "time/grade", "time/update"} <= raw_times.keys()
    samples = [json.loads(l) for l in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples and {"step", "prompt", "completion", "reward", "grades"} <= samples[0].keys()
    assert "reason" in samples[0]["grades"]["correct"]
    for step_dir in ("step-1", "step-2"):
        assert (run_dir / "checkpoints" / step_dir / "adapter_config.json").is_file()
        assert (run_dir / "checkpoints" / step_dir / "trainer_state.pt").is_file()
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))


def test_saved_adapter_reloads_to_identical_outputs_and_accuracy(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path, train__steps=1))
    train(config, tmp_path / "run", progress=False)
    adapter = tmp_path / "run" / "checkpoints" / "step-1"
    model_a, tokenizer = load_policy(config, adapter)
    model_b, _ = load_policy(config, adapter)
    ids = torch.tensor([tokenizer.encode("Using the numbers [1, 2, 3], make 6.")])
    assert torch.equal(model_a(input_ids=ids).logits, model_b(input_ids=ids).logits)
    reported = metric_lines(tmp_path / "run")[-1]["val/accuracy"]
    reported_greedy = metric_lines(tmp_path / "run")[-1]["val/accuracy_greedy"]
    config_path = tmp_path / "run" / "config.yaml"
    metrics = run_eval(str(config_path), str(adapter), None, str(tmp_path / "eval.jsonl"), [])
    assert metrics["accuracy"] == reported and metrics["accuracy_greedy"] == reported_greedy
    rows = [json.loads(l) for l in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"prompt", "sampled", "greedy"} <= rows[0].keys()
    assert "grades" in rows[0]["greedy"]


def test_resume_continues_the_same_trajectory(tmp_path):
    full = parse_config(tiny_config_dict(tmp_path, train__steps=3))
    train(full, tmp_path / "full", progress=False)
    # Interrupted after step 1 (a run configured for 1 step), then resumed to 3 steps.
    train(parse_config(tiny_config_dict(tmp_path, train__steps=1)), tmp_path / "cut", progress=False)
    (tmp_path / "cut" / "checkpoints" / ".tmp-step-2-crashed").mkdir()  # a half-written checkpoint
    summary = train(full, tmp_path / "cut", resume=True, progress=False)
    assert summary["steps"] == 3
    assert metric_lines(tmp_path / "cut") == metric_lines(tmp_path / "full")
    assert not (tmp_path / "cut" / "checkpoints" / ".tmp-step-2-crashed").exists()


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train(config, tmp_path / "empty", resume=True, progress=False)


def test_fresh_run_refuses_to_overwrite_an_earlier_run(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path, train__steps=1))
    train(config, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before  # nothing lost


class _BrokenParams(GraderParams):
    pass


if "always_raises_for_tests" not in GRADER_TYPES:
    class _Broken:
        name = "broken"

        def grade(self, example, completion):
            raise RuntimeError("boom")

    @register("always_raises_for_tests", _BrokenParams, "test-only grader that raises")
    def _build_broken(name, params):
        broken = _Broken()
        broken.name = name
        return broken


def test_grader_failing_on_every_completion_stops_the_run(tmp_path):
    raw = tiny_config_dict(tmp_path)
    raw["graders"].append({"name": "broken", "type": "always_raises_for_tests", "weight": 1.0})
    with pytest.raises(GraderFailure, match="grader 'broken' raised on all 8 completions of this step: "
                                            "grader raised RuntimeError: boom"):
        train(parse_config(raw), tmp_path / "run", progress=False)


def test_trl_reward_functions_get_the_sampled_token_ids_and_the_step(tmp_path):
    """TRL passes completion_ids (the sampled ids, no padding) and trainer_state; so does the loop."""
    (tmp_path / "ids_reward.py").write_text(
        "SEEN = []\n"
        "def reward(prompts, completions, completion_ids, trainer_state, **kwargs):\n"
        "    SEEN.append((trainer_state.global_step, [len(ids) for ids in completion_ids],\n"
        "                 [str(p) for p in prompts]))\n"
        "    return [1.0 if ids else 0.0 for ids in completion_ids]\n")
    raw = tiny_config_dict(tmp_path)
    raw["graders"].append({"name": "ids", "type": "function", "function": f"{tmp_path / 'ids_reward.py'}:reward"})
    config = parse_config(raw)
    train(config, tmp_path / "run", progress=False)
    from rftkit.graders.functions import load_function

    seen = load_function(f"{tmp_path / 'ids_reward.py'}:reward").__globals__["SEEN"]
    training = [s for s in seen if len(set(s[2])) == 2]  # 2 prompts x 4 completions (validation: 8 prompts)
    assert [s[0] for s in training] == [0, 1]  # global_step: steps completed when the batch was graded
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert all(s["grades"]["ids"]["score"] == 1.0 for s in samples)
    assert all(length > 0 for s in training for length in s[1])
