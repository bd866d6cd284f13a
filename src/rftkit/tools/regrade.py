"""`rft regrade RUN [--config EDITED.yaml] [--set k=v]`: re-score a run's stored completions with edited graders.

With few prompts a grader bug is expensive: the run trained on its verdicts. Regrading answers
"what would the fixed grader have said about what the model actually wrote" without sampling
again: the completions are read back from the run directory and graded with the edited config's
graders, a step at a time (batch graders see each step's batch, as in training). Printed: each
grader's score distribution before (the grades the run trained on, as stored) and after, the
combined reward, accuracy under each config's accuracy rule, the share of tied groups (no GRPO
signal), and the completions whose verdict (accurate or not) flipped.

The completions come from RUN/completions.jsonl (`store_completions: true`: every completion of
every step with its example's fields), else from samples.jsonl (`samples_per_step` per step),
whose examples are found again by id in the run's own data.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

from rftkit.config import RFTConfig, load_config
from rftkit.data import DataError, Example, example_from_row, read_jsonl_rows, write_jsonl
from rftkit.grade_command import _histogram, printable, token_context
from rftkit.graders import WeightedGrader, build_graders
from rftkit.graders.base import BatchContext, Grade
from rftkit.graders.combine import GradedCompletion, grade_all
from rftkit.logging.completions import COMPLETIONS_FILE, grade_fields


@dataclass(frozen=True)
class StoredCompletion:
    step: int
    group: int | None  # prompt group within the step (completions.jsonl); None from samples.jsonl
    example: Example
    completion: str
    before: GradedCompletion  # the grades the run trained on


def _graded(reward: float | None, grades: dict[str, Any], where: str) -> GradedCompletion:
    try:
        return GradedCompletion(reward, {name: Grade(float(g["score"]), str(g.get("reason", "")), {},
                                                     bool(g.get("error")), bool(g.get("masked")),
                                                     tuple(g.get("flags", ())))
                                         for name, g in grades.items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{where}: unreadable grades ({type(exc).__name__}: {exc})") from None


def read_stored(run_dir: Path, run_config: RFTConfig) -> tuple[list[StoredCompletion], str]:
    """The run's stored completions and the file they came from."""
    path = run_dir / COMPLETIONS_FILE
    stored = []
    if path.is_file():
        for row, where in read_jsonl_rows(path, "completions", torn_last_line_ok=True):
            if not isinstance(row, dict) or not isinstance(row.get("completion"), str) or "example" not in row:
                raise DataError(f"{where}: not a completions.jsonl record (step, example, completion, grades)")
            stored.append(StoredCompletion(int(row["step"]), row.get("group"), example_from_row(row["example"], where),
                                           row["completion"], _graded(row.get("reward"), row.get("grades", {}), where)))
        return stored, str(path)
    path = run_dir / "samples.jsonl"
    if not path.is_file():
        raise DataError(f"{run_dir}: neither {COMPLETIONS_FILE} nor samples.jsonl (is it a run directory?)")
    from rftkit.tasks import load_splits

    known = {e.id: e for split in load_splits(run_config.data) for e in split}
    for row, where in read_jsonl_rows(path, "samples", torn_last_line_ok=True):
        if not isinstance(row, dict) or row.get("example_id") not in known:
            raise DataError(f"{where}: example {row.get('example_id') if isinstance(row, dict) else row!r} is not "
                            "in the run's data any more; regrading needs store_completions: true for such runs")
        stored.append(StoredCompletion(int(row["step"]), None, known[row["example_id"]], row["completion"],
                                       _graded(row.get("reward"), row.get("grades", {}), where)))
    return stored, str(path)


