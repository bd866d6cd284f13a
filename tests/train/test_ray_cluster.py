"""Two simulated nodes (`ray.cluster_utils.Cluster`, one CPU each): the workers land on different nodes
and an asynchronous run trains through them. Its own module: a driver joins one cluster at a time."""

import json

import pytest

from rftkit.config import parse_config
from tests.conftest import tiny_config_dict

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray_cluster")


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_nodes_one_worker_each_train_asynchronously(tmp_path, two_nodes):
    from rftkit.train.loop import _train
    from rftkit.train.setup import setup

    raw = tiny_config_dict(tmp_path, distributed={"address": two_nodes.address, "workers": 2, "max_staleness": 1})
    run = setup(parse_config(raw), tmp_path / "run", resume=False)
    try:
        assert ray.is_initialized() and len([n for n in ray.nodes() if n["Alive"]]) == 2
        nodes = {info["node"] for info in run.pipeline.info}
        assert len(nodes) == 2  # one CPU per node: each worker on its own node
        _train(run, progress=False)
    finally:
        run.pipeline.close()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2]
    assert lines[2]["pipeline/samples_staleness_1"] == 8 and lines[2]["pipeline/policy_version"] == 1
    assert (tmp_path / "run" / "checkpoints" / "step-2").is_dir()
