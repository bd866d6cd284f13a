"""`rft train --seeds`: one run directory per seed, mean and spread by hand, finished seeds read back."""

import json
import math

import pytest
import yaml

from rftkit.cli import main
from rftkit.tools.seeds import aggregate
from tests.conftest import tiny_config_dict


def test_aggregate_by_hand():
    spread = aggregate({0: {"seed": 0, "steps": 5, "ok": True, "after": {"accuracy": 0.2, "note": "x"},
                            "test": {"accuracy": 0.5}},
                        1: {"seed": 1, "steps": 5, "ok": True, "after": {"accuracy": 0.4}}})
    assert set(spread) == {"steps", "after.accuracy"}  # seeds, booleans, text and keys one seed lacks are left out
    after = spread["after.accuracy"]
    assert after["mean"] == pytest.approx(0.3) and after["std"] == pytest.approx(math.sqrt(0.02))  # n - 1
    assert (after["min"], after["max"], after["values"]) == (0.2, 0.4, [0.2, 0.4])
    assert spread["steps"]["std"] == 0.0
    assert aggregate({3: {"after": {"accuracy": 0.7}}})["after.accuracy"]["std"] == 0.0  # one seed: no spread


def test_seeds_train_one_run_each_and_summarise(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, train__steps=1)))
    out_dir = tmp_path / "study"
    assert main(["train", str(config), "--seeds", "0", "1", "--output", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    summaries = [json.loads((out_dir / f"seed-{s}" / "summary.json").read_text()) for s in (0, 1)]
    assert [s["seed"] for s in summaries] == [0, 1]
    saved = [yaml.safe_load((out_dir / f"seed-{s}" / "config.yaml").read_text()) for s in (0, 1)]
    assert [c["train"]["seed"] for c in saved] == [0, 1] and saved[0]["data"] == saved[1]["data"]
    result = json.loads((out_dir / "seeds.json").read_text())
    accuracy = [s["after"]["accuracy"] for s in summaries]
    assert result["seeds"] == [0, 1] and result["spread"]["after.accuracy"]["values"] == accuracy
    assert result["spread"]["after.accuracy"]["mean"] == pytest.approx(sum(accuracy) / 2)
    assert result["spread"]["after.accuracy"]["std"] == pytest.approx(abs(accuracy[0] - accuracy[1]) / math.sqrt(2))
    assert "2 seeds (0 1), 1 steps each" in printed and "seeds.json" in printed
    # before training the adapter is the identity (B = 0), and validation samples from train.seed's stream
    assert result["spread"]["before.accuracy_greedy"]["std"] == 0.0

    stamp = (out_dir / "seed-0" / "summary.json").stat().st_mtime_ns
    assert main(["train", str(config), "--seeds", "0", "1", "--output", str(out_dir)]) == 0
    assert capsys.readouterr().out.count("read, not trained again") == 2
    assert (out_dir / "seed-0" / "summary.json").stat().st_mtime_ns == stamp
    assert json.loads((out_dir / "seeds.json").read_text())["spread"] == result["spread"]

    assert main(["train", str(config), "--seeds", "0", "0", "--output", str(out_dir)]) == 2
    assert "repeats a seed" in capsys.readouterr().err
    assert main(["train", "--resume", str(out_dir / "seed-0"), "--seeds", "0"]) == 2
