import math
import textwrap

import pytest

from rftkit.graders import GRADER_TYPES
from rftkit.graders.combine import grade_all
from rftkit.graders import WeightedGrader

from .conftest import ex, make

TRL_STYLE = '''
def brevity(prompts, completions, **kwargs):
    # TRL reward function, unchanged: a list of floats, None = no signal
    return [None if c == "skip" else 1.0 - min(len(c), 10) / 10 for c in completions]

def uses_column(prompts, completions, answer, **kwargs):
    return [float(c.strip() == a) for c, a in zip(completions, answer)]

def minus_one_to_one(prompts, completions, **kwargs):
    return [-1.0, 0.0, 1.0, 3.0][: len(completions)]

def bad_values(prompts, completions, **kwargs):
    return [float("nan"), "high"]

def wrong_length(prompts, completions, **kwargs):
    return [1.0]

def conversational(prompts, completions, **kwargs):
    return [float(p[-1]["role"] == "user" and c[0]["role"] == "assistant") for p, c in zip(prompts, completions)]

def per_example(example, completion, bonus=0.0):
    if completion == "boom":
        raise RuntimeError("user code failed")
    if completion == "grade":
        return Grade(0.25, "my own reason")
    return min(1.0, float(completion == example.fields["answer"]) + bonus)
'''


@pytest.fixture
def rewards(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text("from rftkit.graders.base import Grade\n" + textwrap.dedent(TRL_STYLE))
    return str(path)


def test_trl_function_unchanged_with_none_masked(rewards):
    grader = make("function", function=f"{rewards}:brevity")
    grades = grader.grade_batch([ex()] * 3, ["", "12345", "skip"])
    assert [g.score for g in grades[:2]] == [1.0, 0.5]
    assert grades[2].masked and not grades[2].error


def test_dataset_columns_arrive_as_keyword_lists(rewards):
    grader = make("function", function=f"{rewards}:uses_column")
    assert [g.score for g in grader.grade_batch([ex(answer="4"), ex(answer="5")], ["4", "4"])] == [1.0, 0.0]


def test_range_maps_and_clamps(rewards):
    grader = make("function", function=f"{rewards}:minus_one_to_one", range=[-1, 1])
    grades = grader.grade_batch([ex()] * 4, ["a", "b", "c", "d"])
    assert [g.score for g in grades] == [0.0, 0.5, 1.0, 1.0] and "clamped" in grades[3].reason


def test_nan_and_non_numbers_are_per_completion_errors(rewards):
    grades = make("function", function=f"{rewards}:bad_values").grade_batch([ex()] * 2, ["a", "b"])
    assert all(g.error for g in grades) and "nan" in grades[0].reason


def test_wrong_length_fails_the_batch_loudly(rewards):
    grader = make("function", function=f"{rewards}:wrong_length")
    results, stats = grade_all([WeightedGrader(grader, 1.0)], [ex()] * 2, ["a", "b"])
    assert stats.errors["g"] == 2 and "list of 2" in results[0].grades["g"].reason


def test_conversational_examples_get_trl_shapes(rewards):
    from rftkit.data import Example

    chat = Example("c1", messages=({"role": "user", "content": "hi"},))
    assert make("function", function=f"{rewards}:conversational").grade(chat, "hello").score == 1.0


def test_example_style_function(rewards):
    grader = make("function", function=f"{rewards}:per_example", kwargs={"bonus": 0.5})
    assert grader.grade(ex(answer="x"), "y").score == 0.5
    assert grader.grade(ex(answer="x"), "grade").reason == "my own reason"
    boom = grader.grade(ex(answer="x"), "boom")
    assert boom.error and "user code failed" in boom.reason


def test_module_path_import():
    grader = make("function", function="math:isfinite", style="example")  # any importable callable
    with pytest.raises(TypeError):
        grader.func(ex(), "x")
    assert grader.func is math.isfinite


@pytest.mark.parametrize("function, message", [
    ("no_colon", "expected 'module:function'"), ("nonexistent_mod_xyz:f", "ModuleNotFoundError"),
    ("math:nope", "no callable 'nope'"), ("missing/file.py:f", "not found")])
def test_bad_targets_fail_at_validation(function, message):
    with pytest.raises(ValueError, match=message):
        GRADER_TYPES["function"].params.model_validate({"function": function})


def test_numpy_arrays_and_scalars_are_accepted_as_trl_accepts_them():
    import numpy as np

    from rftkit.graders.functions import FunctionGrader

    def as_array(completions, **kwargs):
        return np.array([np.float32(0.5), np.True_, np.float64(1.0)])[: len(completions)]

    grades = FunctionGrader("a", as_array, "trl", (0.0, 1.0), {}).grade_batch([ex()] * 3, ["a", "b", "c"])
    assert [g.score for g in grades] == [0.5, 1.0, 1.0]


def test_a_function_that_hangs_is_stopped_at_its_time_limit(tmp_path):
    import time

    path = tmp_path / "slow.py"
    path.write_text("import time\n\ndef batch(prompts, completions, **kwargs):\n    time.sleep(60)\n"
                    "    return [1.0] * len(completions)\n\n"
                    "def each(example, completion):\n    time.sleep(60)\n    return 1.0\n")
    for target in ("batch", "each"):
        grader = make("function", function=f"{path}:{target}", timeout_s=0.3)
        started = time.monotonic()
        grades = grader.grade_batch([ex()] * 2, ["a", "b"])
        assert time.monotonic() - started < 5  # 0.3 s per call, not 60
        assert all(g.error and g.score == 0.0 and "did not return within timeout_s=0.3 s" in g.reason
                   for g in grades)
    stats = grade_all([WeightedGrader(make("function", function=f"{path}:batch", timeout_s=0.3), 1.0)],
                      [ex()] * 2, ["a", "b"])[1]
    assert sum(stats.errors.values()) == 2  # counted, so a hang on every completion stops the run by name
