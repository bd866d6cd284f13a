"""verifiers 0.4 environments (tests/envs/vf1_tasksets: a Taskset, a Taskset with an MCP toolset, an Env that
relays feedback turns) run unchanged through verifiers' own Env.run_episode, harness program, interception server
and toolset servers: their tasks become the examples, their rewards the outcome, their turns the environment's.

Runs in an interpreter with verifiers 0.4 (`make test` uses .venv-verifiers04; tests/envs/conftest.py)."""

import asyncio
import json

import pytest
import torch

vf = pytest.importorskip("verifiers.v1", reason="pip install 'rftkit[verifiers]' (verifiers 0.4)")
openai = pytest.importorskip("openai")

from rftkit.config import ConfigError, EnvConfig, ModelConfig, parse_config  # noqa: E402
from rftkit.envs import build_environment  # noqa: E402
from rftkit.envs.episodes import EpisodeBackend, EpisodeLimits  # noqa: E402
from rftkit.envs.verifiers_v1 import V1Episode  # noqa: E402
from rftkit.models.loading import load_tokenizer  # noqa: E402
from rftkit.types import SamplingSettings  # noqa: E402
from tests.conftest import tiny_config_dict  # noqa: E402
from tests.envs.scripted import ScriptedBackend  # noqa: E402

TASKSETS = "tests/envs/vf1_tasksets"
SUMS, TOOLS, RETRY, BROKEN = (f"{TASKSETS}/{name}.py" for name in ("vf1_sums", "vf1_sums_tools", "vf1_sums_retry",
                                                                  "vf1_broken"))
NULL = {"agent": {"harness": {"id": "null"}}}  # verifiers' own null harness: a uv-script program per segment
# the null harness's chat program (ours in-process too) builds its httpx client with verify=<certifi path>
pytestmark = pytest.mark.filterwarnings("ignore:`verify=<str>` is deprecated:DeprecationWarning")


def _env(taskset, **options):
    return build_environment(EnvConfig(name="verifiers", options={"taskset": taskset, **options}))


def _answer(prompt: str) -> str:
    a, b = [int(x) for x in prompt.split("What is ")[-1].split("?")[0].split(" + ")]
    return str(a + b)


def _run(env, reply, max_turns=4, max_tokens=300, n=2, g=2):
    tokenizer = load_tokenizer(ModelConfig())
    examples = env.examples("train")[:n]
    backend = EpisodeBackend(ScriptedBackend(reply), env, EpisodeLimits(max_turns, max_tokens))
    return backend.generate(None, tokenizer, examples, SamplingSettings(g, 120, 1.0), torch.Generator())


