"""`rft report RUN_DIR [RUN_DIR ...]`: one self-contained HTML page for a run, or several runs compared.

The page holds: the alarms that fired (banners, from `rftkit.logging.alarms` replayed over
metrics.jsonl with the run's own thresholds), the before/after (and test) table, a chart of every
logged series with real axes (rftkit.logging.charts), a sample browser filterable by step, verdict,
reward-hacking flag, run and text, showing each sample's whole trajectory and every grade with its
reason, and the resolved config (for several runs: the keys whose values differ).

It has no external asset and needs no plotting library. Completions are model output: the
server-side parts are HTML-escaped, and the browser script sets them only as text, so markup in a
completion shows as text and never runs. A run still in progress works too: a torn last line of a
JSONL file is skipped.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rftkit.atomic import write_text_atomic
from rftkit.data import read_jsonl_rows
from rftkit.logging.alarms import Alarm, AlarmSettings, alarm_history
from rftkit.logging.charts import charts

SCRIPT = Path(__file__).with_name("report.js")


def read_jsonl_tolerant(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file that a running job may be appending to (a torn last line is skipped)."""
    return [row for row, _ in read_jsonl_rows(path, "run", torn_last_line_ok=True)]


@dataclass
class RunFiles:
    path: Path
    name: str
    metrics: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    summary: dict[str, Any] | None
    config: dict[str, Any]  # the resolved config.yaml as written ({} when absent)
    config_text: str


def load_run(run_dir: Path, name: str, max_samples: int | None) -> RunFiles:
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: not found (is {run_dir} a run directory from rft train?)")
    samples_path = run_dir / "samples.jsonl"
    samples = read_jsonl_tolerant(samples_path) if samples_path.is_file() else []
    if max_samples is not None:
        samples = samples[-max_samples:] if max_samples > 0 else []
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.yaml"
    text = config_path.read_text(encoding="utf-8") if config_path.is_file() else ""
    config = yaml.safe_load(text) if text else {}
    return RunFiles(run_dir, name, read_jsonl_tolerant(metrics_path), samples,
                    json.loads(summary_path.read_text()) if summary_path.is_file() else None,
                    config if isinstance(config, dict) else {}, text)


def alarm_settings(config: dict[str, Any]) -> AlarmSettings:
    """The run's own thresholds (defaults for a run from before alarms existed)."""
    from rftkit.config import AlarmsConfig

    alarms = AlarmsConfig.model_validate(config.get("alarms") or {})
    patience = (config.get("eval") or {}).get("overfit_patience", 3)
    return AlarmSettings(alarms.truncation_threshold, alarms.truncation_window, alarms.no_signal_steps,
                         alarms.grader_down_steps, patience, tuple(alarms.stop_on))


def _banners(run: RunFiles, several: bool) -> str:
    fired = alarm_history(run.metrics, alarm_settings(run.config))
    stop = (run.summary or {}).get("stopped_by")
    out = []
    for name, alarms in fired.items():
        first: Alarm = alarms[0]
        steps = sorted({a.step for a in alarms})
        where = f"step {steps[0]}" if len(steps) == 1 else f"{len(steps)} steps, first at step {steps[0]}, " \
                                                            f"last at step {steps[-1]}"
        stopped = " The run was stopped by this alarm." if stop and stop.get("alarm") == name else ""
        prefix = f"{html.escape(run.name)}: " if several else ""
        out.append(f'<div class="banner" data-alarm="{html.escape(name)}"><b>{prefix}alarm {html.escape(name)}</b> '
                   f"({where}): {html.escape(first.message)}{stopped}</div>")
    return "".join(out)


def _status(run: RunFiles) -> str:
    last = max((row.get("step", 0) for row in run.metrics), default=0)
    if run.summary and run.summary.get("stopped_by"):
        state = f"stopped by the {run.summary['stopped_by']['alarm']} alarm at step {run.summary['stopped_by']['step']}"
    else:
        state = "finished" if run.summary else f"in progress or stopped (last step {last})"
    return f"<p class=status><b>{html.escape(run.name)}</b> ({html.escape(str(run.path))}): {state}, " \
           f"{len(run.metrics)} metric rows, {len(run.samples)} samples</p>"


HELD_OUT = ("accuracy", "accuracy_greedy", "mean_reward")


