"""`python -m rftkit.tasks.gsm8k N OUT.jsonl [--seed S]`: write N generated rows in the benchmark's own format."""

from __future__ import annotations

import argparse
import random

from rftkit.data import write_jsonl
from rftkit.tasks.gsm8k import make_problem


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m rftkit.tasks.gsm8k", description=__doc__)
    parser.add_argument("count", type=int)
    parser.add_argument("output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(f"gsm8k-rows-{args.seed}")
    write_jsonl(args.output, (make_problem(rng) for _ in range(args.count)))


if __name__ == "__main__":
    main()
