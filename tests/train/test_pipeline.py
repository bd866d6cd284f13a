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


class _Ref:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


class _Handle:
    """A worker in this process; a call runs when it is made, which keeps Ray's per-actor call order."""

    def __init__(self, worker):
        self.worker = worker

    def __getattr__(self, name):
        method = getattr(self.worker, name)

        class Call:
            @staticmethod
            def remote(*args):
                args = [a.value if isinstance(a, _Ref) else a for a in args]
                try:
                    return _Ref(method(*args))
                except Exception as exc:  # noqa: BLE001
                    return _Ref(error=exc)
        return Call


class _FakeRay:
    """Just enough of Ray's API for RayPipeline's scheduling logic, without a runtime."""

    class exceptions:
        class RayError(Exception):
            pass

        class RayActorError(RayError):
            pass

        class RayTaskError(RayError):
            pass

    def __init__(self, worker_class):
        self.worker_class = worker_class

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return {"CPU": 8.0}

    def remote(self, _cls):
        fake = self

        class ActorClass:
            def options(self, **_):
                return self

            def remote(self, config, index, threads):
                return _Handle(fake.worker_class(config, index, threads))
        return ActorClass()

    def put(self, value):
        return _Ref(value)

    def get(self, ref):
        if ref.error is not None:
            raise self.exceptions.RayTaskError(str(ref.error))
        return ref.value

    def wait(self, refs, timeout=None):
        return refs, []

    def kill(self, *_, **__):
        pass

    def shutdown(self):
        pass


def test_a_group_older_than_k_is_dropped_counted_and_sampled_again(tmp_path, monkeypatch):
    """Worker 1 misses the adapter of version 1 once: its share for step 2 was sampled by version 0, two steps
    old under max_staleness 1; it is dropped, counted, and sampled again with the current adapter."""
    import json

    from rftkit.rollout.ray_workers import RolloutWorker
    from rftkit.train import pipeline
    from rftkit.train.loop import train

    class Lagging(RolloutWorker):
        missed = False

        def info(self):
            return {"index": self.index, "device": str(self.device), "node": "fake", "threads": self.threads}

        def set_adapter(self, tensors, version):
            if self.index == 1 and version == 1 and not Lagging.missed:
                Lagging.missed = True
                return self.version
            return super().set_adapter(tensors, version)

    monkeypatch.setattr(pipeline, "import_ray", lambda: _FakeRay(Lagging))
    config = parse_config(tiny_config_dict(tmp_path, train__steps=3, distributed={"workers": 2, "max_staleness": 1}))
    train(config, tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][1:]
    assert [line["pipeline/dropped_groups"] for line in lines] == [0, 0, 1]  # worker 1's share: 1 prompt
    assert all(line["pipeline/staleness_max"] <= 1 for line in lines)
    assert [sum(v for k, v in line.items() if k.startswith("pipeline/samples_staleness_")) for line in lines] == [8] * 3


def test_dapo_refill_rounds_take_the_prefetched_batches_in_data_order(tmp_path, monkeypatch):
    """Dynamic sampling with k = 1: a refill round takes the batch already issued ahead; every batch of the
    data stream is sampled once, in order, and no step holds a group twice."""
    import json

    from rftkit.rollout.ray_workers import RolloutWorker
    from rftkit.train import pipeline
    from rftkit.train.loop import train

    issued = []

    class Recording(RolloutWorker):
        def info(self):
            return {"index": self.index, "device": str(self.device), "node": "fake", "threads": self.threads}

        def rollout(self, request):
            issued.append(tuple(e.id for e in request.examples))
            return super().rollout(request)

    monkeypatch.setattr(pipeline, "import_ray", lambda: _FakeRay(Recording))
    raw = tiny_config_dict(tmp_path, algorithm="dapo", train__steps=3, dapo={"max_sampling_rounds": 3},
                           distributed={"workers": 1, "max_staleness": 1})
    train(parse_config(raw), tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][1:]
    sampled = sum(line["sampling/groups_sampled"] for line in lines)
    assert sampled >= 6 and len(issued) == sampled // 2 + 1  # + the one batch still in flight at the end
    from types import SimpleNamespace

    from rftkit.tasks import load_examples
    from rftkit.train.checkpoint import TrainerState
    from rftkit.train.setup import next_prompts

    config = parse_config(raw)
    stream = SimpleNamespace(config=config, state=TrainerState(0, 0, 0), train_examples=load_examples(config.data)[0])
    assert issued == [tuple(e.id for e in next_prompts(stream)) for _ in issued]  # the data stream, in order
