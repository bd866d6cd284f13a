"""`rft report RUN_DIR`: one self-contained HTML page per run: curves, validation, graded samples.

The page has no external assets and needs no plotting library: each chart is an inline SVG
polyline drawn from `metrics.jsonl`. Completions are model output and are HTML-escaped, so a
completion that contains markup shows as text and never runs in the reader's browser. A run
still in progress works too: a torn last line of a JSONL file is skipped.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rftkit.atomic import write_text_atomic
from rftkit.data import read_jsonl_rows

# (title, metric keys drawn in it); a panel whose keys never occur is left out
PANELS: list[tuple[str, list[str]]] = [
    ("validation accuracy (held-out)", ["val/accuracy", "val/accuracy_greedy"]),
    ("training reward", ["reward/mean"]),
    ("training accuracy", ["accuracy"]),
    ("KL to the reference", ["kl/mean"]),
    ("clip fraction", ["clip_frac"]),
    ("entropy", ["entropy"]),
    ("completion length (tokens)", ["len/completion"]),
    ("seconds per step", ["time/generate", "time/grade", "time/update"]),
    ("policy loss", ["loss/policy"]),
]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
WIDTH, HEIGHT, MARGIN = 440, 220, 42


def read_jsonl_tolerant(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file that a running job may be appending to (a torn last line is skipped)."""
    return [row for row, _ in read_jsonl_rows(path, "run", torn_last_line_ok=True)]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (per-step training curves are noisy; validation points are not smoothed)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def series(metrics: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(row["step"], float(row[key])) for row in metrics if isinstance(row.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def svg_chart(title: str, lines: dict[str, tuple[list[int], list[float]]]) -> str:
    xs = [x for steps, _ in lines.values() for x in steps]
    ys = [y for _, values in lines.values() for y in values]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    span_x = (x1 - x0) or 1

    def point(x: float, y: float) -> tuple[float, float]:
        return (MARGIN + (x - x0) / span_x * (WIDTH - MARGIN - 10),
                HEIGHT - MARGIN + 12 - (y - y0) / (y1 - y0) * (HEIGHT - MARGIN - 10))

    parts = [f'<svg width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg" role="img">',
             f'<text x="{WIDTH / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
             f'<line x1="{MARGIN}" y1="{HEIGHT - 30}" x2="{WIDTH - 10}" y2="{HEIGHT - 30}" stroke="#999"/>',
             f'<line x1="{MARGIN}" y1="22" x2="{MARGIN}" y2="{HEIGHT - 30}" stroke="#999"/>',
             f'<text x="{MARGIN - 4}" y="{HEIGHT - 30}" text-anchor="end" font-size="10">{y0:.3g}</text>',
             f'<text x="{MARGIN - 4}" y="30" text-anchor="end" font-size="10">{y1:.3g}</text>',
             f'<text x="{MARGIN}" y="{HEIGHT - 16}" font-size="10">step {x0}</text>',
             f'<text x="{WIDTH - 10}" y="{HEIGHT - 16}" text-anchor="end" font-size="10">{x1}</text>']
    for i, (name, (steps, values)) in enumerate(lines.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = [point(x, y) for x, y in zip(steps, values)]
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        marker = "".join(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>'
                         for px, py in points) if len(steps) <= 30 else ""
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>{marker}')
        parts.append(f'<text x="{WIDTH - 12}" y="{32 + 12 * i}" text-anchor="end" font-size="10" '
                     f'fill="{colour}">{html.escape(name)} (last {values[-1]:.4g})</text>')
    parts.append("</svg>")
    return "".join(parts)


def charts(metrics: list[dict[str, Any]]) -> list[str]:
    steps = max((row.get("step", 0) for row in metrics), default=0)
    window = max(1, steps // 50)
    graders = sorted({k for row in metrics for k in row
                      if k.startswith("reward/") and k not in ("reward/mean", "reward/std")})
    hacks = sorted({k for row in metrics for k in row if k.startswith("reward_hack/")})
    panels = [(title, keys + graders if keys == ["reward/mean"] else keys) for title, keys in PANELS]
    if hacks:
        panels.append(("reward-hacking flags per step", hacks))
    out = []
    for title, keys in panels:
        lines = {}
        for key in keys:
            xs, ys = series(metrics, key)
            if xs:
                lines[key] = (xs, ys if key.startswith("val/") else smooth(ys, window))
        if lines:
            note = "" if all(k.startswith("val/") for k in lines) or window == 1 else f", {window}-step mean"
            out.append(svg_chart(title + note, lines))
    return out


def _summary_table(summary: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(key)}</td><td>{summary['before'].get(key, float('nan')):.3f}</td>"
                   f"<td>{summary['after'].get(key, float('nan')):.3f}</td></tr>"
                   for key in ("accuracy", "accuracy_greedy", "mean_reward"))
    facts = ", ".join(f"{k} {summary[k]}" for k in ("steps", "wall_seconds", "validation_size", "seed") if k in summary)
    return (f"<h2>Held-out, before and after</h2><table><tr><th></th><th>before</th><th>after</th></tr>{rows}</table>"
            f"<p>{html.escape(facts)}</p>")


def _samples_table(samples: list[dict[str, Any]]) -> str:
    body = []
    for s in samples:
        grades = "<br>".join(
            f"<b>{html.escape(name)}</b> {g.get('score', 0):.2f}: {html.escape(str(g.get('reason', '')))}"
            + (f" <span class=flag>{html.escape(', '.join(g['flags']))}</span>" if g.get("flags") else "")
            for name, g in s.get("grades", {}).items())
        reward = s.get("reward")
        body.append(f"<tr><td>{s.get('step', '')}</td><td><pre>{html.escape(str(s.get('prompt', '')))}</pre></td>"
                    f"<td><pre>{html.escape(str(s.get('completion', '')))}</pre></td>"
                    f"<td>{'masked' if reward is None else f'{reward:.3f}'}</td><td>{grades}</td></tr>")
    return ("<h2>Graded samples (latest)</h2><table><tr><th>step</th><th>prompt</th><th>completion</th>"
            f"<th>reward</th><th>grades</th></tr>{''.join(body)}</table>")


STYLE = ("body{font-family:sans-serif;margin:24px;max-width:1400px}svg{margin:4px;border:1px solid #eee}"
         "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px;vertical-align:top;font-size:12px}"
         "pre{white-space:pre-wrap;max-width:480px;margin:0}.flag{color:#b00}")


def build_report(run_dir: str | Path, output: str | Path | None = None, max_samples: int = 40) -> Path:
    """Write the report (default RUN_DIR/report.html) and return its path."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: not found (is {run_dir} a run directory from rft train?)")
    metrics = read_jsonl_tolerant(metrics_path)
    samples_path = run_dir / "samples.jsonl"
    samples = read_jsonl_tolerant(samples_path)[-max_samples:][::-1] if samples_path.is_file() else []
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    config_path = run_dir / "config.yaml"
    config = config_path.read_text() if config_path.is_file() else ""
    last_step = max((row.get("step", 0) for row in metrics), default=0)
    status = "finished" if summary else f"in progress or stopped (last step {last_step})"
    sections = [f"<h1>rftkit run: {html.escape(str(run_dir))}</h1><p>{status}, {len(metrics)} metric rows</p>"]
    if summary:
        sections.append(_summary_table(summary))
    sections.append("<h2>Curves</h2>" + "".join(charts(metrics)))
    if samples:
        sections.append(_samples_table(samples))
    if config:
        sections.append(f"<h2>Resolved config</h2><pre>{html.escape(config)}</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>rftkit report</title><style>{STYLE}</style>"
            f"</head><body>{''.join(sections)}</body></html>")
    path = Path(output) if output else run_dir / "report.html"
    write_text_atomic(path, page)
    return path
