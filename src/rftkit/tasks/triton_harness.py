"""Child side of the Triton task: runs inside the sandbox, in workers that imported torch and triton
with TRITON_INTERPRET=1 already set. Outputs leave as float32 bytes; they are compared on the host."""

from __future__ import annotations

import base64
import time
from typing import Any

from rftkit.sandbox.harness import Channel, describe, load_entry_point, restore_builtins

MAX_ELEMENTS = 1 << 20


def make_inputs(shapes: list[list[int]], seed: int) -> list[Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, dtype=torch.float32) for shape in shapes]


def encode_tensor(value: Any) -> dict[str, Any]:
    import torch

    if type(value) is not torch.Tensor:  # exact type: a Tensor subclass could fake its data
        return {"unsupported": type(value).__name__[:100]}
    if value.numel() > MAX_ELEMENTS:
        return {"unsupported": f"tensor with {value.numel()} elements"}
    data = value.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()
    return {"shape": list(value.shape), "dtype": str(value.dtype), "data": base64.b64encode(data).decode()}


def _run_cases(fn, payload: dict, channel: Channel) -> None:
    for i, shapes in enumerate(payload["cases"]):
        restore_builtins()
        inputs = make_inputs(shapes, payload["seed"] + i)
        try:
            start = time.perf_counter()
            output = fn(*inputs)
            seconds = time.perf_counter() - start
            record = {"tensor": encode_tensor(output), "seconds": seconds}
        except BaseException as exc:  # noqa: BLE001 - SystemExit and friends fail the case too
            record = {"passed": False, "error": describe(exc), "exit": isinstance(exc, SystemExit)}
        restore_builtins()
        channel.send(test=i, **record)
    channel.send(done=True)


def run_candidate(payload: dict, channel: Channel) -> None:
    """payload: code, entry_point, cases (list of input shapes per case), seed."""
    import torch

    torch.set_num_threads(1)
    loaded = load_entry_point(payload, channel, filename="<triton_code>")
    if loaded is not None:
        _run_cases(loaded[1], payload, channel)


def run_reference(payload: dict, channel: Channel) -> None:
    import torch

    torch.set_num_threads(1)
    namespace: dict[str, Any] = {"torch": torch}
    exec(payload["reference"], namespace)  # noqa: S102 - the task's own PyTorch function
    _run_cases(namespace[payload["entry_point"]], payload, channel)
