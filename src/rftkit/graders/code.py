"""`python_tests`: run the model's function against test cases in the sandbox, with anti-reward-hacking.

score = compile_credit * compiles + (1 - compile_credit) * passed / total (the seed's partial credit),
unless a hack is detected, which scores 0 and sets a flag (`reward_hack/<kind>` in metrics):
  exit       sys.exit / os._exit / SystemExit / SkipTest, or the process ended before the harness did;
  tamper     builtins were monkey-patched by the completion;
  noop       the tests still pass with the function replaced by a no-op (the seed's monkey-patching);
  forbidden  a forbidden import, call or attribute found in the AST (configurable).
Call and `assert f(x) == <literal>` tests are compared outside the sandbox with a type-checked
equality, so a rigged `__eq__` cannot pass; hidden tests can be drawn at random per grading call from
the example's reference solution, so hard-coding the visible outputs earns only their share.

Example fields: entry_point, tests (visible assert lines), hidden_tests, cases / hidden_cases
({"input": [args], "output": value}), and optionally reference + random_inputs (source defining
`generate(rng) -> list of args`) + num_random. HumanEval rows (prompt, test with `check(candidate)`,
entry_point) and MBPP rows (test_list, test_setup_code, challenge_test_list) are read as they ship,
with either completion style (see `code_benchmarks`).

The AST checks are a cheap early reason and a flag for attempts on the grading, not a defence: the
sandbox is what makes code harmless, so the defaults name only constructs that have no place in a
solution (ending the process, skipping tests, walking frames, patching builtins, spawning commands),
and not general tools a solution may use (`eval`, `exec`, threads).
"""

from __future__ import annotations

import ast
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pydantic import Field

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, register
from rftkit.graders.bounded import tag_contents
from rftkit.graders.code_benchmarks import assemble, benchmark_cases, entry_point_of
from rftkit.sandbox.config import SandboxConfig

_BLOCK_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
_SKIP_ERRORS = ("SkipTest", "Skipped", "SystemExit", "KeyboardInterrupt", "GeneratorExit")

# What a function-writing task has no use for and grading hacks do (see the module docstring):
# eval, exec, compile, globals, threads and process pools are left to the sandbox.
DEFAULT_FORBIDDEN_IMPORTS = ["ctypes", "subprocess", "signal", "socket", "atexit", "builtins", "unittest", "pytest",
                             "os.kill", "os.fork", "os._exit", "sys.exit", "sys._getframe"]
DEFAULT_FORBIDDEN_CALLS = ["exit", "quit", "sys.exit", "os._exit", "os.kill", "os.killpg", "os.fork", "os.system",
                           "os.popen", "os.execv", "os.execl", "os.execvp", "__import__", "sys._getframe",
                           "sys.settrace", "sys.setprofile", "inspect.currentframe", "inspect.stack",
                           "gc.get_objects", "gc.get_referrers", "breakpoint"]
DEFAULT_FORBIDDEN_ATTRIBUTES = ["__builtins__", "__globals__", "__code__", "__subclasses__", "f_back", "f_locals",
                                "f_globals", "modules"]


def extract_code(completion: str) -> str:
    """<code>...</code> if present, else the last ```python block, else the whole completion."""
    tagged = tag_contents(completion, "code")  # re.findall(r"<code>(.*?)</code>", DOTALL), in linear time
    if tagged:
        return tagged[-1]
    blocks = _BLOCK_RE.findall(completion)
    return blocks[-1] if blocks else completion


# ---------------------------------------------------------------- AST checks (run on the host: parse only)


