"""The report's charts: inline SVG line charts with real axes, and the panels every logged series falls into.

No plotting library and no external asset: each chart is an SVG with tick marks at round values on
both axes, gridlines, an axis title with the unit, and a legend. Several runs share a panel: the
colour names the series, the dash pattern the run.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Callable

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22"]
DASHES = ["", "6 3", "2 2", "8 3 2 3"]  # run 0 solid, run 1 dashed, ...
WIDTH, HEIGHT = 430, 260
LEFT, RIGHT, TOP, BOTTOM = 66, 14, 28, 46
UNSMOOTHED = ("val/", "alarm/", "lr")  # validation points, on/off flags and the schedule are drawn as logged

Series = tuple[list[int], list[float]]


def _grader_reward(key: str) -> bool:
    return key.startswith("reward/") and key.count("/") == 1 and key not in ("reward/mean", "reward/std")


def _prefix(prefix: str, suffix: str = "") -> Callable[[str], bool]:
    return lambda key: key.startswith(prefix) and key.endswith(suffix)


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str  # the y-axis title
    matches: Callable[[str], bool]


def _keys(*names: str) -> Callable[[str], bool]:
    return lambda key: key in names


# In page order; a key goes to the first panel that matches it. Keys no panel names get panels of their own,
# grouped by prefix ("pipeline/restarts" and "pipeline/timeouts" share "pipeline/*"): every series is drawn.
PANELS = [
    Panel("held-out accuracy", "share of prompts solved", _prefix("val/accuracy")),
    Panel("held-out reward", "mean reward (0-1)", _keys("val/mean_reward")),
    Panel("training reward, total and per grader", "mean reward (0-1)",
          lambda k: k == "reward/mean" or _grader_reward(k)),
    Panel("training accuracy", "share of completions", _keys("accuracy")),
    Panel("reward spread in the batch", "standard deviation", _keys("reward/std")),
    Panel("groups whose rewards all tie (no signal)", "share of groups", _keys("frac_groups_tied")),
    Panel("completions cut off at max_completion_length", "share of completions", _keys("len/truncated")),
    Panel("completion length", "tokens", _keys("len/completion", "len/environment")),
    Panel("how episodes ended (multi-turn)", "share of episodes", _prefix("episodes/")),
    Panel("model turns per episode", "turns", lambda k: k.startswith("turns/") or k == "val/turns"),
    Panel("KL to the reference", "nats per token", _keys("kl/mean")),
    Panel("losses", "loss", _prefix("loss/")),
    Panel("gradient norm", "global L2 norm", _keys("grad_norm")),
    Panel("learning rate", "learning rate", _keys("lr")),
    Panel("clipped policy ratio", "share of tokens", _keys("clip_frac")),
    Panel("entropy of the policy", "nats per token", _keys("entropy")),
    Panel("grader errors and masked grades", "completions", _keys("grader/errors", "grader/masked")),
    Panel("graders that gave no score", "share of completions", _prefix("grader/", "/unscored")),
    Panel("reward-hacking flags", "completions flagged", _prefix("reward_hack/")),
    Panel("alarms holding", "1 = holding", _prefix("alarm/")),
    Panel("staleness of sampled batches (Ray pipeline)", "optimizer steps behind",
          _keys("pipeline/staleness_mean", "pipeline/staleness_max")),
    Panel("seconds per validation", "seconds", _keys("time/validate")),
    Panel("seconds per step, by stage", "seconds", _prefix("time/")),
]


def numeric_keys(metrics: list[dict[str, Any]]) -> list[str]:
    """Every numeric key of the records but `step`, in the order first logged."""
    keys: dict[str, None] = {}
    for row in metrics:
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                keys.setdefault(key)
    return list(keys)


def assign_panels(keys: list[str]) -> list[tuple[Panel, list[str]]]:
    """The panels with data, each with its keys; unnamed keys grouped by prefix after the named panels."""
    chosen: dict[str, list[str]] = {}
    extra: dict[str, list[str]] = {}
    for key in keys:
        panel = next((p for p in PANELS if p.matches(key)), None)
        if panel is not None:
            chosen.setdefault(panel.title, []).append(key)
        else:
            extra.setdefault(key.rsplit("/", 1)[0] + "/*" if "/" in key else key, []).append(key)
    out = [(p, chosen[p.title]) for p in PANELS if p.title in chosen]
    out += [(Panel(group, "value", _keys(*members)), members) for group, members in extra.items()]
    return out


def series(metrics: list[dict[str, Any]], key: str) -> Series:
    points = [(row["step"], float(row[key])) for row in metrics
              if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)
              and math.isfinite(float(row[key]))]
    return [s for s, _ in points], [v for _, v in points]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (per-step training curves are noisy; validation points are not smoothed)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k apart) covering [lo, hi]; the first and last enclose the data."""
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = (max(0.0, lo - pad) if lo >= 0 else lo - pad), hi + pad  # a share or a count stays >= 0
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1, round(step))
    start, end = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    n = int(round((end - start) / step))
    return [start + i * step for i in range(n + 1)]


