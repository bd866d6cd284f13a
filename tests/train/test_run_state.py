"""Run state is complete or absent: torn JSONL lines, killed writes, a full disk, changed configs on
resume, and output directories that hold an earlier run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rftkit.atomic import DiskFullError, write_jsonl_atomic, write_text_atomic
from rftkit.cli import main
from rftkit.config import apply_override, parse_config
from rftkit.data import DataError
from rftkit.logging.sinks import JsonlSink
from rftkit.train.loop import train
from tests.conftest import tiny_config_dict

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path, **overrides) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, **overrides)))
    return path


def steps_of(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_resume_trims_a_torn_last_line_of_metrics_and_samples(tmp_path):
    config = write_config(tmp_path)
    assert main(["train", str(config)]) == 0
    run = tmp_path / "run"
    for name in ("metrics.jsonl", "samples.jsonl"):  # the disk filled up half-way through a line
        with (run / name).open("a") as handle:
            handle.write('{"step": 3, "reward/me')
    assert main(["train", "--resume", str(run), "--set", "train.steps=3"]) == 0
    assert steps_of(run / "metrics.jsonl") == [0, 1, 2, 3]
    assert all(json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines())


def test_a_malformed_line_before_the_last_is_named_not_guessed(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, \n{"step": 3}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:2: not valid JSON"):
        JsonlSink(path, truncate_after_step=3)


def test_an_interrupted_atomic_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "eval.jsonl"
    write_jsonl_atomic(path, [{"id": 1}, {"id": 2}])

    def rows():
        yield {"id": "new"}
        raise KeyboardInterrupt  # killed half-way through

    with pytest.raises(KeyboardInterrupt):
        write_jsonl_atomic(path, rows())
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["eval.jsonl"]  # no temporary file left behind


def test_sigkill_during_an_output_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "out.jsonl"
    write_text_atomic(path, '{"previous": true}\n')
    writer = ("import sys, time\nfrom rftkit.atomic import write_jsonl_atomic\n"
              "def rows():\n    for i in range(10**6):\n        time.sleep(0.001)\n        yield {'i': i}\n"
              f"write_jsonl_atomic({str(path)!r}, rows())\n")
    proc = subprocess.Popen([sys.executable, "-c", writer], env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    deadline = time.time() + 60
    while not any(p.name.startswith(".tmp-out.jsonl") for p in tmp_path.iterdir()):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.read_text() == '{"previous": true}\n'


def test_rft_eval_output_is_written_atomically(tmp_path, monkeypatch):
    import rftkit.atomic as atomic

    config = write_config(tmp_path)
    out = tmp_path / "eval.jsonl"
    out.write_text("previous\n")
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        main(["eval", str(config), "--output", str(out)])
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert out.read_text() == "previous\n"
    assert main(["eval", str(config), "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 8  # one line per held-out example


def test_a_full_disk_during_a_checkpoint_says_so_and_keeps_the_last_one(tmp_path, monkeypatch):
    import torch

    import rftkit.train.checkpoint as checkpoint

    config = parse_config(tiny_config_dict(tmp_path))
    real_save, calls = torch.save, []

    def save(obj, path, *a, **k):  # the third checkpoint write hits a full disk, as torch's writer reports it
        calls.append(path)
        if "step-2" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 673600 vs 673488")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    with pytest.raises(DiskFullError, match=r"disk full while writing .*step-2.*last complete checkpoint .*step-1"):
        train(config, tmp_path / "run", progress=False)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-1"]  # no half-written step-2 and no temporary directory


def test_a_real_full_disk_is_reported_for_jsonl_sinks(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        sink = JsonlSink(mount / "metrics.jsonl", truncate_after_step=-1)
        with pytest.raises(DiskFullError, match="disk full while writing .*metrics.jsonl"):
            for step in range(100_000):
                sink.write({"step": step, "pad": "x" * 200})
        with pytest.raises(DiskFullError, match="disk full"):
            write_text_atomic(mount / "summary.json", "y" * 200_000)
        assert not (mount / "summary.json").exists()
    finally:
        subprocess.run(["umount", str(mount)])


def test_resume_refuses_changed_keys_and_keeps_the_saved_config(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["train", str(config)]) == 0
    run = tmp_path / "run"
    saved = (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "--set", "lora.r=8", "--set", "train.learning_rate=0.1"]) == 2
    error = capsys.readouterr().err
    assert "lora.r" in error and "train.learning_rate" in error and "train.steps" in error  # what may change
    assert (run / "config.yaml").read_text() == saved
    assert main(["train", "--resume", str(run), "--set", "train.steps=3"]) == 0  # a safe key
    assert steps_of(run / "metrics.jsonl")[-1] == 3


def test_an_earlier_run_without_checkpoints_is_never_overwritten_silently(tmp_path, capsys):
    config = write_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0, "val/accuracy": 0.5}\n')
    assert main(["train", str(config)]) == 2
    assert "already holds an earlier run (metrics.jsonl)" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == '{"step": 0, "val/accuracy": 0.5}\n'
    assert main(["train", str(config), "--overwrite"]) == 0
    assert steps_of(run / "metrics.jsonl") == [0, 1, 2]


def test_set_reaches_list_entries_by_index():
    raw = {"graders": [{"name": "a", "type": "x", "weight": 1.0}]}
    apply_override(raw, "graders.0.weight=2")
    assert raw["graders"][0]["weight"] == 2
    from rftkit.config import ConfigError

    with pytest.raises(ConfigError, match="'3' is not an index of graders"):
        apply_override(raw, "graders.3.weight=2")


def test_a_huge_prompt_is_refused_before_any_step_naming_the_row(tmp_path, capsys):
    rows = [{"id": f"r{i}", "prompt": "Using the numbers [1, 2], make 3.", "target": 3, "numbers": [1, 2]}
            for i in range(12)]
    rows[5]["prompt"] = "make 3 " * 200_000  # about 1 MB
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config(tmp_path, data__source=str(data), data__val_size=2, data__train_size=None)
    assert main(["train", str(config)]) == 2
    error = capsys.readouterr().err
    assert "example 'r5'" in error and "data.max_prompt_length=4096" in error
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_every_set_example_in_the_help_texts_works(tmp_path, capsys):
    import re

    from rftkit.cli import build_parser
    from rftkit.config import load_config

    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices  # the verbs' own parsers, as `rft VERB --help` prints them
    examples = set()
    for verb in verbs.values():
        examples |= {e.rstrip("),.;") for e in re.findall(r"--set ([a-z_][\w.]*=\S+)", verb.format_help())}
    assert "graders.0.weight=2" in examples and "train.steps=20" in examples
    config = write_config(tmp_path)
    for assignment in examples:
        load_config(config, [assignment])  # parses and validates, or raises ConfigError naming the key


def test_validation_chooses_the_best_checkpoint_and_the_test_split_reports(tmp_path, capsys):
    config = write_config(tmp_path, train__steps=3, data__test_size=6, eval__keep_best="mean_reward")
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validations = [(m["step"], m["val/mean_reward"]) for m in metrics if m["step"] > 0]
    best_step, best_value = max(validations, key=lambda sv: (sv[1], -sv[0]))  # first of the highest
    assert summary["best"] == {"step": best_step, "metric": "mean_reward", "value": best_value}
    assert json.loads((run / "checkpoints" / "best" / "best.json").read_text())["step"] == best_step
    assert summary["test_size"] == 6 and set(summary["test"]) == {"accuracy", "accuracy_greedy", "mean_reward"}
    assert "test split (6 prompts" in out and "best checkpoint:" in out and f"rft report {run}" in out
    # the test prompts are neither validation nor training prompts
    from rftkit.config import load_config
    from rftkit.tasks import load_splits

    train_set, val_set, test_set = load_splits(load_config(config).data)
    assert len(test_set) == 6 and not {e.id for e in test_set} & {e.id for e in train_set + val_set}
    no_test = load_splits(load_config(config, ["data.test_size=0"]).data)
    assert [e.id for e in no_test[1]] == [e.id for e in val_set]  # validation does not move with a test split
