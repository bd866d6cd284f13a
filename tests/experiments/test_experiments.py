"""The experiment drivers end to end at a toy scale: every arm runs, the table, JSON and plot are written."""

import json

import pytest

from rftkit.experiments import algorithms, common, data_efficiency
from rftkit.experiments.data_efficiency import StudyPlan


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    # CI runs two test workers on two cores: a second intra-op thread per worker only contends.
    monkeypatch.setitem(common.COUNTDOWN["train"], "threads", 1)


def test_data_efficiency_study_writes_table_json_and_plot(tmp_path, monkeypatch):
    plan = StudyPlan(sizes=(4,), budget_seconds=0.5, warmup_fraction=0.5, sft_learning_rate=1e-3, val_size=8,
                     test_size=6, rl_eval_every=1, sft_eval_every=1)
    monkeypatch.setitem(data_efficiency.PLANS, "quick", plan)
    data_efficiency.main(quick=True, seeds=[0], output=str(tmp_path), budget=None)
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["arm"] for r in results] == ["base", "sft", "rft", "sft_rft"]
    assert all(r["train_size"] == 4 for r in results)
    sft_rft = next(r for r in results if r["arm"] == "sft_rft")
    assert sft_rft["sft_steps"] >= 1 and sft_rft["steps"] >= 1
    # every arm is reported on the test split, with the checkpoint its validations chose
    for r in results:
        assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["test_accuracy_greedy"] <= 1
        summary = json.loads((tmp_path / "runs" / ("seed0-base" if r["arm"] == "base" else f"n4-seed0-{r['arm']}")
                              / "summary.json").read_text())
        assert summary["test"]["accuracy"] == r["test_accuracy"]
        if r["arm"] != "base":
            assert summary["test_size"] == 6 and r["chosen_step"] == summary["best"]["step"] >= 1
            assert summary["best"]["metric"] == "accuracy"
    table = (tmp_path / "table.md").read_text()
    assert "| N | base | SFT | RFT (GRPO) | SFT → RFT |" in table and "| 4 |" in table
    assert "Test-split accuracy on 6 Countdown puzzles" in table and "chosen on 8 validation puzzles" in table
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_study_base_is_the_untrained_model_on_the_test_split(tmp_path):
    from rftkit.eval.validate import EvalSettings, evaluate, load_policy
    from rftkit.graders import build_graders
    from rftkit.tasks import load_splits

    overrides = {"data.train_size": 4, "data.val_size": 8, "data.test_size": 6}
    result = common.run_base_arm("base", overrides, tmp_path / "base")
    config = common.config_for(overrides)
    _, _, test = load_splits(config.data)
    policy, tokenizer = load_policy(config, None)
    expected = evaluate(policy, tokenizer, test, build_graders(config.graders), EvalSettings.of(config), None)
    assert (result.test_accuracy, result.test_accuracy_greedy) == (expected.metrics["accuracy"],
                                                                   expected.metrics["accuracy_greedy"])


def test_algorithm_comparison_table(tmp_path):
    algorithms.main(seeds=[0], budget=0.5, output=str(tmp_path), algorithms=["rloo", "ppo"], train_size=8,
                    val_size=8)
    table = (tmp_path / "table.md").read_text()
    assert "| RLOO |" in table and "| PPO (value head, GAE) |" in table and "| base model |" in table


def test_table_groups_by_requested_size_not_the_deduplicated_count():
    from rftkit.experiments.common import ArmResult

    rows = [ArmResult(arm, 993, 0, acc, acc, 0.15, 0.3, 1, 0, 1.0, requested_size=1000)
            for arm, acc in (("sft", 0.1), ("rft", 0.3), ("sft_rft", 0.2))]
    rows.append(ArmResult("base", 4, 0, 0.15, 0.15, 0.15, 0.15, 0, 0, 1.0))  # one per seed, whatever N
    text = data_efficiency.table(rows, (1000,), "accuracy")
    assert "| 1000 | 0.150 | 0.100 (-33%) | 0.300 (+100%) | 0.200 (+33%) |" in text


def test_chosen_steps_table():
    from rftkit.experiments.common import ArmResult

    rows = [ArmResult("sft", 10, 0, 0.1, 0.1, 0.1, 0.1, 0, 800, 1.0, requested_size=10, chosen_step=400),
            ArmResult("rft", 10, 0, 0.2, 0.2, 0.1, 0.1, 1300, 0, 1.0, requested_size=10, chosen_step=150),
            ArmResult("rft", 10, 1, 0.2, 0.2, 0.1, 0.1, 1200, 0, 1.0, requested_size=10),
            ArmResult("sft_rft", 10, 0, 0.2, 0.2, 0.1, 0.1, 900, 700, 1.0, requested_size=10, chosen_step=900)]
    text = data_efficiency.chosen_steps(rows, (10,))
    assert "| 10 | 400 / 800 | 150 / 1300, final / 1200 | 900 / 900 |" in text


def test_algorithm_table_takes_one_base_value_per_seed():
    from rftkit.experiments.common import ArmResult

    rows = [ArmResult(name, 8, seed, acc, acc, base, 0.3, 10, 0, 1.0)
            for seed, base in ((0, 0.1), (1, 0.3)) for name, acc in (("grpo", 0.4), ("rloo", 0.2))]
    text = algorithms.table(rows, ["grpo", "rloo"])
    assert "| base model | 0.200 ± 0.141 |" in text
    assert "| GRPO | 0.400 ± 0.000 (+100%) |" in text


def test_jobs_run_side_by_side_and_keep_task_order(tmp_path):
    algorithms.main(seeds=[0, 1], budget=0.5, output=str(tmp_path), algorithms=["grpo"], train_size=8, val_size=8,
                    jobs=2)
    meta = json.loads((tmp_path / "results.json").read_text())
    assert [(r["arm"], r["seed"]) for r in meta["results"]] == [("grpo", 0), ("grpo", 1)]
    assert meta["meta"]["jobs"] == 2
