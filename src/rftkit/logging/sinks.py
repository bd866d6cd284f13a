"""Run-directory logging: metrics.jsonl (one line per step), samples.jsonl, and the overfitting check."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rftkit.atomic import disk_full_error, is_disk_full, write_text_atomic
from rftkit.data import DataError
from rftkit.envs.base import episode_of
from rftkit.graders.combine import GradedCompletion

log = logging.getLogger("rftkit")


class JsonlSink:
    def __init__(self, path: Path, truncate_after_step: int | None = None):
        """Append to `path`; on resume, drop lines logged after the checkpoint being resumed from.

        A torn last line (the process or the disk died mid-write) is dropped with a warning: the
        checkpoints are intact and resuming rewrites the step. A malformed line anywhere else is an
        error naming the file and line, not something to guess about."""
        self.path = path
        if truncate_after_step is not None and path.exists():
            kept = [line for line in self._records(path) if json.loads(line).get("step", 0) <= truncate_after_step]
            write_text_atomic(path, "".join(line + "\n" for line in kept))

    @staticmethod
    def _records(path: Path) -> list[str]:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        for number, line in enumerate(lines, 1):
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                if number == len(lines):
                    log.warning("%s:%d: dropping a torn last line (%s); the step it logged is rerun", path, number, exc)
                    return lines[:-1]
                raise DataError(f"{path}:{number}: not valid JSON ({exc}); only a torn last line is repaired") from None
        return lines

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        try:
            with self.path.open("a", encoding="utf-8", errors="backslashreplace") as handle:
                handle.write(line)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.path, "every complete line before it and the checkpoints are kept; "
                                      "`rft train --resume` trims the torn line") from exc
            raise

    def close(self) -> None:
        return None  # every line is flushed as it is written


class NullSink:
    """The sink of a torchrun rank other than 0: only rank 0 writes the run directory."""

    def write(self, record: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None


def validation_line(record: dict[str, Any], total_steps: int) -> str:
    """The console's line for one validation: step, held-out accuracy sampled and greedy, rewards."""
    line = (f"step {record['step']}/{total_steps}  validation: accuracy {record['val/accuracy']:.3f} sampled, "
            f"{record['val/accuracy_greedy']:.3f} greedy, reward {record['val/mean_reward']:.3f}")
    if "reward/mean" in record:
        line += f"  (train reward {record['reward/mean']:.3f})"
    return line


def sample_records(step: int, completions: list[str], graded: list[GradedCompletion], examples, limit: int,
                   group_size: int) -> list[dict[str, Any]]:
    """The first completion of each of the first `limit` prompt groups, with grades and reasons."""
    records = []
    for i in range(0, min(len(completions), limit * group_size), group_size):
        records.append({
            "step": step, "example_id": examples[i].id, "prompt": examples[i].prompt_text(),
            "completion": completions[i], "reward": graded[i].reward,
            "grades": {name: {"score": g.score, "reason": g.reason, "error": g.error, "masked": g.masked,
                              "flags": list(g.flags)} for name, g in graded[i].grades.items()},
        })
        episode = episode_of(completions[i])
        if episode is not None:  # multi-turn: the whole trajectory, turn by turn
            records[-1].update(episode.record())
    return records


def overfitting_warning(history: list[dict[str, float]], patience: int) -> str | None:
    """Warn when validation accuracy fell `patience - 1` times in a row while the train reward rose.

    `history` holds one point per validation: {"step", "val_accuracy", "train_reward"}.
    """
    if len(history) < patience:
        return None
    recent = history[-patience:]
    val_falling = all(b["val_accuracy"] < a["val_accuracy"] for a, b in zip(recent, recent[1:]))
    train_rising = all(b["train_reward"] > a["train_reward"] for a, b in zip(recent, recent[1:]))
    if val_falling and train_rising:
        return (f"possible overfitting: train reward rose {recent[0]['train_reward']:.3f} -> "
                f"{recent[-1]['train_reward']:.3f} while validation accuracy fell {recent[0]['val_accuracy']:.3f} -> "
                f"{recent[-1]['val_accuracy']:.3f} over steps {recent[0]['step']}-{recent[-1]['step']}")
    return None
