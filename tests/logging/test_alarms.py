"""Alarms: each pure check on hand-made records, then each firing on a real tiny run built to trigger it
(a warning in the log, alarm/<name> in metrics.jsonl, a banner in the report, and alarms.stop_on)."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from rftkit.cli import main
from rftkit.config import parse_config
from rftkit.logging.alarms import (AlarmMonitor, AlarmSettings, active_alarms, alarm_history, grader_down,
                                   no_signal, overfitting, truncated, truncated_count,
                                   truncation)
from rftkit.logging.report import build_report
from rftkit.train.loop import train
from tests.conftest import tiny_config_dict

GRADERS = Path(__file__).with_name("alarm_graders.py")


def steps(key, values, start=1):
    return [{"step": start + i, key: v} for i, v in enumerate(values)]


# --- the pure checks ---------------------------------------------------------------------------------

def test_truncation_fires_at_the_first_step_or_over_a_full_window():
    assert "first step" in truncation(steps("len/truncated", [0.97]), 0.5, 10)
    assert truncation(steps("len/truncated", [0.4]), 0.5, 10) is None
    assert truncation(steps("len/truncated", [0.4, 0.9]), 0.5, 10) is None  # window not yet full
    rising = steps("len/truncated", [0.4, 0.6, 0.7])
    assert "steps 1-3" in truncation(rising, 0.5, 3)
    assert truncation(steps("len/truncated", [0.4, 0.5, 0.6]), 0.5, 3) is None  # mean 0.5 is not above
    assert truncation(rising + [{"step": 4, "val/accuracy": 0.1}], 0.5, 3) is None  # holds only on step records


def test_no_signal_needs_every_group_tied_n_steps_in_a_row():
    assert "tied for 3 steps" in no_signal(steps("frac_groups_tied", [1.0, 1.0, 1.0]), 3)
    assert no_signal(steps("frac_groups_tied", [1.0, 0.875, 1.0]), 3) is None
    assert no_signal(steps("frac_groups_tied", [1.0, 1.0]), 3) is None


def test_grader_down_names_the_grader_unscored_on_every_completion_for_n_steps():
    rows = [{"step": s, "grader/judge/unscored": 1.0, "grader/correct/unscored": 0.0} for s in (1, 2, 3)]
    message = grader_down(rows, 3)
    assert "judge" in message and "correct" not in message and "steps 1-3" in message
    rows[1]["grader/judge/unscored"] = 0.75  # a few completions got through
    assert grader_down(rows, 3) is None
    assert grader_down(rows[:2], 3) is None


def test_overfitting_reads_the_validation_points_of_the_records():
    rows = [{"step": 0, "val/accuracy": 0.5}]  # before training: no training reward, not evidence
    rows += [{"step": s, "reward/mean": r, "val/accuracy": v} for s, r, v in ((10, 0.2, 0.4), (20, 0.3, 0.3))]
    assert overfitting(rows, 2).startswith("possible overfitting")
    assert overfitting(rows, 3) is None
    assert overfitting(rows + [{"step": 21, "reward/mean": 0.4}], 2) is None  # only at a validation


def test_monitor_warns_once_marks_every_step_and_stops_when_asked(caplog):
    monitor = AlarmMonitor(AlarmSettings(no_signal_steps=2, stop_on=("no_signal",)), announce=True)
    records = steps("frac_groups_tied", [1.0, 1.0, 1.0, 0.5])
    with caplog.at_level(logging.WARNING, logger="rftkit"):
        stops = [monitor.observe(r) for r in records]
    assert [s and s.name for s in stops] == [None, "no_signal", "no_signal", None]
    assert ["alarm/no_signal" in r for r in records] == [False, True, True, False]
    assert sum("alarm no_signal at step 2" in m for m in caplog.messages) == 1  # warned when it began
    assert "stopping the run" in caplog.messages[0]


def test_alarm_history_replays_a_run():
    rows = steps("frac_groups_tied", [1.0, 1.0, 0.0, 1.0, 1.0])
    fired = alarm_history(rows, AlarmSettings(no_signal_steps=2))
    assert [a.step for a in fired["no_signal"]] == [2, 5]
    assert active_alarms([], AlarmSettings()) == []


def test_truncated_counts_completions_at_the_limit_that_did_not_stop():
    ids = torch.tensor([[5, 6, 7], [5, 6, 2], [5, 2, 0], [5, 6, 7]])  # 2 is the stop token
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 0]])
    assert truncated(ids, mask, 3, {2}).tolist() == [True, False, False, False]


def test_a_multi_turn_episode_is_truncated_when_it_ran_out_of_its_token_budget():
    from types import SimpleNamespace

    episodes = [SimpleNamespace(finish=f) for f in ("environment", "token_budget", "max_turns", "token_budget")]
    long = torch.ones(4, 40, dtype=torch.long)  # whole trajectories, far past one turn's 32 tokens
    batch = SimpleNamespace(episodes=episodes, completion_ids=long, completion_mask=long)
    assert truncated_count(batch, 32, {2}) == 2
    single = SimpleNamespace(episodes=None, completion_ids=long[:, :3], completion_mask=long[:, :3])
    assert truncated_count(single, 3, {2}) == 4


# --- runs built to trigger each alarm ----------------------------------------------------------------

def _config(tmp_path, graders, **overrides):
    shutil.copy(GRADERS, tmp_path / "alarm_graders.py")
    raw = tiny_config_dict(tmp_path, **{"eval__eval_every": 100, "data__val_size": 4, **overrides})
    raw["graders"] = [{"name": g, "type": "function", "function": f"{tmp_path / 'alarm_graders.py'}:{fn}",
                       "weight": 1.0} if fn else {"name": g, "type": "countdown", "weight": 1.0}
                      for g, fn in graders]
    raw.pop("accuracy_grader")
    return raw


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _banner(run_dir, alarm):
    page = build_report(run_dir).read_text()
    return f'data-alarm="{alarm}"' in page and page


def test_truncation_alarm_on_completions_cut_at_two_tokens(tmp_path, caplog):
    raw = _config(tmp_path, [("correct", None)], train__max_completion_length=2, train__steps=2)
    with caplog.at_level(logging.WARNING, logger="rftkit"):
        summary = train(parse_config(raw), tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and "stopped_by" not in summary  # warns; stop_on is empty by default
    rows = _metrics(tmp_path / "run")
    assert rows[1]["len/truncated"] == 1.0 and rows[1]["alarm/truncation"] == 1.0
    assert any("alarm truncation at step 1: 100% of the first step's completions" in m for m in caplog.messages)
    assert "max_completion_length" in _banner(tmp_path / "run", "truncation")


def test_no_signal_alarm_stops_a_run_whose_groups_all_tie(tmp_path, capsys):
    raw = _config(tmp_path, [("same", "constant")], train__steps=6, alarms={"no_signal_steps": 2,
                                                                             "stop_on": ["no_signal"]})
    config_path = tmp_path / "tied.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config_path), "--output", str(tmp_path / "run")]) == 3  # stopped by an alarm
    out, err = capsys.readouterr()
    assert "stopped at step 2 by the no_signal alarm" in err
    lines = [line for line in out.splitlines() if "validation: accuracy" in line]
    assert [line.split()[1] for line in lines] == ["0/6", "2/6"]  # one console line per validation
    assert "sampled" in lines[1] and "greedy" in lines[1] and "(train reward 0.500)" in lines[1]
    rows = _metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[-1]["alarm/no_signal"] == 1.0
    assert "val/accuracy" in rows[-1]  # the stopping step was validated: the summary's "after" is current
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_by"]["alarm"] == "no_signal" and summary["steps"] == 2
    assert (tmp_path / "run" / "checkpoints" / "step-2").is_dir()  # resumable without the alarm
    page = _banner(tmp_path / "run", "no_signal")
    assert "The run was stopped by this alarm." in page and "stopped by the no_signal alarm at step 2" in page


def test_grader_down_alarm_on_a_judge_that_masks_every_grade(tmp_path, caplog):
    raw = _config(tmp_path, [("correct", None), ("judge", "judge_down")], train__steps=5,
                  alarms={"grader_down_steps": 2, "stop_on": ["grader_down"]})
    with caplog.at_level(logging.WARNING, logger="rftkit"):
        summary = train(parse_config(raw), tmp_path / "run", progress=False)
    assert summary["stopped_by"]["alarm"] == "grader_down" and summary["steps"] == 2
    rows = _metrics(tmp_path / "run")
    assert rows[1]["grader/judge/unscored"] == 1.0 and rows[1]["grader/correct/unscored"] == 0.0
    assert "alarm/grader_down" not in rows[1] and rows[2]["alarm/grader_down"] == 1.0
    assert any("grader(s) judge gave no score" in m for m in caplog.messages)
    assert _banner(tmp_path / "run", "grader_down")


def test_overfitting_alarm_when_validation_falls_as_training_reward_rises(tmp_path, caplog):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"prompt": f"Add {i} and 1.", "split": "train"}) + "\n"
                                                  for i in range(8)))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps({"prompt": f"Say {k}.", "split": "val", "k": k}) + "\n"
                                                for k in range(8)))
    raw = _config(tmp_path, [("drift", "drifting")], train__steps=5, eval__eval_every=1,
                  eval__overfit_patience=2, alarms={"stop_on": ["overfitting"]},
                  data={"source": str(tmp_path / "train.jsonl"), "val_source": str(tmp_path / "val.jsonl"),
                        "val_size": 8})
    with caplog.at_level(logging.WARNING, logger="rftkit"):
        summary = train(parse_config(raw), tmp_path / "run", progress=False)
    rows = _metrics(tmp_path / "run")
    assert [r["val/accuracy"] for r in rows] == [1.0, 0.875, 0.75]
    assert rows[2]["reward/mean"] > rows[1]["reward/mean"]
    assert summary["stopped_by"]["alarm"] == "overfitting" and rows[2]["alarm/overfitting"] == 1.0
    assert any("possible overfitting" in m for m in caplog.messages)
    assert _banner(tmp_path / "run", "overfitting")


@pytest.mark.parametrize("key", ["alarms.stop_on=[truncation]", "report_to=[tensorboard]"])
def test_alarm_and_tracker_keys_may_change_on_resume(key):
    from rftkit.config import SAFE_ON_RESUME

    assert key.split("=")[0] in SAFE_ON_RESUME
