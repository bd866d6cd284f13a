"""Python-to-Triton transpilation (the seed's case study), runnable on a CPU with TRITON_INTERPRET=1.

16 PyTorch functions (tasks/data/triton_functions.jsonl: elementwise, activations, reductions,
softmax, RMS norm, a matmul tile), each with 4 input shapes. Rewards, one grader type each:
  triton_format    fractional: <triton_code> tags, triton imports, @triton.jit, masks on every
                   tl.load/tl.store, an initialised output buffer, no non-Triton compute (normalised).
  triton_compiles  1 if the code parses, defines the function and runs the first input; 0.5 if it
                   only parses; 0 otherwise.
  triton_correct   passed / total against the PyTorch reference, 0 with a flag when the AST shows
                   torch compute, a fallback or threads in the wrapper (`forbidden`), or when the outputs
                   still match with every kernel replaced by a no-op (`noop`, the seed's monkey-patching).
  triton_runtime   speed-up over the reference; meaningful only on a GPU (the interpreter is slow).
Kernels run in the sandbox, in workers that imported torch and triton once; the expected outputs
come from a separate run of the reference, so the candidate's process never holds them.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from pydantic import Field

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, register
from rftkit.graders.bounded import tag_contents
from rftkit.graders.code import dotted_name, forbidden_constructs, import_aliases
from rftkit.sandbox.config import SandboxConfig

DATA_FILE = Path(__file__).parent / "data" / "triton_functions.jsonl"
PRELOAD = ("numpy", "torch", "triton", "triton.language", "rftkit.tasks.triton_harness")
SYSTEM_PROMPT = (
    "You are an expert in writing Triton kernels. Convert the given PyTorch function into Triton: one or more "
    "@triton.jit kernels and a Python wrapper with the same name and signature that allocates the output "
    "(torch.empty, torch.zeros, ...), launches the kernel and returns the result. Put all of the code inside "
    "<triton_code> ... </triton_code> tags. Import triton and triton.language as tl. Use masks on every tl.load "
    "and tl.store. Do the computation inside the Triton kernel: do not call PyTorch operations or the original "
    "function to compute the result, and do not fall back to them.")
USER_TEMPLATE = ("Convert this PyTorch function to a Triton kernel with a wrapper of the same signature:\n\n"
                 "```python\nimport torch\n\n{reference}```\n\nIt is tested on float32 tensors of shapes {shapes}.")
ALLOWED_TORCH = {"torch.empty", "torch.empty_like", "torch.zeros", "torch.zeros_like", "torch.full",
                 "torch.full_like", "torch.ones", "torch.ones_like", "torch.float32", "torch.float16",
                 "torch.bfloat16", "torch.int32", "torch.int64", "torch.Tensor", "torch.Size", "torch.device",
                 "torch.is_tensor"}
TENSOR_METHODS = {"sum", "mean", "max", "min", "softmax", "exp", "sigmoid", "relu", "matmul", "mm", "bmm", "clamp",
                  "clip", "tanh", "log", "sqrt", "rsqrt", "pow", "abs", "cumsum", "prod", "norm", "amax", "amin",
                  "add", "sub", "mul", "div", "where", "maximum", "minimum", "square", "neg", "gelu", "silu",
                  "add_", "mul_", "sub_", "div_", "clamp_", "relu_", "copy_", "fill_", "lerp", "dot"}
FORBIDDEN_IMPORTS = ["threading", "multiprocessing", "subprocess", "ctypes", "concurrent", "_thread", "signal",
                     "inspect", "gc", "builtins", "numpy"]


@lru_cache(maxsize=1)
def load_functions() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(line) for line in DATA_FILE.read_text(encoding="utf-8").splitlines() if line.strip())


def make_example(spec: dict[str, Any], example_id: str) -> Example:
    shapes = ", ".join(" and ".join(str(tuple(s)) for s in case) for case in spec["cases"][:2]) + ", ..."
    messages = ({"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": USER_TEMPLATE.format(reference=spec["reference"], shapes=shapes)})
    return Example(id=example_id, messages=messages,
                   fields={"function": spec["name"], "entry_point": spec["name"], "reference": spec["reference"],
                           "cases": spec["cases"],
                           "seed": int(hashlib.sha1(spec["name"].encode()).hexdigest()[:6], 16)})


def generate(n: int, seed: int, options: dict[str, Any] | None = None) -> list[Example]:
    """The functions in order (options.functions: a subset by name), repeated to make n examples."""
    options = dict(options or {})
    wanted = options.pop("functions", None)
    if options:
        raise ValueError(f"data.options: unknown key(s) {sorted(options)} for triton; allowed: ['functions']")
    specs = [s for s in load_functions() if wanted is None or s["name"] in wanted]
    if wanted is not None and len(specs) != len(set(wanted)):
        known = [s["name"] for s in load_functions()]
        raise ValueError(f"data.options.functions: unknown function(s) {sorted(set(wanted) - set(known))}; "
                         f"known: {known}")
    return [make_example(specs[i % len(specs)], f"triton-{specs[i % len(specs)]['name']}-{i}") for i in range(n)]


# ---------------------------------------------------------------- static checks (host side: parse only)


def extract_triton_code(completion: str) -> str | None:
    blocks = tag_contents(completion, "triton_code")  # the non-greedy tag regex's matches, in linear time
    return blocks[-1] if len(blocks) == 1 else None


def is_jit(node: ast.AST, aliases: dict[str, str]) -> bool:
    if not isinstance(node, ast.FunctionDef):
        return False
    names = [dotted_name(d.func if isinstance(d, ast.Call) else d, aliases) for d in node.decorator_list]
    return any(n in ("triton.jit", "triton.autotune", "triton.heuristics") for n in names)


def split_functions(tree: ast.AST) -> tuple[list[ast.FunctionDef], list[ast.AST]]:
    """(jit kernels, everything else at module level): host code is where torch fallbacks hide."""
    aliases = import_aliases(tree)
    kernels = [n for n in tree.body if is_jit(n, aliases)]
    return kernels, [n for n in tree.body if n not in kernels]


def wrapper_violations(tree: ast.AST, forbidden_imports: Sequence[str] = FORBIDDEN_IMPORTS) -> list[str]:
    """torch compute, tensor-method compute, `@`, or try/except outside the kernels; forbidden imports."""
    aliases = import_aliases(tree)
    _, host = split_functions(tree)
    found = set(forbidden_constructs(tree, forbidden_imports, [], []))
    for top in host:
        for node in ast.walk(top):
            if isinstance(node, ast.Call):
                name = dotted_name(node.func, aliases) or ""
                if name.startswith("torch.") and name not in ALLOWED_TORCH:
                    found.add(f"torch compute {name}()")
                elif isinstance(node.func, ast.Attribute) and node.func.attr in TENSOR_METHODS \
                        and not name.startswith(("tl.", "triton.", "math.")):
                    found.add(f"tensor compute .{node.func.attr}()")
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                found.add("matmul operator @")
            elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                found.add("try/except (a fallback path)")
    return sorted(found)


def noop_kernels(code: str) -> str | None:
    """The code with every kernel's body replaced by `pass`: launches then leave the output untouched."""
    tree = ast.parse(code)
    kernels, _ = split_functions(tree)
    if not kernels:
        return None
    for kernel in kernels:
        kernel.body = [ast.Pass()]
    return ast.unparse(tree)


