"""verifiers' two APIs cannot be installed together (0.4 removed 0.3's classes), so each interpreter collects the
tests of the one it has: the main venv (verifiers 0.3.1) runs test_verifiers.py, and `make test` runs
test_verifiers_v1.py in .venv-verifiers04 (verifiers 0.4)."""

import importlib.util


def _has_v1() -> bool:
    try:
        return importlib.util.find_spec("verifiers.v1") is not None
    except ModuleNotFoundError:
        return False


collect_ignore = ["test_verifiers.py"] if _has_v1() else ["test_verifiers_v1.py"]
