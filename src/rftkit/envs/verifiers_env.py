"""Environments written for the `verifiers` package (v0 API: SingleTurnEnv, MultiTurnEnv, ToolEnv), unchanged.

    env:
      name: verifiers
      options: {load: "my_envs.py:load_environment", args: {...}}
    data: {source: env}          # the environment's dataset (and eval_dataset) become the examples

The verifiers environment runs its own `rollout` loop, untouched: `setup_state`, its stop conditions,
`env_response`, `final_env_response`, its cleanup handlers, then its rubric (`score_group` per
example, so group reward functions work). rftkit stands in for the model: the environment's
`Client` is an rftkit object whose `get_response` waits until rftkit has sampled the turn. So one
episode is one verifiers rollout, driven turn by turn from `step`, on an event loop private to this
adapter; the rubric's reward is the outcome (the `environment` grader; `reward_range` maps it onto
[0, 1]). Tool calls in the model's text (`<tool_call>{json}</tool_call>`) become the response's
`tool_calls`, which ToolEnv executes and answers with its own tool messages (its own error messages
for bad JSON or an unknown tool).

verifiers 0.4 removed these classes; its v1 stack (Taskset, Env, Harness) has its own adapter,
rftkit.envs.verifiers_v1 (`env.options.taskset`). This one needs verifiers 0.3.x.

Not supported (an error names it where it can be detected): environments that rewrite earlier
messages (`get_prompt_messages` returning a history that is not the previous prompt + the model's reply
+ new messages), multimodal content, the environment's `sampling_args`
and `max_total_completion_tokens` (rftkit's `train.*` sampling and `env.max_episode_tokens` apply),
server mode (`env_client`), and per-step rewards or advantages set on trajectory steps. When rftkit's
limits end an episode first (env.max_turns, env.max_episode_tokens), the pending model request fails
with verifiers' `OverlongPromptError`, so the rollout ends as truncated (stop_condition
'prompt_too_long') and is scored as the environment scores such rollouts.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import importlib.util
import json
import math
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pydantic import Field, model_validator

from rftkit.data import Example
from rftkit.envs import EnvParams, register_environment
from rftkit.envs.base import EnvReply, EpisodeStart
from rftkit.envs.tools import Tool
from rftkit.graders.base import Grade

INSTALL_HINT = ("env.options.load needs verifiers 0.3.x, the last with SingleTurnEnv/MultiTurnEnv/ToolEnv: pip "
                "install 'verifiers>=0.3.1,<0.4'; for verifiers 0.4 write the environment as a v1 Taskset and give "
                "env.options.taskset")
_EPISODE: contextvars.ContextVar["_Episode"] = contextvars.ContextVar("rftkit_verifiers_episode")
_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_NAME_RE = re.compile(r'"name"\s*:\s*"([^"]{1,100})"')


def _vf():
    try:
        import verifiers as vf

        vf.MultiTurnEnv  # noqa: B018  (0.4 has no v0 classes: fail here, by name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(INSTALL_HINT) from exc
    return vf


@dataclass
class _Request:
    prompt: list  # verifiers messages
    tools: list | None
    future: asyncio.Future


@dataclass
class _Episode:
    """One verifiers rollout while rftkit drives it."""

    example: Example
    task: asyncio.Task | None = None
    request: _Request | None = None
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list = field(default_factory=list)  # the messages rftkit has laid out so far (prompt + turns)
    state: Any = None  # the verifiers State, once the rollout has made it


def as_message(message: Any) -> dict[str, str]:
    """A verifiers (or OpenAI-style dict) message as rftkit's {'role', 'content'}; text content only."""
    role = message["role"] if isinstance(message, dict) else message.role
    content = message.get("content") if isinstance(message, dict) else message.content
    if content is None:
        content = ""
    if isinstance(content, list):  # content parts: text only
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
            if kind != "text":
                raise ValueError(f"a {role} message has a {kind!r} content part; only text is supported")
            parts.append(part["text"] if isinstance(part, dict) else part.text)
        content = "".join(parts)
    return {"role": str(role), "content": str(content)}


