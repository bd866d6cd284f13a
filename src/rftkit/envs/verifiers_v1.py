"""Environments written for verifiers 0.4 (its `verifiers.v1` stack: Taskset, Task, Env, Harness), unchanged.

    env:
      name: verifiers
      options: {taskset: my_taskset}      # an installed v1 taskset package, or path/to/my_taskset.py
    data: {source: env}                   # the taskset's tasks become the examples

verifiers 0.4 runs an episode the way it runs an eval: its `Env.run_episode` places the task's agent
(its *harness*: a chat loop or an agent program) in a runtime, the harness calls the model through
verifiers' interception server, the taskset's `@vf.tool` toolsets answer tool calls over
MCP, an `Env.run` can relay further user turns (`interaction().turn(...)`, 0.4's `env_response`), and the
task's `@vf.reward`s score the trace. rftkit does not reimplement any of it. It stands in for the model
instead: the episode's client is an OpenAI-compatible chat endpoint served by this adapter on 127.0.0.1,
whose every request waits until rftkit has sampled the turn. Each episode gets its own model name, so a
request names its episode. rftkit lays the episode out as one token sequence (the first request's
messages, then each sampled reply, then the messages the next request adds: tool results, user turns)
and trains only the sampled tokens; the trace's weighted reward is the outcome (`reward_range` maps it
onto [0, 1] for the `environment` grader).

Defaults rftkit sets where the user's `config` does not: the agent's runtime is `subprocess` (verifiers'
default is a remote Prime sandbox) and, for a taskset that ships no harness of its own, the harness is
`rftkit-chat` (verifiers' `null` chat program run in-process, see rftkit_chat; verifiers' default `bash`
harness runs the model's shell commands). A harness that executes
model-written code is refused on the `subprocess` runtime, which is the host: choose a container runtime
(`docker`, `podman`) for it.

Not supported (each is an error naming it): environments with more than one agent seat (user-sim,
agentic judges: rftkit trains one policy sequence per episode), an episode that runs its agent more than
once or issues two model requests at a time, a request that rewrites the history it was given, content
other than text, and `n > 1` requests. The harness's own sampling settings (temperature, max_tokens) are
ignored: rftkit's `train.*` sampling applies. When rftkit's limits end an episode (env.max_turns,
env.max_episode_tokens) while the environment waits for another model turn, that request is answered with
HTTP 400 `context_length_exceeded`, which is how an inference server refuses an overlong prompt; the
harness ends the segment and the task scores the trace as it stands.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rftkit.data import Example
from rftkit.envs.base import EnvReply, EpisodeStart
from rftkit.envs.tools import _CALL_RE, MAX_CALL_CHARS, MAX_CALLS_PER_TURN, Tool
from rftkit.envs.verifiers_env import _NAME_RE  # the same call parsing as the 0.3 adapter
from rftkit.graders.base import Grade

INSTALL_HINT = "env.options.taskset needs verifiers 0.4 (its verifiers.v1 API): pip install 'rftkit[verifiers]'"
_API_KEY_VAR = "RFTKIT_VERIFIERS_ENDPOINT_KEY"
_OBSERVATION_ROLES = ("user", "tool")


def _vf():
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("verifiers")
        major_minor = tuple(int(part) for part in installed.split(".")[:2])
    except (PackageNotFoundError, ValueError) as exc:
        raise ImportError(INSTALL_HINT) from exc
    if major_minor < (0, 4):  # 0.3 ships an early, different verifiers.v1
        raise ImportError(f"{INSTALL_HINT} (verifiers {installed} is installed; its v0 classes take env.options.load)")
    import verifiers.v1 as vf

    return vf


class EndedByRftkit(Exception):
    """rftkit's limits ended the episode while the environment waited for another model turn."""


@dataclass
class _Request:
    messages: list[dict]  # the request's messages, as rftkit messages ({'role', 'content'})
    tools: list[Tool] | None
    future: asyncio.Future  # rftkit's sampled reply (str), or EndedByRftkit


