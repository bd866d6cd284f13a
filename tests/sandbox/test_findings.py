"""Issue 18's sandbox findings, each as the attack that worked, under both isolation modes (and, through
test_unprivileged.py, as an unprivileged user). Every attack prints `LEAKED:` when a step of it succeeds;
the candidate's `add` is wrong (or the attack is aimed at making it pass), so every grade must be 0."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from rftkit.data import Example
from sandbox_support import ADD, CORRECT, LEAK, SECRET, WRONG, Recorder, script, tight

REPO = Path(__file__).resolve().parents[2]
SITE = Path(site.getsitepackages()[0])
PARENT = os.getpid()  # the grading process: the pool lives in this one


def _targets(pool) -> list[int]:
    """Every process of the grading side: this one, the zygotes, and (named inside) the driver."""
    return [PARENT] + [w.proc.pid for w in pool._all]


def _attack(body: str, pool) -> str:
    prelude = (f"import os, signal, ctypes\nTARGETS = {_targets(pool)!r} + [os.getppid()]\n"
               f"def leak(*a):\n    print({LEAK!r}, *a, flush=True)\n")
    return prelude + body + WRONG


# SIGCONT for this process (harmless if it got through), SIGKILL for the rest. A kill that returns 0 is not
# proof: init of a pid namespace drops signals from inside it, so the leak is that the process is gone.
KILL = ("import time\nfor pid in TARGETS:\n    try:\n"
        f"        if pid == {PARENT}:\n            os.kill(pid, signal.SIGCONT)\n            leak('signalled', pid)\n"
        "            continue\n        os.kill(pid, signal.SIGKILL)\n        time.sleep(0.05)\n        try:\n"
        "            os.kill(pid, 0)\n        except ProcessLookupError:\n            leak('killed', pid)\n"
        "    except OSError:\n        pass\n")
ENVIRON = ("for pid in TARGETS:\n    try:\n        data = open(f'/proc/{pid}/environ', 'rb').read()\n"
           "        leak('environ', pid, data[:2000])\n    except OSError:\n        pass\n")
PTRACE = ("libc = ctypes.CDLL(None, use_errno=True)\nfor pid in TARGETS:\n"
          "    if libc.ptrace(0x4206, pid, 0, 0) == 0:\n        leak('ptrace', pid)\n"  # PTRACE_SEIZE: does not stop it
          "        libc.ptrace(17, pid, 0, 0)\n")
FD_FORGERY = ("for pid in TARGETS:\n    try:\n        fds = os.listdir(f'/proc/{pid}/fd')\n    except OSError:\n"
              "        continue\n    leak('listed fds of', pid)\n    for fd in fds:\n        try:\n"
              "            w = os.open(f'/proc/{pid}/fd/{fd}', os.O_WRONLY | os.O_NONBLOCK)\n"
              "            leak('opened for writing', pid, fd)\n            os.close(w)\n        except OSError:\n"
              "            pass\n")
ROOT_AND_PTH = ("print('UID', os.getuid(), os.geteuid())\n"
                f"for path in [{str(SITE / 'rftkit-finding.pth')!r}, {str(SITE / 'sitecustomize.py')!r}]:\n"
                "    try:\n        open(path, 'w').write('import os')\n        leak('wrote', path)\n"
                "    except OSError:\n        pass\n")


@pytest.mark.parametrize("name, body", [("kill", KILL), ("environ", ENVIRON), ("ptrace", PTRACE),
                                        ("fd_forgery", FD_FORGERY), ("root_and_pth", ROOT_AND_PTH)])
def test_code_cannot_reach_the_grading_process(name, body, recorder: Recorder, tight_pool):
    grade = recorder.grade(_attack(body, tight_pool))
    assert grade.score == 0.0, grade.reason
    assert LEAK not in recorder.stdout and SECRET not in recorder.stdout, recorder.stdout[-2000:]
    assert all(r.done and not r.error for r in recorder.results)  # no worker, no driver was killed
    assert not (SITE / "rftkit-finding.pth").exists() and not (SITE / "sitecustomize.py").exists()
    if name == "root_and_pth":
        uids = [line.split()[1:] for line in recorder.stdout.splitlines() if line.startswith("UID")]
        assert uids, recorder.stdout
        if tight_pool.isolation.user == "userns":  # uid 0 of a user namespace is this (unprivileged) user
            assert os.geteuid() != 0
        else:
            assert all(uid != "0" for pair in uids for uid in pair), uids
    assert recorder.grader.grade(ADD, CORRECT).score == 1.0  # the pool still works


ASSERT_KIND = Example(id="add_assert", prompt="write add(a, b)", fields={
    "entry_point": "add", "tests": ["assert add(1, 2) == 1 + 2", "assert add(2, 5) == 2 + 5"],
    "hidden_tests": ["assert add(31337, 1) == 31337 + 1"]})

NOOP_AWARE_PATCH = """import sys
def add(a, b):
    return 0
