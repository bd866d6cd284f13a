"""Where a sandboxed child's page faults go: the pool's harness, stage by stage, in a forked child.

    python benchmarks/sandbox_faults.py [--children 50]

A forked child shares every page with its zygote until it writes one; in Python 3.11 even reading
an object writes its reference count, so the first touch of each zygote-owned page costs a
copy-on-write fault (several microseconds each in a Firecracker VM). This forks `--children`
children from a process holding the zygote's modules; each runs the harness's stages for the
throughput benchmark's test (`add(1, 2)`) by hand and records its minor-fault count after each.
Prints the median faults per stage and writes benchmarks/results/sandbox_faults.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
from pathlib import Path

import rftkit.sandbox.harness as harness
import rftkit.sandbox.zygote  # noqa: F401 - the zygote's memory image, as in the pool
from rftkit.sandbox import values

CODE = "def add(a, b):\n    return a + b\n"
ARGS = ["list", [["int", "1"], ["int", "2"]]]


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _stages(fd: int) -> list[tuple[str, int]]:
    """The harness's work for one `call` test, split where its cost changes hands."""
    marks = [("fork and child start-up", _faults())]
    channel = harness.Channel(fd, b"k" * 32)
    marks.append(("channel object", _faults()))
    channel.send(compiled=True)
    marks.append(("first JSON record", _faults()))
    harness.restore_builtins()
    marks.append(("builtins check", _faults()))
    compiled = compile(CODE, "<completion>", "exec")
    marks.append(("compile", _faults()))
    namespace = {"__name__": "__solution__", "__builtins__": __builtins__}
    exec(compiled, namespace)  # noqa: S102 - the benchmark's own trivial code
    marks.append(("define", _faults()))
    value = values.encode(namespace["add"](*values.decode(ARGS)))
    marks.append(("call and encode", _faults()))
    channel.send(test=0, value=value)
    channel.send(done=True)
    marks.append(("last records", _faults()))
    return marks


def _one_child() -> list[tuple[str, int]]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        marks = _stages(write_end)
        os.write(write_end, b"\n" + json.dumps(marks).encode())
        os._exit(0)
    os.close(write_end)
    out = b"".join(iter(lambda: os.read(read_end, 1 << 16), b""))
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(out.rsplit(b"\n", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=50)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sandbox_faults.json"))
    args = parser.parse_args()
    gc.collect()
    gc.freeze()  # as the zygote does: no GC header writes in the children
    per_stage: dict[str, list[int]] = {}
    for _ in range(args.children):
        marks = _one_child()
        per_stage.setdefault(marks[0][0], []).append(marks[0][1])
        for (name, after), (_, before) in zip(marks[1:], marks):
            per_stage.setdefault(name, []).append(after - before)
        per_stage.setdefault("total", []).append(marks[-1][1])
    medians = {name: statistics.median(counts) for name, counts in per_stage.items()}
    print("| stage | minor page faults (median) |\n|---|---:|")
    for name, median in medians.items():
        print(f"| {name} | {median:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"children": args.children, "median_faults": medians}, indent=2) + "\n")


if __name__ == "__main__":
    main()
