"""The adversarial corpus: hostile completions for `add(a, b)`, graded by python_tests with the AST check
off, so that the sandbox itself, not the static filter, is what stops them, under each isolation mode.
For each: the score is 0 (or its honest partial), the grader returns within the limit + 1 s, no process
of the execution survives, nothing is written outside its temporary directory, and this process is
unaffected."""

from __future__ import annotations

import os
import site
import tempfile
import time
from pathlib import Path

import pytest

from sandbox_support import ADD, LEAK, SECRET, TIMEOUT_S, WRONG, Recorder

TOKEN = f"rftkit-adv-{os.getpid()}"
REPO = Path(__file__).resolve().parents[2]
SITE = Path(site.getsitepackages()[0])
OUTSIDE = [Path("/tmp") / TOKEN, Path(tempfile.gettempdir()) / TOKEN, REPO / TOKEN, SITE / f"{TOKEN}.pth", SITE / "sitecustomize.py",
           Path("/dev/shm") / TOKEN, Path("/var/tmp") / TOKEN]
PARENT = os.getpid()
READ_TARGETS = [__file__, str(REPO / "src/rftkit/tasks/data/code_pack.jsonl"), f"/proc/{PARENT}/environ",
                f"/proc/{PARENT}/cmdline", "/etc/shadow", "/root/.bash_history"]