def format_checks(completion: str) -> dict[str, bool]:
    """The seed's formatting reward criteria, each worth an equal share."""
    code = extract_triton_code(completion)
    tree = None
    if code is not None:
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            tree = None
    checks = {"tags": code is not None, "imports": False, "jit": False, "masks": False, "output_buffer": False,
              "triton_only": False}
    if tree is None:
        return checks
    aliases = import_aliases(tree)
    imported = set(aliases.values())
    checks["imports"] = "triton" in imported and aliases.get("tl") == "triton.language"
    kernels, host = split_functions(tree)
    checks["jit"] = bool(kernels)
    memory_ops = [n for k in kernels for n in ast.walk(k) if isinstance(n, ast.Call)
                  and dotted_name(n.func, aliases) in ("triton.language.load", "triton.language.store")]
    checks["masks"] = bool(memory_ops) and all(any(kw.arg == "mask" for kw in n.keywords) for n in memory_ops)
    calls = {dotted_name(n.func, aliases) for top in host for n in ast.walk(top) if isinstance(n, ast.Call)}
    checks["output_buffer"] = bool(calls & {"torch.empty", "torch.empty_like", "torch.zeros", "torch.zeros_like",
                                            "torch.full", "torch.full_like"})
    checks["triton_only"] = bool(kernels) and not wrapper_violations(tree)
    return checks