def _response(vf, text: str, model: str):
    """The model's turn as verifiers' `Response`: `<tool_call>` blocks become `tool_calls`."""
    calls = []
    for body in _CALL_RE.findall(text):
        try:
            value = json.loads(body)
        except (json.JSONDecodeError, RecursionError):
            value = None
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            arguments = value.get("arguments", value.get("parameters", {}))
            arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
            calls.append(vf.ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=value["name"], arguments=arguments))
        else:  # malformed: ToolEnv answers it with its own error message (its arguments do not parse)
            name = _NAME_RE.search(body)
            calls.append(vf.ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=name.group(1) if name else "",
                                     arguments=body.strip()))
    content = _CALL_RE.sub("", text).strip() if calls else text
    message = vf.ResponseMessage(content=content, tool_calls=calls or None,
                              finish_reason="tool_calls" if calls else "stop", is_truncated=False)
    return vf.Response(id=f"rftkit-{uuid.uuid4().hex[:12]}", created=0, model=model, message=message)


def _client_class(vf):
    class RftkitClient(vf.Client):
        """verifiers' model client, answered by rftkit: `get_native_response` waits for rftkit's sample."""

        def __init__(self):
            super().__init__(None)

        def setup_client(self, config):
            return None

        async def to_native_tool(self, tool):
            return tool

        async def to_native_prompt(self, messages):
            return messages, {}

        async def get_native_response(self, prompt, model, sampling_args, tools=None, **kwargs):
            episode = _EPISODE.get()
            episode.state = kwargs.get("state", episode.state)
            future = asyncio.get_running_loop().create_future()
            episode.request = _Request(list(prompt), tools, future)
            episode.asked.set()
            text = await future  # rftkit's sampled turn (or OverlongPromptError when rftkit ends the episode)
            return _response(vf, text, model)

        async def raise_from_native_response(self, response):
            return None

        async def from_native_response(self, response):
            return response

        async def close(self):
            return None

    return RftkitClient


