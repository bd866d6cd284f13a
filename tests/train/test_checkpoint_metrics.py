"""Atomic checkpoints and the overfitting warning."""

import pytest
import torch

from rftkit.train.checkpoint import TrainerState, latest_checkpoint, load_trainer_state, save_checkpoint
from rftkit.logging.sinks import JsonlSink, overfitting_warning


class FakePolicy:
    def __init__(self, fail=False):
        self.fail = fail

    def save_pretrained(self, path):
        if self.fail:
            raise OSError("disk full")
        (__import__("pathlib").Path(path) / "adapter_config.json").write_text("{}")


def optimizer():
    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.ones(2)
    opt.step()
    return opt


def test_failed_write_leaves_no_checkpoint_and_no_temporary(tmp_path):
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, FakePolicy(fail=True), optimizer(), TrainerState(step=3, data_epoch=0, data_cursor=0))
    assert list((tmp_path / "checkpoints").iterdir()) == []
    assert latest_checkpoint(tmp_path) is None


def test_latest_complete_checkpoint_wins_and_state_round_trips(tmp_path):
    opt = optimizer()
    for step in (1, 2):
        save_checkpoint(tmp_path, FakePolicy(), opt, TrainerState(step=step, data_epoch=1, data_cursor=5 * step,
                                                                  history=[{"step": step}]))
    (tmp_path / "checkpoints" / "step-9").mkdir()  # no trainer_state.pt: incomplete, ignored
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step-2"
    fresh = optimizer()
    state = load_trainer_state(latest, fresh)
    assert (state.step, state.data_epoch, state.data_cursor, state.history) == (2, 1, 10, [{"step": 2}])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def points(vals, rewards):
    return [{"step": 100 * i, "val_accuracy": v, "train_reward": r} for i, (v, r) in enumerate(zip(vals, rewards))]


def test_overfitting_warning_needs_falling_validation_and_rising_reward():
    assert overfitting_warning(points([0.3, 0.25, 0.2], [0.4, 0.5, 0.6]), patience=3).startswith("possible overfitting")
    assert overfitting_warning(points([0.3, 0.25, 0.26], [0.4, 0.5, 0.6]), patience=3) is None  # val recovered
    assert overfitting_warning(points([0.3, 0.25, 0.2], [0.4, 0.5, 0.45]), patience=3) is None  # reward fell too
    assert overfitting_warning(points([0.3, 0.25], [0.4, 0.5]), patience=3) is None  # not enough evidence


def test_jsonl_sink_truncates_lines_after_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sink = JsonlSink(path, truncate_after_step=-1)
    for step in range(5):
        sink.write({"step": step})
    JsonlSink(path, truncate_after_step=2).write({"step": 3, "again": True})
    assert path.read_text().splitlines() == ['{"step": 0}', '{"step": 1}', '{"step": 2}', '{"step": 3, "again": true}']