@dataclass
class V1Episode:
    """One verifiers 0.4 episode while rftkit drives it: the `state` rftkit's runner holds."""

    example: Example
    model: str  # the model name this episode's requests carry (routes them here)
    task: asyncio.Task | None = None  # verifiers' Env.run_episode
    request: _Request | None = None  # the model request waiting for rftkit's turn
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    seen: int = 0  # messages of the last request (its history): the next must extend it
    history: list[dict] = field(default_factory=list)  # that request's non-assistant messages, to check
    ended: bool = False  # rftkit closed it: further requests are refused at once
    problem: str | None = None  # what the endpoint refused (the adapter raises it, naming the example)
    result: Any = None  # verifiers' Episode, once run_episode returned


def as_message(raw: Any, where: str) -> dict[str, str]:
    """An OpenAI chat message (as the harness sends it) as rftkit's {'role', 'content'}; text only."""
    if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
        raise ValueError(f"{where}: not a chat message ({str(raw)[:80]!r})")
    content = raw.get("content")
    if content is None:
        content = ""
    elif isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"{where}: a {raw['role']} message has a {kind!r} content part; only text is "
                                 "supported")
            parts.append(str(part.get("text", "")))
        content = "".join(parts)
    return {"role": raw["role"], "content": str(content)}


def tools_of(raw_tools: Any) -> list[Tool] | None:
    """The request's OpenAI function tools as rftkit tools (rendered through the chat template; verifiers runs them)."""
    if not raw_tools:
        return None
    tools = []
    for raw in raw_tools:
        function = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError(f"a request tool is not an OpenAI function tool: {str(raw)[:120]!r}")
        tools.append(Tool(function["name"], str(function.get("description") or ""),
                          dict(function.get("parameters") or {"type": "object", "properties": {}}),
                          _run_by_verifiers))
    return tools


def _run_by_verifiers(arguments: dict) -> str:
    raise RuntimeError("verifiers 0.4 tools are run by the harness through the taskset's toolsets, not by rftkit")