for name in ('rftkit.sandbox.harness', 'rftkit.sandbox.proxy'):
    module = sys.modules.get(name)
    original = getattr(module, '_run_one', None)
    if original is None:
        continue
    def patched(test, fn, *rest, _original=original, _module=module):
        if fn is getattr(_module, '_noop', None):  # the no-op re-run: behave, so that it fails
            return _original(test, fn, *rest)
        return {'passed': True}
    module._run_one = patched
"""
GC_AND_FRAMES = """import gc, sys
def add(a, b):
    seen = []
    frame = sys._getframe()
    while frame:
        seen += list(frame.f_locals.values()) + list(frame.f_globals.values())
        frame = frame.f_back
    for obj in gc.get_objects() + seen:
        if type(obj) is str and '31337' in obj:
            print('LEAKED:', 'hidden test text', obj[:80])
        if type(obj) is dict and ('tests' in obj or 'key' in obj):
            print('LEAKED:', 'a request or secret', sorted(map(str, obj))[:8])
        if type(obj).__name__ == 'Channel':
            print('LEAKED:', 'a verdict channel')
            for i in range(8):
                obj.send(test=i, passed=True)
            obj.send(done=True)
    return 0
"""
FORGED_RECORDS = """import os, struct, json
forged = [b'0' * 64 + b' {"test": %d, "passed": true}\\n' % i for i in range(4)] + [b'0' * 64 + b' {"done": true}\\n']
for fd in range(1, 64):
    for line in forged:
        try:
            os.write(fd, line)
        except OSError:
            pass
for message in [{"defined": True, "tampered": []}, {"names": ["add"]}] + [{"value": ["int", "3"]}] * 8:
    body = json.dumps(message).encode()
    try:
        os.write(3, struct.pack('>I', len(body)) + body)  # the candidate's own socket: framed as protocol
    except OSError:
        pass
def add(a, b):
    return 0
"""


@pytest.mark.parametrize("name, code", [("noop_aware_patch", NOOP_AWARE_PATCH), ("gc_and_frames", GC_AND_FRAMES),
                                        ("forged_records", FORGED_RECORDS)])
def test_code_cannot_influence_the_verdict(name, code, recorder: Recorder):
    grade = recorder.grade(code, ASSERT_KIND)
    assert grade.score == 0.0 and grade.details.get("passed", 0) == 0, grade.reason
    assert LEAK not in recorder.stdout, recorder.stdout[-2000:]
    assert recorder.grade(CORRECT, ASSERT_KIND).score == 1.0


def test_a_correct_function_that_prints_300_kb_still_scores(recorder: Recorder):
    grade = recorder.grade("def add(a, b):\n    print('x' * 300_000)\n    return a + b\n")
    assert grade.score == 1.0, grade.reason
    assert not any(r.timed_out for r in recorder.results) and any(r.truncated["stdout"] for r in recorder.results)


SEARCH = """import os, sys
TOKEN, PATHS = {token!r}, {paths!r}
for path in PATHS:
    try:
        print('LEAKED:', path, open(path).read()[:80])
    except OSError:
        pass