class VerifiersEnvironment:
    """An rftkit `Environment` around one verifiers environment object."""

    name = "verifiers"

    def __init__(self, vf_env, reward_range: tuple[float, float] = (0.0, 1.0)):
        self.vf, self.vf_env, self.reward_range = _vf(), vf_env, reward_range
        if not isinstance(vf_env, self.vf.Environment):
            raise TypeError(f"env.options.load: returned {type(vf_env).__name__}, not a verifiers Environment")
        self.loop = asyncio.new_event_loop()
        self.client = _client_class(self.vf)()
        self.tools = tuple(Tool(t.name, t.description, dict(t.parameters), _run_by_the_environment)
                           for t in (vf_env.tool_defs or []))

    # ------------------------------------------------------------ data

    def examples(self, split: str) -> list[Example]:
        """The environment's dataset ('train') or eval_dataset ('eval'; None when it has none) as examples."""
        if split == "eval":
            self.vf_env.build_eval_dataset()
            dataset = self.vf_env.eval_dataset
            if dataset is None:
                return None
        else:
            dataset = self.vf_env.get_dataset()
        examples = []
        for i, row in enumerate(dataset):
            row = dict(row)
            prompt = row.get("prompt")
            messages = tuple(as_message(m) for m in prompt) if isinstance(prompt, list) else None
            text = prompt if isinstance(prompt, str) else None
            examples.append(Example(id=f"{split}-{row.get('example_id', i)}", prompt=text, messages=messages,
                                    fields={"verifiers_input": row}))
        return examples

    # ------------------------------------------------------------ the episode protocol

    def reset(self, example: Example) -> EpisodeStart:
        row = example.fields.get("verifiers_input")
        if row is None:
            raise ValueError(f"example {example.id} has no verifiers input: use data.source: env with env.name: "
                             "verifiers")
        episode = _Episode(example)

        async def rollout():
            _EPISODE.set(episode)
            return await self.vf_env.rollout(row, self.client, "rftkit", None)

        episode.asked = self._new_event()
        episode.task = self.loop.create_task(rollout())
        self._run_until_asked(episode)
        if episode.request is None:
            state = episode.task.result()
            raise RuntimeError(f"the verifiers rollout ended before the model's first turn "
                               f"(stop_condition {state.get('stop_condition')!r}, error {state.get('error')!r})")
        episode.seen = [as_message(m) for m in episode.request.prompt]
        tools = episode.request.tools
        return EpisodeStart(episode, tuple(episode.seen), None if tools is None else tuple(
            Tool(t.name, t.description, dict(t.parameters), _run_by_the_environment) for t in tools))

    def step(self, episode: _Episode, reply: str) -> EnvReply:
        request, episode.request = episode.request, None
        episode.asked = self._new_event()
        request.future.set_result(reply)
        self._run_until_asked(episode)
        if episode.request is None:  # the rollout has ended (a stop condition, final_env_response, an error)
            return EnvReply(done=True)
        prompt = [as_message(m) for m in episode.request.prompt]
        laid_out = episode.seen + [{"role": "assistant"}]
        if len(prompt) < len(laid_out) or [m["role"] for m in prompt[:len(laid_out)]] != [m["role"] for m in laid_out] \
                or prompt[:len(episode.seen)] != episode.seen:
            raise ValueError("the environment's next prompt is not the previous prompt + the model's reply + new "
                             "messages (it rewrites the history); rftkit lays an episode out as one token sequence "
                             "and cannot train on that")
        new = prompt[len(laid_out):]
        episode.seen = episode.seen + [{"role": "assistant", "content": prompt[len(episode.seen)]["content"]}] + new
        return EnvReply(tuple(new))

    def close(self, episode: _Episode, reason: str) -> None:
        """rftkit's limits ended the episode while the rollout waits for a turn: end it as truncated."""
        if episode.request is not None and not episode.task.done():
            request, episode.request = episode.request, None
            request.future.set_exception(self.vf.OverlongPromptError(f"rftkit ended the episode ({reason})"))
        self.loop.run_until_complete(asyncio.wait([episode.task]))
        episode.state = episode.task.result()  # re-raises what the rollout raised

    def score(self, episodes: Sequence[_Episode]) -> list[Grade | None]:
        """The rubric over each example's episodes together (score_group), then its cleanup handlers."""
        groups: dict[str, list[_Episode]] = {}
        for episode in episodes:
            groups.setdefault(episode.example.id, []).append(episode)

        async def score_all():
            for group in groups.values():
                states = [e.state for e in group]
                if self.vf_env.score_rollouts:
                    await self.vf_env.rubric.score_group(states)
                else:
                    await self.vf_env.rubric.dummy_score_group(states)
                for state in states:
                    await self.vf_env.rubric.cleanup(state)

        self.loop.run_until_complete(score_all())
        return [self._grade(e.state) for e in episodes]

    def _grade(self, state) -> Grade:
        reward, low, high = state.get("reward"), *self.reward_range
        metrics = {k: float(v) for k, v in (state.get("metrics") or {}).items()}
        details = {"reward": reward, "metrics": metrics, "stop_condition": state.get("stop_condition")}
        if reward is None or not math.isfinite(float(reward)):
            return Grade(0.0, f"the rubric gave no reward ({reward!r})", details, masked=True)
        score = min(1.0, max(0.0, (float(reward) - low) / (high - low)))
        shown = ", ".join(f"{k}={v:g}" for k, v in metrics.items())
        return Grade(score, f"rubric reward {float(reward):g}" + (f" ({shown})" if shown else ""), details)

    def _new_event(self) -> asyncio.Event:
        return asyncio.Event()  # binds to this adapter's loop when first awaited

    def _run_until_asked(self, episode: _Episode) -> None:
        async def asked():
            await episode.asked.wait()

        waiter = self.loop.create_task(asked())
        self.loop.run_until_complete(asyncio.wait([episode.task, waiter], return_when=asyncio.FIRST_COMPLETED))
        waiter.cancel()
        self.loop.run_until_complete(asyncio.gather(waiter, return_exceptions=True))
        if episode.task.done() and episode.task.exception() is not None:
            raise episode.task.exception()


