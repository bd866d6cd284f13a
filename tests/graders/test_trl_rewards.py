"""TRL reward functions through the `function` grader, unchanged, against TRL itself.

The oracle is TRL's own `GRPOTrainer._calculate_rewards`, called on a stand-in trainer with the
same rows, completions and token ids: every function `trl.rewards` ships, in the standard and
the conversational format, must give the values TRL computes (None -> masked), the columns it
logs with `log_extra`, and fail where TRL fails. The examples of TRL's GRPOTrainer documentation
are in `trl_doc_rewards.py`, copied verbatim, with the results the documentation states.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

trl = pytest.importorskip("trl")
trl_rewards = pytest.importorskip("trl.rewards")

from rftkit.config import parse_config  # noqa: E402
from rftkit.data import Example, example_from_row, load_hf_dataset, load_jsonl  # noqa: E402
from rftkit.graders import WeightedGrader, build_graders  # noqa: E402
from rftkit.graders.base import BatchContext  # noqa: E402
from rftkit.graders.combine import grade_all  # noqa: E402

from .conftest import make  # noqa: E402

DOCS = str(Path(__file__).with_name("trl_doc_rewards.py"))

# Every function trl.rewards exports, with the factory arguments of the ones that are factories.
TRL_FUNCTIONS = {
    "accuracy_reward": None,
    "reasoning_accuracy_reward": None,
    "think_format_reward": None,
    "get_cosine_scaled_reward": {"max_len": 20},
    "get_repetition_penalty_reward": {"ngram_size": 2, "max_penalty": -1.0},
    "get_soft_overlong_punishment": {"max_completion_len": 10, "soft_punish_cache": 4},
}

PROMPTS = ["What is 1/3 of 1?", "Half of one?", "Two thirds?", "Unparseable gold?", "Think first."]
SOLUTIONS = [r"\frac{1}{3}", r"\frac{1}{2}", r"\frac{2}{3}", "no math here", "4"]
TEXTS = [r"<think>one third</think> The answer is \boxed{\frac{1}{3}}",
         r"The answer is \boxed{\frac{1}{3}}",
         r"<think>hmm</think><think>again</think> \boxed{\frac{2}{3}}",
         r"\boxed{1}",
         "<think>\nreasoning\n</think>\n4"]
TOKEN_IDS = [[1, 2, 3], [5, 5, 5, 5, 5, 5, 5], [1] * 9, [7] * 12, [1, 2, 1, 2, 1, 2]]


def rows(conversational: bool) -> list[dict]:
    """TRL-format dataset rows: `prompt` (a string or a message list) plus a `solution` column."""
    return [{"prompt": [{"role": "user", "content": p}] if conversational else p, "solution": s}
            for p, s in zip(PROMPTS, SOLUTIONS)]


def trl_completions(conversational: bool) -> list:
    return [[{"role": "assistant", "content": t}] for t in TEXTS] if conversational else list(TEXTS)


def trl_reference(func, batch_rows: list[dict], completions: list, completion_ids: list):
    """What GRPOTrainer._calculate_rewards computes for one reward function: (values with NaN for
    None, the columns logged with log_extra, the logged metrics); or the exception it raises."""
    from accelerate import PartialState
    from transformers import TrainerState

    PartialState()  # TRL logs through accelerate's logger, which needs the (single-process) state
    logged, metrics = defaultdict(list), defaultdict(list)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(device="cpu", is_main_process=True), args=SimpleNamespace(report_to=[]),
        reward_funcs=[func], reward_processing_classes=[None], reward_func_names=["f"], state=TrainerState(),
        _log_completion_extra=lambda column, values: logged[column].extend(values),
        _log_metric=lambda name, value: metrics[name].append(value), environments=None, async_loop=loop)
    try:
        out = trl.GRPOTrainer._calculate_rewards(trainer, [dict(r) for r in batch_rows],
                                                 [r["prompt"] for r in batch_rows], completions, completion_ids)
    finally:
        loop.call_soon_threadsafe(loop.stop)
    return out[:, 0].tolist(), dict(logged), dict(metrics)


def rftkit_grades(spec: dict, batch_rows: list[dict], completion_ids: list | None):
    examples = [example_from_row(r, f"row {i}") for i, r in enumerate(batch_rows)]
    grader = make("function", **spec)
    results, stats = grade_all([WeightedGrader(grader, 1.0)], examples, TEXTS[:len(examples)],
                               BatchContext(completion_ids=completion_ids))
    return [r.grades["g"] for r in results], stats


def test_every_trl_reward_function_is_covered():
    exported = {name for names in trl_rewards._import_structure.values() for name in names}
    assert exported == set(TRL_FUNCTIONS)


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
@pytest.mark.parametrize("name", list(TRL_FUNCTIONS))
def test_trl_reward_functions_give_trls_values(name, conversational):
    factory_kwargs = TRL_FUNCTIONS[name]
    target = getattr(trl_rewards, name)
    func = target(**factory_kwargs) if factory_kwargs else target
    spec = {"function": f"trl.rewards:{name}", **({"factory_kwargs": factory_kwargs} if factory_kwargs else {})}
    grades, _ = rftkit_grades(spec, rows(conversational), TOKEN_IDS)
    try:
        expected, logged, _ = trl_reference(func, rows(conversational), trl_completions(conversational), TOKEN_IDS)
    except Exception as exc:  # e.g. accuracy_reward indexes completion[0]["content"]: conversational only
        assert all(g.error and type(exc).__name__ in g.reason for g in grades), [g.reason for g in grades]
        return
    assert not any(g.error for g in grades), [g.reason for g in grades]
    for grade, value in zip(grades, expected):
        if math.isnan(value):
            assert grade.masked
        else:
            assert grade.details["raw"] == pytest.approx(value, rel=1e-6)  # TRL stores float32
            assert 0.0 <= grade.score <= 1.0
    for column, values in logged.items():  # accuracy_reward logs solution, gold_parsed, answer_parsed
        assert [g.details["log_extra"][column] for g in grades] == values


@pytest.mark.parametrize("name", [n for n in TRL_FUNCTIONS if n != "get_repetition_penalty_reward"])
def test_standard_rows_get_conversational_shapes_when_asked(name):
    """TRL's accuracy/format/cosine rewards read completion[0]["content"] (conversational only in
    TRL); `conversational: true` gives string-prompt rows the message shapes they expect."""
    factory_kwargs = TRL_FUNCTIONS[name]
    target = getattr(trl_rewards, name)
    func = target(**factory_kwargs) if factory_kwargs else target
    spec = {"function": f"trl.rewards:{name}", "conversational": True,
            **({"factory_kwargs": factory_kwargs} if factory_kwargs else {})}
    grades, _ = rftkit_grades(spec, rows(False), TOKEN_IDS)
    expected, _, _ = trl_reference(func, rows(True), trl_completions(True), TOKEN_IDS)
    assert [None if g.masked else g.details["raw"] for g in grades] == \
        [None if math.isnan(v) else pytest.approx(v, rel=1e-6) for v in expected]


def test_a_standard_format_type_error_says_what_to_do():
    grades, _ = rftkit_grades({"function": "trl.rewards:accuracy_reward"}, rows(False), TOKEN_IDS)
    assert "conversational: true" in grades[0].reason


def test_trl_reward_functions_cover_their_range_by_default():
    """Without `range:`, a trl.rewards function's documented scale is mapped onto [0, 1]."""
    grades, _ = rftkit_grades({"function": "trl.rewards:get_soft_overlong_punishment",
                               "factory_kwargs": {"max_completion_len": 10, "soft_punish_cache": 4}},
                              rows(True), TOKEN_IDS)
    # lengths 3, 7, 9, 12, 6 -> TRL: 0, -0.25, -0.75, -1, 0 on [-1, 0]
    assert [g.score for g in grades] == pytest.approx([1.0, 0.75, 0.25, 0.0, 1.0])


