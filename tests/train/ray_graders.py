"""Grader functions the Ray tests load by file path inside the rollout workers (`function: "PATH:name"`).

Each scores like a format check (1.0 for a completion with an <answer> tag) and misbehaves once, the
first time it runs anywhere: when the marker file beside this file does not exist yet (it is
created first, so the restarted worker behaves), and only inside a Ray worker. Tests copy this file into their tmp_path.
"""

import os
import time
from pathlib import Path


def _in_worker() -> bool:
    """Inside a Ray actor (the learner's own validation grades in the driver, and behaves)."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def _first_call() -> bool:
    marker = Path(__file__).with_suffix(".marker")
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _score(completion: str) -> float:
    return 1.0 if "<answer>" in completion else 0.0


def killed_once(example, completion):
    """Kills its own worker actor (ray.kill) in the middle of the first step it grades."""
    if _in_worker() and _first_call():
        import ray

        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        time.sleep(60)  # the kill lands while this rollout is still in flight
    return _score(completion)


def hangs(example, completion):
    """Never returns in time (a grader stuck on a network call, an infinite loop)."""
    if _in_worker():
        time.sleep(120)
    return _score(completion)
