"""`function`: a grader written as a plain Python function in the user's own code, or one of TRL's.

`function: "my_rewards:brevity"` (a module on sys.path), `"path/to/rewards.py:brevity"`, or TRL's
dotted form `"trl.rewards.accuracy_reward"`. Two calling conventions:

- TRL's reward functions, unchanged. They are called once per batch by keyword, exactly as
  `GRPOTrainer._calculate_rewards` calls them (trl 1.16): `prompts`, `completions`,
  `completion_ids`, every dataset column but `prompt`, `completion` and `completion_ids` as a
  list, `trainer_state`, `log_extra` and `log_metric`; an `async def` function is awaited. In
  the standard format prompts and completions are strings; when the examples are conversational
  (`messages`, or a TRL row whose `prompt` is a list of messages) prompts are those message
  lists and each completion is `[{"role": "assistant", "content": ...}]`. The result is a list
  with one `float | None` per completion; `None` masks it (no signal), as in TRL.
  `log_extra(column, values)` puts each value in its completion's details (`log_extra`);
  `log_metric(name, value)` is logged as `reward/<grader>/<name>`. TRL's own accuracy, format
  and cosine rewards read `completion[0]["content"]`, so in TRL they need conversational rows;
  `conversational: true` gives any rows the conversational shapes (rftkit renders every prompt
  through the chat template anyway).
  A factory such as `trl.rewards.get_soft_overlong_punishment` is called once with
  `factory_kwargs` and the function it returns is the reward.
- `f(example, completion) -> float | Grade`: one completion at a time (a function whose first
  parameter is named `example`, or `style: example`).

`range: [lo, hi]` maps the function's scale onto [0, 1]; without it the documented scale of the
function from `trl.rewards` is used (soft overlong punishment -1..0, repetition penalty
max_penalty..0, cosine-scaled min..max of its values), otherwise 0..1. Values outside are
clamped and the reason says so. NaN or infinity is an error, never a reward.
This runs user code in-process: it is trusted code, like the rest of the user's config.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import math
import numbers
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

from pydantic import Field, field_validator, model_validator

from rftkit.data import Example
from rftkit.graders.base import BatchContext, BatchShapeError, Grade, GraderParams, check_ordered_range, clamp01, \
    register

# The keywords GRPOTrainer passes besides the dataset columns, and the columns it leaves out.
TRL_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")
TRL_DROPPED_COLUMNS = ("prompt", "completion", "completion_ids")


def load_function(target: str) -> Callable[..., Any]:
    """Import `module:attr`, `file.py:attr` or dotted `module.attr`; raises ValueError with what went wrong."""
    module_name, sep, attr = target.rpartition(":")
    if not sep and "." in target and not target.endswith(".py"):
        module_name, _, attr = target.rpartition(".")  # TRL's CLI form: "trl.rewards.accuracy_reward"
    elif not sep:
        module_name = attr = ""
    if not module_name or not attr:
        raise ValueError(f"{target!r}: expected 'module:function', 'package.module.function' or "
                         "'path/to/file.py:function'")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            if not path.is_file():
                raise ValueError(f"{target!r}: file {module_name!r} not found")
            spec = importlib.util.spec_from_file_location(f"rftkit_user_{path.stem}_{abs(hash(path))}", path)
            assert spec is not None and spec.loader is not None
            module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
            if spec.name not in sys.modules:
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ValueError:
        raise
    except Exception as exc:  # the user's module may fail in any way; say which and why
        raise ValueError(f"{target!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise ValueError(f"{target!r}: {module_name!r} has no callable {attr!r}")
    return func


def make_function(target: str, factory_kwargs: dict[str, Any] | None) -> Callable[..., Any]:
    func = load_function(target)
    if factory_kwargs is None:
        return func
    try:
        built = func(**factory_kwargs)
    except Exception as exc:
        raise ValueError(f"{target!r} called with factory_kwargs {factory_kwargs}: {type(exc).__name__}: "
                         f"{exc}") from None
    if not callable(built):
        raise ValueError(f"{target!r} with factory_kwargs returned {type(built).__name__}, not a function")
    return built


def _parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: treat as accepting anything
        return [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]


def detect_style(func: Callable[..., Any]) -> str:
    """'trl' for TRL-style functions: they name one of TRL's arguments or take **kwargs; 'example'
    for f(example, completion)."""
    params = _parameters(func)
    names = [p.name for p in params]
    if any(n in names for n in ("prompts", "completions", "completion_ids")):
        return "trl"
    if names[:1] == ["example"]:
        return "example"
    return "trl" if any(p.kind is p.VAR_KEYWORD for p in params) else "example"


def _accepted_names(func: Callable[..., Any]) -> frozenset[str] | None:
    """The keywords a function accepts; None when it takes **kwargs (everything)."""
    params = _parameters(func)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def builtin_trl_range(func: Callable[..., Any]) -> tuple[float, float] | None:
    """The documented value range of a function from `trl.rewards` (None for any other function)."""
    if not (getattr(func, "__module__", None) or "").startswith("trl.rewards"):  # an instance: its class's module
        return None
    kind = type(func).__name__
    if kind == "_SoftOverlongPunishment":
        return (-1.0, 0.0)
    if kind == "_RepetitionPenalty":
        return (func.max_penalty, 0.0) if func.max_penalty < 0 else None
    if kind == "_CosineScaledReward":
        values = (func.min_value_wrong, func.max_value_wrong, func.min_value_correct, func.max_value_correct)
        return (min(values), max(values)) if min(values) < max(values) else None
    return (0.0, 1.0)  # accuracy_reward, reasoning_accuracy_reward, think_format_reward


class FunctionParams(GraderParams):
    function: str = Field(description="'module:function', TRL's dotted 'package.module.function', or "
                          "'path/to/file.py:function'.")
    factory_kwargs: dict[str, Any] | None = Field(None, description="The target is a factory (e.g. "
                                                  "trl.rewards:get_soft_overlong_punishment): call it once with "
                                                  "these keyword arguments; the function it returns is the reward.")
    style: Literal["auto", "trl", "example"] = Field("auto", description="auto: TRL style (called by keyword "
                                                     "with the batch) when the function names prompts, completions "
                                                     "or completion_ids or takes **kwargs; else f(example, "
                                                     "completion).")
    range: tuple[float, float] | None = Field(None, description="The function's scale, mapped onto [0, 1] "
                                              "(default: the documented range of a trl.rewards function, else "
                                              "[0, 1]).")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments on every call.")
    timeout_s: float = Field(30.0, gt=0, description="Wall-clock limit of one call (TRL style: the whole batch; "
                             "f(example, completion): one completion). A call past it scores its completions 0 as "
                             "errors, so a hung function stops the run with its name instead of stalling it; the "
                             "call itself cannot be killed (it is your in-process code) and finishes in the "
                             "background.")
    conversational: bool | None = Field(None, description="TRL style: pass prompts and completions as message "
                                        "lists (true) or strings (false); null: as TRL does, message lists when "
                                        "the examples are conversational (messages, or a TRL prompt list).")

    @field_validator("function")
    @classmethod
    def _importable(cls, target: str) -> str:
        load_function(target)  # fail at config time, not at the first training step
        return target

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if value is None else check_ordered_range(value)

    @field_validator("kwargs")
    @classmethod
    def _not_reserved(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(set(kwargs) & set(TRL_ARGUMENTS))
        if reserved:
            raise ValueError(f"{reserved} are passed by the trainer, not by kwargs")
        return kwargs

    @model_validator(mode="after")
    def _factory_builds(self) -> "FunctionParams":
        if self.factory_kwargs is not None:
            make_function(self.function, self.factory_kwargs)
        return self


def _trainer_state(context: BatchContext) -> Any:
    """What TRL passes as `trainer_state`: a transformers TrainerState when transformers is loaded (as
    it always is in training); otherwise a stand-in with the same step fields, since importing
    transformers only to grade (`rft grade`) costs seconds."""
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        return transformers.TrainerState(global_step=context.global_step, max_steps=context.max_steps)
    from types import SimpleNamespace

    return SimpleNamespace(global_step=context.global_step, max_steps=context.max_steps, epoch=None,
                           num_train_epochs=None, is_world_process_zero=True, log_history=[])


def _resolve(value: Any) -> Any:
    """Await an `async def` function's result, as GRPOTrainer does."""
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread: the usual case
        return asyncio.run(wait())
    with ThreadPoolExecutor(1) as pool:  # called from inside a running loop (a notebook): use another thread
        return pool.submit(asyncio.run, wait()).result()