def _decode_tensor(record: dict[str, Any]):
    import numpy as np

    encoded = record.get("tensor") or {}
    if "data" not in encoded:
        return None
    array = np.frombuffer(base64.b64decode(encoded["data"]), dtype=np.float32)
    return array.reshape(encoded["shape"]) if array.size == int(np.prod(encoded["shape"])) else None


def compare_outputs(candidate, reference, rtol: float, atol: float) -> list[tuple[bool, str]]:
    """Per case: (passed, why), comparing the decoded float32 outputs on the host."""
    import numpy as np

    verdicts = []
    expected = {r["test"]: r for r in reference.records if "test" in r}
    got = {r["test"]: r for r in candidate.records if "test" in r}
    for i in sorted(expected):
        want, have = _decode_tensor(expected[i]), got.get(i)
        if have is None:
            verdicts.append((False, f"case {i}: not run ({candidate.status_text()})"))
            continue
        if "error" in have or have.get("passed") is False:
            verdicts.append((False, f"case {i}: {have.get('error', 'failed')}"))
            continue
        out = _decode_tensor(have)
        if out is None:
            verdicts.append((False, f"case {i}: returned {have.get('tensor', {}).get('unsupported', 'no tensor')}"))
        elif out.shape != want.shape:
            verdicts.append((False, f"case {i}: shape {list(out.shape)}, expected {list(want.shape)}"))
        elif not np.allclose(out, want, rtol=rtol, atol=atol, equal_nan=False):
            with np.errstate(invalid="ignore", over="ignore"):  # a no-op's buffer holds garbage
                worst = float(np.nanmax(np.abs(out.astype(np.float64) - want), initial=0.0))
            verdicts.append((False, f"case {i}: max abs error {worst:.3g}"))
        else:
            verdicts.append((True, f"case {i}: ok"))
    return verdicts


class TritonRunner:
    """Runs candidates, no-op variants and references in the Triton pool, caching by code and example:
    the format, compile, correctness and runtime graders of one completion share one execution."""

    def __init__(self, sandbox: SandboxConfig, timeout_s: float):
        self.sandbox, self.timeout_s = sandbox, timeout_s
        self._cache: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def run(self, items: Sequence[tuple[str, Example, str]]) -> list[Any]:
        """items: (harness function, example, code); returns ExecResults in order."""
        from rftkit.sandbox import Job, get_pool

        keys = [(fn, ex.id, hashlib.sha1(code.encode(errors="surrogatepass")).hexdigest()) for fn, ex, code in items]
        with self._lock:
            missing = {k: item for k, item in zip(keys, items) if k not in self._cache}
        jobs = [Job(f"rftkit.tasks.triton_harness:{fn}", {
            "code": code, "reference": ex.fields["reference"], "entry_point": ex.fields["entry_point"],
            "cases": ex.fields["cases"], "seed": int(ex.fields.get("seed", 0))}, self.timeout_s)
            for fn, ex, code in missing.values()]
        results = get_pool(self.sandbox, PRELOAD).run_many(jobs) if jobs else []
        with self._lock:
            if len(self._cache) > 2048:
                self._cache.clear()
            self._cache.update(zip(missing, results))
            return [self._cache[k] for k in keys]


