"""The README's config reference is the generated one: documentation cannot drift from the models."""

from pathlib import Path

from rftkit.config import reference_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_embeds_the_generated_config_reference():
    assert reference_markdown() in README.read_text(encoding="utf-8"), (
        "README.md's configuration reference is stale: paste the output of "
        "`python -c 'from rftkit.config import reference_markdown; print(reference_markdown())'`")


def test_readme_names_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert "make train" in text and "make test" in text
    assert "make test" in (README.parent / ".ci" / "run").read_text()


def test_the_config_reference_is_printed_once():
    """A second copy would drift: every table row naming a config key lies inside the one generated block."""
    import re

    text = README.read_text(encoding="utf-8")
    reference = reference_markdown()
    assert text.count(reference) == 1, "the generated configuration reference must appear exactly once"
    outside = text.replace(reference, "")
    stale = re.findall(r"^\| `(?:model|lora|data|grpo|train|eval|rollout|ppo|dapo|sft)\.[\w.]+` \| `", outside, re.M)
    assert not stale, f"config-key rows outside the generated reference (a stale copy?): {stale[:5]}"


def test_the_quick_start_shows_the_example_files_as_they_are():
    text = README.read_text(encoding="utf-8")
    folder = README.parent / "examples" / "quickstart"
    assert (folder / "quickstart.yaml").read_text().rstrip("\n") in text
    function = (folder / "rewards.py").read_text().split('"""\n', 2)[-1].strip()  # the function, without the docstring
    assert function in text


def test_the_quick_start_config_trains(tmp_path):
    from rftkit.cli import main

    config = README.parent / "examples" / "quickstart" / "quickstart.yaml"
    assert main(["train", str(config), "--set", "train.steps=1", "--set", "eval.eval_every=1",
                 "--set", "data.val_size=4", "--output", str(tmp_path / "run")]) == 0
