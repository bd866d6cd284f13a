"""Ray rollout workers on Ray's local runtime: k = 0 equals the in-process run, async k = 1, faults, resume.

One local runtime (2 CPUs, like CI's machine) serves the module; each test starts its own workers.
The two-node simulation is in test_ray_cluster.py (a driver joins one cluster at a time).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from rftkit.config import parse_config
from tests.conftest import tiny_config_dict

ray = pytest.importorskip("ray")

from rftkit.train.loop import train  # noqa: E402
from rftkit.train.pipeline import WorkerError  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _metrics(run_dir: Path, drop=("time/", "pipeline/")) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.startswith(drop)} for line in lines]


def _raw(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _adapter(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "checkpoints" / f"step-{step}" / "adapter_model.safetensors")


def _grader_file(tmp_path: Path) -> Path:
    path = tmp_path / "ray_graders.py"
    shutil.copy(Path(__file__).with_name("ray_graders.py"), path)
    return path


def _steps(config_dir: Path, **overrides):
    return parse_config(tiny_config_dict(config_dir, **overrides))


def test_k0_one_worker_is_bit_identical_to_the_in_process_run(tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    train(_steps(local), local, progress=False)
    train(_steps(remote, distributed={"workers": 1, "max_staleness": 0}), remote, progress=False)
    assert _metrics(local) == _metrics(remote)  # every metric, bit for bit (floats compared exactly)
    assert (local / "samples.jsonl").read_text() == (remote / "samples.jsonl").read_text()
    a, b = _adapter(local, 2), _adapter(remote, 2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    raw = _raw(remote)[1:]
    assert [r["pipeline/samples_staleness_0"] for r in raw] == [8, 8]
    assert all(r["pipeline/dropped_groups"] == 0 and r["pipeline/staleness_max"] == 0 for r in raw)
    assert [r["pipeline/policy_version"] for r in raw] == [0, 1]
    assert raw[0]["pipeline/adapter_bytes"] > 0 and "time/worker_generate" in raw[0]


def test_async_two_workers_sample_ahead_with_bounded_staleness_and_resume(tmp_path):
    run = tmp_path / "async"
    dist = {"workers": 2, "max_staleness": 1, "truncated_is": 2.0}
    train(_steps(run, distributed=dist, train__steps=2), run, progress=False)
    # The learner stops (as if killed after its step-2 checkpoint) and `--resume` continues with new workers.
    train(_steps(run, distributed=dist, train__steps=3), run, resume=True, progress=False)
    raw = _raw(run)[1:]
    assert [r["step"] for r in raw] == [1, 2, 3]
    # Step 1 was sampled by version 0 while nothing was being updated; step 2 by version 0 during update 1.
    assert raw[0]["pipeline/samples_staleness_0"] == 8 and raw[1]["pipeline/samples_staleness_1"] == 8
    assert raw[2]["pipeline/samples_staleness_0"] == 8  # resumed: the in-flight batch was lost and sampled again, fresh
    for r in raw:
        assert sum(v for k, v in r.items() if k.startswith("pipeline/samples_staleness_")) == 8  # 2 prompts x 4, once
        assert r["pipeline/dropped_groups"] == 0 and 0 < r["tis/weight_mean"] <= 2.0
    assert not all(torch.equal(_adapter(run, 1)[k], _adapter(run, 3)[k]) for k in _adapter(run, 1))


def test_a_killed_worker_is_restarted_and_no_group_is_lost_or_counted_twice(tmp_path):
    graders = _grader_file(tmp_path)
    spec = [{"name": "format", "type": "function", "function": f"{graders}:killed_once", "style": "example"}]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    dist = {"workers": 2, "max_staleness": 0}
    train(_steps(killed, graders=spec, accuracy_grader=None, distributed=dist), killed, progress=False)
    assert graders.with_suffix(".marker").exists()  # the kill happened
    train(_steps(clean, graders=spec, accuracy_grader=None, distributed=dist), clean, progress=False)
    # The same shares with the same seeds at the same policy version: the killed run's metrics are the clean one's.
    assert _metrics(killed) == _metrics(clean)
    restarts = [r["pipeline/restarts"] for r in _raw(killed)[1:]]
    assert restarts == [1, 0] and all(r["pipeline/restarts"] == 0 for r in _raw(clean)[1:])


def test_a_hanging_grader_hits_the_timeout_and_is_reported(tmp_path, caplog):
    graders = _grader_file(tmp_path)
    spec = [{"name": "format", "type": "function", "function": f"{graders}:hangs", "style": "example"}]
    dist = {"workers": 1, "rollout_timeout": 2, "max_restarts": 0}
    with pytest.raises(WorkerError, match="hung past rollout_timeout = 2 s.*max_restarts = 0"):
        train(_steps(tmp_path / "run", graders=spec, accuracy_grader=None, distributed=dist), tmp_path / "run",
              progress=False)
    assert "took longer than distributed.rollout_timeout = 2 s" in caplog.text


def test_workers_that_cannot_start_say_why(tmp_path):
    from rftkit.train.pipeline import RayPipeline

    cpu = torch.device("cpu")
    with pytest.raises(WorkerError, match="3 workers x 1 CPU need 3 CPUs but the Ray cluster has 2"):
        RayPipeline(_steps(tmp_path, distributed={"workers": 3}), cpu)
    broken = _steps(tmp_path, distributed={"workers": 1}, model={"name": str(tmp_path / "no-such-model")})
    with pytest.raises(WorkerError, match="rollout worker 0 could not start: .*no-such-model"):
        RayPipeline(broken, cpu)
    hog = ray.remote(num_cpus=2)(type("Hog", (), {"ping": lambda self: 1})).remote()  # holds every CPU
    ray.get(hog.ping.remote())
    try:
        with pytest.raises(WorkerError, match="did not start within distributed.start_timeout = 2 s.*free CPU 0"):
            RayPipeline(_steps(tmp_path, distributed={"workers": 1, "start_timeout": 2}), cpu)
    finally:
        ray.kill(hog)


def test_a_killed_learner_resumes_with_the_same_cluster(tmp_path):
    """`rft train` joins this module's Ray runtime, is SIGKILLed after a checkpoint, and `--resume` finishes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    address = ray.get_runtime_context().gcs_address
    run_dir, config = tmp_path / "run", tmp_path / "config.yaml"
    raw = tiny_config_dict(tmp_path, train__steps=12, eval__eval_every=100, samples_per_step=0,
                           distributed={"address": address, "workers": 1, "max_staleness": 1})
    config.write_text(yaml.safe_dump(raw))
    rft = [sys.executable, "-m", "rftkit.cli", "train"]
    learner = subprocess.Popen([*rft, str(config), "--output", str(run_dir)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (run_dir / "checkpoints" / "step-2").is_dir():
        assert learner.poll() is None and time.monotonic() < deadline, learner.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    os.kill(learner.pid, signal.SIGKILL)
    learner.wait()
    for _ in range(100):  # the dead learner's worker goes with it; the cluster keeps its CPUs
        if ray.available_resources().get("CPU") == 2:
            break
        time.sleep(0.2)
    assert ray.available_resources().get("CPU") == 2
    resumed = subprocess.run([*rft, "--resume", str(run_dir)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [r["step"] for r in _raw(run_dir)]
    assert steps == list(range(13)) and (run_dir / "checkpoints" / "step-12").is_dir()