_RUNNERS: dict[tuple, TritonRunner] = {}


def runner_for(sandbox: SandboxConfig, timeout_s: float) -> TritonRunner:
    return _RUNNERS.setdefault((sandbox, timeout_s), TritonRunner(sandbox, timeout_s))


# ---------------------------------------------------------------- graders


class TritonParams(GraderParams):
    timeout_s: float = Field(60.0, gt=0, le=600, description="Wall-clock limit of one execution (the "
                             "interpreter runs every kernel instance in Python: allow seconds, not milliseconds).")
    sandbox: SandboxConfig = Field(default_factory=lambda: SandboxConfig(address_space_mb=2048),
                                   description="Limits and isolation (torch needs more address space).")
    rtol: float = Field(1e-3, ge=0, description="Relative tolerance against the PyTorch reference.")
    atol: float = Field(1e-4, ge=0, description="Absolute tolerance against the PyTorch reference.")


class TritonRuntimeParams(TritonParams):
    target_speedup: float = Field(1.0, gt=0, description="Speed-up over the reference that earns the full "
                                  "score (score = min(1, speed-up / target)); meaningful only on a GPU.")


def _precheck(completion: str) -> tuple[str | None, str | None, Grade | None]:
    """(code, no-op variant, or an early verdict): no tags, syntax error, forbidden host code, no kernel."""
    code = extract_triton_code(completion)
    if code is None:
        return None, None, Grade(0.0, "no single <triton_code> ... </triton_code> block")
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return None, None, Grade(0.0, f"does not parse: {type(exc).__name__}: {exc}"[:300])
    violations = wrapper_violations(tree)
    if violations:
        return None, None, Grade(0.0, f"non-Triton compute outside the kernel: {', '.join(violations[:3])}",
                                 {"forbidden": violations}, flags=("forbidden",))
    noop = noop_kernels(code)
    if noop is None:
        return None, None, Grade(0.0, "no @triton.jit kernel: the computation is not in Triton")
    return code, noop, None


def _hack_flags(result) -> tuple[str, ...]:
    defined = result.first("defined") or {}
    flags = {"tamper"} if defined.get("tampered") else set()
    exited = defined.get("exit") or any(r.get("exit") for r in result.records)
    ended_early = defined.get("defined") and not result.done and not result.timed_out and result.signal is None
    if exited or (ended_early and not result.error and not result.first("missing")):
        flags.add("exit")
    return tuple(sorted(flags))


def grade_correctness(examples: Sequence[Example], completions: Sequence[str], params: TritonParams) -> list[Grade]:
    runner = runner_for(params.sandbox, params.timeout_s)
    prechecked = [_precheck(c) for c in completions]
    todo = [i for i, p in enumerate(prechecked) if p[2] is None]
    candidates = runner.run([("run_candidate", examples[i], prechecked[i][0]) for i in todo])
    references = runner.run([("run_reference", examples[i], "") for i in todo])
    grades: list[Grade | None] = [p[2] for p in prechecked]
    passing = {}
    for i, cand, ref in zip(todo, candidates, references):
        if not ref.done:
            raise RuntimeError(f"example {examples[i].id}: the reference failed: {ref.status_text()} "
                               f"{ref.stderr[-300:]}")
        verdicts = compare_outputs(cand, ref, params.rtol, params.atol)
        passed = sum(ok for ok, _ in verdicts)
        details = {"passed": passed, "total": len(verdicts), "cases": [why for _, why in verdicts],
                   "isolation": cand.isolation.summary()}
        flags = _hack_flags(cand)
        if flags:
            grades[i] = Grade(0.0, f"reward hack: {', '.join(flags)}", details, flags=flags)
            continue
        failure = next((why for ok, why in verdicts if not ok), "")
        reason = f"passed {passed}/{len(verdicts)}" + (f"; {failure}" if failure else "")
        grades[i] = Grade(passed / len(verdicts), reason,
                          details)
        if passed:
            passing[i] = (ref, passed)
    noops = runner.run([("run_candidate", examples[i], prechecked[i][1]) for i in passing])
    for (i, (ref, passed)), noop in zip(passing.items(), noops):
        if sum(ok for ok, _ in compare_outputs(noop, ref, params.rtol, params.atol)) >= passed:
            grades[i] = Grade(0.0, "reward hack: the outputs still match with every kernel replaced by a no-op, "
                              "so they are not computed by the kernel", grades[i].details, flags=("noop",))
    return grades  # type: ignore[return-value]