def _cell(block: dict[str, Any] | None, key: str) -> str:
    value = (block or {}).get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def _summary_table(runs: list[RunFiles]) -> str:
    done = [r for r in runs if r.summary]
    if not done:
        return ""
    head = "".join(f"<th>{html.escape(r.name)} before</th><th>{html.escape(r.name)} after</th>"
                   + ("<th>test</th>" if "test" in r.summary else "") for r in done)
    rows = []
    for key in HELD_OUT:
        cells = "".join(f"<td>{_cell(r.summary.get('before'), key)}</td><td>{_cell(r.summary.get('after'), key)}</td>"
                        + (f"<td>{_cell(r.summary.get('test'), key)}</td>" if "test" in r.summary else "")
                        for r in done)
        rows.append(f"<tr><td>{key}</td>{cells}</tr>")
    facts = []
    for r in done:
        s = r.summary
        bits = [f"{k} {s[k]}" for k in ("steps", "wall_seconds", "validation_size", "test_size", "seed") if k in s]
        if s.get("best_checkpoint"):
            bits.append(f"checkpoint {s['best_checkpoint']}")
        facts.append(f"<li><b>{html.escape(r.name)}</b>: {html.escape(', '.join(bits))}</li>")
    return (f"<h2>Held-out, before and after</h2><table><tr><th></th>{head}</tr>{''.join(rows)}</table>"
            f"<ul class=facts>{''.join(facts)}</ul>")


def _verdict(sample: dict[str, Any], config: dict[str, Any]) -> str:
    """pass / fail by the run's accuracy rule (rftkit.eval.validate.AccuracyRule); 'no signal' when masked."""
    grader, threshold = config.get("accuracy_grader"), config.get("accuracy_threshold", 1.0)
    reward = sample.get("reward")
    if grader is not None:
        grade = (sample.get("grades") or {}).get(grader) or {}
        accurate = isinstance(grade.get("score"), (int, float)) and grade["score"] >= threshold
    else:
        accurate = isinstance(reward, (int, float)) and reward >= threshold
    return "pass" if accurate else ("no signal" if reward is None else "fail")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def trajectory(sample: dict[str, Any]) -> list[dict[str, str]]:
    """The whole episode: its messages when the sample has them (multi-turn), else prompt then completion."""
    messages = sample.get("messages") or sample.get("trajectory")
    if isinstance(messages, list):
        turns = [{"role": str(m.get("role", "?")), "content": _text(m.get("content", ""))}
                 if isinstance(m, dict) else {"role": "?", "content": _text(m)} for m in messages]
        completion = sample.get("completion")
        if isinstance(completion, str) and (not turns or turns[-1]["content"] != completion):
            turns.append({"role": "assistant", "content": completion})
        return turns
    return [{"role": "prompt", "content": _text(sample.get("prompt", ""))},
            {"role": "completion", "content": _text(sample.get("completion", ""))}]


def _episode_note(sample: dict[str, Any]) -> str | None:
    """A multi-turn episode's ending (rftkit.envs: finish reason, model turns, per-turn rewards)."""
    if "finish" not in sample and "model_turns" not in sample:
        return None
    bits = [f"finished: {sample.get('finish')}", f"{sample.get('model_turns')} model turns"]
    if sample.get("turn_rewards"):
        bits.append("turn rewards " + ", ".join(f"{r:.2f}" if isinstance(r, (int, float)) else str(r)
                                                for r in sample["turn_rewards"]))
    return "; ".join(bits)


def browser_samples(runs: list[RunFiles]) -> list[dict[str, Any]]:
    out = []
    for index, run in enumerate(runs):
        for s in reversed(run.samples):  # newest first
            grades = [{"name": name, "score": g.get("score", 0.0), "reason": _text(g.get("reason", "")),
                       "error": bool(g.get("error")), "masked": bool(g.get("masked"))}
                      for name, g in (s.get("grades") or {}).items() if isinstance(g, dict)]
            flags = sorted({f for g in (s.get("grades") or {}).values() if isinstance(g, dict)
                            for f in g.get("flags") or []})
            turns = trajectory(s)
            reward = s.get("reward")
            out.append({"run": index, "step": s.get("step", 0), "example_id": s.get("example_id"),
                        "reward": reward if isinstance(reward, (int, float)) else None,
                        "verdict": _verdict(s, run.config), "flags": flags, "grades": grades, "turns": turns,
                        "episode": _episode_note(s)})
    return out


def _json_script(element_id: str, data: Any) -> str:
    """JSON inside <script type=application/json>: '<' escaped so no text can close the element."""
    text = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


