"""Tool calls: the `<tool_call>` format, malformed calls answered with an error observation (never a crash),
the calculator, the sandboxed Python tool, and arithmetic_tools episodes driven by a scripted model."""

import pytest
import torch

from rftkit.config import DataConfig, ModelConfig
from rftkit.envs.arithmetic_tools import ArithmeticTools, generate
from rftkit.envs.episodes import EpisodeBackend, EpisodeLimits
from rftkit.envs.render import TurnRenderer
from rftkit.envs.tools import MalformedCall, ToolCall, calculator, parse_tool_calls, python_tool, run_tool_calls
from rftkit.models.loading import load_tokenizer
from rftkit.tasks import load_examples
from rftkit.types import SamplingSettings
from tests.envs.scripted import ScriptedBackend

CALC = '<tool_call>{"name": "calculator", "arguments": {"expression": "%s"}}</tool_call>'


def test_calls_parse_in_the_documented_and_template_forms():
    text = ('thinking... <tool_call>\n{"name": "calculator", "arguments": {"expression": "1+2"}}\n</tool_call>'
            '<tool_call>{"name": "python", "parameters": {"code": "print(3)"}}</tool_call>'
            '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"4*5\\"}"}</tool_call>')
    assert parse_tool_calls(text) == [ToolCall("calculator", {"expression": "1+2"}),
                                      ToolCall("python", {"code": "print(3)"}),
                                      ToolCall("calculator", {"expression": "4*5"})]
    assert parse_tool_calls("<answer>3</answer>") == []


@pytest.mark.parametrize("text,error", [
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "1+"</tool_call>', "not valid JSON"),
    ("<tool_call>[1, 2]</tool_call>", 'a string "name"'),
    ('<tool_call>{"name": "calculator", "arguments": [1]}</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "1+2"}}', "not closed"),
    ("<tool_call>" + "[" * 100_000 + "</tool_call>", "longer than"),
    ("<tool_call>" + "[" * 3_000 + "</tool_call>", "nested too deeply|not valid JSON"),
])
def test_malformed_calls_are_named(text, error):
    calls = parse_tool_calls(text)
    assert len(calls) == 1 and isinstance(calls[0], MalformedCall)
    messages = run_tool_calls([calculator()], calls)
    assert messages[0]["role"] == "tool" and messages[0]["content"].startswith("error: ")
    assert pytest.importorskip("re").search(error, messages[0]["content"])


def test_bad_calls_get_error_results_and_good_ones_run():
    calls = parse_tool_calls((CALC % "(3+4)*12") + '<tool_call>{"name": "search", "arguments": {}}</tool_call>'
                             + '<tool_call>{"name": "calculator", "arguments": {"expr": "1"}}</tool_call>'
                             + (CALC % "7/0")) + parse_tool_calls(CALC % "2**10")
    results = [m["content"] for m in run_tool_calls([calculator()], calls)]
    assert results[0] == "84"
    assert results[1].startswith("error: unknown tool 'search'; available: calculator")
    assert results[2].startswith("error: bad arguments for calculator")
    assert results[3] == "error: calculator: division by zero"
    assert results[4].startswith("error: calculator: operator '**' is not allowed")
    many = parse_tool_calls((CALC % "1") * 6)
    assert len(many) == 5 and isinstance(many[-1], MalformedCall)


def test_calculator_is_exact():
    assert calculator().run({"expression": "1/3*3"}) == "1" and calculator().run({"expression": "7/2"}) == "7/2"


def test_python_tool_runs_in_the_sandbox():
    from rftkit.sandbox import SandboxUnavailable

    tool = python_tool(timeout_s=5.0)
    try:
        out = tool.run({"code": "print(sum(range(10)))"})
    except SandboxUnavailable as exc:  # this kernel allows no namespaces: the tool refuses, never runs unsandboxed
        pytest.skip(f"sandbox unavailable here: {exc}")
    assert out == "45"
    [raised] = run_tool_calls([tool], parse_tool_calls(
        '<tool_call>{"name": "python", "arguments": {"code": "print(1)\\nraise ValueError(7)"}}</tool_call>'))
    assert raised["content"].startswith("error: python: ValueError: 7") and "stdout: 1" in raised["content"]
    [looped] = run_tool_calls([python_tool(timeout_s=1.0)], parse_tool_calls(
        '<tool_call>{"name": "python", "arguments": {"code": "while True: pass"}}</tool_call>'))
    assert looped["content"].startswith("error: python:") and "time limit" in looped["content"]
    [network] = run_tool_calls([tool], parse_tool_calls(
        '<tool_call>{"name": "python", "arguments": {"code": "import socket; socket.socket()"}}</tool_call>'))
    assert network["content"].startswith("error: python:")


def _episodes(reply, tools, max_turns=4):
    tokenizer = load_tokenizer(ModelConfig())
    examples = generate(3, seed=1)
    backend = EpisodeBackend(ScriptedBackend(reply), ArithmeticTools(tools), EpisodeLimits(max_turns, 400))
    return examples, backend.generate(None, tokenizer, examples[:2], SamplingSettings(2, 120, 1.0), torch.Generator())


def test_a_malformed_call_gets_an_error_observation_and_the_episode_goes_on():
    def reply(prompt, turn):
        if turn == 1:
            return '<tool_call>{"name": "calculator", "arguments": {"expression": </tool_call>'  # broken JSON
        if turn == 2:
            return '<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call>'
        return "<answer>5</answer>"

    examples, batch = _episodes(reply, (calculator(),))
    for episode in batch.episodes:
        roles = [m["role"] for m in episode.messages]
        assert roles == ["assistant", "tool", "assistant", "tool", "assistant"]
        assert episode.messages[1]["content"].startswith("error: tool call is not valid JSON")
        assert episode.messages[3]["content"] == "5"
        assert episode.finish == "environment" and episode.state.tool_errors == 1 and episode.state.tool_calls == 2
        assert episode.outcome.score == float(episode.state.answer == 5)


def test_the_right_answer_after_a_tool_result_scores_one():
    answers = {}

    def reply(prompt, turn):
        answer = next(str(e.fields["answer"]) for e in examples if e.prompt in prompt)
        answers[prompt] = answer
        return CALC % f"0+{answer}" if turn == 1 else f"<answer>{answer}</answer>"

    examples = generate(3, seed=1)
    _, batch = _episodes(reply, (calculator(),))
    assert all(e.outcome.score == 1.0 and e.model_turns == 2 for e in batch.episodes)
    assert "<|im_start|>tool" in load_tokenizer(ModelConfig()).decode(batch.completion_ids[0])


def test_tools_are_listed_for_a_template_without_tool_support():
    tokenizer = load_tokenizer(ModelConfig())
    renderer = TurnRenderer(tokenizer, True, None)
    assert not renderer.takes_tools  # the embedded template has no tools section: a system message lists them
    example = load_examples(DataConfig(source="word_problems", train_size=2, val_size=1))[0][0]
    text = tokenizer.decode(renderer.prompt_ids(example, None, [calculator()]))
    assert text.startswith("<|im_start|>system\nYou can call these tools:") and '"name": "calculator"' in text
    assert "<tool_call>" in text and example.prompt in text


def test_word_problems_are_seeded_and_their_answers_right():
    a, b = generate(50, seed=3), generate(50, seed=3)
    assert a == b and generate(50, seed=4) != a
    assert all(isinstance(e.fields["answer"], int) for e in a)
    import re
    first = a[0]
    numbers = [int(n) for n in re.findall(r"\d+", first.prompt)]
    assert numbers  # the problem states its numbers