def regrade(stored: Sequence[StoredCompletion], graders: list[WeightedGrader], config: RFTConfig,
            out: TextIO) -> list[GradedCompletion]:
    """The edited graders' verdicts on every stored completion, graded step by step."""
    completions = [s.completion for s in stored]
    context = token_context(config, graders, completions, out)
    by_step: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(stored):
        by_step[s.step].append(i)
    after: list[GradedCompletion | None] = [None] * len(stored)
    for step, rows in by_step.items():
        ids = None if context is None else context.rows(rows).completion_ids
        graded, _ = grade_all(graders, [stored[i].example for i in rows], [completions[i] for i in rows],
                              BatchContext(ids, step, config.train.steps))
        for i, g in zip(rows, graded):
            after[i] = g
    return after  # type: ignore[return-value]


def distribution(graded: Sequence[GradedCompletion], name: str | None) -> dict[str, Any] | None:
    """One grader's scores (name) or the combined reward (None): mean over scored completions, the
    histogram bins of `rft grade`, errors and masks. None when no completion has that grader."""
    if name is None:
        scores = [g.reward for g in graded if g.reward is not None]
        errors, masked = 0, len(graded) - len(scores)
    else:
        grades = [g.grades[name] for g in graded if name in g.grades]
        if not grades:
            return None
        scores = [g.score for g in grades if not g.masked]
        errors, masked = sum(g.error for g in grades), sum(g.masked for g in grades)
    return {"mean": sum(scores) / len(scores) if scores else None, "histogram": _histogram(scores),
            "errors": errors, "masked": masked}


def tied_groups(stored: Sequence[StoredCompletion], graded: Sequence[GradedCompletion]) -> tuple[int, int]:
    """(tied, groups): prompt groups of completions.jsonl whose rewards all tie (zero advantage)."""
    groups: dict[tuple[int, int], list[float | None]] = defaultdict(list)
    for s, g in zip(stored, graded):
        if s.group is not None:
            groups[(s.step, s.group)].append(g.reward)
    sized = [rewards for rewards in groups.values() if len(rewards) >= 2]
    return sum(len(set(r)) == 1 for r in sized), len(sized)


BLOCK = 55  # characters of one side of the table: mean, distribution, errors, masked


def _rule_text(config: RFTConfig) -> str:
    return f"{config.accuracy_grader or 'reward'} >= {config.accuracy_threshold}"


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def report(stored: Sequence[StoredCompletion], after: Sequence[GradedCompletion], run_config: RFTConfig,
           config: RFTConfig, show: int, out: TextIO) -> dict[str, Any]:
    """Print the comparison; return its numbers (flips as indices into `stored`)."""
    from rftkit.eval.validate import AccuracyRule

    before = [s.before for s in stored]
    names = list(dict.fromkeys([n for g in before[:1] for n in g.grades] + [wg.name for wg in config.graders]))
    out.write(f"\n{'':<14}{'before (as trained)':<{BLOCK}}after (edited graders)\n")
    out.write(f"{'grader':<14}" + f"{'mean':>6}  {'distribution':<34} {'err':>4} {'mask':>4}   " * 2 + "changed\n")
    table = {}
    for name in [*names, None]:
        pair = distribution(before, name), distribution(after, name)
        table[name or "reward"] = pair
        both = [(b, a) for b, a in zip(before, after) if name is None or (name in b.grades and name in a.grades)]
        changed = sum((b.grades[name].score if name else b.reward) != (a.grades[name].score if name else a.reward)
                      for b, a in both) if both else "-"
        cells = ["{:>6}  {:<34} {:>4} {:>4}   ".format(_fmt(d["mean"]), d["histogram"], d["errors"], d["masked"])
                 if d else f"{'absent':<{BLOCK}}" for d in pair]
        out.write(f"{name or 'reward':<14}" + "".join(cells) + f"{changed}\n")
    rule_before, rule_after = AccuracyRule.of(run_config), AccuracyRule.of(config)
    verdicts = [(rule_before.accurate(b), rule_after.accurate(a)) for b, a in zip(before, after)]
    n = max(len(stored), 1)
    out.write(f"accuracy      {sum(v[0] for v in verdicts) / n:.3f} ({_rule_text(run_config)}) -> "
              f"{sum(v[1] for v in verdicts) / n:.3f} ({_rule_text(config)})\n")
    tied_before, groups = tied_groups(stored, before)
    tied_after, _ = tied_groups(stored, after)
    if groups:
        out.write(f"tied groups   {tied_before}/{groups} ({tied_before / groups:.0%}) -> {tied_after}/{groups} "
                  f"({tied_after / groups:.0%}): prompt groups with no GRPO signal\n")
    flips = [i for i, (b, a) in enumerate(verdicts) if b != a]
    kinds = Counter("pass -> fail" if verdicts[i][0] else "fail -> pass" for i in flips)
    out.write(f"\nverdicts flipped: {len(flips)} of {len(stored)} completions"
              + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))})" if flips else "") + "\n")
    for i in flips[:show]:
        _print_flip(stored[i], after[i], verdicts[i], config.accuracy_grader, out)
    if len(flips) > show:
        out.write(f"  ... {len(flips) - show} more (--show N, or --output FILE.jsonl for all)\n")
    return {"table": table, "flips": flips, "verdicts": verdicts, "tied": (tied_before, tied_after, groups)}


