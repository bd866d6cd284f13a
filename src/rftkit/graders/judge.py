"""LLM judges: `llm_judge`, and OpenAI's `score_model` / `label_model` shapes.

A rubric (OpenAI-style messages with `{{item.x}}` / `{{sample.output_text}}` templates) is sent
to any OpenAI-compatible chat-completions endpoint (`base_url`, `model`, key read from the
environment variable named by `api_key_env`) or to a local transformers model
(`backend: transformers`, loaded from the local cache only). The reply is parsed as a score
(JSON `{"result": x}` / `{"score": x}`, "Score: x", or a bare number), clamped to `range` and
mapped onto [0, 1], or as a label (1 if it is one of `passing_labels`).

Failure semantics (the seed: a broken reward must be loud, a flaky one must not poison the run):
- endpoint down, timeout, HTTP 429/5xx, or an unparseable reply: retried `max_retries` times with
  exponential backoff, then the grade is *masked* (no signal, out of the gradient), not 0;
- HTTP 4xx otherwise (bad key, unknown model) is a configuration error: the grade is an error,
  and when every completion errs `check_health` stops the run.
Replies are cached in memory by a hash of (endpoint, model, messages, sampling params), so a
repeated completion (common within a GRPO group) costs one request.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, check_ordered_range, register
from rftkit.graders.templates import Template, compile_template, SampleError

# One optional separator between two optional runs of spaces: `\s*[:=]?\s*` would try every split of
# a long run of spaces between them (quadratic in its length).
_SCORE_RE = re.compile(r"(?:score|rating|result|grade)\W{0,3}\s*(?:[:=]\s*)?(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_FENCE_RE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)


class JudgeUnavailable(RuntimeError):
    """Transient: retry, then mask."""


class JudgeRequestError(RuntimeError):
    """The endpoint rejected the request itself (bad key, unknown model): an error, not a mask."""


class Message(BaseModel):
    """One of OpenAI's grader input messages (an EvalItem). `content` is a string, one content
    object (`{"type": "input_text", "text": ...}`) or a list of them, as OpenAI accepts."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | dict[str, Any] | list[dict[str, Any]]
    type: Literal["message"] | None = None  # OpenAI's EvalItem carries it; ignored

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in [self.content] if isinstance(self.content, dict) else self.content:
            if part.get("type") not in ("input_text", "output_text", "text") or not isinstance(part.get("text"), str):
                raise ValueError(f"content part of type {part.get('type')!r} is not supported (text parts only: "
                                 "input_text, output_text)")
            parts.append(part["text"])
        return "\n".join(parts)


class JudgeParams(GraderParams):
    input: list[Message] | None = Field(None, description="Messages (OpenAI shape) with templates.")
    rubric: str | None = Field(None, validate_default=True, description="Shorthand: one user message.")
    mode: Literal["score", "label"] = Field("score", description="Parse a number or a label.")
    model: str = Field(description="Model name at the endpoint, or a local path/cached hub name (transformers).")
    backend: Literal["openai", "transformers"] = "openai"
    base_url: str = Field("https://api.openai.com/v1", description="OpenAI-compatible API root (…/v1).")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key (none: no key).")
    range: tuple[float, float] = Field((0.0, 1.0), description="Score scale of the rubric, mapped onto [0, 1].")
    labels: list[str] | None = Field(None, description="Allowed labels (mode: label).")
    passing_labels: list[str] | None = Field(None, validate_default=True, description="Labels scored 1.")
    pass_threshold: float | None = Field(None, description="Score (on `range`) reported as a pass in details.")
    sampling_params: dict[str, Any] = Field(default_factory=dict, description="Passed to the endpoint "
                                            "(temperature, top_p, seed, max_completion_tokens, ...).")
    timeout_s: float = Field(20.0, gt=0, description="Seconds one request may take.")
    max_retries: int = Field(2, ge=0, description="Retries of a failed or unparseable request (then masked).")
    retry_backoff_s: float = Field(1.0, ge=0, description="Wait before the first retry; doubled for each next.")
    batch_timeout_s: float = Field(60.0, gt=0, description="Deadline of one batch's grading: no retry starts after "
                                   "it and what is unanswered is masked, so a judge that is down or slow delays a "
                                   "step by at most about batch_timeout_s + timeout_s.")
    max_concurrency: int = Field(4, ge=1, description="Requests in flight per batch.")
    reply_instruction: bool = Field(True, description="Append 'reply with JSON {\"result\": ...}' to the prompt.")

    @field_validator("rubric")
    @classmethod
    def _one_prompt(cls, rubric: str | None, info) -> str | None:
        messages = info.data.get("input")
        if (rubric is None) == (messages is None) and "input" in info.data:
            raise ValueError("give exactly one of 'input' (messages) or 'rubric' (text)")
        for text in [rubric] if rubric is not None else [m.text() for m in messages or []]:
            compile_template(text)
        return rubric

    _ordered = field_validator("range")(check_ordered_range)

    @field_validator("passing_labels")
    @classmethod
    def _labels(cls, passing: list[str] | None, info) -> list[str] | None:
        if info.data.get("mode") != "label":
            return passing
        labels = info.data.get("labels")
        if not labels or not passing or not set(passing) <= set(labels):
            raise ValueError("mode label needs 'labels' and non-empty 'passing_labels' that are a subset of them")
        return passing