def dotted_name(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """`o._exit` -> "os._exit" after `import os as o`; None for anything but a name or attribute chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def import_aliases(tree: ast.AST) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def forbidden_constructs(tree: ast.AST, imports: Sequence[str], calls: Sequence[str],
                         attributes: Sequence[str], first_line: int = 1) -> list[str]:
    """Every forbidden import, call or attribute in the tree from `first_line` on (the lines before
    are the task's prompt), described for the grade's reason."""
    aliases = import_aliases(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", first_line) < first_line:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
            for name in names:
                if any(name == f or name.startswith(f + ".") for f in imports):
                    found.append(f"import {name}")
        elif isinstance(node, ast.Call):
            name = dotted_name(node.func, aliases)
            if name in calls:
                found.append(f"call {name}()")
        elif isinstance(node, ast.Attribute) and node.attr in attributes:
            found.append(f"attribute .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in attributes:
            found.append(f"name {node.id}")
    return sorted(set(found))


def parse_or_none(code: str) -> ast.AST | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # the sandboxed compile reports it; the host only needs the tree for checks


# ---------------------------------------------------------------- tests


@dataclass(frozen=True)
class TestCase:
    name: str  # "visible[0]", "hidden[2]", "random[1]"
    spec: dict[str, Any]  # sent into the sandbox: kind call|expr|assert, never the expected value
    expected: Any = None  # compared on the host; unused for kind "assert"
    has_expected: bool = False


def split_assert(source: str) -> tuple[dict[str, Any], Any, bool]:
    """`assert f(x) == <literal>` becomes an expression evaluated inside and a literal kept outside."""
    try:
        tree = ast.parse(source.strip())
    except SyntaxError as exc:
        raise ValueError(f"test {source!r} is not valid Python: {exc}") from None
    node = tree.body[0] if len(tree.body) == 1 else None
    if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1 \
            and isinstance(node.test.ops[0], ast.Eq):
        for expr, literal in ((node.test.left, node.test.comparators[0]), (node.test.comparators[0], node.test.left)):
            try:
                expected = ast.literal_eval(literal)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            return {"kind": "expr", "expr": ast.unparse(expr)}, expected, True
    return {"kind": "assert", "source": source}, None, False


def static_tests(example: Example, hidden: bool, entry_point: str) -> list[TestCase]:
    from rftkit.sandbox.values import encode

    fields = example.fields
    tests = [TestCase(name, {"kind": "assert", "source": source})
             for name, source in benchmark_cases(fields, example.prompt, entry_point, hidden)]
    groups = [("visible", fields.get("tests") or [], fields.get("cases") or [])]
    if hidden:
        groups.append(("hidden", fields.get("hidden_tests") or [], fields.get("hidden_cases") or []))
    for label, asserts, cases in groups:
        for i, source in enumerate(asserts):
            spec, expected, has = split_assert(source)
            tests.append(TestCase(f"{label}[{i}]", spec, expected, has))
        for i, case in enumerate(cases):
            if not isinstance(case, dict) or "input" not in case or "output" not in case:
                raise ValueError(f"example {example.id}: each case needs 'input' (list of args) and 'output'")
            spec = {"kind": "call", "args": encode(list(case["input"]))}
            tests.append(TestCase(f"{label}_case[{i}]", spec, case["output"], True))
    return tests


def build_test_job(code: str, entry_point: str, tests: Sequence[TestCase], noop: bool, timeout_s: float):
    """The candidate's process gets only the code; the tests go to the driver process that judges it
    (`rftkit.sandbox.proxy`), so no code can read, patch or forge its way past them."""
    from rftkit.sandbox import Job

    return Job("rftkit.sandbox.proxy:run_tests", {"code": code, "entry_point": entry_point}, timeout_s,
               secret={"noop": noop, "tests": [{"id": i, **t.spec} for i, t in enumerate(tests)]})


@dataclass(frozen=True)
class RunOutcome:
    compiles: bool
    passed: list[bool]  # per test, in order
    results: list[dict[str, Any]]  # per test: name, passed, error, got, expected
    flags: tuple[str, ...]
    problem: str | None  # why the run could not complete (shown in the reason)


def judge_run(result, tests: Sequence[TestCase], rel_tol: float) -> RunOutcome:
    """Turn one sandbox result into per-test verdicts; expected values are only ever compared here."""
    from rftkit.sandbox.values import decode, short_repr, typed_equal

    compiled = result.first("compiled")
    compiles = bool(compiled and compiled["compiled"] and (result.first("defined") or {}).get("defined"))
    flags: set[str] = set()
    defined = result.first("defined") or {}
    if defined.get("exit"):
        flags.add("exit")
    if defined.get("tampered"):
        flags.add("tamper")
    by_id = {r["test"]: r for r in result.records if "test" in r}
    passed, results = [], []
    for i, test in enumerate(tests):
        record = by_id.get(i)
        ok, error, got = False, None, None
        if record is None:
            error = "not run"
        elif "value" in record:
            try:
                got = decode(record["value"])
                ok = test.has_expected and typed_equal(got, test.expected, rel_tol=rel_tol)
            except (ValueError, TypeError, OverflowError) as exc:
                error = f"unreadable result: {exc}"
        elif test.has_expected:  # a bare "passed" for a compared test can only be a forgery
            error = record.get("error") or "no value reported"
        else:
            ok, error = record.get("passed") is True, record.get("error")
        if record is not None and (record.get("exit") or str(error or "").startswith(_SKIP_ERRORS)):
            flags.add("exit")
        passed.append(ok)
        results.append({"name": test.name, "passed": ok, "error": error,
                        "got": None if got is None else short_repr(got),
                        "expected": short_repr(test.expected) if test.has_expected else None})
    ended_early = compiles and not result.done and not result.timed_out and result.signal is None and not result.error
    if ended_early and not result.first("missing"):
        flags.add("exit")  # os._exit or a clean exit in the middle of the tests
    problem = result.error or (None if result.done else (result.first("missing") or {}).get("missing")
                               or (compiled or {}).get("error") or defined.get("error") or result.status_text())
    return RunOutcome(compiles, passed, results, tuple(sorted(flags)), problem)


class PythonTestsParams(GraderParams):
    timeout_s: float = Field(5.0, gt=0, le=600, description="Wall-clock limit of one sandboxed execution.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="Limits and isolation.")
    compile_credit: float = Field(0.0, ge=0, le=1, description="Share of the score given for code that "
                                  "compiles and defines the function; the rest is passed / total.")
    hidden_tests: bool = Field(True, description="Also run the example's hidden_tests / hidden_cases.")
    random_tests: bool = Field(True, description="Draw num_random hidden inputs per grading call from the "
                               "example's random_inputs and reference (catches hard-coded outputs).")
    noop_check: bool = Field(True, description="Re-run with the function replaced by a no-op returning None; "
                             "if that passes as many tests, score 0 and flag reward_hack/noop.")
    ast_check: bool = Field(True, description="Score 0 and flag reward_hack/forbidden when the code uses a "
                            "forbidden import, call or attribute.")
    forbidden_imports: list[str] = Field(default_factory=lambda: list(DEFAULT_FORBIDDEN_IMPORTS))
    forbidden_calls: list[str] = Field(default_factory=lambda: list(DEFAULT_FORBIDDEN_CALLS))
    forbidden_attributes: list[str] = Field(default_factory=lambda: list(DEFAULT_FORBIDDEN_ATTRIBUTES))
    float_tolerance: float = Field(1e-6, ge=0, description="Relative tolerance for float outputs.")
    max_code_chars: int = Field(100_000, ge=1, description="Longer extracted code scores 0 without running.")


class PythonTestsGrader:
    def __init__(self, name: str, params: PythonTestsParams, runner: Callable | None = None):
        self.name, self.params = name, params
        self._runner = runner  # a fake for unit tests; default: the shared pool for params.sandbox

    def run(self, jobs: list) -> list:
        if self._runner is not None:
            return self._runner(jobs)
        from rftkit.sandbox import get_pool

        return get_pool(self.params.sandbox).run_many(jobs)

    def grade(self, example: Example, completion: str) -> Grade:
        return self.grade_batch([example], [completion])[0]

    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
        entries = {e.id: self._entry_point(e) for e in examples}
        suites = self._test_suites(examples, entries)
        codes = [extract_code(c) for c in completions]
        # a body that continues a HumanEval prompt becomes the whole program here (code_benchmarks)
        programs = [assemble(code, e.prompt, entries[e.id]) if len(code) <= self.params.max_code_chars
                    else (code, 1) for code, e in zip(codes, examples)]
        grades: list[Grade | None] = [self._precheck(code, *program) for code, program in zip(codes, programs)]
        todo = [i for i, g in enumerate(grades) if g is None]
        jobs = [build_test_job(programs[i][0], entries[examples[i].id], suites[examples[i].id], False,
                               self.params.timeout_s) for i in todo]
        outcomes = {i: judge_run(r, suites[examples[i].id], self.params.float_tolerance)
                    for i, r in zip(todo, self.run(jobs))}
        noop_flags = self._noop_check(examples, [p for p, _ in programs], entries, suites, outcomes)
        for i, outcome in outcomes.items():
            grades[i] = self._score(outcome, noop_flags.get(i))
        return grades  # type: ignore[return-value]

    def _precheck(self, code: str, program: str, first_line: int) -> Grade | None:
        """The size limit on the model's code; the AST checks on its lines of the program."""
        if len(code) > self.params.max_code_chars:
            return Grade(0.0, f"code is {len(code)} characters; the limit is {self.params.max_code_chars}")
        tree = parse_or_none(program) if self.params.ast_check else None
        if tree is not None:
            found = forbidden_constructs(tree, self.params.forbidden_imports, self.params.forbidden_calls,
                                         self.params.forbidden_attributes, first_line)
            if found:
                return Grade(0.0, f"forbidden construct: {', '.join(found[:3])}", {"forbidden": found},
                             flags=("forbidden",))
        return None

    @staticmethod
    def _entry_point(example: Example) -> str:
        entry = entry_point_of(example.fields)
        if entry is None:
            raise ValueError(f"example {example.id}: python_tests needs a string field 'entry_point' (MBPP rows: "
                             "a 'test_list' calling the function)")
        return entry

    def _test_suites(self, examples: Sequence[Example], entries: dict[str, str]) -> dict[str, list[TestCase]]:
        """Static tests per example, plus random hidden ones drawn by the reference in a separate run."""
        from rftkit.sandbox import Job
        from rftkit.sandbox.values import decode

        suites: dict[str, list[TestCase]] = {}
        randomised: list[Example] = []
        for example in examples:
            if example.id in suites:
                continue
            suites[example.id] = static_tests(example, self.params.hidden_tests, entries[example.id])
            if self.params.random_tests and example.fields.get("reference") and example.fields.get("random_inputs"):
                randomised.append(example)
        seed = secrets.randbelow(2**31)  # new inputs every grading call: memorising outputs does not pay
        jobs = [Job("rftkit.sandbox.harness:run_reference", {
            "reference": e.fields["reference"], "generator": e.fields["random_inputs"], "seed": seed,
            "entry_point": entries[e.id], "count": int(e.fields.get("num_random", 5))}, self.params.timeout_s)
            for e in randomised]
        for example, result in zip(randomised, self.run(jobs)):
            if not result.done:
                raise ValueError(f"example {example.id}: the reference solution failed: "
                                 f"{result.status_text()} {result.stderr[-300:]}")
            suites[example.id] += [TestCase(f"random[{r['case']}]", {"kind": "call", "args": r["args"]},
                                            decode(r["value"]), True) for r in result.records if "case" in r]
        for example_id, tests in suites.items():
            if not tests:
                raise ValueError(f"example {example_id}: no tests (give tests, cases, a reference, HumanEval's "
                                 "test or MBPP's test_list)")
        return suites

    def _noop_check(self, examples, codes, entries, suites, outcomes: dict[int, RunOutcome]) -> dict[int, str]:
        """The seed's monkey-patching: does the suite still pass with the function replaced by a no-op?"""
        if not self.params.noop_check:
            return {}
        suspects = [i for i, o in outcomes.items() if any(o.passed) and not o.flags]
        jobs = [build_test_job(codes[i], entries[examples[i].id], suites[examples[i].id], True,
                               self.params.timeout_s) for i in suspects]
        flags = {}
        for i, result in zip(suspects, self.run(jobs)):
            noop = judge_run(result, suites[examples[i].id], self.params.float_tolerance)
            if sum(noop.passed) >= sum(outcomes[i].passed):
                flags[i] = "noop"
        return flags

    def _score(self, outcome: RunOutcome, noop_flag: str | None) -> Grade:
        flags = tuple(sorted({*outcome.flags, *([noop_flag] if noop_flag else [])}))
        passed, total = sum(outcome.passed), len(outcome.passed)
        details = {"compiles": outcome.compiles, "passed": passed, "total": total, "tests": outcome.results}
        if flags:
            why = {"exit": "exited or skipped instead of finishing the tests",
                   "tamper": "monkey-patched builtins", "noop": "the tests also pass with the function "
                   "replaced by a no-op"}
            return Grade(0.0, "reward hack: " + "; ".join(why.get(f, f) for f in flags), details, flags=flags)
        credit = self.params.compile_credit
        # exact 1.0 for a full pass: 0.1 + 0.9 * 9 / 9 would be 0.9999999999999999, not a correct answer
        score = 1.0 if outcome.compiles and passed == total else \
            credit * outcome.compiles + (1 - credit) * (passed / total)
        if not outcome.compiles:
            return Grade(score, f"does not run: {outcome.problem}", details)
        failure = next((r for r in outcome.results if not r["passed"]), None)
        reason = f"passed {passed}/{total} tests"
        if failure:
            shown = failure["error"] or f"got {failure['got']}, expected {failure['expected']}"
            if failure["error"] == "not run" and outcome.problem:
                shown = f"not run: {outcome.problem}"
            reason += f"; {failure['name']}: {shown}"
        if outcome.problem and not failure:
            reason += f" ({outcome.problem})"
        return Grade(score, reason[:500], details)


@register("python_tests", PythonTestsParams, "Runs the model's function (code block or <code> tags) against "
          "the example's tests in the sandbox: passed / total, with exit, tamper, no-op and AST hack checks")
def _build(name: str, params: PythonTestsParams) -> PythonTestsGrader:
    return PythonTestsGrader(name, params)
