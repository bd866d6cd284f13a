"""The `environment` grader: an episode's reward is the environment's own verdict on its final state."""

from __future__ import annotations

from dataclasses import dataclass

from rftkit.data import Example
from rftkit.envs.base import episode_of
from rftkit.graders.base import Grade, GraderParams, register


class EnvironmentGraderParams(GraderParams):
    pass


@dataclass(frozen=True)
class EnvironmentOutcome:
    name: str

    def grade(self, example: Example, completion: str) -> Grade:
        episode = episode_of(completion)
        if episode is None:
            return Grade(0.0, "not an episode (the `environment` grader needs env.name)", masked=True)
        if episode.outcome is None:
            return Grade(0.0, f"the environment gave no outcome ({episode.finish})", masked=True)
        outcome = episode.outcome
        return Grade(outcome.score, outcome.reason, {**outcome.details, "finish": episode.finish,
                                                     "model_turns": episode.model_turns}, outcome.error,
                     outcome.masked, outcome.flags)


@register("environment", EnvironmentGraderParams, "The environment's score of the episode's final state (a game's "
          "win/loss, countdown_feedback's solved, a verifiers rubric); masked where it gives none")
def _build(name: str, params: EnvironmentGraderParams) -> EnvironmentOutcome:
    return EnvironmentOutcome(name)
