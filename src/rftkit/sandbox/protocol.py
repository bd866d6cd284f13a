"""What crosses the sandbox's process boundaries, and how a verdict is authenticated.

Pool <-> zygote: length-prefixed pickles on the zygote's stdin and stdout (both ends are trusted), each
optionally followed by a raw blob. The zygote reads its requests straight from the file descriptor into
buffers it zeroes after use, so that a job's secret part (the tests, the run's key) is never left in
the memory that later executions are forked from.

Verdict records travel on a channel (file descriptor 3 of the process that judges), one line each:
`<HMAC-SHA256 of the JSON, hex> <JSON>`, under a key made fresh for every run by the pool. Only the
process holding the key can write a record the pool accepts; for `python_tests` that is the driver
process, which the candidate's code can neither reach nor share memory with (see `proxy`).
"""

from __future__ import annotations

import _sha256  # the built-in module: hmac and hashlib would load OpenSSL into every zygote (4 MB to fork)
import array
import json
import os
import pickle
import socket
import struct
from typing import Any, BinaryIO

_HEADER = struct.Struct("<Q")
_dumps, _write, _sha = json.dumps, os.write, _sha256.sha256  # bound before any untrusted code can patch them
_IPAD, _OPAD = bytes(x ^ 0x36 for x in range(256)), bytes(x ^ 0x5C for x in range(256))


def send_message(stream: BinaryIO, message: Any, blob: bytes | bytearray | None = None) -> None:
    """A pickled message and, when given, a raw blob after it (written without copying)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(stream, _HEADER.pack(len(data)) + data)
    if blob is not None:
        _write_all(stream, _HEADER.pack(len(blob)))
        _write_all(stream, blob)
    stream.flush()


def _write_all(stream: BinaryIO, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[stream.write(view):]  # an unbuffered stream may write part of it


def recv_message(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    return pickle.loads(stream.read(_HEADER.unpack(header)[0]))


def recv_blob(stream: BinaryIO) -> bytes:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the worker ended before its blob")
    return stream.read(_HEADER.unpack(header)[0])


def read_into(fd: int, buffer: bytearray) -> bool:
    """Fill `buffer` from `fd`; False at end of input."""
    view, filled = memoryview(buffer), 0
    while filled < len(buffer):
        n = os.readv(fd, [view[filled:]])
        if n == 0:
            return False
        filled += n
    return True


def recv_message_fd(fd: int) -> Any:
    header = bytearray(_HEADER.size)
    if not read_into(fd, header):
        return None
    body = bytearray(_HEADER.unpack(header)[0])
    return pickle.loads(body) if read_into(fd, body) else None


def recv_blob_fd(fd: int) -> bytearray:
    header = bytearray(_HEADER.size)
    if not read_into(fd, header):
        raise EOFError("request ended before its blob")
    blob = bytearray(_HEADER.unpack(header)[0])
    if not read_into(fd, blob):
        raise EOFError("request ended inside its blob")
    return blob


def zero(buffer: bytearray) -> None:
    buffer[:] = bytes(len(buffer))


# ------------------------------------------------------------------ zygote -> driver (a unix socket)
# A frame: kind (1 job, 2 the code's process ended), the execution's number, the length of a JSON
# header, the length of a raw blob; then both. A job frame carries, as SCM_RIGHTS, the execution's
# channel, its socket to the code's process and its stderr.

_FRAME = struct.Struct("<BQIQ")
JOB, ENDED = 1, 2


def send_frame(sock: socket.socket, kind: int, seq: int, meta: dict, blob: bytes | bytearray = b"",
               fds: tuple[int, ...] = ()) -> None:
    head = json.dumps(meta).encode()
    sock.sendmsg([_FRAME.pack(kind, seq, len(head), len(blob)) + head],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])
    view = memoryview(blob)
    while view:
        view = view[sock.send(view):]


def _recv_exact(fd: int, n: int) -> bytearray | None:
    buffer = bytearray(n)
    return buffer if read_into(fd, buffer) else None


def recv_frame(sock: socket.socket) -> tuple[int, int, dict, bytearray, list[int]] | None:
    """(kind, seq, meta, blob, fds); None when the zygote is gone."""
    data, fds, _, _ = socket.recv_fds(sock, _FRAME.size, 4)
    if len(data) < _FRAME.size:  # the fixed part arrives whole unless the zygote died sending it
        rest = _recv_exact(sock.fileno(), _FRAME.size - len(data)) if data else None
        if rest is None:
            return None
        data += rest
    kind, seq, head_size, blob_size = _FRAME.unpack(data)
    head, blob = _recv_exact(sock.fileno(), head_size), _recv_exact(sock.fileno(), blob_size)
    if head is None or blob is None:
        return None
    return kind, seq, json.loads(head), blob, list(fds)


def new_key() -> bytes:
    return os.urandom(32)


def _mac(key: bytes, body: bytes) -> str:
    """HMAC-SHA256 (RFC 2104) of `body` under a 32-byte key."""
    padded = key.ljust(64, b"\0")
    inner = _sha(padded.translate(_IPAD) + body).digest()
    return _sha(padded.translate(_OPAD) + inner).hexdigest()


class Channel:
    """The judging process's side: `send(test=0, value=...)` writes one authenticated record."""

    def __init__(self, fd: int, key: bytes):
        self._fd, self._key = fd, key

    def send(self, **record: Any) -> None:
        body = _dumps(record).encode()
        data = _mac(self._key, body).encode() + b" " + body + b"\n"
        while data:
            data = data[_write(self._fd, data):]


def _compare_digest(a: bytes, b: bytes) -> bool:
    """Constant-time equality (hmac's, without importing hmac here)."""
    from hmac import compare_digest  # the pool's side only

    return compare_digest(a, b)


def parse_channel(raw: bytes | bytearray, key: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records whose HMAC verifies under this run's key, and how many lines did not."""
    records, bad = [], 0
    for line in bytes(raw).splitlines():
        mac, _, body = line.partition(b" ")
        if not _compare_digest(mac, _mac(key, body).encode()):
            bad += 1
            continue
        try:
            record = json.loads(body)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad
