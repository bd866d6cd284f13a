"""The `rft` command: parse arguments, load the config, call one function per verb."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rftkit.atomic import DiskFullError
from rftkit.config import ConfigError
from rftkit.graders.combine import GraderFailure
from rftkit.envs.base import EnvironmentFailure
from rftkit.data import DataError
from rftkit.models.errors import ModelLoadError


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.steps=20 (repeatable)")


def _print_before_after(summary: dict, header: str) -> None:
    print("\n" + header)
    for key in ("accuracy", "accuracy_greedy", "mean_reward", "accuracy_first_turn", "accuracy_greedy_first_turn"):
        if key in summary["before"]:  # the first-turn keys: multi-turn runs only
            print(f"  {key:16s} {summary['before'][key]:.3f} -> {summary['after'][key]:.3f}")


def _torchrun(args: argparse.Namespace) -> int:
    """`rft train --nproc N`: the same command under `torchrun --standalone --nproc_per_node N` (one node)."""
    import subprocess

    forwarded = [a for a in (args.config,) if a]
    forwarded += ["--output", args.output] if args.output else []
    forwarded += ["--resume", args.resume] if args.resume else []
    forwarded += ["--overwrite"] if args.overwrite else []
    for assignment in args.overrides:
        forwarded += ["--set", assignment]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "rftkit.cli", "train", *forwarded]
    code = subprocess.run(command).returncode
    if code != 0:
        print(f"error: a rank of `rft train --nproc {args.nproc}` failed (exit {code}); torchrun stopped the "
              "others. The failing rank and its traceback are in torchrun's 'Root Cause' summary above.",
              file=sys.stderr)
    return code


def cmd_train(args: argparse.Namespace) -> int:
    from rftkit.config import SAFE_ON_RESUME, changed_on_resume, load_config
    from rftkit.train.loop import train

    if args.seeds:
        return _train_seeds(args)
    if args.nproc > 1:
        return _torchrun(args)

    if args.resume:
        run_dir = Path(args.resume)
        config_path = args.config or run_dir / "config.yaml"
        config = load_config(config_path, args.overrides)
        if (run_dir / "config.yaml").is_file():
            changed = changed_on_resume(load_config(run_dir / "config.yaml"), config)
            if changed:
                raise ConfigError(f"--resume {run_dir}: the run was trained with another value of "
                                  f"{', '.join(changed)}; resuming may change only "
                                  f"{', '.join(sorted(SAFE_ON_RESUME))}. Start a new run (another --output) to "
                                  "train with the new values")
    else:
        if not args.config:
            raise ConfigError("rft train: give a CONFIG.yaml (or --resume RUN_DIR)")
        config = load_config(args.config, args.overrides)
        run_dir = Path(args.output or config.output_dir)
    summary = train(config, run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone reports
        return 0
    _print_before_after(summary, f"held-out ({summary['validation_size']} prompts, seed {summary['seed']}), before "
                        f"-> after {summary['steps']} steps in {summary['wall_seconds']:.0f} s:")
    if summary["ranks"] > 1:
        print(f"ranks: {summary['ranks']} ({summary['device']} on rank 0)")
    _print_test_and_choice(summary)
    print(f"run directory: {run_dir}   report: rft report {run_dir}")
    if summary.get("stopped_by"):  # alarms.stop_on: the run did not finish its steps
        stop = summary["stopped_by"]
        print(f"stopped at step {stop['step']} by the {stop['alarm']} alarm: {stop['message']}", file=sys.stderr)
        return 3
    return 0


def _train_seeds(args: argparse.Namespace) -> int:
    """`rft train CONFIG --seeds 0 1 2`: one run directory per seed and seeds.json (rftkit.tools.seeds)."""
    from rftkit.config import load_config
    from rftkit.tools.seeds import print_seeds, train_seeds
    from rftkit.train.loop import train

    if args.resume or args.nproc > 1:
        raise ConfigError("rft train --seeds: not with --resume or --nproc; resume one seed with `rft train --resume "
                          "OUTPUT/seed-N`, then run the --seeds command again (finished seeds are read back)")
    if not args.config:
        raise ConfigError("rft train --seeds: give a CONFIG.yaml")
    config = load_config(args.config, args.overrides)
    output = Path(args.output or config.output_dir)
    result = train_seeds(config, args.seeds, output, args.overwrite,
                         lambda seeded, run_dir, overwrite: train(seeded, run_dir, overwrite=overwrite))
    print_seeds(result, output)
    return 0


def cmd_screen(args: argparse.Namespace) -> int:
    from rftkit.config import load_config
    from rftkit.tools.screen import print_screen, run_screen

    config = load_config(args.config, args.overrides)
    print_screen(run_screen(config, args.k, args.adapter, args.output, args.keep))
    return 0


def cmd_regrade(args: argparse.Namespace) -> int:
    from rftkit.tools.regrade import run_regrade

    run_regrade(args.run_dir, args.config, args.overrides, args.show, args.output)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rftkit.eval.validate import run_eval

    metrics = run_eval(args.config, args.adapter, args.data, args.output, args.overrides)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from rftkit.grade_command import run_grade

    return run_grade(args.config, args.samples, args.output, args.show, args.overrides)


def _print_test_and_choice(summary: dict) -> None:
    if "test" in summary:  # scored once, with the checkpoint validation chose: the figure to report
        test = summary["test"]
        print(f"test split ({summary['test_size']} prompts, never used to choose): accuracy {test['accuracy']:.3f}, "
              f"greedy {test['accuracy_greedy']:.3f}, mean reward {test['mean_reward']:.3f}")
    if summary.get("best"):
        best = summary["best"]
        print(f"best checkpoint: {summary['best_checkpoint']} (step {best['step']}, validation {best['metric']} "
              f"{best['value']:.3f})")
    elif summary.get("best_checkpoint"):
        print(f"final checkpoint: {summary['best_checkpoint']}")


def cmd_sft(args: argparse.Namespace) -> int:
    from rftkit.config import load_config
    from rftkit.train.sft import sft

    config = load_config(args.config, args.overrides)
    run_dir = Path(args.output or config.output_dir)
    summary = sft(config, run_dir)
    _print_before_after(summary, f"held-out ({summary['validation_size']} prompts), before -> after "
                        f"{summary['sft_steps']} SFT steps in {summary['sft_seconds']:.0f} s:")
    _print_test_and_choice(summary)
    print(f"run directory: {run_dir}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rftkit.logging.report import build_report

    print(f"report: {build_report(args.run_dirs, args.output, args.samples)}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from rftkit.experiments import EXPERIMENTS

    EXPERIMENTS[args.name](args.quick, args.seeds, args.output, args.budget, args.jobs)
    return 0


def cmd_base_build(args: argparse.Namespace) -> int:
    from rftkit.models.embedded import EMBEDDED_DIR
    from rftkit.models.pretrain import PretrainRecipe, build
    from rftkit.train.process import set_threads

    set_threads(None)
    recipe = PretrainRecipe(bf16=not args.float32, **({"steps": args.steps} if args.steps else {}))
    build(args.output or EMBEDDED_DIR, recipe)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rftkit.grade_command import add_grade_arguments

    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("rftkit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "unknown (not installed)"
    parser = argparse.ArgumentParser(prog="rft", description="Reinforcement fine-tuning with LoRA and graders")
    parser.add_argument("--version", action="version", version=f"rft (rftkit) {installed}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="run RFT (GRPO + LoRA) from a YAML config")
    train.add_argument("config", nargs="?", help="YAML config (optional with --resume: the run's own config.yaml)")
    train.add_argument("--output", help="run directory (default: the config's output_dir)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue from RUN_DIR's last complete checkpoint")
    train.add_argument("--overwrite", action="store_true", help="delete an earlier run's state in the output "
                       "directory (metrics, samples, checkpoints) and start afresh; without it such a directory "
                       "is never overwritten")
    train.add_argument("--nproc", type=int, default=1, metavar="N", help="learner processes on this machine "
                       "(torchrun --standalone --nproc_per_node N; gloo on CPU, nccl on CUDA)")
    train.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="train once per train.seed, each in "
                       "OUTPUT/seed-N, and write mean and spread to OUTPUT/seeds.json (README: Small-data tools)")
    _add_overrides(train)
    train.set_defaults(func=cmd_train)

    evaluate = verbs.add_parser("eval", help="held-out accuracy of the base model or a saved adapter")
    evaluate.add_argument("config")
    evaluate.add_argument("--adapter", help="a checkpoints/step-N directory (default: the base model)")
    evaluate.add_argument("--data", help="JSONL to evaluate on instead of the config's validation split")
    evaluate.add_argument("--output", help="write one JSONL line per example: prompt, completions, grades")
    _add_overrides(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    screen = verbs.add_parser("screen", help="pass@k of every training prompt: always solved, never solved, "
                              "informative; writes screen.json for data.screen and the kept rows")
    screen.add_argument("config")
    screen.add_argument("--k", type=int, default=16, help="samples per prompt (default: 16)")
    screen.add_argument("--adapter", help="a checkpoints/step-N directory (default: the base model)")
    screen.add_argument("--output", help="directory for screen.json and train.jsonl (default: OUTPUT_DIR/screen)")
    screen.add_argument("--keep", nargs="+", default=["informative"],
                        choices=["informative", "never_solved", "always_solved"],
                        help="categories train.jsonl keeps (default: informative)")
    _add_overrides(screen)
    screen.set_defaults(func=cmd_screen)

    regrade = verbs.add_parser("regrade", help="re-score a run's stored completions with edited graders: "
                               "distributions before and after, verdicts that flipped")
    regrade.add_argument("run_dir", help="a run directory (completions.jsonl with store_completions: true, "
                         "else samples.jsonl)")
    regrade.add_argument("--config", help="the edited config whose graders to use (default: the run's own)")
    regrade.add_argument("--show", type=int, default=10, help="flipped completions to print (default: 10)")
    regrade.add_argument("--output", help="write one JSONL line per completion: grades before and after")
    _add_overrides(regrade)
    regrade.set_defaults(func=cmd_regrade)

    grade = verbs.add_parser("grade", help="run the config's graders on completions, to debug rewards")
    add_grade_arguments(grade)
    grade.set_defaults(func=cmd_grade)

    sft = verbs.add_parser("sft", help="LoRA supervised fine-tuning on prompt -> completion pairs (the `sft:` section)")
    sft.add_argument("config")
    sft.add_argument("--output", help="run directory (default: the config's output_dir)")
    _add_overrides(sft)
    sft.set_defaults(func=cmd_sft)

    report = verbs.add_parser("report", help="one HTML page for a run (curves, alarms, a sample browser), or "
                              "several runs compared")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run directory from rft train; two or "
                        "more: one page comparing them")
    report.add_argument("--output", help="HTML file to write (default: RUN_DIR/report.html, or "
                        "FIRST_RUN_DIR/compare.html for several runs)")
    report.add_argument("--samples", type=int, default=None, help="latest graded samples per run in the browser "
                        "(default: all)")
    report.set_defaults(func=cmd_report)

    experiment = verbs.add_parser("experiment", help="comparisons on the embedded model (README: Algorithms)")
    experiment.add_argument("name", choices=["countdown-data-efficiency", "algorithm-comparison"])  # EXPERIMENTS
    experiment.add_argument("--quick", action="store_true", help="small budget: N=10 only (about 6 min on 2 cores)")
    experiment.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    experiment.add_argument("--budget", type=float, help="training seconds per arm (default: the plan's)")
    experiment.add_argument("--output", help="output directory (default: runs/experiments/NAME)")
    experiment.add_argument("--jobs", type=int, default=1, help="runs side by side, each on one thread "
                            "(at most one per core keeps wall-clock budgets fair; default: 1)")
    experiment.set_defaults(func=cmd_experiment)

    base = verbs.add_parser("base", help="the embedded tiny model")
    base_verbs = base.add_subparsers(dest="base_verb", required=True)
    build = base_verbs.add_parser("build", help="pretrain the embedded model from scratch (offline, CPU)")
    build.add_argument("--output", help="directory to write (default: the package's embedded model)")
    build.add_argument("--steps", type=int, help="pretraining steps (default: the recipe's)")
    build.add_argument("--float32", action="store_true", help="train without bfloat16 autocast (slower on CPUs "
                       "with AVX512-BF16 or AMX, faster on others; a different model from the shipped one)")
    build.set_defaults(func=cmd_base_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "peft", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError, FileExistsError, ModelLoadError, GraderFailure) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:  # what was kept is in the message; nothing half-written is left
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 1
    except EnvironmentFailure as exc:  # names the environment, the call, the example and the turn
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
