"""verifiers environments (SingleTurnEnv, MultiTurnEnv, ToolEnv) written in tests/envs/vf_envs.py run unchanged:
their dataset becomes the examples, their env_response the environment turns, their rubric the reward."""

import json

import pytest
import torch

vf = pytest.importorskip("verifiers", reason="pip install 'rftkit[verifiers]'")

from rftkit.config import EnvConfig, ModelConfig, parse_config  # noqa: E402
from rftkit.envs import build_environment  # noqa: E402
from rftkit.envs.base import EnvironmentFailure  # noqa: E402
from rftkit.envs.episodes import EpisodeBackend, EpisodeLimits  # noqa: E402
from rftkit.models.loading import load_tokenizer  # noqa: E402
from rftkit.types import SamplingSettings  # noqa: E402
from tests.conftest import tiny_config_dict  # noqa: E402
from tests.envs.scripted import ScriptedBackend  # noqa: E402

LOAD = "tests/envs/vf_envs.py:load_environment"


def _env(kind, **args):
    return build_environment(EnvConfig(name="verifiers", options={"load": LOAD, "args": {"kind": kind, **args}}))


def _answer(prompt: str) -> str:
    a, b = [int(x) for x in prompt.split("What is ")[1].split("?")[0].split(" + ")]
    return str(a + b)


def _run(env, reply, max_turns=4, max_tokens=300, n=2, g=2):
    tokenizer = load_tokenizer(ModelConfig())
    examples = env.examples("train")[:n]
    backend = EpisodeBackend(ScriptedBackend(reply), env, EpisodeLimits(max_turns, max_tokens))
    return examples, backend.generate(None, tokenizer, examples, SamplingSettings(g, 120, 1.0), torch.Generator())


def test_the_dataset_becomes_examples():
    env = _env("retry")
    train, held_out = env.examples("train"), env.examples("eval")
    assert len(train) == 10 and len(held_out) == 3
    assert train[0].messages == ({"role": "user", "content": "What is 2 + 3? Answer with the number only."},)
    assert train[0].fields["verifiers_input"]["answer"] == "5"
    assert _env("single").examples("eval") is None  # no eval_dataset: rftkit splits the dataset


def test_single_turn_env_rubric_is_the_outcome():
    env = _env("single")
    _, batch = _run(env, lambda prompt, turn: _answer(prompt) if "2 + 3" in prompt else "0")
    assert [e.model_turns for e in batch.episodes] == [1, 1, 1, 1]
    assert [e.outcome.score for e in batch.episodes] == [1.0, 1.0, 0.0, 0.0]
    assert batch.episodes[0].outcome.details["metrics"]["exact"] == 1.0
    assert torch.equal(batch.action_mask, batch.completion_mask)  # one turn: every token is the model's


def test_multi_turn_env_response_is_the_environment_turn():
    env = _env("retry", max_turns=3)
    _, batch = _run(env, lambda prompt, turn: _answer(prompt) if turn == 2 else "41")
    tokenizer = load_tokenizer(ModelConfig())
    for i, episode in enumerate(batch.episodes):
        assert [m["role"] for m in episode.messages] == ["assistant", "user", "assistant"]
        assert episode.messages[1]["content"] == "Wrong, try again."
        assert episode.finish == "environment" and episode.outcome.score == 1.0
        assert episode.state.state["stop_condition"] == "solved" and episode.state.state["retries"] == 1
        assert episode.outcome.details["metrics"]["turns_used"] == 2.0
        env_tokens = (batch.completion_mask[i] - batch.action_mask[i]).bool()
        assert "Wrong, try again." in tokenizer.decode(batch.completion_ids[i][env_tokens])
    # the environment's own max_turns ends a rollout that never solves it
    _, batch = _run(_env("retry", max_turns=2), lambda prompt, turn: "41", max_turns=5)
    assert all(e.model_turns == 2 and e.outcome.score == 0.0 for e in batch.episodes)
    assert all(e.state.state["stop_condition"] == "max_turns_reached" for e in batch.episodes)