def test_accuracy_reward_masks_an_unparseable_gold_solution():
    grades, stats = rftkit_grades({"function": "trl.rewards:accuracy_reward"}, rows(True), TOKEN_IDS)
    assert [g.score for g in grades[:3]] == [1.0, 0.0, 1.0] and grades[3].masked and stats.masked["g"] == 1


@pytest.mark.parametrize("target", ["trl.rewards:accuracy_reward", "trl.rewards.accuracy_reward"])
def test_config_names_trl_functions_as_trls_own_cli_does(target):
    config = parse_config({"graders": [{"name": "acc", "type": "function", "function": target},
                                       {"name": "long", "type": "function",
                                        "function": "trl.rewards.get_soft_overlong_punishment",
                                        "factory_kwargs": {"max_completion_len": 1280, "soft_punish_cache": 256}}]})
    graders = build_graders(config.graders)
    assert graders[0].grader.func is trl_rewards.accuracy_reward and graders[1].grader.range == (-1.0, 0.0)


def test_factory_errors_fail_at_config_time():
    with pytest.raises(ValueError, match="max_penalty"):
        parse_config({"graders": [{"name": "rep", "type": "function",
                                   "function": "trl.rewards:get_repetition_penalty_reward",
                                   "factory_kwargs": {"max_penalty": 1.0}}]})


def test_completion_ids_required_but_missing_is_an_error_with_a_reason():
    grades, stats = rftkit_grades({"function": "trl.rewards:get_soft_overlong_punishment",
                                   "factory_kwargs": {"max_completion_len": 10, "soft_punish_cache": 4}},
                                  rows(False), None)
    assert stats.errors["g"] == len(grades) and "completion_ids" in grades[0].reason