try:
    import rftkit
    print('LEAKED:', 'rftkit listed', os.listdir(os.path.dirname(rftkit.__file__)))
except Exception:
    pass
searched = 0
for root, dirs, files in os.walk('/', onerror=lambda e: None):
    if root.startswith(('/proc', '/sys')):
        dirs[:] = []
        continue
    searched += 1
    for name in dirs + files:
        if TOKEN in name or name == 'code_pack.jsonl':
            print('LEAKED:', os.path.join(root, name))
print('SEARCHED', searched)
"""


def test_a_hidden_reference_anywhere_is_unreachable(tight_pool):
    token = f"rftkit-hidden-{uuid.uuid4().hex[:12]}"
    parents = [str(REPO), "/var/tmp", tempfile.gettempdir()]  # the source checkout, a tmp outside /tmp, TMPDIR
    places = [Path(tempfile.mkdtemp(prefix=token, dir=p)) for p in parents if os.access(p, os.W_OK)]
    try:
        paths = []
        for place in places:
            place.chmod(0o755)
            (place / "reference.py").write_text("def add(a, b):\n    return a + b  # the hidden reference\n")
            (place / "reference.py").chmod(0o644)
            paths.append(str(place / "reference.py"))
        paths.append(str(REPO / "src/rftkit/tasks/data/code_pack.jsonl"))
        result = script(tight_pool, SEARCH.format(token=token, paths=paths), timeout_s=60)
        assert result.done, result.status_text() + result.stderr[-1000:]
        assert LEAK not in result.stdout, result.stdout[-2000:]
        assert "SEARCHED" in result.stdout
    finally:
        for place in places:
            shutil.rmtree(place, ignore_errors=True)


NO_NAMESPACES = Path(__file__).with_name("no_namespaces.py")


def test_full_isolation_refuses_where_namespaces_are_unavailable_and_restricted_is_opt_in():
    """A host without namespaces (simulated: unshare and setns fail with EPERM, as in a container or
    under Ubuntu's AppArmor restriction): full refuses, naming the key to opt in; restricted runs, or,
    as root with an interpreter an unprivileged uid cannot read, refuses too rather than run as root."""
    probe = ("from rftkit.sandbox import SandboxPool, SandboxUnavailable, Job\nfrom sandbox_support import tight\n"
             "for mode in ('full', 'restricted'):\n    try:\n        pool = SandboxPool(tight(mode, workers=1))\n"
             "    except SandboxUnavailable as exc:\n        print(mode, 'REFUSED', exc)\n        continue\n"
             "    r = pool.run(Job('rftkit.sandbox.harness:run_script', {'code': 'print(6 * 7)'}, 5.0))\n"
             "    print(mode, 'RAN', r.stdout.strip(), pool.isolation.summary())\n    pool.close()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(Path(__file__).parent)])}
    out = subprocess.run([sys.executable, str(NO_NAMESPACES), sys.executable, "-c", probe], env=env,
                         capture_output=True, text=True, timeout=180)
    lines = {line.split()[0]: line for line in out.stdout.splitlines()
             if line.split()[:1] in (["full"], ["restricted"])}
    assert lines["full"].startswith("full REFUSED sandbox.isolation is 'full'"), out.stdout + out.stderr
    assert "isolation: restricted" in lines["full"]
    if os.geteuid() == 0 and "REFUSED" in lines["restricted"]:
        assert "never runs it as root" in lines["restricted"], lines["restricted"]
    else:
        assert lines["restricted"].startswith("restricted RAN 42 mode=restricted"), out.stdout + out.stderr


def test_restricted_isolation_is_never_chosen_by_default():
    assert tight("full").isolation == "full" and "isolation" in type(tight("full")).model_fields