def _print_flip(s: StoredCompletion, after: GradedCompletion, verdict: tuple[bool, bool], accuracy_grader: str | None,
                out: TextIO) -> None:
    """One flipped completion: its graders whose score changed, and the accuracy grader in any case."""
    word = {True: "pass", False: "fail"}
    text = " ".join(s.completion.split())
    out.write(f"  step {s.step}  id={printable(s.example.id)}  {word[verdict[0]]} -> {word[verdict[1]]}  reward "
              f"{_fmt(s.before.reward)} -> {_fmt(after.reward)}\n    completion: {printable(text[:110])}\n")
    for name in dict.fromkeys([*s.before.grades, *after.grades]):
        b, a = s.before.grades.get(name), after.grades.get(name)
        if b is None or a is None or b.score != a.score or name == accuracy_grader:
            out.write(f"    {name:<12} {_fmt(b and b.score)} -> {_fmt(a and a.score)}  "
                      f"{printable(' '.join((a or b).reason.split())[:90])}\n")


def output_rows(stored: Sequence[StoredCompletion], after: Sequence[GradedCompletion],
                verdicts: Sequence[tuple[bool, bool]]) -> list[dict[str, Any]]:
    return [{"step": s.step, "group": s.group, "example_id": s.example.id, "completion": s.completion,
             "before": {"reward": s.before.reward, "accurate": v[0], "grades": grade_fields(s.before)},
             "after": {"reward": a.reward, "accurate": v[1], "grades": grade_fields(a)}}
            for s, a, v in zip(stored, after, verdicts)]


def run_regrade(run_dir: str | Path, config_path: str | None, overrides: list[str], show: int,
                output: str | None, out: TextIO | None = None) -> dict[str, Any]:
    """The `rft regrade` verb."""
    out = out or sys.stdout
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(f"{run_dir}: no config.yaml (expected a run directory of `rft train`)")
    run_config = load_config(run_dir / "config.yaml")
    config = load_config(config_path or run_dir / "config.yaml", overrides)
    stored, source = read_stored(run_dir, run_config)
    if not stored:
        raise DataError(f"{source}: no completions stored yet")
    steps = sorted({s.step for s in stored})
    out.write(f"regrade {run_dir}: {len(stored)} completions of steps {steps[0]}-{steps[-1]} from {source}\n"
              f"  before: the grades stored at training time; after: the graders of "
              f"{config_path or run_dir / 'config.yaml'}{' with ' + ' '.join(overrides) if overrides else ''}\n")
    if source.endswith("samples.jsonl"):
        out.write(f"  note: samples.jsonl keeps {run_config.samples_per_step} completion(s) per step; "
                  "`store_completions: true` keeps every one\n")
    after = regrade(stored, build_graders(config.graders), config, out)
    result = report(stored, after, run_config, config, show, out)
    if output:
        write_jsonl(output, output_rows(stored, after, result["verdicts"]))
        out.write(f"wrote {len(stored)} lines to {output}\n")
    return result
