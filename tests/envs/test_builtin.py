"""The built-in environments' rules, seeded data and config handling; the example configs load and run."""

from pathlib import Path

import pytest

from rftkit.config import ConfigError, load_config, parse_config
from rftkit.data import Example
from rftkit.envs import ENVIRONMENTS, build_environment, load_builtin_environments
from rftkit.envs.countdown_feedback import CountdownFeedback
from rftkit.envs.guess_number import GuessNumber, generate as games
from rftkit.tasks.countdown import generate as puzzles
from tests.conftest import tiny_config_dict

EXAMPLES = Path(__file__).parents[2] / "examples"


def _play(env, example, replies):
    state = env.reset(example).state
    return state, [env.step(state, reply) for reply in replies]


def test_countdown_feedback_says_what_was_wrong():
    example = Example("p", prompt="x", fields={"numbers": [4, 8, 16, 3], "target": 31, "solution": "16+3*4-8+8"})
    state, replies = _play(CountdownFeedback(), example, [
        "<answer>(4+8)*3</answer>", "<answer>(4+8)*7</answer>", "no tags", "<answer>(4+</answer>",
        "<answer>16+3*4+3</answer>", "<answer>16+8+4+3</answer>"])
    texts = [r.observation[0]["content"] if r.observation else None for r in replies]
    assert texts[0] == "(4+8)*3 = 36, not 31."
    assert texts[1] == "(4+8)*7 = 84, and it uses 7, which is not among the given numbers [4, 8, 16, 3]."
    assert texts[2] == "No answer: no <answer>...</answer> tags."
    assert texts[3].startswith("(4+: invalid expression")
    assert texts[4] == "16+3*4+3 = 31, and it uses 3 more often than given."
    assert replies[5].done and texts[5] is None
    assert CountdownFeedback().outcome(state).reason == "solved on turn 6"


def test_guess_number_hints_and_outcome():
    example = Example("g", prompt="x", fields={"secret": 37, "low": 20, "high": 60})
    state, replies = _play(GuessNumber(step_penalty=0.1), example, [
        "<answer>30</answer>", "<answer>50</answer>", "<answer>70</answer>", "<answer>x</answer>",
        "<answer>74/2</answer>"])
    assert [r.observation[0]["content"] if r.observation else None for r in replies] == [
        "Higher.", "Lower.", "70 is not from 20 to 60.", "No guess: x is not a number (character 'x' is not allowed "
        "(only digits, + - * / and parentheses)).", None]
    assert [r.reward for r in replies] == [-0.1, -0.1, -0.1, -0.1, 0.0] and replies[-1].done
    assert GuessNumber().outcome(state).score == 1.0
    lost, _ = _play(GuessNumber(), example, ["<answer>1</answer>"])
    assert GuessNumber().outcome(lost).score == 0.0


def test_games_are_seeded_and_prompts_differ():
    a = games(300, seed=5)
    assert a == games(300, seed=5) and a != games(300, seed=6)
    assert all(e.fields["low"] <= e.fields["secret"] <= e.fields["high"] for e in a)
    assert len({e.prompt for e in a}) > 290  # the held-out set is kept apart by prompt text
    assert puzzles(5, 1) == puzzles(5, 1)


def test_every_environment_is_registered_with_a_summary():
    load_builtin_environments()
    assert set(ENVIRONMENTS) == {"countdown_feedback", "arithmetic_tools", "guess_number", "verifiers"}
    assert all(kind.summary for kind in ENVIRONMENTS.values())


@pytest.mark.parametrize("env,message", [
    ({"name": "chess"}, "env.name: unknown environment 'chess'; allowed: arithmetic_tools, countdown_feedback"),
    ({"name": "guess_number", "options": {"penalty": 1}}, "env.options.penalty: unknown key for guess_number "
     "\\(allowed: step_penalty\\)"),
    ({"name": "arithmetic_tools", "options": {"tools": ["shell"]}}, "env.options.tools.0: Input should be"),
    ({"options": {"a": 1}}, "env.options: given without env.name"),
    ({"name": "countdown_feedback", "max_turns": 0}, "env.max_turns"),
])
def test_config_errors_name_the_key(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(tiny_config_dict(tmp_path, env=env), "x.yaml")


def test_dapo_overlong_buffer_is_checked_against_the_episode_budget(tmp_path):
    raw = tiny_config_dict(tmp_path, algorithm="dapo", dapo__overlong_buffer=24,
                           env={"name": "countdown_feedback", "max_episode_tokens": 20})
    with pytest.raises(ConfigError, match="dapo.overlong_buffer: must be <= env.max_episode_tokens \\(20\\)"):
        parse_config(raw, "x.yaml")
    raw["env"]["max_episode_tokens"] = 100
    assert parse_config(raw).length_limit() == 100


@pytest.mark.parametrize("name,env", [("countdown_feedback", "countdown_feedback"), ("tool_calculator",
                                      "arithmetic_tools"), ("guess_number", "guess_number")])
def test_example_configs_load_and_build(name, env):
    config = load_config(EXAMPLES / f"{name}.yaml")
    assert config.env.name == env
    assert build_environment(config.env).name == env
