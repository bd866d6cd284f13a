"""Experiment trackers: `report_to: [tensorboard, mlflow, wandb, trackio]` (TRL's names).

metrics.jsonl is always written and is the run's record; a tracker receives the same records. Each
tracker's package is imported only when the config names it, and a missing one stops the run before
any step with the command that installs it. A tracker that fails mid-run (a server that went away)
is dropped with a warning: it never stops training, and metrics.jsonl still has every step.

On resume the trackers continue the same run: TensorBoard discards events after the resumed step
(`purge_step`), MLflow and W&B reopen the run whose id RUN_DIR/trackers.json keeps, Trackio resumes
the run of the same name.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

from rftkit.atomic import write_json_atomic
from rftkit.config import ConfigError, RFTConfig

log = logging.getLogger("rftkit")

TRACKER_IDS = "trackers.json"  # {"mlflow": run_id, "wandb": run_id}: what a resumed run continues
RUN_FILES = ("tensorboard", "mlruns", "wandb", TRACKER_IDS)  # what trackers leave in a run directory


class MetricSink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _require(module: str, tracker: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"report_to: {tracker} needs the {module.split('.')[0]} package ({exc}); install it with "
                          f"`pip install 'rftkit[{tracker}]'` or drop {tracker} from report_to") from None


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numeric values, without `step` (bools and strings are not metrics)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat_config(config: RFTConfig) -> dict[str, str]:
    """Every config key as `section.key` -> its value as text (MLflow params, W&B and Trackio config)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix.rstrip(".")] = node if isinstance(node, str) else json.dumps(node)

    walk(config.model_dump(mode="json"), "")
    return out


class _Ids:
    """RUN_DIR/trackers.json: the tracker run ids a resumed run continues."""

    def __init__(self, run_dir: Path, resumed: bool):
        self.path = run_dir / TRACKER_IDS
        self.ids = json.loads(self.path.read_text()) if resumed and self.path.is_file() else {}

    def get(self, tracker: str) -> str | None:
        return self.ids.get(tracker)

    def set(self, tracker: str, run_id: str) -> None:
        self.ids[tracker] = run_id
        write_json_atomic(self.path, self.ids)


class TensorBoardSink:
    def __init__(self, config: RFTConfig, run_dir: Path, resumed_step: int | None, ids: _Ids):
        module = _require("torch.utils.tensorboard", "tensorboard")
        purge = resumed_step + 1 if resumed_step is not None else None  # drop events logged after the checkpoint
        self.writer = module.SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MlflowSink:
    def __init__(self, config: RFTConfig, run_dir: Path, resumed_step: int | None, ids: _Ids):
        tracking = _require("mlflow.tracking", "mlflow")
        self.entities = _require("mlflow.entities", "mlflow")
        uri = config.tracking.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:  # MLflow keeps its file store for exactly this use, behind an opt-in since 3.x
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = tracking.MlflowClient(tracking_uri=uri)
        self.run_id = ids.get("mlflow")
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(config.tracking.project)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self.client.create_experiment(config.tracking.project))
            run = self.client.create_run(experiment_id, run_name=config.tracking.run_name or run_dir.name)
            self.run_id = run.info.run_id
            ids.set("mlflow", self.run_id)
            params = [self.entities.Param(k, str(v)[:6000]) for k, v in flat_config(config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def write(self, record: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        metrics = [self.entities.Metric(k, v, now, record["step"]) for k, v in scalars(record).items()]
        for i in range(0, len(metrics), 1000):  # and at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbSink:
    def __init__(self, config: RFTConfig, run_dir: Path, resumed_step: int | None, ids: _Ids):
        wandb = _require("wandb", "wandb")
        run_id = ids.get("wandb")
        # console="off": W&B would otherwise wrap this process's stdout and the progress bar
        self.run = wandb.init(project=config.tracking.project, name=config.tracking.run_name or run_dir.name,
                              dir=str(run_dir), config=flat_config(config), mode=config.tracking.wandb_mode,
                              id=run_id, resume="allow" if run_id else None, reinit="create_new",
                              settings=wandb.Settings(console="off", silent=True))
        ids.set("wandb", self.run.id)

    def write(self, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


class TrackioSink:
    def __init__(self, config: RFTConfig, run_dir: Path, resumed_step: int | None, ids: _Ids):
        trackio = _require("trackio", "trackio")
        self.run = trackio.init(project=config.tracking.project, name=config.tracking.run_name or run_dir.name,
                                config=flat_config(config), resume="allow" if resumed_step is not None else "never",
                                auto_log_cpu=False, auto_log_gpu=False)

    def write(self, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


TRACKERS = {"tensorboard": TensorBoardSink, "mlflow": MlflowSink, "wandb": WandbSink, "trackio": TrackioSink}


class FanOut:
    """metrics.jsonl first (its errors are the run's), then each tracker (its errors drop it, with a warning)."""

    def __init__(self, primary: MetricSink, trackers: dict[str, MetricSink]):
        self.primary, self.trackers = primary, trackers

    def write(self, record: dict[str, Any]) -> None:
        self.primary.write(record)
        for name, tracker in list(self.trackers.items()):
            try:
                tracker.write(record)
            except Exception as exc:  # noqa: BLE001 - a tracker never stops training
                log.warning("report_to: %s failed at step %s (%s: %s); it gets no more records, metrics.jsonl "
                            "keeps every step", name, record.get("step"), type(exc).__name__, exc)
                del self.trackers[name]

    def close(self) -> None:
        self.primary.close()
        for name, tracker in self.trackers.items():
            try:
                tracker.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("report_to: closing %s failed (%s: %s)", name, type(exc).__name__, exc)


def with_trackers(primary: MetricSink, config: RFTConfig, run_dir: Path, resumed_step: int | None) -> MetricSink:
    """`primary` (metrics.jsonl) plus the trackers of `report_to`; `resumed_step`: the checkpoint's step."""
    if not config.report_to:
        return primary
    ids = _Ids(run_dir, resumed_step is not None)
    trackers: dict[str, MetricSink] = {}
    try:
        for name in dict.fromkeys(config.report_to):
            trackers[name] = TRACKERS[name](config, run_dir, resumed_step, ids)
    except BaseException:
        FanOut(primary, trackers).close()
        raise
    return FanOut(primary, trackers)
