"""`rft report`: a self-contained page from a run directory, safe against markup in completions."""

import json
import re

import pytest

from rftkit.cli import main
from rftkit.data import DataError
from rftkit.logging.charts import nice_ticks, smooth, tick_label
from rftkit.logging.report import build_report, read_jsonl_tolerant


def _run_dir(tmp_path, torn: bool = False):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    rows = [{"step": 0, "val/accuracy": 0.1, "val/accuracy_greedy": 0.3}]
    rows += [{"step": s, "reward/mean": 0.1 * s, "reward/correct": 0.05 * s, "kl/mean": 0.0, "time/generate": 0.2,
              "time/update": 0.3, "reward_hack/noop": s % 2} for s in (1, 2, 3, 4)]
    rows.append({"step": 4, "val/accuracy": 0.2, "val/accuracy_greedy": 0.35})
    text = "".join(json.dumps(r) + "\n" for r in rows) + ('{"step": 5, "reward/me' if torn else "")
    (run / "metrics.jsonl").write_text(text)
    sample = {"step": 4, "prompt": "2+2?", "completion": "<script>alert('x')</script> 4", "reward": 1.0,
              "grades": {"correct": {"score": 1.0, "reason": "equals <4>", "flags": ["reward_hack/noop"]}}}
    (run / "samples.jsonl").write_text(json.dumps(sample) + "\n")
    (run / "config.yaml").write_text("model:\n  name: embedded\n")
    return run


def test_report_has_charts_summary_and_escaped_samples(tmp_path):
    run = _run_dir(tmp_path)
    summary = {"before": {"accuracy": 0.1, "accuracy_greedy": 0.3, "mean_reward": 0.2},
               "after": {"accuracy": 0.2, "accuracy_greedy": 0.35, "mean_reward": 0.3}, "steps": 4, "wall_seconds": 9.0}
    (run / "summary.json").write_text(json.dumps(summary))
    page = build_report(run).read_text()
    assert page.startswith("<!doctype html>") and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    titles = re.findall(r'<text class="title"[^>]*>([^<]+)</text>', page)
    assert titles == ["held-out accuracy", "training reward, total and per grader", "KL to the reference",
                      "reward-hacking flags", "seconds per step, by stage"]  # panels without data are left out
    assert re.findall(r'<text class="axis"[^>]*>([^<]+)</text>', page)[:2] == ["step", "share of prompts solved"]
    assert "reward/correct <span class=\"last\">(last 0.2)</span>" in page  # per-grader rewards join the reward panel
    assert "<script>alert" not in page and "\\u003cscript\\u003ealert" in page  # samples are data, never markup
    assert "equals \\u003c4\\u003e" in page and "reward_hack/noop" in page
    assert "<td>accuracy_greedy</td><td>0.300</td><td>0.350</td>" in page
    assert "finished" in page and "name: embedded" in page


def test_every_logged_series_gets_a_panel(tmp_path):
    run = _run_dir(tmp_path)
    extra = {"step": 4, "frac_groups_tied": 0.5, "grad_norm": 0.1, "lr": 2e-4, "grader/errors": 1,
             "len/truncated": 0.25, "pipeline/staleness_mean": 0.5, "pipeline/restarts": 0, "custom_thing": 3.0,
             "reward/correct/log_metric": 0.5}
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(extra) + "\n")
    page = build_report(run).read_text()
    titles = re.findall(r'<text class="title"[^>]*>([^<]+)</text>', page)
    for title in ("groups whose rewards all tie (no signal)", "gradient norm", "learning rate",
                  "grader errors and masked grades", "completions cut off at max_completion_length",
                  "staleness of sampled batches (Ray pipeline)", "pipeline/*", "custom_thing", "reward/correct/*"):
        assert title in titles, title


def test_nice_ticks_are_round_and_enclose_the_data():
    assert nice_ticks(0.13, 0.87) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(1, 1500, 6, integer=True) == [0, 500, 1000, 1500]
    assert nice_ticks(3, 3, integer=True)[0] <= 3 <= nice_ticks(3, 3, integer=True)[-1]
    ticks = nice_ticks(0.0001, 0.0003)
    assert [tick_label(t, ticks) for t in ticks][-1] == "0.0003"


def test_compare_two_runs_on_one_page(tmp_path):
    a, b = _run_dir(tmp_path / "a"), _run_dir(tmp_path / "b")
    (b / "config.yaml").write_text("model:\n  name: other\n")
    out = tmp_path / "cmp.html"
    assert main(["report", str(a), str(b), "--output", str(out)]) == 0
    page = out.read_text()
    assert "2 runs compared" in page and "Config keys that differ" in page and "model.name" in page
    assert 'stroke-dasharray="6 3"' in page  # the second run drawn dashed
    assert page.count('<figure class="panel">') == 5


def test_report_of_a_run_in_progress_skips_a_torn_last_line(tmp_path):
    run = _run_dir(tmp_path, torn=True)
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--output", str(out)]) == 0
    assert "in progress or stopped (last step 4)" in out.read_text()


def test_a_broken_line_before_the_end_is_an_error_naming_it(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(DataError, match=r"m.jsonl:2: invalid JSON"):
        read_jsonl_tolerant(path)


def test_missing_run_directory_is_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "metrics.jsonl: not found" in capsys.readouterr().err


def test_smooth_is_a_trailing_mean():
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
