"""The `rft` command: bad input exits 2 with a message naming the place; verbs run end to end."""

import json

import yaml

from rftkit.cli import main
from tests.conftest import tiny_config_dict


def test_unknown_key_exits_2_naming_it(tmp_path, capsys):
    raw = tiny_config_dict(tmp_path)
    raw["grpo"]["epsilonn"] = 0.3
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "grpo.epsilonn: unknown key" in err and "epsilon" in err


def test_malformed_dataset_exits_2_naming_file_and_line(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "ok", "numbers": [1], "target": 1}\n{"prompt": \n')
    raw = tiny_config_dict(tmp_path)
    raw["data"] = {"source": str(data), "val_size": 1}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    assert f"{data}:2: invalid JSON" in capsys.readouterr().err


def test_train_then_eval_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, train__steps=1)))
    assert main(["train", str(path), "--output", str(tmp_path / "run"), "--set", "eval.eval_every=5"]) == 0
    out = capsys.readouterr().out
    assert "held-out (8 prompts, seed 0)" in out and "accuracy_greedy" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert main(["eval", str(path), "--adapter", str(tmp_path / "run" / "checkpoints" / "step-1")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accuracy"] == summary["after"]["accuracy"] and printed["examples"] == 8
    assert main(["eval", str(path), "--adapter", str(tmp_path / "nowhere")]) == 2


def test_help_and_version_import_no_torch():
    """`rft --help` stays fast: the parser and the error types it reports load without torch."""
    import subprocess
    import sys

    probe = ("import sys\nfrom rftkit.cli import build_parser\nparser = build_parser()\n"
             "parser.format_help()\nprint(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    version = subprocess.run([sys.executable, "-m", "rftkit.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("rft (rftkit) ")


def test_a_grader_failing_on_every_completion_stops_the_run_in_one_line(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("def reward(example, completion):\n    raise KeyError('solution')\n")
    raw = tiny_config_dict(tmp_path)
    raw["graders"].append({"name": "broken", "type": "function", "function": f"{tmp_path / 'broken.py'}:reward"})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    error = [line[line.index("error: "):] for line in err.replace("\r", "\n").splitlines() if "error: " in line]
    assert len(error) == 1 and "grader 'broken' raised on all 8 completions" in error[0]
    assert "KeyError" in error[0] and "'solution'" in error[0] and "samples.jsonl" not in error[0]