class FunctionTimeout(TimeoutError):
    pass


def _call_within(timeout_s: float, name: str, call: Callable[[], Any]) -> Any:
    """call() (awaited when async) on a daemon thread; FunctionTimeout after timeout_s seconds."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = _resolve(call())
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"rftkit-function-{name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise FunctionTimeout(f"{name} did not return within timeout_s={timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@dataclass(frozen=True)
class FunctionGrader:
    name: str
    func: Callable[..., Any]
    style: str
    range: tuple[float, float]
    kwargs: dict[str, Any]
    conversational: bool | None = None
    timeout_s: float = 30.0
    accepts_context: ClassVar[bool] = True

    def _to_grade(self, value: Any) -> Grade:
        if isinstance(value, Grade):
            return value
        if value is None:
            return Grade(0.0, f"{self.name} returned None: no signal", masked=True)
        if isinstance(value, (str, bytes)) or not isinstance(value, numbers.Real) and not hasattr(value, "__float__"):
            raise TypeError(f"returned {type(value).__name__}, expected a number or None")
        value = float(value)  # bool, numpy and 0-d tensor values, as TRL's torch.tensor(...) accepts them
        if not math.isfinite(value):
            raise ValueError(f"returned {value}, not a finite number")
        lo, hi = self.range
        scaled = (value - lo) / (hi - lo)
        note = "" if 0.0 <= scaled <= 1.0 else f" (outside range {lo:g}..{hi:g}, clamped)"
        return Grade(clamp01(scaled), f"{self.name} returned {value:g}{note}", {"raw": value})

    def grade(self, example: Example, completion: str) -> Grade:
        return self.grade_batch([example], [completion])[0]

    def _grade_one(self, example: Example, completion: str) -> Grade:
        try:
            return self._to_grade(_call_within(self.timeout_s, self.name,
                                               lambda: self.func(example, completion, **self.kwargs)))
        except Exception as exc:  # user code: its failure on one completion is that completion's error
            return Grade(0.0, f"{self.name} raised {type(exc).__name__}: {str(exc)[:200]}", error=True)

    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str],
                    context: BatchContext | None = None) -> list[Grade]:
        if self.style == "example":
            return [self._grade_one(ex, c) for ex, c in zip(examples, completions)]
        extras: dict[str, list[Any]] = {}
        metrics: dict[str, float] = {}
        conversational = self.conversational if self.conversational is not None else \
            any(ex.messages is not None for ex in examples)
        arguments = self._trl_arguments(examples, completions, conversational, context or BatchContext(), extras,
                                        metrics)
        try:
            values = _call_within(self.timeout_s, self.name, lambda: self.func(**arguments))
        except FunctionTimeout as exc:  # every completion of the call: an error (no per-row retry of a hang)
            return [Grade(0.0, str(exc), error=True) for _ in completions]
        except TypeError as exc:
            if conversational or "string indices" not in str(exc):
                raise
            raise TypeError(f"{exc} (completions are strings, TRL's standard format; a function that reads "
                            "completion[0]['content'] needs conversational rows, or conversational: true)") from None
        if hasattr(values, "__len__") and hasattr(values, "__iter__") and not isinstance(values, (str, bytes, dict)):
            values = list(values)  # a list, a tuple, a numpy array or a tensor: whatever TRL iterates over
        if not isinstance(values, list) or len(values) != len(completions):
            got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
            raise BatchShapeError(f"{self.name}: a TRL reward function must return a list of {len(completions)} "
                                  f"values, got {got}")
        grades = []
        for i, value in enumerate(values):
            try:
                grade = self._to_grade(value)
            except Exception as exc:  # one bad value is that completion's error, not the batch's
                grade = Grade(0.0, f"{self.name} {exc}", error=True)
            logged = {column: column_values[i] for column, column_values in extras.items() if i < len(column_values)}
            if logged or metrics:
                details = dict(grade.details, **({"log_extra": logged} if logged else {}),
                               **({"log_metric": metrics} if metrics else {}))
                grade = Grade(grade.score, grade.reason, details, grade.error, grade.masked, grade.flags)
            grades.append(grade)
        return grades

    def _trl_arguments(self, examples: Sequence[Example], completions: Sequence[str], conversational: bool,
                       context: BatchContext, extras: dict[str, list[Any]],
                       metrics: dict[str, float]) -> dict[str, Any]:
        """The keyword arguments of GRPOTrainer._calculate_rewards for this batch."""
        prompts = [[dict(t) for t in ex.chat()] if conversational else ex.prompt_text() for ex in examples]
        shaped = [[{"role": "assistant", "content": c}] for c in completions] if conversational else list(completions)
        columns = {key: [ex.fields.get(key) for ex in examples]
                   for key in dict.fromkeys(k for ex in examples for k in ex.fields) if key not in TRL_DROPPED_COLUMNS}

        def log_extra(column: str, values: list) -> None:
            extras.setdefault(column, []).extend(values)

        def log_metric(name: str, value: float) -> None:
            metrics[name] = float(value)

        arguments = {**columns, **self.kwargs, "trainer_state": _trainer_state(context), "log_extra": log_extra,
                     "log_metric": log_metric, "prompts": prompts, "completions": shaped,
                     "completion_ids": None if context.completion_ids is None else [list(ids) for ids in
                                                                                   context.completion_ids]}
        if arguments["completion_ids"] is None and needs_completion_ids(self.func):
            raise ValueError(f"{self.name} reads completion_ids (token ids), which this caller does not provide")
        accepted = _accepted_names(self.func)  # a function without **kwargs gets only what it names
        return arguments if accepted is None else {k: v for k, v in arguments.items() if k in accepted}


def wants_token_ids(grader: Any) -> bool:
    """Whether a grader (or a multi grader's sub-grader) is a TRL-style function, which TRL passes
    `completion_ids`."""
    if isinstance(grader, FunctionGrader):
        return grader.style == "trl"
    subs = getattr(grader, "graders", None)
    return isinstance(subs, dict) and any(wants_token_ids(g) for g in subs.values())


def needs_completion_ids(func: Callable[..., Any]) -> bool:
    """Whether a function names `completion_ids` (the rest may read it from **kwargs, or not at all)."""
    return any(p.name == "completion_ids" for p in _parameters(func))


@register("function", FunctionParams, "A Python function from your code or TRL's: f(prompts, completions, "
          "completion_ids, **kwargs) -> list[float | None] called as GRPOTrainer calls it, or "
          "f(example, completion) -> float | Grade")
def _build(name: str, p: FunctionParams) -> FunctionGrader:
    func = make_function(p.function, p.factory_kwargs)
    style = detect_style(func) if p.style == "auto" else p.style
    value_range = tuple(p.range) if p.range is not None else builtin_trl_range(func) or (0.0, 1.0)
    return FunctionGrader(name, func, style, value_range, dict(p.kwargs), p.conversational, p.timeout_s)
