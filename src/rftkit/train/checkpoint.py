"""Atomic checkpoints: `checkpoints/step-N/` = a PEFT adapter + `trainer_state.pt`.

A checkpoint is written into a temporary sibling directory and renamed into place, so a
directory named `step-N` is always complete: an interrupted write leaves only a `.tmp-*`
directory, which resume ignores and removes.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rftkit.atomic import disk_full_error, is_disk_full

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    step: int  # optimizer steps completed
    data_epoch: int  # position in the training data: epoch and cursor within its shuffled order
    data_cursor: int
    history: list[dict[str, float]] = field(default_factory=list)  # validation points for the overfitting check
    before: dict[str, float] = field(default_factory=dict)  # validation metrics before any update
    last_validation: dict[str, float] = field(default_factory=dict)
    elapsed_seconds: float = 0.0  # wall time spent so far, across resumes
    sampling_rng: Any = None  # torch.Generator state used for rollouts
    torch_rng: Any = None
    python_rng: Any = None
    numpy_rng: Any = None
    rank_rngs: list[dict[str, Any]] | None = None  # under torchrun: every rank's RNG states, by rank
    best: dict[str, Any] | None = None  # eval.keep_best: {"step", "metric", "value"} of checkpoints/best

    def rng_states(self) -> dict[str, Any]:
        return {"sampling_rng": self.sampling_rng, "torch_rng": self.torch_rng, "python_rng": self.python_rng,
                "numpy_rng": self.numpy_rng}


def capture_rng(state: TrainerState, generator: torch.Generator) -> None:
    state.sampling_rng = generator.get_state()
    state.torch_rng = torch.get_rng_state()
    state.python_rng = random.getstate()
    state.numpy_rng = np.random.get_state()


def restore_rng(state: TrainerState, generator: torch.Generator, rank: int = 0) -> None:
    """Restore this rank's streams (a checkpoint written under torchrun holds one set per rank)."""
    if state.rank_rngs and len(state.rank_rngs) <= rank:
        raise ValueError(f"the checkpoint was written by {len(state.rank_rngs)} ranks; resume with that many")
    saved = state.rank_rngs[rank] if state.rank_rngs else state.rng_states()
    generator.set_state(saved["sampling_rng"].cpu())
    torch.set_rng_state(saved["torch_rng"])
    random.setstate(saved["python_rng"])
    np.random.set_state(saved["numpy_rng"])


def save_checkpoint(run_dir: Path, policy, optimizer, state: TrainerState,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write `checkpoints/step-N` atomically; `extra` maps more file names to payloads for torch.save
    (PPO's value head), written inside the same temporary directory so they are complete together."""
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"step-{state.step}"
    previous = latest_checkpoint(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{state.step}-", dir=checkpoints))
    try:
        policy.save_pretrained(str(tmp))
        torch.save({"state": state.__dict__, "optimizer": optimizer.state_dict()}, tmp / STATE_FILE)
        for name, payload in (extra or {}).items():
            torch.save(payload, tmp / name)
        if final.exists():  # re-saving the same step (e.g. the final save right after a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            kept = (f"the last complete checkpoint {previous} is kept (resume from it with `rft train --resume "
                    f"{run_dir}`)" if previous else "no earlier checkpoint exists")
            raise disk_full_error(final, kept) from exc
        raise
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = run_dir / "checkpoints"
    if not checkpoints.is_dir():
        return None
    for leftover in checkpoints.glob(".tmp-step-*"):  # interrupted writes
        shutil.rmtree(leftover, ignore_errors=True)
    complete = [(int(m.group(1)), p) for p in checkpoints.iterdir()
                if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(complete)[1] if complete else None


def load_trainer_state(checkpoint: Path, optimizer) -> TrainerState:
    payload = torch.load(checkpoint / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(payload["optimizer"])
    return TrainerState(**payload["state"])
