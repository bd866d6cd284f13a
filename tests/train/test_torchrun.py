"""`rft train --nproc 2` end to end on the CPU (gloo): rank 0 writes one run directory, every rank's
RNG state is checkpointed, `--resume` continues under torchrun, and a rank that dies stops the job."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from tests.conftest import tiny_config_dict

ROOT = Path(__file__).resolve().parents[2]


def rft(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rftkit.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def write_config(tmp_path, **overrides) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, **overrides)))
    return path


def test_two_ranks_train_resume_and_write_one_run_directory(tmp_path):
    config = write_config(tmp_path, train__batch_size=4)
    done = rft("train", str(config), "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2]  # one line per step: rank 1 wrote nothing
    assert all(0.0 <= m["val/accuracy"] <= 1.0 for m in metrics)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["device"] == "cpu"
    assert done.stdout.count("held-out") == 1  # rank 0 alone reports
    state = torch.load(run / "checkpoints" / "step-2" / "trainer_state.pt", weights_only=False)["state"]
    assert len(state["rank_rngs"]) == 2
    assert not torch.equal(state["rank_rngs"][0]["sampling_rng"], state["rank_rngs"][1]["sampling_rng"])

    resumed = rft("train", "--resume", str(run), "--set", "train.steps=3", "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3] and (run / "checkpoints" / "step-3" / "adapter_model.safetensors").is_file()


def test_a_rank_that_dies_stops_the_job_with_a_message(tmp_path):
    (tmp_path / "dies_on_rank_one.py").write_text(
        "import os\n\ndef reward(example, completion):\n"
        "    if os.environ.get('RANK') == '1':\n        os._exit(17)\n    return 0.5\n")
    config = write_config(tmp_path, train__batch_size=4)
    raw = yaml.safe_load(config.read_text())
    raw["graders"].append({"name": "fault", "type": "function",
                           "function": str(tmp_path / "dies_on_rank_one.py") + ":reward", "weight": 0.1})
    config.write_text(yaml.safe_dump(raw))
    failed = rft("train", str(config), "--nproc", "2", timeout=240)  # a hang would hit the timeout
    assert failed.returncode != 0
    assert "exitcode  : 17" in failed.stderr or "exitcode: 17" in failed.stderr.replace(" ", ""), failed.stderr[-2000:]
    assert "a rank of `rft train --nproc 2` failed" in failed.stderr


def test_two_nodes_by_torchruns_rendezvous(tmp_path):
    """Two torchrun agents on this machine as two 'nodes' (one rank each), joined by the c10d rendezvous
    exactly as on two hosts (README: several machines)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path, train__batch_size=4, train__steps=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                               f"--node_rank={rank}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                               "--rdzv_id=rftkit-test", "-m", "rftkit.cli", "train", str(config)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["steps"] == 1