def tick_label(value: float, ticks: list[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(value) or 1
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or step < 1e-3:
        return f"{value:.2g}" if step >= abs(value) / 10 else f"{value:.3g}"
    decimals = next(d for d in range(7) if abs(round(step, d) - step) < 1e-9 * step or d == 6)  # 0.25: 2
    return f"{value:.{decimals}f}"


def svg_chart(title: str, unit: str, lines: dict[tuple[int, str], Series], run_names: list[str],
              note: str = "") -> str:
    """One chart: `lines` maps (run index, key) to its (steps, values); `note` heads the legend."""
    xs = [x for steps, _ in lines.values() for x in steps]
    ys = [y for _, values in lines.values() for y in values]
    xt = nice_ticks(min(xs), max(xs), 6, integer=True)
    yt = nice_ticks(min(ys), max(ys), 5)
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h

    e = html.escape
    parts = [f'<svg class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{e(title)}">',
             f'<text class="title" x="{LEFT + plot_w / 2}" y="16" text-anchor="middle">{e(title)}</text>']
    for y in yt:
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}"/>'
                     f'<text class="tick" x="{LEFT - 5}" y="{py(y) + 3:.1f}" text-anchor="end">'
                     f'{tick_label(y, yt)}</text>')
    for x in xt:
        parts.append(f'<line class="grid" x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>'
                     f'<text class="tick" x="{px(x):.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">'
                     f'{int(x)}</text>')
    parts.append(f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>'
                 f'<text class="axis" x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">step</text>'
                 f'<text class="axis" transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" '
                 f'text-anchor="middle">{e(unit)}</text>')
    legend = []
    keys = list(dict.fromkeys(key for _, key in lines))
    for (run, key), (steps, values) in lines.items():
        colour, dash = COLOURS[keys.index(key) % len(COLOURS)], DASHES[run % len(DASHES)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(steps, values))
        name = f"{run_names[run]}: {key}" if len(run_names) > 1 else key
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" stroke-dasharray="{dash}" '
                     f'points="{points}"><title>{e(name)}</title></polyline>')
        if len(steps) <= 40:
            parts.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.4" fill="{colour}">'
                         f'<title>{e(name)} at step {x}: {y:.4g}</title></circle>' for x, y in zip(steps, values))
        legend.append(f'<span class="key"><svg width="22" height="8"><line x1="0" x2="22" y1="4" y2="4" '
                      f'stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/></svg>{e(name)} '
                      f'<span class="last">(last {values[-1]:.4g})</span></span>')
    parts.append("</svg>")
    note = f'<span class="note">{e(note)}</span>' if note else ""
    return f'<figure class="panel">{"".join(parts)}<figcaption>{note}{"".join(legend)}</figcaption></figure>'


def charts(runs: list[list[dict[str, Any]]], run_names: list[str]) -> list[str]:
    """Every numeric series of every run, panel by panel; noisy training series as a trailing mean."""
    keys = list(dict.fromkeys(k for metrics in runs for k in numeric_keys(metrics)))
    windows = [max(1, max((row.get("step", 0) for row in metrics), default=0) // 50) for metrics in runs]
    out = []
    for panel, panel_keys in assign_panels(keys):
        lines: dict[tuple[int, str], Series] = {}
        smoothed = False
        for run, metrics in enumerate(runs):
            for key in panel_keys:
                xs, ys = series(metrics, key)
                if not xs:
                    continue
                if windows[run] > 1 and not key.startswith(UNSMOOTHED):
                    ys, smoothed = smooth(ys, windows[run]), True
                lines[(run, key)] = (xs, ys)
        if lines:
            note = (f"{windows[0]}-step trailing mean" if len(runs) == 1 else "trailing mean over 1/50 of each run"
                    ) if smoothed else ""
            out.append(svg_chart(panel.title, panel.unit, lines, run_names, note))
    return out