def completion_message(text: str) -> tuple[dict, str]:
    """The model's turn as an OpenAI assistant message and finish reason: `<tool_call>{json}</tool_call>` blocks
    become `tool_calls`. A malformed call is passed on as written (arguments that are not JSON, or an empty name),
    so the harness answers it with its own error message as the tool result: the model sees that, nothing crashes."""
    calls = []
    for body in _CALL_RE.findall(text)[:MAX_CALLS_PER_TURN]:
        body = body.strip()
        name, arguments = "", body[:MAX_CALL_CHARS]
        try:
            value = json.loads(body) if len(body) <= MAX_CALL_CHARS else None
        except (json.JSONDecodeError, RecursionError):
            value = None
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            name = value["name"]
            args = value.get("arguments", value.get("parameters", {}))
            arguments = args if isinstance(args, str) else json.dumps(args)
        elif (found := _NAME_RE.search(body)) is not None:
            name = found.group(1)
        calls.append({"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                      "function": {"name": name, "arguments": arguments}})
    if not calls:
        return {"role": "assistant", "content": text}, "stop"
    content = _CALL_RE.sub("", text).strip()
    return {"role": "assistant", "content": content or None, "tool_calls": calls}, "tool_calls"


class ModelEndpoint:
    """rftkit's sampler as an OpenAI-compatible `/v1/chat/completions` on 127.0.0.1 (streaming or not).

    A request's `model` names its episode; the handler parks the request on it and answers when rftkit has
    sampled the turn. A bearer secret keeps other local processes out."""

    def __init__(self):
        self.episodes: dict[str, V1Episode] = {}
        self.secret = secrets.token_hex(16)
        self.base_url = ""
        self._runner = None

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _refuse(self, status: int, message: str, code: str):
        from aiohttp import web

        return web.json_response({"error": {"message": message, "type": "invalid_request_error", "code": code}},
                                 status=status)

    async def _models(self, request):
        from aiohttp import web

        return web.json_response({"object": "list", "data": [{"id": m, "object": "model", "owned_by": "rftkit"}
                                                             for m in self.episodes]})

    async def _chat(self, request):
        if request.headers.get("Authorization") != f"Bearer {self.secret}":
            return self._refuse(401, "rftkit's endpoint: wrong or missing API key", "invalid_api_key")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._refuse(400, "rftkit's endpoint: the body is not JSON", "invalid_json")
        episode = self.episodes.get(body.get("model")) if isinstance(body, dict) else None
        if episode is None:
            return self._refuse(404, f"rftkit's endpoint: no episode is served as model {body.get('model')!r}",
                                "model_not_found")
        if episode.ended:
            return self._refuse(400, "rftkit ended the episode (its turn or token limit)", "context_length_exceeded")
        if body.get("n", 1) != 1:
            return self._fail(episode, "the harness asked for n > 1 completions; rftkit samples one per request")
        if episode.request is not None:
            return self._fail(episode, "the episode sent a second model request while one was waiting (parallel "
                                       "agents or tool-parallel sub-calls); rftkit trains one sequence per episode")
        try:
            messages = [as_message(m, f"request message {i}") for i, m in enumerate(body.get("messages") or [])]
            tools = tools_of(body.get("tools"))
        except ValueError as exc:
            return self._fail(episode, str(exc))
        future = asyncio.get_running_loop().create_future()
        episode.request = _Request(messages, tools, future)
        episode.asked.set()
        try:
            text = await future
        except EndedByRftkit as exc:
            return self._refuse(400, f"rftkit ended the episode ({exc})", "context_length_exceeded")
        except ValueError as exc:  # rftkit could not lay the request out (set by the adapter)
            return self._refuse(400, f"rftkit cannot train on this request: {exc}", "invalid_request_error")
        message, finish = completion_message(text)
        return await self._answer(request, body, message, finish)

    def _fail(self, episode: V1Episode, problem: str):
        episode.problem = problem
        episode.asked.set()
        return self._refuse(400, f"rftkit: {problem}", "invalid_request_error")

    async def _answer(self, request, body: dict, message: dict, finish: str):
        from aiohttp import web

        completion = {"id": f"rftkit-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                      "model": body["model"], "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
        if not body.get("stream"):
            return web.json_response(completion)
        delta = dict(message)
        if delta.get("tool_calls"):
            delta["tool_calls"] = [dict(call, index=i) for i, call in enumerate(delta["tool_calls"])]
        chunk = dict(completion, object="chat.completion.chunk",
                     choices=[{"index": 0, "delta": delta, "finish_reason": finish}])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


class VerifiersV1Environment:
    """An rftkit `Environment` around one verifiers 0.4 environment (its `Env` over a `Taskset`)."""

    name = "verifiers"
    tools: tuple = ()  # per episode: the tools of its first request (the taskset's toolsets)

    def __init__(self, taskset: str, config: dict[str, Any], reward_range: tuple[float, float] = (0.0, 1.0),
                 turn_timeout_s: float = 300.0):
        self.vf = _vf()
        self.reward_range, self.turn_timeout_s = reward_range, turn_timeout_s
        self.vf_env = _load_env(taskset, json.dumps(config, sort_keys=True))
        self._tasks = None
        self.loop = asyncio.new_event_loop()
        self.endpoint = ModelEndpoint()
        self._serving: contextlib.AsyncExitStack | None = None

    # ------------------------------------------------------------ data

    def tasks(self) -> list:
        if self._tasks is None:
            self._tasks = list(self.vf_env.taskset)
        return self._tasks

    def examples(self, split: str) -> list[Example] | None:
        """The taskset's tasks as examples ('train'); a v1 taskset has no separate eval set ('eval': None, so
        rftkit holds out `data.val_size` of them)."""
        if split == "eval":
            return None
        examples = []
        for task in self.tasks():
            data = task.data
            messages = None
            if not isinstance(data.prompt, str):
                wire = [m.model_dump(mode="json", exclude_none=True) for m in data.prompt or []]
                messages = tuple(as_message(m, f"task {data.idx} prompt") for m in wire)
            if data.system_prompt:
                messages = ({"role": "system", "content": data.system_prompt},
                            *(messages if messages is not None else ({"role": "user", "content": data.prompt or ""},)))
            examples.append(Example(id=f"train-{data.id if data.id is not None else data.idx}",
                                    prompt=data.prompt if messages is None else None, messages=messages,
                                    fields={"verifiers_task": data.idx}))
        return examples

    # ------------------------------------------------------------ the episode protocol

    def reset(self, example: Example) -> EpisodeStart:
        return self.reset_many([example])[0]

    def reset_many(self, examples: Sequence[Example]) -> list[EpisodeStart]:
        """Start every episode's verifiers rollout at once, then wait until each has asked for its first turn."""
        self._ensure_serving()
        tasks = self.tasks()
        episodes = []
        for example in examples:
            index = example.fields.get("verifiers_task")
            if not isinstance(index, int) or not 0 <= index < len(tasks):
                raise ValueError(f"example {example.id} is not a task of this taskset: use data.source: env with "
                                 "env.options.taskset")
            episode = V1Episode(example, f"rftkit-episode-{uuid.uuid4().hex}")
            self.endpoint.episodes[episode.model] = episode
            context = self.vf.ModelContext(model=episode.model, client=self.vf.EvalClientConfig(
                base_url=self.endpoint.base_url, api_key_var=_API_KEY_VAR))
            episode.task = self.loop.create_task(self.vf_env.run_episode(tasks[index], context))
            episodes.append(episode)
        self._run_until_asked(episodes, "its first model request")
        starts = []
        for episode in episodes:
            if episode.request is None:
                raise RuntimeError("the verifiers episode ended before the model's first turn: "
                                   + _failure(episode.result))
            episode.seen = len(episode.request.messages)
            episode.history = list(episode.request.messages)
            starts.append(EpisodeStart(episode, tuple(episode.request.messages),
                                       None if episode.request.tools is None else tuple(episode.request.tools)))
        return starts

    def step(self, episode: V1Episode, reply: str) -> EnvReply:
        return self.step_many([episode], [reply])[0]

    def step_many(self, episodes: Sequence[V1Episode], replies: Sequence[str]) -> list[EnvReply]:
        """Answer each episode's waiting request with rftkit's reply; wait until each asks again or ends."""
        for episode, reply in zip(episodes, replies):
            request, episode.request = episode.request, None
            episode.asked = asyncio.Event()
            request.future.set_result(reply)
        self._run_until_asked(list(episodes), "its next model request or its end")
        return [self._observation(episode) for episode in episodes]

    def _observation(self, episode: V1Episode) -> EnvReply:
        if episode.request is None:  # the episode is over (the harness finished, a @vf.stop, Env.run returned)
            return EnvReply(done=True)
        messages, seen = episode.request.messages, episode.seen
        history = [m for m in messages[:seen] if m["role"] != "assistant"]
        if len(messages) <= seen or messages[seen]["role"] != "assistant" \
                or history != [m for m in episode.history if m["role"] != "assistant"]:
            problem = ("the next request is not the previous request + the model's reply + new messages (the "
                       "environment or harness rewrites the history, e.g. compaction); rftkit lays an episode out as "
                       "one token sequence and cannot train on that")
            episode.request.future.set_exception(ValueError(problem))
            episode.request = None
            raise ValueError(problem)
        new = messages[seen + 1:]
        if not new or any(m["role"] not in _OBSERVATION_ROLES for m in new):
            roles = [m["role"] for m in new]
            problem = f"the next request adds {roles} after the model's reply; rftkit expects user or tool messages"
            episode.request.future.set_exception(ValueError(problem))
            episode.request = None
            raise ValueError(problem)
        episode.seen, episode.history = len(messages), list(messages)
        return EnvReply(tuple(new))

    def close(self, episode: V1Episode, reason: str) -> None:
        """The episode is over for rftkit: refuse what it still asks, and let verifiers finish it (scoring)."""
        episode.ended = True
        if episode.request is not None:
            request, episode.request = episode.request, None
            request.future.set_exception(EndedByRftkit(reason))
        self._run_until_done(episode)

    def score(self, episodes: Sequence[V1Episode]) -> list[Grade | None]:
        """Each episode's trace reward (the task's weighted @vf.reward sum) as its outcome."""
        for episode in episodes:
            if not episode.ended:  # an episode the runner never closed (it always does): finish it here
                self.close(episode, "scored")
            self.endpoint.episodes.pop(episode.model, None)
        return [self._grade(episode) for episode in episodes]

    def _grade(self, episode: V1Episode) -> Grade:
        result = episode.result
        traces = list(result.traces)
        if len(traces) != 1:
            raise ValueError(f"the verifiers episode of example {episode.example.id} has {len(traces)} traces; rftkit "
                             "trains one agent run per episode (an Env.run that runs its agent more than once is not "
                             "supported)")
        trace = traces[0]
        rewards = {name: None if r is None else r.score for name, r in trace.rewards.items()}
        metrics = {name: value for name, value in trace.metrics.items() if value is not None}
        details = {"rewards": rewards, "metrics": metrics, "stop_condition": trace.stop_condition,
                   "errors": [f"{e.type}: {e.message}"[:300] for e in list(result.errors) + list(trace.errors)]}
        if not rewards or any(value is None for value in rewards.values()):
            return Grade(0.0, "the task gave no reward (" + _failure(result) + ")", details, masked=True)
        reward, (low, high) = float(trace.reward), self.reward_range
        details["reward"] = reward
        if not math.isfinite(reward):
            return Grade(0.0, f"the task's reward is {reward!r}", details, masked=True)
        score = min(1.0, max(0.0, (reward - low) / (high - low)))
        shown = ", ".join(f"{k}={v:g}" for k, v in rewards.items())
        return Grade(score, f"trace reward {reward:g} ({shown})", details)

    # ------------------------------------------------------------ the event loop

    def _ensure_serving(self) -> None:
        """Bring up rftkit's endpoint and verifiers' serving resources (interception, shared toolsets) once."""
        if self._serving is not None:
            return
        os.environ[_API_KEY_VAR] = self.endpoint.secret
        _quiet_logs()
        stack = contextlib.AsyncExitStack()

        async def enter():
            await self.endpoint.start()
            stack.push_async_callback(self.endpoint.stop)
            await stack.enter_async_context(self.vf_env.serving())

        self.loop.run_until_complete(enter())
        self._serving = stack
        atexit.register(self.shutdown)

    def shutdown(self) -> None:
        """Stop verifiers' servers and rftkit's endpoint (at exit)."""
        stack, self._serving = self._serving, None
        if stack is not None and not self.loop.is_closed():
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.wait_for(stack.aclose(), 30))

    def _run_until_asked(self, episodes: list[V1Episode], waiting_for: str) -> None:
        async def until_asked(episode: V1Episode):
            waiter = asyncio.ensure_future(episode.asked.wait())
            try:
                await asyncio.wait([episode.task, waiter], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

        async def all_asked():
            await asyncio.wait_for(asyncio.gather(*(until_asked(e) for e in episodes)), self.turn_timeout_s)

        try:
            self.loop.run_until_complete(all_asked())
        except TimeoutError:
            slow = [e for e in episodes if e.request is None and not e.task.done()]
            raise TimeoutError(f"{len(slow)} verifiers episode(s) (first: example {slow[0].example.id}) sent neither "
                               f"{waiting_for} nor ended within env.options.turn_timeout_s = {self.turn_timeout_s:g} s"
                               ) from None
        for episode in episodes:
            if episode.problem:
                raise ValueError(f"example {episode.example.id}: {episode.problem}")
            if episode.task.done():
                if episode.task.exception() is not None:
                    raise episode.task.exception()
                episode.result = episode.task.result()

    def _run_until_done(self, episode: V1Episode) -> None:
        async def done():
            await asyncio.wait_for(asyncio.shield(episode.task), self.turn_timeout_s)

        try:
            self.loop.run_until_complete(done())
        except TimeoutError:
            raise TimeoutError(f"the verifiers episode of example {episode.example.id} did not end within "
                               f"env.options.turn_timeout_s = {self.turn_timeout_s:g} s after rftkit closed it"
                               ) from None
        episode.result = episode.task.result()


class _DropRftkitRefusals(logging.Filter):
    """verifiers warns of every failed model call; rftkit ending an episode at its limits is not a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "rftkit ended the episode" not in record.getMessage()


def _quiet_logs() -> None:
    """An access-log line per model request and verifiers' per-rollout lines would bury rftkit's own output."""
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("verifiers").setLevel(logging.WARNING)  # per-rollout INFO lines; rftkit logs at INFO
    server = logging.getLogger("verifiers.v1.interception.server")
    if not any(isinstance(f, _DropRftkitRefusals) for f in server.filters):
        server.addFilter(_DropRftkitRefusals())


def _failure(result) -> str:
    if result is None:
        return "no result"
    errors = list(result.errors) + [e for t in result.traces for e in t.errors]
    stops = [t.stop_condition for t in result.traces]
    shown = "; ".join(f"{e.type}: {str(e.message).strip().splitlines()[0][:200] if e.message else ''}"
                      for e in errors[:2])
    return f"stop condition {stops[0] if stops else None!r}" + (f", error {shown}" if shown else "")


def _import_target(taskset: str) -> str:
    """A taskset id, or a .py file / package directory made importable (also for the runtime's tool servers,
    which import the taskset's module in their own process: its directory joins PYTHONPATH)."""
    path = Path(taskset)
    if taskset.endswith(".py") or path.is_dir():
        if not path.exists():
            raise ValueError(f"env.options.taskset: {taskset} does not exist")
        directory = str(path.resolve().parent)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if directory not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([directory, *paths])
        return path.stem if taskset.endswith(".py") else path.name
    return taskset


def _ensure_uv_on_path() -> None:
    """verifiers' harness programs are uv scripts; the `uv` that `rftkit[verifiers]` installed sits beside this
    interpreter, which is not always on PATH (a venv used without activating it)."""
    beside = Path(sys.executable).parent / "uv"
    if shutil.which("uv") is None and beside.exists():
        os.environ["PATH"] = os.pathsep.join([str(beside.parent), os.environ.get("PATH", "")])


def _load_env(taskset: str, config_json: str):
    """A new verifiers Env for a taskset and its config (never shared: an Env holds its serving resources), with
    rftkit's defaults (the subprocess runtime; the rftkit-chat harness where the taskset ships none), checked for
    what rftkit cannot train or run safely."""
    vf = _vf()
    from verifiers.v1.configs.agent import agent_config_fields

    taskset_id = _import_target(taskset)
    _ensure_uv_on_path()
    raw = json.loads(config_json)
    if "taskset" in raw and not isinstance(raw["taskset"], dict):
        raise ValueError("env.options.config.taskset: must be a mapping of the taskset's knobs")
    raw["taskset"] = {**raw.get("taskset", {}), "id": taskset_id}
    try:
        probe = vf.resolve_env_config(raw)
    except ModuleNotFoundError as exc:
        raise ValueError(f"env.options.taskset: {exc}") from None
    except Exception as exc:  # pydantic's ValidationError names the key
        raise ValueError(f"env.options.config: {exc}") from None
    seats = agent_config_fields(probe)
    if len(seats) != 1:
        raise ValueError(f"env.options.taskset: {taskset_id!r} runs an environment with {len(seats)} agent seats "
                         f"({', '.join(seats) or 'none'}); rftkit trains one policy sequence per episode, so only "
                         "single-agent environments are supported")
    (seat,) = seats
    agent = dict(raw.get(seat) or {})
    if "runtime" not in agent:
        agent["runtime"] = {"type": "subprocess"}
    if "harness" not in agent and vf.default_harness_id(taskset_id) == "bash":
        agent["harness"] = {"id": "rftkit-chat"}  # the null harness's chat loop, in-process (rftkit_chat)
    raw[seat] = agent
    try:
        config = vf.resolve_env_config(raw)
    except Exception as exc:
        raise ValueError(f"env.options.config: {exc}") from None
    spec = agent_config_fields(config)[seat]
    harness_config = spec.harness if spec.harness is not None else vf.default_agent_harness(taskset_id)
    harness = vf.load_harness(harness_config)
    if harness.EXECUTES_CODE and isinstance(spec.runtime, vf.SubprocessConfig):
        raise ValueError(f"env.options.config.{seat}.harness: {harness_config.id!r} executes model-written code, and "
                         "the runtime is 'subprocess' (this host); rftkit runs model code only in isolation: set "
                         f"env.options.config.{seat}.runtime.type to docker or podman, or use the 'null' harness")
    return vf.load_environment(config)
