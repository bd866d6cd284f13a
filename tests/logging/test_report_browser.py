"""`rft report` opened in headless Chromium (Debian's package, driven by Playwright; no browser download):
the page renders (a screenshot that is not blank), its console stays free of errors, markup in a completion
never runs, and the sample browser's filters work. .ci/run installs chromium when it is missing."""

import json
import os
import shutil
from pathlib import Path

import pytest

from rftkit.logging.report import build_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# the flags Chromium needs on these machines (no sandbox as root; no background connections to a closed network)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _browser_available() -> str | None:
    if not Path(CHROMIUM).exists():
        return "chromium is not installed (.ci/run installs Debian's package)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


missing = _browser_available()
if missing and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the browser test: {missing}")
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")


def _run(root: Path, name: str, seed: int, hostile: bool) -> Path:
    run = root / name
    run.mkdir(parents=True)
    rows = [{"step": 0, "val/accuracy": 0.10 + seed * 0.01, "val/accuracy_greedy": 0.3, "val/mean_reward": 0.2}]
    for s in range(1, 31):
        rows.append({"step": s, "reward/mean": 0.1 + 0.01 * s + 0.003 * seed, "reward/std": 0.2,
                     "reward/correct": 0.01 * s, "accuracy": 0.05 + 0.01 * s,
                     "frac_groups_tied": 1.0 if 10 <= s <= 16 else 0.3,
                     "len/truncated": 0.05, "len/completion": 16 + s % 5, "kl/mean": 0.001 * s, "grad_norm": 0.1,
                     "lr": 2e-4, "loss/policy": -0.01, "clip_frac": 0.0, "entropy": 0.5, "grader/errors": 0,
                     "grader/masked": 0, "grader/correct/unscored": 0.0, "reward_hack/noop": s % 3,
                     "time/generate": 0.1, "time/update": 0.15})
        if s % 10 == 0:
            rows[-1].update({"val/accuracy": 0.1 + 0.01 * s, "val/accuracy_greedy": 0.3, "val/mean_reward": 0.25})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = []
    for s in range(1, 31):
        for i in range(3):
            passed = (s + i) % 3 == 0
            samples.append({"step": s, "example_id": f"ex-{i}", "prompt": f"Using [3, 4], make {s + i}.",
                            "completion": f"<answer>{s}+{i}</answer>", "reward": 1.0 if passed else 0.1,
                            "grades": {"correct": {"score": 1.0 if passed else 0.0, "reason": "equals the target"
                                                   if passed else "off by one", "flags": ["reward_hack/noop"]
                                                   if i == 2 else []}}})
    samples.append({"step": 30, "example_id": "chat", "messages": [
        {"role": "user", "content": "Play the guessing game."}, {"role": "assistant", "content": "Is it 5?"},
        {"role": "user", "content": "Higher."}], "completion": "Is it 7?", "reward": None, "finish": "max_turns",
        "model_turns": 2, "turn_rewards": [0.0, 0.5],
        "grades": {"correct": {"score": 0.0, "reason": "judge unreachable", "masked": True}}})
    if hostile:
        samples.append({"step": 30, "prompt": "</script><script>alert(1)</script>",
                        "completion": "<img src=x onerror=\"alert('xss')\"> done", "reward": 0.0,
                        "grades": {"correct": {"score": 0.0, "reason": "<b>bold</b>"}}})
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (run / "config.yaml").write_text("accuracy_grader: correct\naccuracy_threshold: 1.0\n"
                                     f"alarms:\n  no_signal_steps: 3\ntrain:\n  seed: {seed}\n")
    (run / "summary.json").write_text(json.dumps({
        "before": {"accuracy": 0.1, "accuracy_greedy": 0.3, "mean_reward": 0.2},
        "after": {"accuracy": 0.4, "accuracy_greedy": 0.3, "mean_reward": 0.25}, "steps": 30}))
    return run


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)  # a fresh profile each launch
        yield browser
        browser.close()


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("#samples article")
    return page, problems


def _not_blank(png: Path) -> tuple[float, int]:
    from PIL import Image

    image = Image.open(png).convert("RGB")
    pixels = list(image.get_flattened_data() if hasattr(image, "get_flattened_data") else image.getdata())
    inked = sum(1 for p in pixels if sum(p) < 720) / len(pixels)  # not (nearly) white
    return inked, len(set(pixels))


def test_report_renders_in_chromium_without_console_errors(chromium, tmp_path):
    page_path = build_report(_run(tmp_path, "run", 0, hostile=True))
    page, problems = _open(chromium, page_path)
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    inked, colours = _not_blank(shot)
    assert inked > 0.03 and colours > 50, (inked, colours)
    assert page.locator("svg.chart").count() >= 12  # every logged series is drawn
    assert page.locator(".banner[data-alarm=no_signal]").is_visible()
    assert "showing 50 of 92 matching samples (92 in all)" in page.locator("#count").inner_text()
    # markup in a completion is text: it is on the page, and it did not run (a dialog would be a problem)
    assert page.get_by_text("<img src=x onerror=\"alert('xss')\"> done").count() == 1
    assert page.locator("#samples img").count() == 0
    assert problems == []


def test_sample_browser_filters_by_step_verdict_flag_and_text(chromium, tmp_path):
    page, problems = _open(chromium, build_report(_run(tmp_path, "run", 0, hostile=False)))
    page.select_option("#f-verdict", "fail")
    verdicts = page.locator("#samples article .verdict").all_inner_texts()
    assert verdicts and set(verdicts) == {"fail"}
    page.select_option("#f-verdict", "all")
    page.select_option("#f-step", "30")
    steps = set(page.locator("#samples article .step").all_inner_texts())
    assert steps == {"step 30"} and page.locator("#samples article").count() == 4
    page.select_option("#f-flag", "flagged")
    assert page.locator("#samples article").count() == 1
    assert page.locator("#samples article .flag").inner_text() == "reward_hack/noop"
    page.select_option("#f-flag", "all")
    page.select_option("#f-verdict", "no signal")  # the multi-turn episode, whole: every turn and the completion
    turns = page.locator("#samples article .turn pre").all_inner_texts()
    assert turns == ["Play the guessing game.", "Is it 5?", "Higher.", "Is it 7?"]
    assert page.locator("#samples article .episode").inner_text() == \
        "finished: max_turns; 2 model turns; turn rewards 0.00, 0.50"
    page.select_option("#f-verdict", "all")
    page.select_option("#f-step", "all")
    page.fill("#f-text", "off by one")
    assert "of 60 matching" in page.locator("#count").inner_text()
    page.fill("#f-text", "")
    page.click("#more")
    assert page.locator("#samples article").count() == 91
    assert problems == []


def test_comparison_page_renders_both_runs(chromium, tmp_path):
    a, b = _run(tmp_path / "a", "seed0", 0, False), _run(tmp_path / "b", "seed1", 1, False)
    out = build_report([a, b], tmp_path / "compare.html")
    page, problems = _open(chromium, out)
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    assert _not_blank(tmp_path / "compare.png")[0] > 0.03
    assert page.locator(".banner").count() == 2  # each run's alarm
    page.select_option("#f-run", "1")
    assert set(page.locator("#samples article .run").all_inner_texts()) == {"seed1"}
    assert "train.seed" in page.locator("table").last.inner_text()
    assert problems == []