class ScoreModelParams(JudgeParams):
    mode: Literal["score"] = "score"


class LabelModelParams(JudgeParams):
    mode: Literal["label"] = "label"


def _is_local(url: str) -> bool:
    host = urllib.parse.urlparse(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class OpenAIBackend:
    base_url: str
    model: str
    api_key: str | None
    timeout_s: float
    sampling: dict[str, Any]

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self.model, "messages": messages, **self.sampling}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url.rstrip("/") + "/chat/completions",
                                         data=json.dumps(body).encode(), headers=headers, method="POST")
        # A loopback judge must not be sent through an http_proxy from the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({} if _is_local(self.base_url) else None))
        try:
            with opener.open(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode("utf-8", "replace")
            if exc.code == 429 or exc.code >= 500:
                raise JudgeUnavailable(f"HTTP {exc.code}: {detail}") from None
            raise JudgeRequestError(f"HTTP {exc.code} from {self.base_url}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as exc:
            raise JudgeUnavailable(f"{type(exc).__name__}: {exc}") from None
        try:
            content = payload["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise JudgeUnavailable(f"malformed response: {str(payload)[:200]}") from None
        if not isinstance(content, str):
            raise JudgeUnavailable("the judge returned no text (refusal?)")
        return content


@dataclass
class TransformersBackend:
    """A local judge; loaded once on first use from the local cache (nothing is downloaded)."""

    model: str
    sampling: dict[str, Any]
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loaded: Any = None

    def complete(self, messages: list[dict[str, str]]) -> str:
        with self._lock:  # one forward at a time; the model is not thread-safe and CPU-bound anyway
            tokenizer, model = self._load()
            import torch

            if getattr(tokenizer, "chat_template", None):
                prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            else:
                prompt = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"
            inputs = tokenizer(prompt, return_tensors="pt")
            max_new = int(self.sampling.get("max_completion_tokens", self.sampling.get("max_tokens", 64)))
            with torch.no_grad():
                output = model.generate(**inputs, max_new_tokens=max_new, do_sample=False)
            return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def _load(self) -> Any:
        if self._loaded is None:
            if self.model.startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(self.model)):
                raise JudgeRequestError(f"cannot load local judge {self.model!r}: no such directory")
            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer
                tokenizer = AutoTokenizer.from_pretrained(self.model, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(self.model, local_files_only=True).eval()
            except Exception as exc:  # missing model, bad path: a config error, reported as such
                raise JudgeRequestError(f"cannot load local judge {self.model!r}: {exc}") from None
            self._loaded = (tokenizer, model)
        return self._loaded


def parse_score(reply: str) -> float | None:
    """The judge's number: JSON {"result"|"score": x}, "Score: x", or a bare number; None if absent."""
    fence = _FENCE_RE.search(reply)
    body = (fence.group(1) if fence else reply).strip()
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        data = next((data[k] for k in ("result", "score", "rating", "grade") if k in data), None)
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data) if math.isfinite(data) else None
    matches = _SCORE_RE.findall(reply)
    if matches:
        return float(matches[-1])
    try:
        value = float(body)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_label(reply: str, labels: Sequence[str]) -> str | None:
    fence = _FENCE_RE.search(reply)
    body = (fence.group(1) if fence else reply).strip()
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            body = str(next((data[k] for k in ("result", "label") if k in data), body))
    except ValueError:
        pass
    by_fold = {label.casefold(): label for label in labels}
    cleaned = body.strip().strip("\"'.`*").strip().casefold()
    if cleaned in by_fold:
        return by_fold[cleaned]
    mentioned = [label for label in labels if re.search(rf"\b{re.escape(label)}\b", body, re.IGNORECASE)]
    return mentioned[0] if len(mentioned) == 1 else None


@dataclass
class Judge:
    name: str
    messages: list[tuple[str, Template]]  # (role, content template)
    backend: Any
    params: JudgeParams
    cache: dict[str, str] = field(default_factory=dict)
    _sleep: Any = time.sleep  # tests replace it to keep retries instant

    def _render(self, example: Example, completion: str) -> list[dict[str, str]]:
        messages = [{"role": role, "content": t.render(example, completion)} for role, t in self.messages]
        if self.params.reply_instruction:
            if self.params.mode == "score":
                lo, hi = self.params.range
                hint = f'Reply with only a JSON object {{"result": <number from {lo:g} to {hi:g}>}}.'
            else:
                hint = f'Reply with only a JSON object {{"result": "<one of: {", ".join(self.params.labels or [])}>"}}.'
            messages[-1] = {**messages[-1], "content": messages[-1]["content"] + "\n\n" + hint}
        return messages

    def _key(self, messages: list[dict[str, str]]) -> str:
        where = self.params.base_url if self.params.backend == "openai" else "local"
        blob = json.dumps([where, self.params.model, messages, self.params.sampling_params], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _interpret(self, reply: str) -> Grade | None:
        """A Grade from the reply, or None when the reply says nothing usable (then we retry)."""
        p = self.params
        if p.mode == "label":
            label = parse_label(reply, p.labels or [])
            if label is None:
                return None
            passed = label in (p.passing_labels or [])
            return Grade(float(passed), f"judge label {label!r} ({'passing' if passed else 'not passing'})",
                         {"label": label, "reply": reply[:500]})
        value = parse_score(reply)
        if value is None:
            return None
        lo, hi = p.range
        clamped = min(hi, max(lo, value))
        # "raw": the score on `range`, truncated to it: what an OpenAI multi grader's formula sees
        details: dict[str, Any] = {"judge_score": value, "raw": clamped, "reply": reply[:500]}
        if p.pass_threshold is not None:
            details["passed"] = clamped >= p.pass_threshold
        note = "" if clamped == value else f" (outside {lo:g}..{hi:g}, clamped)"
        return Grade((clamped - lo) / (hi - lo), f"judge score {value:g}{note}", details)

    def _ask(self, messages: list[dict[str, str]], deadline: float | None = None) -> Grade:
        key = self._key(messages)
        if key in self.cache:
            grade = self._interpret(self.cache[key])
            if grade is not None:
                return grade
        problem = ""
        for attempt in range(self.params.max_retries + 1):
            if attempt:
                wait = self.params.retry_backoff_s * 2 ** (attempt - 1)
                if deadline is not None and time.monotonic() + wait >= deadline:
                    problem += f"; batch_timeout_s={self.params.batch_timeout_s:g} s reached, no more retries"
                    break
                self._sleep(wait)
            try:
                reply = self.backend.complete(messages)
            except JudgeUnavailable as exc:
                problem = str(exc)
                continue
            grade = self._interpret(reply)
            if grade is not None:
                self.cache[key] = reply
                return grade
            problem = f"unparseable reply {reply[:80]!r}"
        return Grade(0.0, f"judge gave no usable answer after {attempt + 1} tries: {problem}"[:300], masked=True)

    def grade(self, example: Example, completion: str) -> Grade:
        return self.grade_batch([example], [completion])[0]

    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
        prepared: list[list[dict[str, str]] | Grade] = []
        for example, completion in zip(examples, completions):
            try:
                prepared.append(self._render(example, completion))
            except SampleError as exc:
                prepared.append(Grade(0.0, str(exc)))
        unique = {self._key(m): m for m in prepared if not isinstance(m, Grade)}
        deadline = time.monotonic() + self.params.batch_timeout_s
        with ThreadPoolExecutor(max_workers=min(self.params.max_concurrency, max(1, len(unique)))) as pool:
            futures = {key: pool.submit(self._guarded_ask, m, deadline) for key, m in unique.items()}
            answers = {key: future.result() for key, future in futures.items()}
        return [m if isinstance(m, Grade) else answers[self._key(m)] for m in prepared]

    def _guarded_ask(self, messages: list[dict[str, str]], deadline: float | None = None) -> Grade:
        if deadline is not None and time.monotonic() >= deadline:  # queued behind slow requests past the deadline
            return Grade(0.0, f"judge not asked: batch_timeout_s={self.params.batch_timeout_s:g} s reached",
                         masked=True)
        try:
            return self._ask(messages, deadline)
        except JudgeRequestError as exc:  # configuration: an error for this completion, loud in check_health
            return Grade(0.0, f"judge request rejected: {exc}"[:300], error=True)


def build_judge(name: str, p: JudgeParams) -> Judge:
    sources = [("user", p.rubric)] if p.rubric is not None else [(m.role, m.text()) for m in p.input or []]
    messages = [("system" if role == "developer" else role, compile_template(text)) for role, text in sources]
    if p.backend == "transformers":
        backend: Any = TransformersBackend(p.model, dict(p.sampling_params))
    else:
        api_key = None
        if p.api_key_env is not None:
            api_key = os.environ.get(p.api_key_env)
            if not api_key:
                raise ValueError(f"grader {name!r}: environment variable {p.api_key_env} (api_key_env) is not set")
        backend = OpenAIBackend(p.base_url, p.model, api_key, p.timeout_s, dict(p.sampling_params))
    return Judge(name, messages, backend, p)


register("llm_judge", JudgeParams, "An LLM judge (OpenAI-compatible endpoint or local transformers model) "
         "scoring by a rubric or assigning a label; infrastructure failures are masked")(build_judge)
register("score_model", ScoreModelParams, "OpenAI score_model: the judge returns a number on `range`, mapped "
         "onto [0, 1]")(build_judge)
register("label_model", LabelModelParams, "OpenAI label_model: 1 if the judge's label is one of "
         "passing_labels")(build_judge)
