"""verifiers' two APIs cannot be installed together (0.4 removed 0.3's classes), so each interpreter collects the
tests of the one it has: the main venv (verifiers 0.3.1) runs test_verifiers.py, and `make test` runs
test_verifiers_v1.py in .venv-verifiers04 (verifiers 0.4). By version: 0.3.1 also ships an early `verifiers.v1`."""

from importlib.metadata import PackageNotFoundError, version


def _verifiers_major_minor() -> tuple[int, int]:
    try:
        return tuple(int(part) for part in version("verifiers").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return (0, 0)


collect_ignore = ["test_verifiers.py"] if _verifiers_major_minor() >= (0, 4) else ["test_verifiers_v1.py"]
