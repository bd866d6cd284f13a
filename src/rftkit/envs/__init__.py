"""Environments: multi-turn episodes, tools, games, and verifiers environments (README: Environments).

`env.name` picks an entry of ENVIRONMENTS; `env.options` are validated by that entry's parameter
model, so an error names `env.options.<key>`. Environment modules register themselves on import;
heavy optional dependencies (verifiers) are imported only when such an environment is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from rftkit.envs.base import (Environment, EnvironmentFailure, EnvReply, Episode, EpisodeStart, Transcript,
                              episode_of)

if TYPE_CHECKING:
    from rftkit.config import EnvConfig, RFTConfig

_BUILTIN_MODULES = ("rftkit.envs.countdown_feedback", "rftkit.envs.arithmetic_tools", "rftkit.envs.guess_number",
                    "rftkit.envs.verifiers_env")


class EnvParams(BaseModel):
    """Base of every environment's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class EnvironmentType:
    params: type[EnvParams]
    build: Callable[[Any], Environment]  # validated params -> environment
    summary: str


ENVIRONMENTS: dict[str, EnvironmentType] = {}


def register_environment(name: str, params: type[EnvParams], summary: str):
    def decorate(build: Callable[[Any], Environment]) -> Callable[[Any], Environment]:
        if name in ENVIRONMENTS:
            raise ValueError(f"environment {name!r} registered twice")
        ENVIRONMENTS[name] = EnvironmentType(params, build, summary)
        return build
    return decorate


def load_builtin_environments() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def _params(env: "EnvConfig") -> EnvParams:
    load_builtin_environments()
    if env.name not in ENVIRONMENTS:
        raise ValueError(f"env.name: unknown environment {env.name!r}; allowed: {', '.join(sorted(ENVIRONMENTS))}")
    kind = ENVIRONMENTS[env.name]
    try:
        return kind.params.model_validate(env.options)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(sorted(kind.params.model_fields)) or "none"
                problems.append(f"env.options.{key}: unknown key for {env.name} (allowed: {allowed})")
            else:
                where = f"env.options.{key}" if key else "env.options"
                problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise ValueError("; ".join(problems)) from None


def validate_env_config(env: "EnvConfig") -> None:
    _params(env)


def build_environment(env: "EnvConfig") -> Environment:
    """The configured environment. What its builder rejects (a missing file, an unknown taskset, a missing optional
    package) is a ConfigError, so the CLI prints the message that names the key instead of a traceback."""
    from rftkit.config import ConfigError

    try:
        return ENVIRONMENTS[env.name].build(_params(env))
    except ConfigError:
        raise
    except (ValueError, ImportError) as exc:
        raise ConfigError(str(exc)) from exc


def episode_backend(config: "RFTConfig", backend):
    """`backend` running episodes of the configured environment (rftkit.rollout.build_backend calls this)."""
    from rftkit.envs.episodes import EpisodeBackend, EpisodeLimits

    return EpisodeBackend(backend, build_environment(config.env),
                          EpisodeLimits(config.env.max_turns, config.env.max_episode_tokens))


__all__ = ["ENVIRONMENTS", "EnvParams", "Environment", "EnvironmentFailure", "EnvReply", "Episode", "EpisodeStart",
           "Transcript", "build_environment", "episode_backend", "episode_of", "load_builtin_environments",
           "register_environment", "validate_env_config"]