class _Batch:
    def __init__(self, name: str, params: GraderParams):
        self.name, self.params = name, params

    def grade(self, example: Example, completion: str) -> Grade:
        return self.grade_batch([example], [completion])[0]


class TritonFormat(_Batch):
    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
        grades = []
        for completion in completions:
            checks = format_checks(completion)
            missing = [k for k, ok in checks.items() if not ok]
            reason = "all formatting checks pass" if not missing else f"missing: {', '.join(missing)}"
            grades.append(Grade(sum(checks.values()) / len(checks), reason, {"checks": checks}))
        return grades


class TritonCompiles(_Batch):
    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
        codes = [extract_triton_code(c) for c in completions]
        grades: list[Grade | None] = [None] * len(codes)
        todo = []
        for i, code in enumerate(codes):
            early = _precheck(completions[i])[2]
            if code is None or (early is not None and early.reason.startswith("does not parse")):
                grades[i] = early
            else:
                todo.append(i)
        runner = runner_for(self.params.sandbox, self.params.timeout_s)
        for i, result in zip(todo, runner.run([("run_candidate", examples[i], codes[i]) for i in todo])):
            first = next((r for r in result.records if r.get("test") == 0), {})
            if "tensor" in first:
                grades[i] = Grade(1.0, "parses, defines the function and runs the first input")
            else:
                why = first.get("error") or (result.first("defined") or {}).get("error") or result.status_text()
                grades[i] = Grade(0.5, f"parses, but does not run: {why}"[:300])
        return grades  # type: ignore[return-value]


class TritonCorrect(_Batch):
    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
        return grade_correctness(examples, completions, self.params)


class TritonRuntime(_Batch):
    def grade_batch(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Grade]:
        correct = grade_correctness(examples, completions, self.params)
        runner = runner_for(self.params.sandbox, self.params.timeout_s)
        grades = []
        for example, completion, verdict in zip(examples, completions, correct):
            if verdict.score < 1.0:
                grades.append(Grade(0.0, "no runtime credit until every case is correct", flags=verdict.flags))
                continue
            cand, ref = runner.run([("run_candidate", example, extract_triton_code(completion)),
                                    ("run_reference", example, "")])
            # the first case pays the interpreter's warm-up, so time the rest
            timing = [sum(r["seconds"] for r in res.records if r.get("test", 0) > 0) for res in (cand, ref)]
            speedup = timing[1] / max(timing[0], 1e-9)
            grades.append(Grade(min(1.0, speedup / self.params.target_speedup),
                                f"speed-up {speedup:.3g}x over the PyTorch reference", {"speedup": speedup}))
        return grades


for _type, _cls, _params, _summary in (
        ("triton_format", TritonFormat, TritonParams, "Triton formatting: tags, imports, @triton.jit, masks, "
         "output buffer, no torch compute (fraction of 6 checks)"),
        ("triton_compiles", TritonCompiles, TritonParams, "Triton compilation: 1 parses and runs, 0.5 parses only"),
        ("triton_correct", TritonCorrect, TritonParams, "Triton correctness: passed / total against the PyTorch "
         "reference; 0 and flagged on no-op kernel substitution or torch compute in the wrapper"),
        ("triton_runtime", TritonRuntime, TritonRuntimeParams, "Triton speed-up over the reference (GPU only "
         "meaningful); 0 unless fully correct")):
    register(_type, _params, _summary)(lambda name, params, _cls=_cls: _cls(name, params))