# ---------------------------------------------------------------- the documentation's examples


def doc_grader(example: str, **params):
    return make("function", function=f"{DOCS}:{example}", **params)


def standard(prompts):
    return [Example(str(i), prompt=p) for i, p in enumerate(prompts)]


def test_doc_example_1_token_count():
    prompts = ["The sky is", "The sun is"]
    completions = [" blue.", " in the sky."]
    completion_ids = [[6303, 13], [304, 279, 12884, 13]]
    grades = doc_grader("example_1", range=[0, 10]).grade_batch(standard(prompts), completions,
                                                                BatchContext(completion_ids=completion_ids))
    assert [g.details["raw"] for g in grades] == [2.0, 4.0]


def test_doc_example_1_1_character_count():
    prompts = ["The sky is", "The sun is"]
    completions = [" blue.", " in the sky."]
    grades = doc_grader("example_1_1", range=[0, 20]).grade_batch(standard(prompts), completions,
                                                                  BatchContext([[6303, 13], [304, 279, 12884, 13]]))
    assert [g.details["raw"] for g in grades] == [6.0, 12.0]


def test_doc_example_2_format_conversational():
    prompts = [
        [{"role": "assistant", "content": "What is the result of (1 + 2) * 4?"}],
        [{"role": "assistant", "content": "What is the result of (3 + 1) * 2?"}],
    ]
    completions = [
        [{"role": "assistant", "content": "<think>The sum of 1 and 2 is 3, which we multiply by 4 to get 12.</think><answer>(1 + 2) * 4 = 12</answer>"}],  # noqa: E501
        [{"role": "assistant", "content": "The sum of 3 and 1 is 4, which we multiply by 2 to get 8. So (3 + 1) * 2 = 8."}],  # noqa: E501
    ]
    examples = [example_from_row({"prompt": p}, "doc") for p in prompts]
    grades = doc_grader("format_reward_func").grade_batch(examples, [c[0]["content"] for c in completions])
    assert [g.score for g in grades] == [1.0, 0.0]


def test_doc_example_3_ground_truth_column():
    prompts = ["Problem: Solve the equation $2x + 3 = 7$. Solution:", "Problem: Solve the equation $3x - 5 = 10$."]
    completions = [r" The solution is \boxed{2}.", r" The solution is \boxed{6}."]
    ground_truth = ["2", "5"]
    examples = [Example(str(i), prompt=p, fields={"ground_truth": gt}) for i, (p, gt) in
                enumerate(zip(prompts, ground_truth))]
    assert [g.score for g in doc_grader("example_3").grade_batch(examples, completions)] == [1.0, 0.0]


def test_doc_example_4_multi_task_none_masks_like_trl():
    dataset = [
        {"prompt": "What is 2+2?", "task": "math"},
        {"prompt": "Write a function that returns the sum of two numbers.", "task": "code"},
        {"prompt": "What is 3*4?", "task": "math"},
        {"prompt": "Write a function that returns the product of two numbers.", "task": "code"},
    ]
    completions = ["4", "def add(a, b): return a + b", "11", "def mul(a, b): return a * b"]
    examples = [example_from_row(row, f"doc:{i}") for i, row in enumerate(dataset)]
    specs = [{"name": n, "type": "function", "function": f"{DOCS}:{n}", "range": [-1, 1]}
             for n in ("math_reward_func", "coding_reward_func")]
    results, stats = grade_all(build_graders(parse_config({"graders": specs}).graders), examples, completions)
    from tests.graders import trl_doc_rewards as docs

    for name in ("math_reward_func", "coding_reward_func"):
        expected, _, _ = trl_reference(getattr(docs, name), dataset, completions, [[1]] * 4)
        for result, value in zip(results, expected):
            grade = result.grades[name]
            assert grade.masked if math.isnan(value) else grade.details["raw"] == value
    # The documented functions test t == "coding" but the documented rows say "code": TRL masks
    # every code row for both functions, and so does rftkit (reward None: out of the loss).
    assert [r.reward for r in results] == [1.0, None, 0.0, None] and stats.masked["coding_reward_func"] == 4


def test_doc_example_5_async_is_awaited():
    grader = doc_grader("async_reward_func")
    assert [g.score for g in grader.grade_batch(standard(["a", "b"]), ["text", ""])] == [1.0, 0.0]

    async def inside_a_running_loop():  # a notebook: the coroutine runs on a loop of its own
        return grader.grade_batch(standard(["a"]), ["text"])

    assert asyncio.run(inside_a_running_loop())[0].score == 1.0


