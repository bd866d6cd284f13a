"""The Ray pipeline's pure parts (no Ray runtime): shares, seeds, config, messages."""

import sys

import pytest

from rftkit.config import ConfigError, parse_config
from rftkit.train.pipeline import WorkerError, _cause, import_ray, share_seed, split
from tests.conftest import tiny_config_dict


def test_split_makes_contiguous_shares_of_whole_groups_sized_within_one():
    assert split(list(range(8)), 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert split(list(range(5)), 3) == [[0, 1], [2, 3], [4]]
    assert split([0, 1], 4) == [[0], [1]]  # never an empty share


def test_share_seeds_depend_on_position_and_share_only():
    assert share_seed(0, (0, 8), 1) == share_seed(0, (0, 8), 1)  # a reissued share samples the same
    seeds = {share_seed(s, p, i) for s in (0, 1) for p in ((0, 8), (0, 16), (1, 0)) for i in (0, 1)}
    assert len(seeds) == 12 and all(0 <= x < 2**56 for x in seeds)


def test_distributed_section_is_validated_by_name(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path, distributed={"max_staleness": 1}))
    assert config.distributed.workers == 2 and config.distributed.address is None
    assert parse_config(tiny_config_dict(tmp_path)).distributed is None  # no section: one process, as before
    with pytest.raises(ConfigError, match="distributed.workers"):
        parse_config(tiny_config_dict(tmp_path, distributed={"workers": 0}))
    with pytest.raises(ConfigError, match="distributed.stalenes: unknown key; allowed: .*max_staleness"):
        parse_config(tiny_config_dict(tmp_path, distributed={"stalenes": 1}))


def test_missing_ray_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(WorkerError, match=r"needs Ray, which is not installed: `pip install rftkit\[ray\]`"):
        import_ray()


def test_cause_reports_the_workers_own_exception():
    class Wrapped(Exception):
        cause = FileNotFoundError("model.name 'x': could not load")

    assert _cause(Wrapped("Traceback (most recent call last):\n  File ...")) == (
        "FileNotFoundError: model.name 'x': could not load")
    assert _cause(RuntimeError("line one\n  File \"a.py\", line 1\nthe real reason")) == "the real reason"