HOSTILE = {
    "infinite_loop": "def add(a, b):\n    while True:\n        pass\n",
    "infinite_loop_at_import": "while True:\n    pass\n",
    "catastrophic_regex": "import re\ndef add(a, b):\n    return len(re.findall(r'(a+)+$', 'a' * 64 + 'b'))\n",
    "huge_power": "def add(a, b):\n    return 10 ** (10 ** 9) + a + b\n",
    "sleep": "import time\ndef add(a, b):\n    time.sleep(60)\n    return a + b\n",
    "read_stdin": "import sys\ndef add(a, b):\n    return int(sys.stdin.readline() or -1234567)\n",
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "thread_bomb": "import threading, time\nwhile True:\n    try:\n        threading.Thread(target=time.sleep, args=(60,)).start()\n"
                   "    except BaseException:\n        pass\n",
    "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n",
    "print_1gb": "import sys\nfor _ in range(1024):\n    try:\n        sys.stdout.write('x' * (1 << 20))\n    except BaseException:\n"
                 "        pass\n" + WRONG,
    "fill_disk": "i = 0\nwhile True:\n    try:\n        open(f'fill{i}', 'wb').write(b'0' * (1 << 20))\n    except BaseException:\n"
                 "        break\n    i += 1\n" + WRONG,
    "write_outside_tmp": "".join(f"try:\n    open({str(p)!r}, 'w').write('pwned')\nexcept BaseException:\n    pass\n"
                                 for p in OUTSIDE) + WRONG,
    "read_outside_tmp": "".join(f"try:\n    print({LEAK!r}, open({p!r}, 'rb').read(80))\nexcept BaseException:\n    pass\n"
                                for p in READ_TARGETS) + WRONG,
    "tcp_connect": f"import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=0.5)\n    print({LEAK!r}, 'tcp')\n"
                   "except OSError:\n    pass\n" + WRONG,
    "dns_lookup": f"import socket\ntry:\n    print({LEAK!r}, socket.getaddrinfo('example.com', 80))\nexcept OSError:\n    pass\n" + WRONG,
    "env_secrets": "import os\nfor k, v in os.environ.items():\n    print(k, v)\nprint(open('/proc/self/environ').read())\n" + WRONG,
    "ignore_sigalrm_swallow_base": "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                                   "def add(a, b):\n    while True:\n        try:\n            time.sleep(10)\n"
                                   "        except BaseException:\n            pass\n",
    "kill_parent": "import os, signal\nfor pid in [os.getppid()] + [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
                   "    try:\n        os.kill(pid, signal.SIGKILL)\n    except BaseException:\n        pass\n"
                   f"try:\n    os.kill({PARENT}, signal.SIGKILL)\nexcept BaseException:\n    pass\n" + WRONG,
    "kill_everything": "import os\ntry:\n    os.kill(-1, 9)\nexcept BaseException:\n    pass\n" + WRONG,
    "double_fork_daemon": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(30)\n"
                          "        open('/tmp/daemon_was_here', 'w').write('x')\n    os._exit(0)\n" + WRONG,
    "segfault_ctypes": "import ctypes\ndef add(a, b):\n    return ctypes.string_at(0)\n",
    "deep_recursion": "def add(a, b):\n    return add(a, b)\n",
    "c_stack_overflow": "import sys\nsys.setrecursionlimit(10 ** 8)\ndef add(a, b):\n    return add(a, b) + 1\n",
    "exit_before_asserts": "import sys\ndef add(a, b):\n    return a + b\nsys.exit(0)\n",
    "os_exit_in_function": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "raise_systemexit": "def add(a, b):\n    raise SystemExit(0)\n",
    "raise_skiptest": "import unittest\ndef add(a, b):\n    raise unittest.SkipTest('skip')\n",
    "always_equal": "class Anything:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Anything()\n",
    "rigged_int_subclass": "class Int(int):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Int(0)\n",
    "monkeypatch_builtins": "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.AssertionError = KeyboardInterrupt\n" + WRONG,
    "monkeypatch_channel": "import rftkit.sandbox.harness as h\n_send = h.Channel.send\n"
                           "def send(self, **r):\n    r.pop('value', None)\n    r.pop('error', None)\n"
                           "    _send(self, **dict(r, passed=True) if 'test' in r else r)\n"
                           "h.Channel.send = send\n" + WRONG,
    "forge_with_nonce_from_gc": "import gc\nfor obj in gc.get_objects():\n    if type(obj).__name__ == 'Channel':\n"
                                "        for i in range(8):\n            obj.send(test=i, value=['int', '3'])\n"
                                "        obj.send(done=True)\n" + WRONG,
    "forge_stdout_and_fd3": "import os\nprint('{\"nonce\": \"0\", \"test\": 0, \"passed\": true}')\n"
                            "os.write(3, b'{\"nonce\": \"0\", \"test\": 1, \"value\": [\"int\", \"0\"]}\\n')\n" + WRONG,
    # the hidden tests expect 777778 and -150003: neither may be anywhere in the process to be found
    "walk_stack_frames": "import sys, gc\ndef add(a, b):\n    seen, f = set(), sys._getframe(1)\n    while f:\n"
                         "        seen.update(v for v in list(f.f_locals.values()) + list(f.f_globals.values()) if type(v) is int)\n"
                         "        f = f.f_back\n    for o in gc.get_objects():\n        if type(o) in (list, tuple):\n"
                         "            seen.update(v for v in o if type(v) is int)\n        elif type(o) is dict:\n"
                         "            seen.update(v for v in o.values() if type(v) is int)\n"
                         f"    if {{int('77777' + '8'), -int('15000' + '3')}} & seen:\n        print({LEAK!r}, 'expected value found')\n"
                         "    return -1234567\n",
    "write_sitecustomize_and_pth": f"for p in ['sitecustomize.py', {str(SITE / 'sitecustomize.py')!r}, {str(SITE / (TOKEN + '.pth'))!r}]:\n"
                                   "    try:\n        open(p, 'w').write('import os; os._exit(0)')\n    except OSError:\n        pass\n" + WRONG,
    "nul_bytes": "def add(a, b):\n    return a + b\x00\n",
    "invalid_utf8": "def add(a, b):\n    return a + b  # \udcff\udcfe\n",
    "ten_mb_completion": "x = 1\n" * (10 * 1024 * 1024 // 6) + "def add(a, b):\n    return a + b\n",
    "raise_rlimits": "import resource\nfor r in (resource.RLIMIT_NPROC, resource.RLIMIT_AS, resource.RLIMIT_CPU):\n"
                     "    try:\n        resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
                     f"        print({LEAK!r}, r)\n    except (ValueError, OSError):\n        pass\n" + WRONG,
}
# honest partial scores: 2 visible of 2 visible + 2 hidden + 4 random tests
PARTIAL = {"hard_coded_visible_outputs": ("def add(a, b):\n    return {(1, 2): 3, (-4, 4): 0}.get((a, b), 0)\n", 2 / 8)}
EXPECTED_FLAGS = {"exit_before_asserts": ("exit",), "os_exit_in_function": ("exit",), "raise_systemexit": ("exit",),
                  "raise_skiptest": ("exit",), "monkeypatch_builtins": ("tamper",)}


def _survivors(uids: list[int]) -> list[int]:
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
        if uid_line and int(uid_line.split()[1]) in uids:
            alive.append(int(entry.name))
    return alive


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except PermissionError:  # as an unprivileged user the test cannot look into /tmp either
        return False


def test_corpus_is_large_enough():
    assert len(HOSTILE) >= 30


NEEDS_PROCESS_CAP = {"fork_bomb", "thread_bomb"}


def _skip_unguaranteed(name: str, pool, process_cap_enforced: bool) -> None:
    """Only what the reported isolation guarantees is asserted; the rest would harm this machine."""
    if name in NEEDS_PROCESS_CAP and not process_cap_enforced:
        pytest.skip(f"the process cap is not enforced with isolation {pool.isolation.summary()}")


@pytest.mark.parametrize("name", sorted(HOSTILE) + sorted(PARTIAL))
def test_hostile_program_is_contained(name, recorder: Recorder, tight_pool, process_cap_enforced):
    _skip_unguaranteed(name, tight_pool, process_cap_enforced)
    code, expected = (HOSTILE[name], 0.0) if name in HOSTILE else PARTIAL[name]
    cwd, env = os.getcwd(), dict(os.environ)
    start = time.monotonic()
    grade = recorder.grade(code)
    elapsed = time.monotonic() - start
    assert grade.score == pytest.approx(expected), grade.reason
    if name in EXPECTED_FLAGS:
        assert grade.flags == EXPECTED_FLAGS[name]
    # three sequential runs at most (reference, candidate, no-op), each within its limit
    runs = [r for r in recorder.results if r is not None]
    assert all(r.wall_s < TIMEOUT_S + 1 for r in runs) and elapsed < 3 * (TIMEOUT_S + 1)
    assert not any(r.error for r in runs)  # the workers survived
    assert LEAK not in recorder.stdout and SECRET not in recorder.stdout
    assert _survivors(tight_pool.worker_uids) == []
    assert [p for p in OUTSIDE if _exists(p)] == []
    assert os.getcwd() == cwd and dict(os.environ) == env
    assert recorder.grader.grade(ADD, "def add(a, b):\n    return a + b\n").score == 1.0  # the pool still works


def test_ten_mb_completion_is_refused_before_running(recorder: Recorder):
    grade = recorder.grade(HOSTILE["ten_mb_completion"])
    assert grade.score == 0.0 and "limit is 100000" in grade.reason and recorder.results[1:] == []
