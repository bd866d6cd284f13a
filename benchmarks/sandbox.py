"""Sandbox throughput: a trivial passing test through the warm pool vs one fresh interpreter per run.

    python benchmarks/sandbox.py [--runs 400] [--naive-runs 60] [--workers 2 4]

Both ways run in the same process, one after the other, on the same machine. The naive ways run as
many at a time as there are cores; the pool runs with each `--workers` count (default: the
config's default, one per core), as many executions at a time as it has workers. "pool" is the
full sandbox (`--isolation`: full by default, or restricted; rlimits, seccomp, the driver and candidate
processes, HMAC channel, host-side comparison); "naive" is `subprocess.run([python, -c, code])` with no
isolation at all; "naive_harness" is a fresh interpreter running the same two harness halves in one
process (still without isolation). "fork_floor" is the ceiling of any design that runs each execution
in a fresh process: one process per core, each with the zygote's modules loaded, forking children that
only write a fixed verdict to a pipe and exit (no isolation, no harness, no request or result passing);
"fork_harness_floor" is the same with the child serving the code and the looping process driving the
test through the proxy, as the pool's long-lived driver does (still no isolation and no request or
result passing).
"harness_in_process" runs both halves in a loop in one process with no fork at all: the gap between it
and fork_harness_floor is what running them in fresh processes costs (benchmarks/sandbox_faults.py
counts the page faults behind it). Prints a table and writes benchmarks/results/sandbox.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rftkit.sandbox import Job, SandboxConfig, SandboxPool

CODE = "def add(a, b):\n    return a + b\n"
PAYLOAD = {"code": CODE, "entry_point": "add"}
SECRET = {"noop": False, "tests": [{"id": 0, "kind": "call", "args": ["list", [["int", "1"], ["int", "2"]]]}]}
NAIVE = CODE + "assert add(1, 2) == 3\n"
# Both halves of the pool's harness in one process: the candidate's answers queued for the driver.
IN_PROCESS = f"""
import rftkit.sandbox.proxy as proxy
from rftkit.sandbox.harness import load_entry_point
from rftkit.sandbox.protocol import Channel
class Loopback:
    def __init__(self):
        self.inbox = []
    def send(self, **message):
        if "call" in message:
            self.inbox.append(proxy._answer(self.namespace, message))
        else:
            self.inbox.append(message)
    def recv(self):
        return self.inbox.pop(0) if self.inbox else None
def run_both(fd):
    conn = Loopback()
    conn.namespace = load_entry_point({PAYLOAD!r}, conn)[0]
    conn.send(names=["add"])
    proxy.drive({PAYLOAD!r}, {SECRET!r}, conn, Channel(fd, b"k" * 32), lambda: ("exited", True))
"""
# the same harness as the pool, in a fresh interpreter, still without isolation
NAIVE_HARNESS = IN_PROCESS + "run_both(1)\n"


# One looping process per core: fork a child that writes a verdict and exits; prints forks per second.
FORK_FLOOR = """
import gc, os, sys, time
import rftkit.sandbox.zygote, rftkit.sandbox.harness  # the zygote's memory image: fork cost grows with it
gc.collect(); gc.freeze()
n = int(sys.argv[1]); start = time.perf_counter()
for _ in range(n):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, b'{"done": true}'); os._exit(0)
    os.close(w); os.read(r, 64); os.close(r); os.waitpid(pid, 0)
print(time.perf_counter() - start)
"""

# The same loop, but the child serves the benchmark's test (compile, define, answer the call) while this
# process drives it through the proxy and reports on the channel, as the pool's child and long-lived
# driver do: any design that runs the code in a fresh process per execution and judges it elsewhere,
# with no isolation and no request or result passing, is bounded by this.
FORK_HARNESS_FLOOR = FORK_FLOOR.replace("import gc, os, sys, time", "import gc, os, socket, sys, time\n" + f"""
import rftkit.sandbox.proxy as proxy
from rftkit.sandbox.protocol import Channel
def run_split(w):  # as in the pool: a fresh child serves the code, a long-lived process (here: this one) drives
    d, c = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        d.close()
        proxy.serve({PAYLOAD!r}, proxy.Connection(c.fileno()))
        os._exit(0)
    c.close()
    proxy.drive({PAYLOAD!r}, {SECRET!r}, proxy.Connection(d.fileno()), Channel(w, b"k" * 32), lambda: ("exited", True))
    d.close()
    os.close(w)
    return pid