def _run_by_the_environment(arguments: dict) -> str:
    raise RuntimeError("verifiers tools are run by the verifiers environment (its env_response), not by rftkit")


@functools.lru_cache(maxsize=8)
def load_verifiers_environment(load: str, args_json: str):
    """`load` is "module:function" or "path/to/file.py:function"; the function gets `args` as keywords."""
    _vf()
    if ":" not in load:
        raise ValueError(f"env.options.load: {load!r}; expected 'module:function' or 'file.py:function'")
    target, function = load.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"env.options.load: {target} is not a file")
        name = f"rftkit_verifiers_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    if not callable(getattr(module, function, None)):
        raise ValueError(f"env.options.load: {target} has no function {function!r}")
    return getattr(module, function)(**json.loads(args_json))


class VerifiersParams(EnvParams):
    load: str | None = Field(None, description="verifiers 0.3 (v0 API): 'module:function' or 'path/to/env.py:function' "
                             "returning a verifiers Environment (SingleTurnEnv, MultiTurnEnv, ToolEnv, or a subclass).")
    args: dict[str, Any] = Field(default_factory=dict, description="verifiers 0.3: keyword arguments of `load`.")
    taskset: str | None = Field(None, description="verifiers 0.4 (verifiers.v1 API): an installed taskset package id, "
                                "or path/to/taskset.py (or a package directory) exporting its Taskset (and optionally "
                                "an Env) in __all__.")
    config: dict[str, Any] = Field(default_factory=dict, description="verifiers 0.4: the environment's config as "
                                   "verifiers takes it (`id`, `taskset` knobs, the agent seat's harness / runtime / "
                                   "max_turns, `timeout`); rftkit defaults the runtime to subprocess and a "
                                   "harness-less taskset's harness to null.")
    turn_timeout_s: float = Field(300.0, gt=0, description="verifiers 0.4: the longest an episode may take to send "
                                  "its next model request (or end) before it is an error.")
    reward_range: tuple[float, float] = Field((0.0, 1.0), description="The reward range, mapped onto [0, 1] "
                                              "(clamped) for the `environment` grader.")

    @model_validator(mode="after")
    def _one_api(self) -> "VerifiersParams":
        if (self.load is None) == (self.taskset is None):
            raise ValueError("give exactly one of `taskset` (verifiers 0.4) or `load` (verifiers 0.3)")
        if self.taskset is not None and self.args:
            raise ValueError("`args` goes with `load` (verifiers 0.3); a 0.4 taskset's knobs go in config.taskset")
        if self.load is not None and self.config:
            raise ValueError("`config` goes with `taskset` (verifiers 0.4); `load` takes `args`")
        if not self.reward_range[0] < self.reward_range[1]:
            raise ValueError("reward_range: need low < high")
        return self


@register_environment("verifiers", VerifiersParams, "An environment written for the verifiers package: 0.4's "
                      "Taskset/Env (env.options.taskset) or 0.3's SingleTurnEnv/MultiTurnEnv/ToolEnv "
                      "(env.options.load); its reward the outcome; data.source: env")
def _build(params: VerifiersParams):
    if params.taskset is not None:
        from rftkit.envs.verifiers_v1 import VerifiersV1Environment

        return VerifiersV1Environment(params.taskset, params.config, params.reward_range, params.turn_timeout_s)
    return VerifiersEnvironment(load_verifiers_environment(params.load, json.dumps(params.args, sort_keys=True)),
                                params.reward_range)