def test_doc_example_6_log_extra_and_log_metric():
    examples = [Example(str(i), prompt="p", fields={"ground_truth": gt}) for i, gt in enumerate(["2", "5"])]
    grader = doc_grader("example_6")
    results, stats = grade_all([WeightedGrader(grader, 1.0)], examples, [r"\boxed{2}", "no box"])
    extras = [r.grades["g"].details["log_extra"] for r in results]
    assert extras == [{"golden_answer": "2", "extracted_answer": "2"},
                      {"golden_answer": "5", "extracted_answer": "[none]"}]
    assert stats.metrics() == {"reward/g/accuracy": 0.5}


def test_trainer_state_carries_the_step():
    seen = []

    def curriculum(completions, trainer_state, **kwargs):
        seen.append((trainer_state.global_step, trainer_state.max_steps))
        return [1.0] * len(completions)

    from rftkit.graders.functions import FunctionGrader

    grader = FunctionGrader("c", curriculum, "trl", (0.0, 1.0), {})
    grader.grade_batch(standard(["a"]), ["x"], BatchContext(global_step=7, max_steps=100))
    assert seen == [(7, 100)]


# ---------------------------------------------------------------- TRL-format datasets


TRL_ROWS = [
    {"prompt": "The sky is", "solution": "blue"},  # standard, prompt-only
    {"prompt": [{"role": "user", "content": "What color is the sky?"}], "solution": "blue"},  # conversational
    {"prompt": "The sky is", "completion": " blue.", "topic": ["weather"]},  # standard prompt-completion
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky?"}],
     "completion": [{"role": "assistant", "content": "Blue."}]},  # conversational prompt-completion
]


def check_loaded(examples: list[Example]) -> None:
    assert examples[0].prompt == "The sky is" and examples[0].fields == {"solution": "blue"}
    assert examples[1].messages == ({"role": "user", "content": "What color is the sky?"},)
    assert examples[1].to_row()["prompt"] == TRL_ROWS[1]["prompt"]  # written back in the row's own shape
    assert examples[2].fields == {"completion": " blue.", "topic": ["weather"]}
    assert examples[3].chat()[0] == {"role": "system", "content": "Be brief."}
    assert examples[3].fields["completion"] == [{"role": "assistant", "content": "Blue."}]


def test_trl_format_rows_load_from_jsonl(tmp_path):
    path = tmp_path / "trl.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in TRL_ROWS), encoding="utf-8")
    check_loaded(load_jsonl(path))


def test_trl_format_rows_load_through_hf_datasets(tmp_path):
    pytest.importorskip("datasets")
    for i, row in enumerate(TRL_ROWS):  # one file per format: a dataset has one schema
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "train.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    check_loaded([load_hf_dataset(str(tmp_path / f"d{i}"), "train")[0] for i in range(len(TRL_ROWS))])


def test_completion_column_is_not_passed_to_reward_functions_as_in_trl():
    seen = {}

    def spy(prompts, completions, **kwargs):
        seen.update(kwargs)
        return [1.0] * len(completions)

    from rftkit.graders.functions import FunctionGrader

    example = example_from_row(TRL_ROWS[2], "row")
    FunctionGrader("s", spy, "trl", (0.0, 1.0), {}).grade_batch([example], ["x"])
    assert "completion" not in seen and seen["topic"] == [["weather"]]
    assert set(seen) >= {"completion_ids", "trainer_state", "log_extra", "log_metric"}


def test_one_bad_row_errors_alone():
    """A function that fails on one row's null field: that row errs, its neighbours are graded."""
    def strict(completions, solution, **kwargs):
        return [float(c.strip() == s.strip()) for c, s in zip(completions, solution)]

    from rftkit.graders.functions import FunctionGrader

    examples = [Example("a", prompt="p", fields={"solution": "1"}), Example("b", prompt="p", fields={"solution": None}),
                Example("c", prompt="p", fields={"solution": "3"})]
    grader = FunctionGrader("strict", strict, "trl", (0.0, 1.0), {})
    results, stats = grade_all([WeightedGrader(grader, 1.0)], examples, ["1", "2", "4"])
    assert [r.grades["strict"].error for r in results] == [False, True, False]
    assert [r.reward for r in results] == [1.0, 0.0, 0.0] and stats.errors["strict"] == 1
    assert "AttributeError" in results[1].grades["strict"].reason


def test_a_multi_grader_passes_token_ids_to_its_functions():
    grader = make("multi", graders={"long": {"type": "function", "function": "trl.rewards:get_soft_overlong_punishment",
                                             "factory_kwargs": {"max_completion_len": 10, "soft_punish_cache": 4}},
                                    "fmt": {"type": "function", "function": "trl.rewards:think_format_reward"}},
                  calculate_output="min(long, fmt)")
    examples = [example_from_row(r, "row") for r in rows(True)[:2]]
    grades = grader.grade_batch(examples, TEXTS[:2], BatchContext(completion_ids=TOKEN_IDS[:2]))
    assert [g.score for g in grades] == [1.0, 0.0]  # lengths 3 and 7; only the first has one <think> block
