"""Experiments that compare training recipes on the embedded model: `rft experiment NAME`."""

from __future__ import annotations

from typing import Callable


def _data_efficiency(quick: bool, seeds: list[int], output: str | None, budget: float | None, jobs: int) -> dict:
    from rftkit.experiments.data_efficiency import main

    return main(quick, seeds, output, budget, jobs)


def _algorithm_comparison(quick: bool, seeds: list[int], output: str | None, budget: float | None,
                          jobs: int) -> dict:
    from rftkit.experiments.algorithms import main

    return main(seeds, budget or (60.0 if quick else 120.0), output, jobs=jobs)


# name -> run(quick, seeds, output, budget_seconds, jobs)
EXPERIMENTS: dict[str, Callable[[bool, list[int], str | None, float | None, int], dict]] = {
    "countdown-data-efficiency": _data_efficiency,
    "algorithm-comparison": _algorithm_comparison,
}