def test_rftkit_limits_end_the_rollout_as_truncated():
    _, batch = _run(_env("retry", max_turns=10), lambda prompt, turn: "41", max_turns=2)
    for episode in batch.episodes:
        assert episode.finish == "max_turns" and episode.model_turns == 2
        assert episode.state.state["stop_condition"] == "prompt_too_long" and episode.state.state["is_truncated"]


def test_tool_env_runs_tool_calls_from_the_model_text():
    call = '<tool_call>{"name": "add", "arguments": {"a": %s, "b": %s}}</tool_call>'

    def reply(prompt, turn):
        a, b = prompt.split("What is ")[1].split("?")[0].split(" + ")
        if turn == 1:
            return '<tool_call>{"name": "add", "arguments": {"a": 1,</tool_call>'  # malformed
        if turn == 2:
            return call % (a, b)
        return _answer(prompt)

    env = _env("tool", max_turns=5)
    assert [t.name for t in env.tools] == ["add"]
    _, batch = _run(env, reply, max_turns=5)
    for episode in batch.episodes:
        roles = [m["role"] for m in episode.messages]
        assert roles == ["assistant", "tool", "assistant", "tool", "assistant"]
        assert episode.messages[3]["content"] == _answer(episode.example.prompt_text())
        assert episode.messages[1]["content"] and episode.messages[1]["content"] != episode.messages[3]["content"]
        assert episode.outcome.score == 1.0 and episode.state.state["stop_condition"] == "no_tools_called"
    first_prompt = load_tokenizer(ModelConfig()).decode(batch.prompt_ids[0])
    assert '"name": "add"' in first_prompt  # the tool's schema is in the first prompt


def test_an_environment_that_raises_is_a_clear_error():
    with pytest.raises(EnvironmentFailure, match="environment 'verifiers' raised ZeroDivisionError in step"):
        _run(_env("broken"), lambda prompt, turn: "1")


def test_bad_options_are_named(tmp_path):
    from rftkit.config import ConfigError

    with pytest.raises(ConfigError, match=r"env.options: give exactly one of `taskset` \(verifiers 0.4\) or `load`"):
        parse_config(tiny_config_dict(tmp_path, env={"name": "verifiers"}), "x.yaml")
    with pytest.raises(ConfigError, match="env.options: `config` goes with `taskset`"):
        options = {"load": LOAD, "config": {"a": 1}}
        parse_config(tiny_config_dict(tmp_path, env={"name": "verifiers", "options": options}), "x.yaml")
    with pytest.raises(ValueError, match="no function 'nope'"):
        build_environment(EnvConfig(name="verifiers", options={"load": "tests/envs/vf_envs.py:nope"}))


def test_two_training_steps_on_a_verifiers_environment(tmp_path):
    from rftkit.eval.validate import load_policy
    from rftkit.train.loop import setup, train

    raw = tiny_config_dict(tmp_path, data={"source": "env", "val_size": 2, "seed": 1},
                           env={"name": "verifiers", "max_turns": 2, "max_episode_tokens": 60,
                                "options": {"load": LOAD, "args": {"kind": "retry_graded", "max_turns": 2},
                                            "reward_range": [0, 1.5]}},
                           graders=[{"name": "rubric", "type": "environment"}], accuracy_grader="rubric")
    config = parse_config(raw)
    probe = setup(config, tmp_path / "probe", resume=False)
    assert len(probe.train_examples) == 10 and len(probe.val_examples) == 2
    before = {n: p.detach().clone() for n, p in probe.learner.policy.named_parameters() if "lora_" in n}
    summary = train(config, tmp_path / "run", progress=False)
    trained, _ = load_policy(config, tmp_path / "run" / "checkpoints" / "step-2")
    after = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert {"accuracy_first_turn", "turns"} <= summary["after"].keys()
    sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["messages"][0]["role"] == "user" and sample["messages"][1]["role"] == "assistant"
    assert "outcome" in sample
