"""Files that are complete or absent: written to a temporary sibling, flushed, then renamed into place.

A process killed mid-write leaves the previous file (or none) and a `.tmp-*` sibling, never a short
file that looks valid. A full disk is reported as such, with the path and the free space, instead of
whatever the writer happened to raise (torch's zip writer says `unexpected pos ...`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


class DiskFullError(OSError):
    """No space left while writing; the message names the file, the free space and what was kept."""


def free_bytes(path: Path) -> int:
    probe = path if path.exists() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, or a library error raised because a write came up short (torch's zip writer)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(seen, RuntimeError) and ("unexpected pos" in str(seen) or "No space left" in str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full_error(path: Path, kept: str) -> DiskFullError:
    return DiskFullError(errno.ENOSPC, f"disk full while writing {path} ({free_bytes(path)} bytes free there); "
                                       f"{kept}. Free some space and run the command again")


@contextmanager
def atomic_path(path: str | Path, kept: str = "the previous file, if any, is unchanged") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on any failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:  # the bytes are on disk before the name points at them
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path, kept) from exc
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """JSONL that cannot fail on a lone surrogate (`backslashreplace` writes the JSON escape of the same
    character), complete or absent."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", errors="backslashreplace") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
