"""SFT: loss on completion tokens only, `rft sft` end to end, the sft_warmup stage, clear errors."""

import json

import pytest
import torch

from rftkit.cli import main
from rftkit.config import parse_config
from rftkit.data import DataError, Example
from rftkit.models.loading import attach_lora, load_base_model, load_tokenizer
from rftkit.train.sft import completion_for, encode_pairs, sft, sft_loss
from rftkit.train.loop import train
from tests.conftest import tiny_config_dict


def test_loss_counts_completion_tokens_only(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path))
    tokenizer = load_tokenizer(config.model)
    policy = attach_lora(load_base_model(config.model), config.lora)
    examples = [Example(id="a", prompt="Using the numbers [1, 2], make 3."), Example(id="b", prompt="Hi")]
    batch = encode_pairs(tokenizer, examples, ["<answer>1+2</answer>", "<answer>7</answer>"],
                         config.model.chat_template, config.data.system_prompt)
    assert batch.completion_ids[0, batch.completion_mask[0].sum() - 1] == tokenizer.eos_token_id  # EOS is a target
    # by hand: full forward on prompt + completion, NLL of completion tokens (EOS included) only
    nll, count = 0.0, 0
    for row in range(2):
        prompt = batch.prompt_ids[row][batch.prompt_mask[row].bool()]
        completion = batch.completion_ids[row][batch.completion_mask[row].bool()]
        ids = torch.cat([prompt, completion])[None]
        logp = torch.log_softmax(policy(input_ids=ids).logits[0, :-1].float(), -1)
        targets = ids[0, 1:]
        per_token = -logp.gather(-1, targets[:, None]).squeeze(-1)[len(prompt) - 1:]
        nll, count = nll + per_token.sum().item(), count + len(completion)
    assert sft_loss(policy, batch).item() == pytest.approx(nll / count, rel=1e-4)


def test_completion_comes_from_the_configured_field(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path))
    assert completion_for(Example(id="x", prompt="p", fields={"solution": "3*4"}), config.sft) == "<answer>3*4</answer>"
    with pytest.raises(DataError, match="sft.completion_field: example 'x' has no field 'solution'"):
        completion_for(Example(id="x", prompt="p", fields={"target": 3}), config.sft)


def test_rft_sft_trains_lora_only_and_validates(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path, sft={"steps": 3, "batch_size": 4, "eval_every": 2}))
    summary = sft(config, tmp_path / "run", progress=False)
    assert summary["sft_steps"] == 3 and summary["validation_size"] == 8
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2, 3]
    assert "val/accuracy" in lines[0] and "val/accuracy" in lines[2] and "val/accuracy" in lines[3]
    assert all(line["loss/sft"] > 0 for line in lines[1:])
    from rftkit.eval.validate import load_policy

    trained, _ = load_policy(config, tmp_path / "run" / "checkpoints" / "step-3")
    base = load_base_model(config.model).state_dict()
    state = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in trained.state_dict().items()}
    assert all(torch.equal(v, state[k]) for k, v in base.items())
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)  # B starts at zero: it moved


def test_sft_warmup_runs_before_rft(tmp_path):
    raw = tiny_config_dict(tmp_path, train__steps=1, sft_warmup={"steps": 2, "batch_size": 4})
    summary = train(parse_config(raw), tmp_path / "run", progress=False)
    warm = json.loads((tmp_path / "run" / "sft_warmup.json").read_text())
    assert warm["sft_steps"] == 2 and summary["steps"] == 1


def test_cli_sft(tmp_path, capsys):
    import yaml

    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, sft={"steps": 1, "batch_size": 2})))
    assert main(["sft", str(path), "--output", str(tmp_path / "cli")]) == 0
    assert "SFT steps" in capsys.readouterr().out
    assert (tmp_path / "cli" / "checkpoints" / "step-1" / "adapter_config.json").is_file()


def test_sft_keeps_the_best_validation_and_scores_the_test_split_with_it(tmp_path):
    from rftkit.eval.validate import EvalSettings, evaluate, load_policy
    from rftkit.graders import build_graders
    from rftkit.tasks import load_splits

    raw = tiny_config_dict(tmp_path, sft={"steps": 4, "batch_size": 4, "eval_every": 1, "learning_rate": 5e-3},
                           data__test_size=6, eval__keep_best="mean_reward")
    config = parse_config(raw)
    summary = sft(config, tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validations = [(line["step"], line["val/mean_reward"]) for line in lines if line["step"] > 0]
    best_step, best_value = max(validations, key=lambda sv: (sv[1], -sv[0]))  # first of the highest; not step 0
    assert summary["best"] == {"step": best_step, "metric": "mean_reward", "value": best_value}
    chosen = tmp_path / "run" / "checkpoints" / "best"
    assert summary["best_checkpoint"] == str(chosen)
    assert json.loads((chosen / "best.json").read_text())["step"] == best_step
    # the test figure is the chosen adapter's, re-scored here from its files
    _, _, test_examples = load_splits(config.data)
    policy, tokenizer = load_policy(config, chosen)
    expected = evaluate(policy, tokenizer, test_examples, build_graders(config.graders), EvalSettings.of(config),
                        None).metrics
    assert summary["test_size"] == 6 and summary["test"] == expected