""").replace("""    pid = os.fork()
    if pid == 0:
        os.write(w, b'{\"done\": true}'); os._exit(0)
    os.close(w); os.read(r, 64); os.close(r); os.waitpid(pid, 0)""", """    pid = run_split(w)
    b''.join(iter(lambda: os.read(r, 4096), b'')); os.close(r); os.waitpid(pid, 0)""")

# The harness alone, in one process with no fork at all: its own CPU cost, without the copy-on-write
# page faults a forked child pays for every page of the zygote it writes (reference counts included).
HARNESS_IN_PROCESS = """
import gc, os, sys, time
import rftkit.sandbox.zygote
""" + IN_PROCESS + """
gc.collect(); gc.freeze()
n = int(sys.argv[1]); r, w = os.pipe(); start = time.perf_counter()
for _ in range(n):
    run_both(w)
    os.read(r, 1 << 16)
print(time.perf_counter() - start)
"""


def _looping_processes(runs: int, processes: int, program: str) -> dict[str, float]:
    """Run `program` (a loop of `runs` executions) in `processes` processes at once; executions per second."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", program, str(runs)], stdout=subprocess.PIPE)
             for _ in range(processes)]
    for proc in procs:
        proc.communicate(timeout=300)
        assert proc.returncode == 0, "looping process failed"
    elapsed = time.perf_counter() - start
    return {"runs": runs * processes, "per_second": runs * processes / elapsed, "p50_ms": None,
            "p99_ms": None}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _measure(run_one, runs: int, workers: int) -> dict[str, float]:
    latencies: list[float] = []

    def timed(_):
        start = time.perf_counter()
        ok = run_one()
        latencies.append(time.perf_counter() - start)
        return ok

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as executor:
        oks = list(executor.map(timed, range(runs)))
    elapsed = time.perf_counter() - start
    assert all(oks), "an execution failed"
    return {"runs": runs, "per_second": runs / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * _percentile(latencies, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--naive-runs", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", help="pool sizes to measure (default: the config's)")
    parser.add_argument("--isolation", default="full", choices=["full", "restricted"], help="the pool's mode")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sandbox.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    job = Job("rftkit.sandbox.proxy:run_tests", PAYLOAD, 5.0, secret=SECRET)

    def naive() -> bool:
        return subprocess.run([sys.executable, "-c", NAIVE], capture_output=True, timeout=30).returncode == 0

    def naive_harness() -> bool:
        out = subprocess.run([sys.executable, "-c", NAIVE_HARNESS], capture_output=True, timeout=30).stdout
        return b'"value": ["int", "3"]' in out

    rows, isolation = {}, None
    for workers in args.workers or [SandboxConfig().workers]:
        pool = SandboxPool(SandboxConfig(workers=workers, isolation=args.isolation))
        isolation = pool.isolation.summary()

        def pooled(pool=pool) -> bool:
            result = pool.run(job)
            return result.done and result.records[-2].get("value") == ["int", "3"]

        _measure(pooled, 20, workers)  # warm-up
        rows[f"pool_{workers}_workers"] = _measure(pooled, args.runs, workers)
        pool.close()
    rows["naive"] = _measure(naive, args.naive_runs, cores)
    rows["naive_harness"] = _measure(naive_harness, args.naive_runs, cores)
    rows["fork_floor"] = _looping_processes(args.runs * 2, cores, FORK_FLOOR)
    rows["fork_harness_floor"] = _looping_processes(args.runs, cores, FORK_HARNESS_FLOOR)
    rows["harness_in_process"] = _looping_processes(args.runs * 4, cores, HARNESS_IN_PROCESS)
    best = max((k for k in rows if k.startswith("pool")), key=lambda k: rows[k]["per_second"])
    speedup = rows[best]["per_second"] / rows["naive"]["per_second"]
    ceiling = rows["fork_floor"]["per_second"] / rows["naive"]["per_second"]
    harness_ceiling = rows["fork_harness_floor"]["per_second"] / rows["naive"]["per_second"]
    result = {"machine": f"{platform.machine()}, {cores} cores, load average {os.getloadavg()[0]:.2f} at the end",
              "isolation": isolation, "best_pool": best, **rows, "speedup": speedup,
              "fork_floor_over_naive": ceiling, "fork_harness_floor_over_naive": harness_ceiling}
    print("| way | executions/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for name, row in rows.items():
        latency = " | ".join("-" if row[k] is None else f"{row[k]:.1f}" for k in ("p50_ms", "p99_ms"))
        print(f"| {name} | {row['per_second']:.0f} | {latency} |")
    print(f"speed-up {speedup:.1f}x ({best} over naive); a fresh process per execution can reach at most "
          f"{ceiling:.1f}x here (fork_floor), {harness_ceiling:.1f}x if it runs the harness (fork_harness_floor); "
          f"{result['machine']}; isolation {result['isolation']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