def test_the_tasks_become_examples():
    env = _env(SUMS)
    examples = env.examples("train")
    assert len(examples) == 10 and env.examples("eval") is None  # no eval set: rftkit holds out data.val_size
    assert examples[0].prompt == "What is 2 + 3? Answer with the number only." and examples[0].messages is None
    assert examples[0].fields == {"verifiers_task": 0}
    knobs = _env(SUMS, config={"taskset": {"num_tasks": 3, "system_prompt_text": "Be brief."}}).examples("train")
    assert len(knobs) == 3
    assert knobs[1].messages == ({"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "What is 4 + 5? Answer with the number only."})


def test_single_turn_rewards_are_the_outcome():
    env = _env(SUMS, reward_range=[0, 1.5])
    batch = _run(env, lambda prompt, turn: _answer(prompt) if "2 + 3" in prompt else "x0")
    assert [e.model_turns for e in batch.episodes] == [1, 1, 1, 1]
    assert [e.finish for e in batch.episodes] == ["environment"] * 4  # the null harness ended after one reply
    # exact (weight 1) + has_digits (weight 0.5): "5" -> 1.5 -> 1.0; "x0" -> 0.5 * 0.5 = 0.25 -> 0.25 / 1.5
    assert [e.outcome.score for e in batch.episodes] == pytest.approx([1.0, 1.0, 0.25 / 1.5, 0.25 / 1.5])
    assert batch.episodes[2].outcome.details["rewards"] == {"exact": 0.0, "has_digits": 0.5}
    assert batch.episodes[2].outcome.details["metrics"] == {"reply_chars": 2.0}
    assert batch.episodes[0].outcome.details["stop_condition"] == "agent_completed"
    assert torch.equal(batch.action_mask, batch.completion_mask)  # one turn: every token is the model's
    first = load_tokenizer(ModelConfig()).decode(batch.prompt_ids[0], skip_special_tokens=False)
    assert "What is 2 + 3? Answer with the number only." in first  # laid out from the harness's own request


def test_an_env_run_relays_feedback_turns():
    batch = _run(_env(RETRY, reward_range=[0, 1.5]), lambda prompt, turn: _answer(prompt) if turn == 2 else "41")
    tokenizer = load_tokenizer(ModelConfig())
    for i, episode in enumerate(batch.episodes):
        assert [m["role"] for m in episode.messages] == ["assistant", "user", "assistant"]
        assert episode.messages[1]["content"] == "'41' is wrong. Try again."  # written by RetryEnv.run
        assert episode.finish == "environment" and episode.outcome.score == 1.0
        assert episode.outcome.details["metrics"]["turns_used"] == 2.0
        env_tokens = (batch.completion_mask[i] - batch.action_mask[i]).bool()
        assert "'41' is wrong. Try again." in tokenizer.decode(batch.completion_ids[i][env_tokens])
        model_tokens = batch.action_mask[i].bool()
        assert "41" in tokenizer.decode(batch.completion_ids[i][model_tokens])
    # the environment's own limit (max_tries 2) ends an episode that never solves it, scored 0
    batch = _run(_env(RETRY, config={"max_tries": 2}), lambda prompt, turn: "x", max_turns=5)
    assert all(e.model_turns == 2 and e.finish == "environment" and e.outcome.score == 0.0 for e in batch.episodes)


def test_rftkit_limits_end_the_episode_and_verifiers_still_scores_it():
    batch = _run(_env(RETRY, config={"max_tries": 5}, reward_range=[0, 1.5]), lambda prompt, turn: "41", max_turns=2)
    for episode in batch.episodes:
        assert episode.finish == "max_turns" and episode.model_turns == 2
        assert not episode.outcome.masked  # scored as the trace stands: wrong (0) but all digits (0.5 * 1)
        assert episode.outcome.score == pytest.approx(0.5 / 1.5)
        assert episode.outcome.details["metrics"]["turns_used"] == 2.0
    assert all(e.state.request is None and e.state.ended for e in batch.episodes)  # nothing left waiting


def test_the_taskset_toolset_runs_tool_calls_from_the_model_text():
    call = '<tool_call>{"name": "calc_add", "arguments": {"a": %s, "b": %s}}</tool_call>'

    def reply(prompt, turn):
        a, b = prompt.split("What is ")[-1].split("?")[0].split(" + ")
        if turn == 1:
            return '<tool_call>{"name": "calc_add", "arguments": {"a": 1,</tool_call>'  # malformed JSON
        if turn == 2:
            return call % (a, b)
        return _answer(prompt)

    batch = _run(_env(TOOLS), reply, max_turns=5)
    for episode in batch.episodes:
        assert [m["role"] for m in episode.messages] == ["assistant", "tool", "assistant", "tool", "assistant"]
        assert episode.messages[3]["content"] == _answer(episode.example.prompt_text())  # verifiers' MCP server
        assert "invalid JSON" in episode.messages[1]["content"]  # the harness's own answer to the bad call
        assert episode.outcome.score == 1.0 and episode.outcome.details["metrics"]["tool_calls"] == 2.0
    first_prompt = load_tokenizer(ModelConfig()).decode(batch.prompt_ids[0])
    assert "calc_add" in first_prompt and "Add two integers." in first_prompt  # the toolset's schema


def _tool_script(prompt, turn):
    a, b = prompt.split("What is ")[-1].split("?")[0].split(" + ")
    return ['<tool_call>{"name": "calc_add", "arguments": {"a": 1,</tool_call>',  # malformed JSON
            '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',  # an unknown tool
            '<tool_call>{"name": "calc_add", "arguments": {"a": %s, "b": %s}}</tool_call>' % (a, b),
            _answer(prompt)][turn - 1]


@pytest.mark.parametrize("taskset, reply", [(RETRY, lambda prompt, turn: _answer(prompt) if turn == 3 else "4"),
                                            (TOOLS, _tool_script)], ids=["feedback", "tools"])
def test_rftkit_chat_is_the_null_harness_in_process(taskset, reply):
    """The default harness (rftkit-chat) against verifiers' own null harness program, the oracle: the same
    episodes, message for message, with the same rewards and metrics."""
    ours, theirs = (_run(_env(taskset, **options), reply, max_turns=5, g=1) for options in ({}, {"config": NULL}))
    for mine, oracle in zip(ours.episodes, theirs.episodes, strict=True):
        assert mine.messages == oracle.messages and mine.finish == oracle.finish
        assert (mine.outcome.score, mine.outcome.details["rewards"], mine.outcome.details["metrics"]) == \
            (oracle.outcome.score, oracle.outcome.details["rewards"], oracle.outcome.details["metrics"])
    assert torch.equal(ours.completion_ids, theirs.completion_ids) and torch.equal(ours.action_mask, theirs.action_mask)
    assert len(ours.episodes[0].messages) >= 5  # several turns were compared, not one


def test_a_reward_that_raises_is_masked_not_a_crash():
    batch = _run(_env(BROKEN), lambda prompt, turn: "0", n=1)
    for episode in batch.episodes:
        assert episode.outcome.masked and episode.outcome.score == 0.0
        assert "the task gave no reward" in episode.outcome.reason
        assert any("ZeroDivisionError" in e or "division by zero" in e for e in episode.outcome.details["errors"])


def test_what_rftkit_cannot_train_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="2 agent seats"):  # verifiers' own user-sim: two agents per episode
        _env(SUMS, config={"id": "user-sim"})
    with pytest.raises(ValueError, match="'bash' executes model-written code, and the runtime is 'subprocess'"):
        _env(SUMS, config={"agent": {"harness": {"id": "bash"}}})
    with pytest.raises(ValueError, match="env.options.taskset: taskset 'no_such_taskset' not found"):
        _env("no_such_taskset")
    with pytest.raises(ValueError, match="env.options.taskset: tests/nope.py does not exist"):
        _env("tests/nope.py")
    with pytest.raises(ConfigError, match="env.options: `args` goes with `load`"):
        parse_config(tiny_config_dict(tmp_path, env={"name": "verifiers", "options": {"taskset": SUMS,
                                                                                        "args": {"a": 1}}}), "x.yaml")


def test_the_endpoint_is_openai_compatible():
    """The openai SDK, as a harness uses it, against rftkit's endpoint: auth, routing, and a streamed tool call."""
    env = _env(SUMS)
    env._ensure_serving()
    endpoint = env.endpoint

    async def talk():
        bad = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        good = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.secret, max_retries=0)
        with pytest.raises(openai.NotFoundError, match="no episode is served as model 'nobody'"):
            await good.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "hi"}])
        episode = V1Episode(env.examples("train")[0], "rftkit-episode-test")
        endpoint.episodes[episode.model] = episode

        async def ask():
            stream = await good.chat.completions.create(
                model=episode.model, stream=True, messages=[{"role": "user", "content": "add 2 and 3"}],
                tools=[{"type": "function", "function": {"name": "add", "description": "Add.",
                                                         "parameters": {"type": "object", "properties": {}}}}])
            return [chunk async for chunk in stream]

        asking = asyncio.ensure_future(ask())
        await episode.asked.wait()
        assert episode.request.messages == [{"role": "user", "content": "add 2 and 3"}]
        assert [t.name for t in episode.request.tools] == ["add"]
        episode.request.future.set_result('Sure. <tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>')
        chunks = await asking
        delta = chunks[0].choices[0].delta
        assert delta.content == "Sure." and chunks[0].choices[0].finish_reason == "tool_calls"
        assert delta.tool_calls[0].function.name == "add"
        assert json.loads(delta.tool_calls[0].function.arguments) == {"a": 2, "b": 3}
        episode.ended = True
        with pytest.raises(openai.BadRequestError, match="context_length_exceeded"):
            await good.chat.completions.create(model=episode.model, messages=[{"role": "user", "content": "more"}])

    env.loop.run_until_complete(talk())


