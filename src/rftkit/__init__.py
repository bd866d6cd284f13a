"""rftkit: reinforcement fine-tuning (GRPO, PPO) of language models with LoRA and verifiable graders.

    import rftkit
    result = rftkit.train("my.yaml", reward_funcs=[my_reward], dataset=rows)   # see rftkit.api

Names load lazily, so `import rftkit` (and `rft --help`) stays free of torch until something trains.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {"TrainResult": "rftkit.api", "register_reward": "rftkit.api", "RFTConfig": "rftkit.config",
            "load_config": "rftkit.config", "parse_config": "rftkit.config"}
__all__ = ["train", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name == "train":  # the `rftkit.train` package, callable as the API (rftkit/train/__init__.py)
        return importlib.import_module("rftkit.train")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rftkit' has no attribute {name!r}")
