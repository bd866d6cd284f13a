"""Alarms that catch a wasted run: pure functions over the step records of `metrics.jsonl`.

Each alarm reads the records logged so far (oldest first) and returns a message when it holds at the
last one, or None:

- `truncation`: the share of completions that hit `train.max_completion_length` without ending
  (`len/truncated`; for multi-turn episodes, those that ran out of the episode's token budget) is above
  a threshold at the first step, or on average over a window of steps.
  A run whose completions are cut off gets reward 0 everywhere and learns nothing (trl#5697: 97-99%
  truncated, unnoticed).
- `no_signal`: every group's rewards tied (`frac_groups_tied` = 1) for N steps in a row: the
  group-relative advantages are all zero, so no step moves the policy.
- `grader_down`: one grader gave no score (masked, or raised) on every completion for N steps in a
  row (`grader/<name>/unscored` = 1): a judge endpoint that is down masks its grades, and the reward
  silently becomes the other graders' alone. (A grader that *raises* on every completion already
  stops the run at the first such step: `graders.combine.check_health`.)
- `overfitting`: held-out accuracy fell `eval.overfit_patience - 1` validations in a row while the
  training reward rose (`logging.sinks.overfitting_warning`).

The loop runs them through `AlarmMonitor` (a warning in the log, `alarm/<name>` = 1 in the record
on every step an alarm holds, and a stop when `alarms.stop_on` names it); `rft report` runs the same
functions over the whole file for its banners.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from rftkit.logging.sinks import overfitting_warning

log = logging.getLogger("rftkit")

ALARMS = ("truncation", "no_signal", "grader_down", "overfitting")
TRUNCATED, TIED = "len/truncated", "frac_groups_tied"
UNSCORED_PREFIX, UNSCORED_SUFFIX = "grader/", "/unscored"

Record = dict[str, Any]


@dataclass(frozen=True)
class AlarmSettings:
    truncation_threshold: float = 0.5
    truncation_window: int = 10
    no_signal_steps: int = 5
    grader_down_steps: int = 3
    overfit_patience: int = 3
    stop_on: tuple[str, ...] = ()

    @classmethod
    def of(cls, config) -> "AlarmSettings":
        a = config.alarms
        return cls(a.truncation_threshold, a.truncation_window, a.no_signal_steps, a.grader_down_steps,
                   config.eval.overfit_patience, tuple(a.stop_on))


@dataclass(frozen=True)
class Alarm:
    name: str  # one of ALARMS
    step: int  # the step of the record at which it holds
    message: str


def _last(records: list[Record], has: Callable[[Record], bool], n: int, within: int | None = None) -> list[Record]:
    """The last `n` records for which `has` holds, oldest first, among the last `within` records (all when
    None): a check costs the length of its window, not of the run (the report replays a whole run)."""
    out = []
    for record in reversed(records if within is None else records[-within:]):
        if has(record):
            out.append(record)
            if n is not None and len(out) == n:
                break
    return out[::-1]


def _steps(records: list[Record], key: str, n: int) -> list[Record]:
    """The last `n` training-step records that logged `key` (step 0 is the validation before training)."""
    return _last(records, lambda r: isinstance(r.get(key), (int, float)), n, within=n + 1)  # one record a step


def truncation(records: list[Record], threshold: float, window: int) -> str | None:
    steps = _steps(records, TRUNCATED, window)
    if not steps or steps[-1] is not records[-1]:
        return None
    if steps[-1]["step"] == 1 and steps[-1][TRUNCATED] > threshold:
        return (f"{steps[-1][TRUNCATED]:.0%} of the first step's completions hit train.max_completion_length "
                f"without ending (threshold {threshold:.0%}): they are cut off before the answer, so the graders "
                "score text the model never finished; raise train.max_completion_length or shorten the task's "
                "expected answer")
    recent = steps
    share = sum(r[TRUNCATED] for r in recent) / len(recent)
    if len(recent) == window and share > threshold:
        return (f"{share:.0%} of completions hit train.max_completion_length without ending over steps "
                f"{recent[0]['step']}-{recent[-1]['step']} (threshold {threshold:.0%}); raise "
                "train.max_completion_length, or check that the model still emits its end-of-turn token")
    return None


def no_signal(records: list[Record], steps: int) -> str | None:
    recent = _steps(records, TIED, steps)
    if len(recent) < steps or recent[-1] is not records[-1] or any(r[TIED] < 1.0 for r in recent):
        return None
    return (f"every group's rewards tied for {steps} steps in a row (steps {recent[0]['step']}-{recent[-1]['step']}): "
            "the advantages are all zero and the policy does not move; the task is too hard or too easy for the "
            "model, or a grader gives everyone the same score (check with `rft grade`)")


def _unscored_graders(record: Record) -> list[str]:
    return sorted(k[len(UNSCORED_PREFIX):-len(UNSCORED_SUFFIX)] for k, v in record.items()
                  if k.startswith(UNSCORED_PREFIX) and k.endswith(UNSCORED_SUFFIX) and v >= 1.0)


def grader_down(records: list[Record], steps: int) -> str | None:
    recent = _last(records, lambda r: any(k.endswith(UNSCORED_SUFFIX) for k in r), steps, within=steps + 1)
    if len(recent) < steps or recent[-1] is not records[-1]:
        return None
    down = set(_unscored_graders(recent[0]))
    for record in recent[1:]:
        down &= set(_unscored_graders(record))
    if not down:
        return None
    return (f"grader(s) {', '.join(sorted(down))} gave no score (masked or raised) on every completion for {steps} "
            f"steps in a row (steps {recent[0]['step']}-{recent[-1]['step']}): the reward is the other graders' "
            "alone; is a judge endpoint down? The reasons are in samples.jsonl")


def overfitting(records: list[Record], patience: int) -> str | None:
    if "val/accuracy" not in records[-1] or "reward/mean" not in records[-1]:
        return None
    points = _last(records, lambda r: "val/accuracy" in r and "reward/mean" in r, patience)
    history = [{"step": r["step"], "val_accuracy": r["val/accuracy"], "train_reward": r["reward/mean"]}
               for r in points]
    return overfitting_warning(history, patience)


CHECKS: dict[str, Callable[[list[Record], AlarmSettings], str | None]] = {
    "truncation": lambda r, s: truncation(r, s.truncation_threshold, s.truncation_window),
    "no_signal": lambda r, s: no_signal(r, s.no_signal_steps),
    "grader_down": lambda r, s: grader_down(r, s.grader_down_steps),
    "overfitting": lambda r, s: overfitting(r, s.overfit_patience),
}


def active_alarms(records: list[Record], settings: AlarmSettings) -> list[Alarm]:
    """The alarms that hold at the last record."""
    if not records:
        return []
    step = records[-1].get("step", 0)
    return [Alarm(name, step, message) for name, check in CHECKS.items()
            if (message := check(records, settings)) is not None]


def alarm_history(records: Iterable[Record], settings: AlarmSettings) -> dict[str, list[Alarm]]:
    """Every record at which each alarm held, replaying the run step by step (the report's banners)."""
    seen: list[Record] = []
    out: dict[str, list[Alarm]] = {}
    for record in records:
        seen.append(record)
        for alarm in active_alarms(seen, settings):
            out.setdefault(alarm.name, []).append(alarm)
    return out


class AlarmMonitor:
    """The loop's side: feed each step's record; warns when an alarm starts holding, marks the record.

    `history`: records the run logged before (on resume, its validation points), so that the
    overfitting check keeps its evidence; the step windows of the other alarms restart."""

    def __init__(self, settings: AlarmSettings, announce: bool, history: Iterable[Record] = ()):
        self.settings, self.announce = settings, announce
        self.records: list[Record] = list(history)
        self.holding: set[str] = set()

    def observe(self, record: Record) -> Alarm | None:
        """Add `alarm/<name>` = 1 to `record` for each alarm holding; return the first that should stop the run."""
        self.records.append(record)
        alarms = active_alarms(self.records, self.settings)
        for alarm in alarms:
            record[f"alarm/{alarm.name}"] = 1.0
            if alarm.name not in self.holding and self.announce:
                stop = " (alarms.stop_on: stopping the run)" if alarm.name in self.settings.stop_on else ""
                log.warning("alarm %s at step %d: %s%s", alarm.name, alarm.step, alarm.message, stop)
        self.holding = {a.name for a in alarms}
        return next((a for a in alarms if a.name in self.settings.stop_on), None)


def truncated_count(batch, max_length: int, stop_ids: set[int]) -> int:
    """Completions of a RolloutBatch cut off by the length limit: single-turn, those that used all of
    `max_length` without a stop token; multi-turn episodes (rftkit.envs), those that ended on the episode's
    token budget (each model turn has `max_length`, the whole trajectory the budget)."""
    if batch.episodes is not None:
        return sum(episode.finish == "token_budget" for episode in batch.episodes)
    return int(truncated(batch.completion_ids, batch.completion_mask, max_length, stop_ids).sum())


def truncated(completion_ids, completion_mask, max_length: int, stop_ids: set[int]):
    """[N] bool: completions that used all `max_length` tokens and whose last token is not a stop token
    (the sampler's mask includes the first stop token, so a completion that ends exactly at the limit
    is not truncated). What `len/truncated` averages."""
    import torch

    lengths = completion_mask.sum(-1)  # [N]
    last = completion_ids.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)  # [N]
    stops = torch.tensor(sorted(stop_ids), dtype=completion_ids.dtype, device=completion_ids.device)
    return (lengths >= max_length) & ~torch.isin(last, stops)