def test_two_training_steps_on_a_verifiers_04_environment(tmp_path):
    from rftkit.eval.validate import load_policy
    from rftkit.train.loop import setup, train

    raw = tiny_config_dict(tmp_path, data={"source": "env", "val_size": 2, "seed": 1},
                           env={"name": "verifiers", "max_turns": 2, "max_episode_tokens": 60,
                                "options": {"taskset": RETRY, "config": {"max_tries": 2}, "reward_range": [0, 1.5]}},
                           graders=[{"name": "reward", "type": "environment"}], accuracy_grader="reward",
                           grpo={"num_generations": 2}, eval={"eval_every": 2, "batch_size": 8})
    config = parse_config(raw)
    probe = setup(config, tmp_path / "probe", resume=False)
    assert len(probe.train_examples) == 4 and len(probe.val_examples) == 2
    before = {n: p.detach().clone() for n, p in probe.learner.policy.named_parameters() if "lora_" in n}
    summary = train(config, tmp_path / "run", progress=False)
    trained, _ = load_policy(config, tmp_path / "run" / "checkpoints" / "step-2")
    after = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert {"accuracy_first_turn", "turns"} <= summary["after"].keys()
    sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["messages"][0] == {"role": "user", "content": sample["messages"][0]["content"]}
    assert sample["messages"][1]["role"] == "assistant" and "outcome" in sample


def test_the_example_config_runs():
    """examples/verifiers_countdown.yaml: its taskset's 700 puzzles become examples, and its Env's feedback turns
    and reward run on them."""
    from rftkit.config import load_config
    from rftkit.tasks import load_examples

    config = load_config("examples/verifiers_countdown.yaml")
    train, val = load_examples(config.data, config.env)
    assert (len(train), len(val)) == (500, 200)
    env = build_environment(config.env)
    tasks = env.tasks()
    data = tasks[train[0].fields["verifiers_task"]].data
    batch = EpisodeBackend(ScriptedBackend(lambda prompt, turn: "<answer>1+1</answer>"), env,
                           EpisodeLimits(3, 160)).generate(None, load_tokenizer(ModelConfig()), train[:1],
                                                           SamplingSettings(1, 32, 1.0), torch.Generator())
    (episode,) = batch.episodes
    assert [m["role"] for m in episode.messages] == ["assistant", "user", "assistant", "user", "assistant"]
    if data.numbers.count(1) < 2:  # the Env's own judge: 1+1 uses numbers that are not given
        assert episode.messages[1]["content"].startswith("1+1 uses numbers that are not given")
    else:
        assert episode.messages[1]["content"] == f"1+1 = 2, not {data.target}."
    assert episode.outcome.score == 0.0 and episode.outcome.details["metrics"]["answers"] == 3.0
