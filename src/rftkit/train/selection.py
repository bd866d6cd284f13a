"""Choosing on validation, reporting on the test split (`eval.keep_best`, `data.test_size`).

Validation picks: after each validation the policy is kept as `checkpoints/best` when its
`eval.keep_best` metric beats every earlier validation (ties keep the earlier, smaller step). The
test split is scored once, at the end, with that checkpoint (or the final policy without keep_best):
the number a user reports was never used to choose anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from rftkit.atomic import disk_full_error, is_disk_full

BEST = "best"
BEST_INFO = "best.json"  # {"step", "metric", "value"} of the kept checkpoint


def best_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / BEST


def maybe_keep_best(run, val: dict[str, float]) -> bool:
    """Save the policy as checkpoints/best when `val[eval.keep_best]` is a new high; True when it was."""
    kept = keep_if_best(run.config.eval.keep_best, run.state.best, run.state.step, val, run.learner.policy,
                        run.run_dir, run.collective.is_main)
    if kept is None:
        return False
    run.state.best = kept
    return True


def keep_if_best(metric: str | None, best: dict | None, step: int, val: dict[str, float], policy, run_dir: Path,
                 is_main: bool = True) -> dict | None:
    """The new `{"step", "metric", "value"}` after saving `policy` as checkpoints/best when `val[metric]` beats
    `best` (ties keep the earlier step); None when nothing was kept. `rft train` and `rft sft` share it."""
    if metric is None or (best and val[metric] <= best["value"]):
        return None
    kept = {"step": step, "metric": metric, "value": val[metric]}
    if is_main:
        _save_policy(policy, best_dir(run_dir), kept)
    return kept


def _save_policy(policy, final: Path, info: dict) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-best-", dir=final.parent))
    try:
        policy.save_pretrained(str(tmp))  # a PEFT adapter, or the whole model when lora: null
        (tmp / BEST_INFO).write_text(json.dumps(info) + "\n")
        old = final.with_name(f".old-{BEST}")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full_error(final, "the previous checkpoints/best (if any) and every step checkpoint are "
                                  "kept") from exc
        raise


def test_metrics(run) -> dict[str, float] | None:
    """The test split scored once with the chosen policy: checkpoints/best when kept, else the final one."""
    if not run.test_examples:
        return None
    from rftkit.eval.validate import evaluate

    policy = chosen_policy(run.config, run.run_dir, run.learner.policy, run.device)
    return evaluate(policy, run.tokenizer, run.test_examples, run.graders, run.eval_settings, None,
                    run.collective).metrics


def chosen_policy(config, run_dir: Path, final_policy, device):
    """What the test split scores: checkpoints/best, loaded onto `device`, when `eval.keep_best` kept one;
    else `final_policy`. `rft train` and `rft sft` share it."""
    chosen = best_dir(run_dir)
    if config.eval.keep_best is None or not chosen.is_dir():
        return final_policy
    from rftkit.eval.validate import load_policy
    from rftkit.models.loading import load_base_model

    if (chosen / "adapter_config.json").is_file():
        policy, _ = load_policy(config, chosen)
        return policy.to(device)
    return load_base_model(config.model.model_copy(update={"name": str(chosen)}), device)
