"""Shared fixtures: a tiny, fast RFT config on the embedded model."""

import pytest

from rftkit.config import parse_config


def tiny_config_dict(tmp_path, **overrides):
    raw = {
        "model": {"name": "embedded"},
        "data": {"source": "countdown", "train_size": 16, "val_size": 8, "seed": 1234},
        "graders": [{"name": "format", "type": "countdown_format", "weight": 0.1},
                    {"name": "correct", "type": "countdown", "weight": 1.0}],
        "accuracy_grader": "correct",
        "grpo": {"num_generations": 4},
        "train": {"steps": 2, "batch_size": 2, "max_completion_length": 16, "learning_rate": 5e-3, "seed": 0,
                  "threads": 1},
        "eval": {"eval_every": 1, "batch_size": 8},
        "save_every": 1,
        "output_dir": str(tmp_path / "run"),
    }
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


@pytest.fixture
def tiny_config(tmp_path):
    return parse_config(tiny_config_dict(tmp_path))


def randomise_lora(policy, seed: int, scale: float, which: str = "lora_B") -> None:
    """Overwrite the adapter parameters whose name contains `which` with seeded N(0, scale^2) values:
    a freshly attached adapter is the identity (B = 0), so nothing would depend on it."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if which in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
