"""Step metrics of multi-turn rollouts: turns, why episodes ended, environment tokens."""

from __future__ import annotations

from rftkit.envs.base import FINISH_REASONS


def episode_metrics(episodes: list[tuple[int, str, int]]) -> dict[str, float]:
    """From (model turns, finish reason, environment tokens) per episode: `turns/mean`, `turns/max`,
    `episodes/<reason>` (share ending for each reason in FINISH_REASONS), `len/environment`."""
    n = max(len(episodes), 1)
    record = {"turns/mean": sum(t for t, _, _ in episodes) / n, "turns/max": float(max((t for t, _, _ in episodes),
                                                                                      default=0)),
              "len/environment": sum(e for _, _, e in episodes) / n}
    record.update({f"episodes/{reason}": sum(f == reason for _, f, _ in episodes) / n for reason in FINISH_REASONS})
    return record