BROWSER = """<h2>Samples</h2>
<div class="filters">
<label>step <select id="f-step"><option value="all">all steps</option></select></label>
<label>verdict <select id="f-verdict"><option value="all">all</option><option value="pass">pass</option>
<option value="fail">fail</option><option value="no signal">no signal (masked)</option></select></label>
<label>reward hacking <select id="f-flag"><option value="all">all</option><option value="flagged">flagged</option>
<option value="clean">not flagged</option></select></label>
<label id="f-run-label">run <select id="f-run"><option value="all">all runs</option></select></label>
<label>text <input id="f-text" type="search" placeholder="in prompt, completion or reason"></label>
<span id="count"></span></div>
<noscript><p>The sample browser needs JavaScript; samples.jsonl holds the same records.</p></noscript>
<div id="samples"></div><button id="more" type="button">show more</button>"""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _configs(runs: list[RunFiles]) -> str:
    if len(runs) == 1:
        return f"<h2>Resolved config</h2><pre>{html.escape(runs[0].config_text)}</pre>" if runs[0].config_text else ""
    flat = [_flatten(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f if len({json.dumps(g.get(k), default=str) for g in flat}) > 1})
    head = "".join(f"<th>{html.escape(r.name)}</th>" for r in runs)
    rows = "".join(f"<tr><td>{html.escape(k)}</td>"
                   + "".join(f"<td>{html.escape(json.dumps(f.get(k), default=str))}</td>" for f in flat) + "</tr>"
                   for k in keys)
    full = "".join(f"<details><summary>{html.escape(r.name)}: config.yaml</summary><pre>"
                   f"{html.escape(r.config_text)}</pre></details>" for r in runs)
    return (f"<h2>Config keys that differ</h2><table><tr><th>key</th>{head}</tr>{rows}</table>" if keys
            else "<h2>Configs</h2><p>The resolved configs are identical.</p>") + full


STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1500px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.banner{background:#fff3cd;border:1px solid #e0a800;border-left:6px solid #d9534f;padding:8px 12px;margin:6px 0}
.panels{display:flex;flex-wrap:wrap}.panel{margin:4px;border:1px solid #eee;padding:2px}
figcaption{font-size:11px;max-width:430px}.key{margin-right:10px;white-space:nowrap}.note{display:block;color:#777;font-style:italic}.last{color:#777}
svg.chart .title{font-size:13px;font-weight:600}svg.chart .tick{font-size:10px;fill:#444}
svg.chart .axis{font-size:11px;fill:#333}svg.chart .grid{stroke:#eee}svg.chart .frame{fill:none;stroke:#999}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px 8px;font-size:12px;vertical-align:top}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font-size:12px}
.filters{display:flex;flex-wrap:wrap;gap:14px;align-items:center;margin:8px 0;font-size:13px}
.sample{border:1px solid #ddd;border-left:5px solid #999;margin:8px 0;padding:6px 10px}
.sample.pass{border-left-color:#2ca02c}.sample.fail{border-left-color:#d62728}
.head span{margin-right:12px;font-size:12px}.verdict{font-weight:600}.flag{color:#fff;background:#b00;padding:0 4px}
.grades{margin:4px 0;padding-left:18px;font-size:12px}.grades .error{color:#b00}.grades .masked{color:#777}
.turn{margin:4px 0}.role{font-size:11px;color:#666;text-transform:uppercase}.turn pre{background:#f7f7f7;padding:4px}
#more{margin:8px 0}"""


def build_report(run_dirs: str | Path | list[str | Path], output: str | Path | None = None,
                 max_samples: int | None = None) -> Path:
    """Write the report and return its path: RUN_DIR/report.html for one run, FIRST_RUN_DIR/compare.html
    for several (`output` overrides). `max_samples`: the latest N samples per run in the browser (None: all)."""
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    names = [d.name or str(d) for d in dirs]
    if len(set(names)) < len(names):  # runs/a/x and runs/b/x: name them by their whole paths
        names = [str(d) for d in dirs]
    runs = [load_run(d, name, max_samples) for d, name in zip(dirs, names)]
    several = len(runs) > 1
    title = f"rftkit: {len(runs)} runs compared" if several else f"rftkit run: {runs[0].name}"
    sections = [f"<h1>{html.escape(title)}</h1>", *(_status(r) for r in runs)]
    sections += [_banners(r, several) for r in runs]
    sections.append(_summary_table(runs))
    if several:
        sections.append("<p>Line colour: the series; line style: the run (" + ", ".join(
            f"{html.escape(r.name)} {['solid', 'dashed', 'dotted', 'dash-dot'][i % 4]}" for i, r in enumerate(runs))
            + ").</p>")
    sections.append('<h2>Curves</h2><div class="panels">' + "".join(charts([r.metrics for r in runs], names))
                    + "</div>")
    sections.append(BROWSER + _json_script("samples-data", browser_samples(runs)) + _json_script("runs-data", names))
    sections.append(_configs(runs))
    page = (f"<!doctype html><html lang=en><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<link rel='icon' href='data:,'><style>{STYLE}</style></head><body>{''.join(sections)}"
            f"<script>{SCRIPT.read_text(encoding='utf-8')}</script></body></html>")
    path = Path(output) if output else dirs[0] / ("compare.html" if several else "report.html")
    write_text_atomic(path, page)
    return path
