"""report_to: the trackers' own readers get back what metrics.jsonl holds (TensorBoard's EventAccumulator,
MLflow's MlflowClient on a local file store, W&B's offline run file, Trackio's SQLite store)."""

import json
import struct
import sys

import pytest

from rftkit.config import ConfigError, parse_config
from rftkit.logging.sinks import JsonlSink
from rftkit.logging.trackers import FanOut, flat_config, scalars, with_trackers
from tests.conftest import tiny_config_dict


@pytest.fixture(scope="module", autouse=True)
def trackio_dir(tmp_path_factory):
    """Trackio reads TRACKIO_DIR when first imported; keep its store out of the home directory."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TRACKIO_DIR", str(tmp_path_factory.mktemp("trackio")))
    mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    yield
    mp.undo()


def tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def mlflow_metrics(run_dir, run_id) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in run.data.metrics}, run


def wandb_history(run_dir) -> list[dict]:
    """The history records of W&B's offline run file, decoded with W&B's own protobuf schema. The file is a
    LevelDB-style log (a 7-byte ':W&B' header, then records of checksum, length, type in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data, out, chunks, pos = path.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                out.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return out


def records():
    return [{"step": 0, "val/accuracy": 0.25, "val/accuracy_greedy": 0.5},
            {"step": 1, "reward/mean": 0.125, "grader/errors": 0, "lr": 2e-4, "flag": True, "note": "text"},
            {"step": 2, "reward/mean": 0.375, "grader/errors": 1, "lr": 2e-4},
            {"step": 3, "reward/mean": 0.5, "val/accuracy": 0.5}]


def test_tensorboard_and_mlflow_read_back_every_scalar_and_resume_the_same_run(tmp_path):
    config = parse_config(tiny_config_dict(tmp_path, report_to=["tensorboard", "mlflow"]))
    sink = with_trackers(JsonlSink(tmp_path / "metrics.jsonl"), config, tmp_path, None)
    for record in records():
        sink.write(record)
    sink.close()
    # resumed from the checkpoint at step 2: step 3 is logged again, with another value
    resumed = with_trackers(JsonlSink(tmp_path / "metrics.jsonl", 2), config, tmp_path, 2)
    resumed.write({"step": 3, "reward/mean": 0.625, "val/accuracy": 0.5})
    resumed.close()
    tb = tensorboard_scalars(tmp_path / "tensorboard")
    assert tb["reward/mean"] == [(1, 0.125), (2, 0.375), (3, 0.625)]  # purge_step dropped the stale step 3
    assert tb["val/accuracy"] == [(0, 0.25), (3, 0.5)] and "flag" not in tb and "note" not in tb
    run_id = json.loads((tmp_path / "trackers.json").read_text())["mlflow"]
    metrics, run = mlflow_metrics(tmp_path, run_id)
    assert metrics["val/accuracy_greedy"] == [(0, 0.5)] and metrics["grader/errors"] == [(1, 0.0), (2, 1.0)]
    assert (3, 0.625) in metrics["reward/mean"]  # the same run continued after the resume
    assert run.info.status == "FINISHED" and run.data.params["train.steps"] == "2"
    assert run.data.params["graders"].startswith('[{"name": "format"')


def test_a_real_run_reports_to_all_four_trackers(tmp_path):
    raw = tiny_config_dict(tmp_path, report_to=["tensorboard", "mlflow", "wandb", "trackio"],
                           tracking={"project": "rftkit-test", "run_name": "tiny", "wandb_mode": "offline"})
    from rftkit.train.loop import train

    train(parse_config(raw), tmp_path / "run", progress=False)
    run_dir = tmp_path / "run"
    jsonl = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = {(r["step"], k): v for r in jsonl for k, v in scalars(r).items()}
    assert {"reward/mean", "len/truncated", "grader/correct/unscored", "val/accuracy"} <= {k for _, k in expected}
    tb = {(step, tag): value for tag, points in tensorboard_scalars(run_dir / "tensorboard").items()
          for step, value in points}
    assert tb.keys() == expected.keys()
    assert all(abs(tb[k] - v) <= 1e-6 * max(1.0, abs(v)) for k, v in expected.items())  # TensorBoard stores float32
    metrics, run = mlflow_metrics(run_dir, json.loads((run_dir / "trackers.json").read_text())["mlflow"])
    assert {(s, k): v for k, points in metrics.items() for s, v in points} == expected
    assert run.info.run_name == "tiny"
    history = wandb_history(run_dir)
    logged = {(h["_step"], k): v for h in history for k, v in h.items() if not k.startswith("_")}
    assert logged == expected
    from trackio.sqlite_storage import SQLiteStorage

    logs = SQLiteStorage.get_logs("rftkit-test", "tiny")
    assert {(row["step"], k): v for row in logs for k, v in row.items() if k not in ("step", "timestamp")} == expected


def test_a_tracker_that_fails_is_dropped_and_training_goes_on(tmp_path, caplog):
    class Broken:
        def write(self, record):
            raise ConnectionError("server went away")

        def close(self):
            raise AssertionError("a dropped tracker is not closed")

    sink = FanOut(JsonlSink(tmp_path / "m.jsonl"), {"mlflow": Broken()})
    sink.write({"step": 1, "reward/mean": 0.5})
    sink.write({"step": 2, "reward/mean": 0.6})
    sink.close()
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2
    assert sum("report_to: mlflow failed at step 1" in m for m in caplog.messages) == 1


def test_a_missing_tracker_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    config = parse_config(tiny_config_dict(tmp_path, report_to=["wandb"]))
    with pytest.raises(ConfigError, match=r"report_to: wandb needs the wandb package .*pip install 'rftkit\[wandb\]'"):
        with_trackers(JsonlSink(tmp_path / "m.jsonl"), config, tmp_path, None)


def test_unknown_tracker_is_a_config_error_naming_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="report_to.0"):
        parse_config(tiny_config_dict(tmp_path, report_to=["comet"]))


def test_flat_config_has_every_key_as_text(tmp_path):
    flat = flat_config(parse_config(tiny_config_dict(tmp_path)))
    assert flat["train.learning_rate"] == "0.005" and flat["model.name"] == "embedded"
    assert flat["lora.target_modules"] == "all-linear" and flat["report_to"] == "[]"


def test_the_readme_examples_of_tracking_and_alarms_validate(tmp_path):
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Tracking and alarms")
    section = text[start:text.index("\n## ", start + 1)]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        parse_config(tiny_config_dict(tmp_path) | yaml.safe_load(block))
