"""Two run directories, bit for bit: the new run's N steps against the first N steps of the baseline.

    python benchmarks/compare_runs.py BASELINE_RUN NEW_RUN N

The loop does not look ahead (data order, learning rate, validations and saves at step <= N are the
same whatever train.steps is), so a shorter run after a change must reproduce the baseline's prefix:
metrics and samples without their time/ keys (keys the new run logs and the baseline did not are
listed and left out), and the step-N adapter's bytes.
"""

import hashlib
import json
import sys
from pathlib import Path


def records(run: Path, name: str) -> list[dict]:
    lines = (run / name).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


def main() -> int:
    base, new, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    same = True
    for name in ("metrics.jsonl", "samples.jsonl"):
        before = [r for r in records(base, name) if r["step"] <= steps]
        after = records(new, name)
        added = sorted({k for r in after for k in r} - {k for r in before for k in r})
        after = [{k: v for k, v in r.items() if k not in added} for r in after]
        print(f"{name}: {len(before)} baseline lines (step <= {steps}), {len(after)} new; identical: "
              f"{before == after}" + (f"; keys added since (left out): {added}" if added else ""))
        same &= before == after
        for i, (x, y) in enumerate(zip(before, after)):
            if x != y:
                print("  first difference at line", i, {k: (x.get(k), y.get(k)) for k in set(x) | set(y)
                                                         if x.get(k) != y.get(k)})
                break

    def digest(run: Path) -> str:
        adapter = run / "checkpoints" / f"step-{steps}" / "adapter_model.safetensors"
        return hashlib.sha256(adapter.read_bytes()).hexdigest()

    adapter_same = digest(base) == digest(new)
    print(f"adapter step-{steps} identical: {adapter_same}")
    return 0 if same and adapter_same else 1


if __name__ == "__main__":
    sys.exit(main())
