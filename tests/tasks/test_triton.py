"""Python-to-Triton task: hand-written completions graded with hand-computed scores.

Kernels run in the sandbox with TRITON_INTERPRET=1 (set in the workers before triton is imported).
"""

from __future__ import annotations

import importlib.util

import pytest

from rftkit.graders.base import GRADER_TYPES
from rftkit.tasks import triton as task

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None,
                                reason="the Triton task needs the 'triton' and 'torch' packages: "
                                       "pip install -e .[triton]")

HEADER = "import torch\nimport triton\nimport triton.language as tl\n\n"
RELU = HEADER + '''@triton.jit
def relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, tl.maximum(x, 0.0), mask=mask)

def relu(x):
    out = torch.empty_like(x)
    n = x.numel()
    relu_kernel[(triton.cdiv(n, 256),)](x, out, n, BLOCK=256)
    return out
'''
ROW_SUM = HEADER + '''@triton.jit
def row_sum_kernel(x_ptr, out_ptr, cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + row * cols + offs, mask=offs < cols, other=0.0)
    tl.store(out_ptr + row, tl.sum(x, axis=0))

def row_sum(x):
    rows, cols = x.shape
    out = torch.empty(rows, dtype=x.dtype)
    row_sum_kernel[(rows,)](x, out, cols, BLOCK=triton.next_power_of_2(cols))
    return out
'''
# Only one program of 128 lanes: right for the 7- and 128-element inputs, wrong for 1000 and 4097.
RELU_ONE_BLOCK = RELU.replace("(triton.cdiv(n, 256),)", "(1,)").replace("BLOCK=256", "BLOCK=128")
# The seed's hack: the reduction is done by torch, not by the kernel.
TOTAL_SUM_TORCH = HEADER + '''@triton.jit
def sum_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < 1), mask=offs < 1)

def total_sum(x):
    out = torch.zeros(1)
    sum_kernel[(1,)](x, out, x.numel(), BLOCK=16)
    return torch.sum(x).reshape(1)
'''
# Stealthier: no torch call the AST can see; the kernel's output is overwritten by host arithmetic.
RELU_HOST_MATH = RELU.replace("    return out\n", "    out = x * (x > 0)\n    return out\n")
EXITS = RELU.replace("    return out\n", "    import sys\n    sys.exit(0)\n")
BROKEN_SYNTAX = HEADER + "@triton.jit\ndef relu_kernel(x_ptr:\n    pass\n"
BROKEN_RUNTIME = RELU.replace("tl.maximum(x, 0.0)", "tl.no_such_function(x)")


def wrap(code: str) -> str:
    return f"Here is the kernel.\n<triton_code>\n{code}</triton_code>"


def example(name: str):
    return next(e for e in task.generate(16, 0, {}) if e.fields["function"] == name)


def grade(kind: str, name: str, completions: list[str]):
    grader = GRADER_TYPES[kind].build("g", GRADER_TYPES[kind].params.model_validate({"timeout_s": 60}))
    return grader.grade_batch([example(name)] * len(completions), completions)


def test_dataset_has_16_functions_with_4_cases_and_the_seed_prompt():
    functions = task.load_functions()
    assert len(functions) == 16 and all(len(f["cases"]) == 4 for f in functions)
    ex = example("softmax")
    assert "<triton_code>" in ex.messages[0]["content"] and "def softmax" in ex.messages[1]["content"]


def test_format_reward_is_fractional():
    relu, no_masks = grade("triton_format", "relu", [wrap(RELU), wrap(RELU.replace(", mask=mask", ""))])
    assert relu.score == 1.0
    assert no_masks.score == pytest.approx(5 / 6) and "masks" in no_masks.reason
    bare, = grade("triton_format", "relu", [RELU])  # no tags: nothing else can be checked
    assert bare.score == 0.0
    hack, = grade("triton_format", "total_sum", [wrap(TOTAL_SUM_TORCH)])
    assert hack.score == pytest.approx(5 / 6) and "triton_only" in hack.reason


def test_correct_kernels_score_one():
    relu, = grade("triton_correct", "relu", [wrap(RELU)])
    row_sum, = grade("triton_correct", "row_sum", [wrap(ROW_SUM)])
    assert (relu.score, relu.flags) == (1.0, ()), relu.reason
    assert (row_sum.score, row_sum.flags) == (1.0, ()), row_sum.reason
    compiles, = grade("triton_compiles", "relu", [wrap(RELU)])
    assert compiles.score == 1.0


def test_partly_correct_kernel_gets_partial_credit():
    result, = grade("triton_correct", "relu", [wrap(RELU_ONE_BLOCK)])
    assert result.score == 0.5 and result.details["passed"] == 2 and not result.flags, result.reason


def test_broken_code():
    syntax, runtime = grade("triton_compiles", "relu", [wrap(BROKEN_SYNTAX), wrap(BROKEN_RUNTIME)])
    assert syntax.score == 0.0 and runtime.score == 0.5
    correct = grade("triton_correct", "relu", [wrap(BROKEN_SYNTAX), wrap(BROKEN_RUNTIME)])
    assert [g.score for g in correct] == [0.0, 0.0]


def test_torch_compute_in_the_wrapper_is_forbidden():
    result, = grade("triton_correct", "total_sum", [wrap(TOTAL_SUM_TORCH)])
    assert result.score == 0.0 and result.flags == ("forbidden",) and "torch.sum" in result.reason


def test_noop_kernel_substitution_catches_host_side_compute():
    result, = grade("triton_correct", "relu", [wrap(RELU_HOST_MATH)])
    assert result.score == 0.0 and result.flags == ("noop",), result.reason


def test_exit_trick_scores_zero():
    result, = grade("triton_correct", "relu", [wrap(EXITS)])
    assert result.score == 0.0 and result.flags == ("exit",)


def test_runtime_reward_needs_full_correctness():
    partial, correct = grade("triton_runtime", "relu", [wrap(RELU_ONE_BLOCK), wrap(RELU)])
    assert partial.score == 0.0
    assert 0.0 <= correct.score <= 1.0 and correct.details["speedup"] > 0
